"""The model card (models/pbc-gru/card.md, models/pbc-attention/card.md) of the PBC sequence
models, each with the other's figures beside its own. See pbc_sequences.py."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifacts as A  # noqa: E402
import cards  # noqa: E402
from pbc_data import (  # noqa: E402
    BANDS,
    BOOT_SEED,
    CARRY,
    CARRY_BINS,
    CHECK_TOLERANCE,
    F,
    FEATURES,
    GOLDEN_CASES,
    LAB_CODES,
    LOOKBACK,
    N_BOOT,
    SPLIT_SEED,
    STEP,
    STEPS,
)
from pbc_nets import MAX_EPOCHS, ONNX_OPSET_SEQ, TORCH_SEED  # noqa: E402


def render_card(model_id, counts, split, mayo, mayo_va, consts, results, prevalence):
    r = results[model_id]
    f = cards.fmt
    other_id = next(k for k in results if k != model_id)
    o = results[other_id]
    mayo_auc, mayo_lo, mayo_hi = mayo
    arch = (
        f"GRU (hidden {r['cfg']['hidden']}) run over the steps from the newest to the oldest; its state at the last valid "
        "step of that reversed order (found from `mask` inside the graph, so leading empty steps never touch it) "
        "is concatenated with the newest valid step's standardised features and fed to a small MLP plus a linear "
        "term on the newest step; sigmoid."
        if r["kind"] == "gru"
        else f"Linear projection to d_model {r['cfg']['hidden']} plus a learned embedding of the step's position counted "
        "back from the newest step (so left padding does not shift positions), a 2-layer `nn.TransformerEncoder` "
        "(4 heads, feed-forward 2·d_model, post-norm, built with `enable_nested_tensor=False`) with "
        "`src_key_padding_mask = mask < 0.5`, masked mean pooling over valid steps, concatenated with the newest "
        "valid step's standardised features, a small MLP plus a linear term on the newest step; sigmoid."
    )
    feat_rows = []
    for j, (name, col, unit, logf) in enumerate(FEATURES):
        if name == "age":
            src = "`patient.age` (years at the prediction time)"
        elif name == "sex":
            src = "`patient.sex`, valueMap female 1, male 0"
        else:
            c = LAB_CODES[name]
            sysname = "LOINC" if c["system"] == A.LOINC else "`urn:fhir-analytics:code`"
            src = f"{sysname} {c['code']} {c['display']}"
            if name in ("ascites", "hepatomegaly", "spiders"):
                src += " (valueBoolean: true 1, false 0)"
            if name == "edema":
                src += " (valueCodeableConcept: `edema-none` 0, `edema-untreated-or-resolved` 0.5, `edema-despite-diuretics` 1)"
        feat_rows.append(
            f"| {j} | {name} | {src} | {unit or '—'} | {'ln, then ' if logf else ''}standardise | "
            f"{f(consts['median'][j], 2)} |"
        )
    grid_rows = "\n".join(
        f"| {s[2]['hidden']} | {s[2]['wd']} | {s[2]['lr']} | {s[1]} | {f(s[0])} |" for s in r["scores"]
    )
    met = "met" if r["auc"] >= mayo_auc else "NOT met"
    if r["diff_hi"] < 0:
        verdict = (
            " — reported as measured; nothing was tuned on test. The paired difference's interval excludes 0: "
            "on these patients this model ranks risk worse than the four-variable Mayo score"
        )
    elif r["diff_lo"] > 0:
        verdict = ". The paired difference's interval excludes 0: better than the Mayo score on these patients"
    else:
        verdict = (
            ("" if met == "met" else " — reported as measured; nothing was tuned on test")
            + ". The paired difference's interval includes 0: with this test set the two cannot be told apart"
        )
    off = [b for b in r["rel"] if abs(b["observedRate"] - b["meanPredicted"]) > 0.1 and b["n"] >= 10]
    calib = (
        "Bins (n ≥ 10) where the observed rate differs from the mean prediction by more than 0.1: "
        + ", ".join(
            f"[{b['lo']:.1f}, {b['hi']:.1f}) {'under' if b['observedRate'] > b['meanPredicted'] else 'over'}-predicts"
            for b in off
        )
        + ". Probabilities are not recalibrated; read them as a ranking more than as absolute risks."
        if off
        else "No bin with n ≥ 10 is off by more than 0.1."
    )
    return f"""# {model_id} — {r['title']}

**Not for clinical use.** Research and pipeline demonstration only; trained on a public
1974–1986 trial data set, not validated for any clinical decision.

Estimates the probability that a patient with primary biliary cholangitis (PBC) dies or
receives a liver transplant within 2 years (730 days) of the newest visit, from the history of
liver laboratory values and clinical signs. PyTorch {torch.__version__} model exported to ONNX
(opset {ONNX_OPSET_SEQ}); Triton `onnxruntime` backend on GPU (`KIND_GPU`, `ml.g5.xlarge`, max
batch {256}). Inputs `x` FP32 `[N, T, {F}]` and `mask` FP32 `[N, T]` (1 = a real step), N and T
dynamic (the extractor sends T = {STEPS}); output `p` FP32 `[N, 1]` (sigmoid inside the graph).

## Data

- Source: the Mayo Clinic trial in PBC of the liver (enrolment 1974–1984, follow-up to July
  1986), Fleming & Harrington, *Counting Processes and Survival Analysis* (1991), and Murtaugh
  et al., *Hepatology* 20:126–134 (1994) for the repeated visits, as shipped in R's `survival`
  package (LGPL; Debian `r-cran-survival`): `pbcseq`, 1945 visits of the 312 randomised
  patients, exported through `Rscript` at training time. Protocol visits at 6 months, 1 year
  and yearly after, plus unscheduled ones. Age and sex are pbcseq's (the same as
  `pbc`'s baseline columns).
- Target: death (status 2) or liver transplant (status 1) within 730 days after the visit used
  as the prediction time.
- Samples: every visit of every patient is a candidate prediction time; its input is the
  patient's visits up to and including it. Candidates censored (alive without transplant)
  less than 730 days after the visit are excluded; a later event (more than 730 days on)
  counts as negative. Patients contribute several (correlated) samples each.
- Split by patient, seed {SPLIT_SEED} (60/20/20; patient ids in `split.json`, the same for
  `pbc-gru` and `pbc-attention`):

| part | patients | samples | events |
|---|---|---|---|
""" + "\n".join(f"| {k} | {a} | {b} | {c} |" for k, (a, b, c) in counts.items()) + f"""

## Features and binning (what the sequence extractor must reproduce)

| # | name | FHIR source and code | unit | in graph | NaN → (train+validation median, raw units) |
|---|---|---|---|---|---|
""" + "\n".join(feat_rows) + f"""

Binning (manifest `step` {STEP}, `steps` {STEPS}, `alignment` newest, `carryForward` {CARRY}):

1. t_ref = effective time of the newest Observation among the sequence features (the
   prediction time).
2. An Observation at time t falls in bin j = floor((t_ref − t) / 182.625 days + 0.5), i.e. the
   nearest whole number of 6-month steps back (P6M taken as 365.25/2 = 182.625 days; bins are
   centred on multiples of 6 months so the trial's 6-monthly and yearly visits sit mid-bin).
   Bin 0 is the newest; bins j ≥ {STEPS} are dropped (after carry-forward, below).
3. Tensor step T − 1 − j holds bin j: the newest bin is the last step (left padding).
4. Per feature, the latest value in a bin wins (values converted to the unit shown first;
   cholesterol molar ↔ mass with 386.65 g/mol).
5. mask = 1 for a bin that holds at least one laboratory/clinical-sign value, else 0.
6. A feature missing in a masked bin takes its value from the nearest older bin that has it,
   at most {CARRY_BINS} bins ({CARRY}) older (bins older than the window count as sources; the
   features' `lookback` {LOOKBACK} = ({STEPS} + {CARRY_BINS}) × 6 months fetches them);
   otherwise it is sent as NaN and the graph imputes the median above.
7. age (years at t_ref, fractional) and sex are written on every masked step.
8. Unmasked steps: all values 0 (the graph ignores them: it replaces them with 0 after
   standardisation, by `mask`; NaN there is tolerated too).
9. minSteps 1: the graph needs at least one masked step per row.

Inside the graph: NaN → median, ln of bilirubin, alkaline phosphatase, AST, prothrombin time
and cholesterol (clamped at 1e-3), then (value − mean) / SD with train+validation constants,
then masking. The extractor sends raw units, no transform (manifest `transform` none).

## Architecture and training

{arch} {r['n_params']} parameters.

Adam, binary cross-entropy, batch 64, dropout {r['cfg']['dropout']}, seeded (`torch.manual_seed({TORCH_SEED})`,
`torch.use_deterministic_algorithms(True)`, 1 thread). Grid scored by validation AUC
(best epoch of {MAX_EPOCHS} per setting; normalisation constants from train):

| width | weight decay | lr | best epoch | validation AUC |
|---|---|---|---|---|
{grid_rows}

Chosen: width {r['cfg']['hidden']}, weight decay {r['cfg']['wd']}, {r['epochs']} epochs (validation AUC
{f(r['val_auc'])}; the Mayo score's validation AUC is {f(mayo_va)}). Refit with these settings on
train+validation (constants recomputed there). Training, export and evaluation took
{f(r['seconds'], 0)} s on one CPU thread. The test samples were used once, for the figures below.

## Held-out performance (test: {counts['test'][0]} patients, {counts['test'][1]} samples, {counts['test'][2]} events; evaluated once)

| metric | {model_id} | 95% CI | {other_id} (same samples) | Mayo risk score (same samples) |
|---|---|---|---|---|
| AUC | {f(r['auc'])} | [{f(r['auc_lo'])}, {f(r['auc_hi'])}] | {f(o['auc'])} [{f(o['auc_lo'])}, {f(o['auc_hi'])}] | {f(mayo_auc)} [{f(mayo_lo)}, {f(mayo_hi)}] |
| accuracy (p ≥ 0.5) | {f(r['acc'])} | [{f(r['acc_lo'])}, {f(r['acc_hi'])}] | {f(o['acc'])} | — (a score, not a probability) |
| Brier score | {f(r['brier'], 4)} | [{f(r['brier_lo'], 4)}, {f(r['brier_hi'], 4)}] | {f(o['brier'], 4)} | — |

95% CIs: percentile bootstrap over test **patients** (all samples of a drawn patient go
together), {N_BOOT} resamples, seed {BOOT_SEED}. AUC difference {model_id} − Mayo:
{f(r['auc'] - mayo_auc)} [{f(r['diff_lo'])}, {f(r['diff_hi'])}] (paired, same resamples). For scale,
always predicting "no event" gives accuracy {f(1 - counts['test'][2] / counts['test'][1])}.
One sample per test patient (each patient's latest eligible visit, n = {r['n_last']}, {r['events_last']}
events): AUC {f(r['auc_last'])}, Mayo {f(r['mayo_last'])}.

Target (AUC ≥ the Mayo score's on the same test samples): **{met}**{verdict}.

Mayo PBC risk score (Dickson et al., *Hepatology* 1989): R = 0.871·ln(bilirubin mg/dL) −
2.53·ln(albumin g/dL) + 0.039·age (years) + 2.38·ln(prothrombin time s) + 0.859·edema score,
computed on the same binned newest step the model sees (after carry-forward; the three labs are
never missing in pbcseq).

Calibration on test (Brier {f(r['brier'], 4)}; training prevalence {f(prevalence)}):

{cards.reliability_markdown(r['rel'])}

{calib}

## Output bands

Fixed a priori (not fitted on test):

{cards.bands_table("probability", BANDS)}

## Export and parity

`torch.onnx.export` in eval mode, opset {ONNX_OPSET_SEQ}, dynamic axes N and T on `x`, `mask` and N on `p`.
`golden.json`: {GOLDEN_CASES} test samples (one per number of real steps first, some with a
NaN left after carry-forward, the rest seeded-random), padded to T = {STEPS}, `null` = NaN, with
torch's float64 outputs (float32 torch differs from them by at most {r['max_dev']:.1e}).
`npm run train` and `test/unit/model-parity.test.ts` require onnxruntime-node to match within
1e-4 × max(1, |expected|). ONNX size {r['onnx_bytes']} bytes.

`npm run train -- --check` retrains into a temporary directory and fails if held-out AUC or
Brier moves by more than {CHECK_TOLERANCE['auc']} or accuracy by more than {CHECK_TOLERANCE['accuracy']}. Training is seeded, on one
thread, with `torch.use_deterministic_algorithms(True)`, but it is not bit-for-bit
reproducible: two retrainings here (with and without `OMP_NUM_THREADS=1`) gave outputs that
differ by up to 2e-7 and identical metrics to 4 decimals. Other torch builds can move the
weights more, hence the slack.

## Serving figures

GPU latency and throughput: not measured (no GPU in this session).

## Intended use and limitations

- Intended use: demonstrating the FHIR → sequence features → inference → DiagnosticReport
  pipeline with a real, public data set. Not for clinical use.
- One trial population (312 patients, 1974–1986, D-penicillamine vs placebo, mostly women),
  before UDCA and modern transplant practice; unknown transportability.
- Small test set ({counts['test'][0]} patients): wide intervals; samples from one patient are
  correlated (handled by the patient-level bootstrap, not by training).
- Laboratory assays and reference ranges of the 1970s–80s; units assumed as the survival
  package documents them (bilirubin and cholesterol mg/dL, albumin g/dL, alkaline
  phosphatase U/L, AST U/mL as U/L, platelets 10³/µL, prothrombin time s).
- Missing values are informative in pbcseq (its documentation: the last visit before death
  or transplant, often an unscheduled one, lacks much of the routine lab work); carry-forward
  and median imputation hide that signal, and the model does not see which values were filled.
- pbcseq documents albumin as "mg/dl"; its values (about 2–4.6) are g/dL, as used here.
- Inputs beyond the training range are not flagged; the model extrapolates silently.
"""
