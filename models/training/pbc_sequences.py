"""Sequence models for the Mayo Clinic PBC visits: a GRU (`pbc-gru`) and a small transformer
encoder (`pbc-attention`), on the same samples and the same patient-level split.

    /usr/bin/python3 models/training/pbc_sequences.py [--out ROOT]

Writes, under ROOT (default: the repository):
  models/pbc-gru/{split.json, manifest.json, config.pbtxt, 1/model.onnx, golden.json, card.md}
  models/pbc-attention/{... the same ...}
  local/demo/data/pbc-heldout.json   (the test patients' visits, for the demo cohort)

Data: R's survival package (`pbcseq`: 1945 visits of 312 patients of the Mayo Clinic PBC
trial), exported to CSV through Rscript at train time.

Samples: every visit of every patient is a candidate prediction time; the input is that
patient's visits up to and including it, binned as the manifest describes (see `bin_visits`),
and the label is death or liver transplant within 730 days after the visit. Candidates
censored (alive, no transplant) less than 730 days after the visit are left out.

Protocol: patients are split 60/20/20 (seeded) into train/validation/test; a small grid is
scored by validation AUC only (epochs chosen on validation too); the chosen setting is refit on
train+validation; the test samples are scored ONCE: AUC and accuracy with patient-level
(cluster) bootstrap 95% CIs, Brier score, reliability table, and the published Mayo PBC risk
score on the same samples as the baseline.
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifacts as A  # noqa: E402
import common as C  # noqa: E402
import metrics as MET  # noqa: E402
from pbc_card import render_card  # noqa: E402
from pbc_data import (  # noqa: E402
    BANDS,
    BOOL_MAP,
    BOOT_SEED,
    EDEMA_MAP,
    F,
    FEATURES,
    LAB_CODES,
    LOOKBACK,
    N_BOOT,
    REQUIRED_LABS,
    SPLIT_SEED,
    STEP,
    STEPS,
    CARRY,
    VERSION,
    build_samples,
    label_at,
    load_pbcseq,
    mayo_score,
    nested,
    pick_golden,
)
from pbc_nets import GRIDS, MAX_EPOCHS, Prep, export_onnx, predict, reference_outputs, train  # noqa: E402


# ---------------------------------------------------------------- manifest


def manifest_for(model_id, family, title, metrics, max_batch):
    feats = [A.patient_age(), A.patient_sex({"female": 1, "male": 0})]
    for name, _col, unit, _log in FEATURES[2:]:
        # Bilirubin, albumin and prothrombin time (the Mayo score's labs) must have been measured at
        # least once: without them a "PBC risk" would rest on age, sex and imputed medians alone.
        feats.append(
            A.observation_feature(
                name,
                [LAB_CODES[name]],
                unit,
                name in REQUIRED_LABS,
                molecular_weight=386.65 if name == "cholesterol" else None,
                lookback=LOOKBACK,
                imputation={"strategy": "nan"},
                valueMap=BOOL_MAP if name in ("ascites", "hepatomegaly", "spiders") else EDEMA_MAP if name == "edema" else None,
            )
        )
    serving_inputs = [
        {"name": "x", "datatype": "FP32", "dims": [-1, F]},
        {"name": "mask", "datatype": "FP32", "dims": [-1]},
    ]
    serving_outputs = [{"name": "p", "datatype": "FP32", "dims": [1]}]

    manifest = {
        "id": model_id,
        "version": VERSION,
        "family": family,
        "task": "classification",
        "title": title,
        "intendedUse": (
            "Research and pipeline demonstration: probability of death or liver transplant within two "
            "years for a patient with primary biliary cholangitis, from the history of liver laboratory "
            "values and clinical signs (Mayo Clinic PBC trial data, 1974-1986). Not for clinical use."
        ),
        "notForClinicalUse": True,
        # Liver labs only: total cholesterol is drawn for many other reasons and must not start a PBC model.
        "triggers": [{"resourceType": "Observation", "codes": [LAB_CODES[n] for n, *_ in FEATURES[2:8]]}],
        "input": {
            "kind": "sequence",
            "tensor": "x",
            "maskTensor": "mask",
            "features": feats,
            "step": STEP,
            "steps": STEPS,
            "alignment": "newest",
            "carryForward": CARRY,
            "minSteps": 1,
        },
        "output": A.probability_output(
            "p",
            [
                A.label("pbc-no-event-2y", "No death or transplant within 2 years"),
                A.label("pbc-event-2y", "Death or liver transplant within 2 years"),
            ],
            BANDS,
            A.code("pbc-2y-event-probability", "Probability of death or liver transplant within 2 years (PBC)"),
        ),
        "report": A.report(f"{model_id}-report", f"{title} report", A.LAB),
        "serving": A.serving(model_id, "ml.g5.xlarge", max_batch, serving_inputs, serving_outputs),
        "metrics": metrics,
    }
    return manifest


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0])
    t0 = time.time()
    # One thread: on this 2-core machine two intra-op threads ran 5-20x slower (spin waits
    # when the other core is busy), and one thread makes the float summation order fixed.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    patients = load_pbcseq()
    rows = build_samples(patients)
    pids = np.array([p["id"] for p in patients])
    split_idx = A.split_rows(len(pids), SPLIT_SEED, (0.6, 0.2, 0.2), ("train", "validation", "test"))
    split = {k: sorted(int(pids[i]) for i in v) for k, v in split_idx.items()}
    part_of = {pid: k for k, v in split.items() for pid in v}
    parts = {k: [r for r in rows if part_of[r["pid"]] == k] for k in split}

    def arrays(rs):
        return (
            np.stack([r["x"] for r in rs]),
            np.stack([r["mask"] for r in rs]),
            np.array([r["y"] for r in rs], dtype=np.float64),
        )

    X_tr, M_tr, Y_tr = arrays(parts["train"])
    X_va, M_va, Y_va = arrays(parts["validation"])
    X_te, M_te, Y_te = arrays(parts["test"])
    counts = {k: (len(split[k]), len(parts[k]), int(sum(r["y"] for r in parts[k]))) for k in split}
    C.log(
        "pbc: "
        + ", ".join(f"{k} {a} patients / {b} samples / {c} events" for k, (a, b, c) in counts.items())
        + f" (seed {SPLIT_SEED})"
    )

    # ------------------------------------------------------------ normalisation constants (train+validation)
    def prep_from(X, M):
        real = X[M > 0]  # [n_real_steps, F]
        median = np.nanmedian(real, axis=0)
        filled = np.where(np.isnan(real), median, real)
        log_mask = np.array([f[3] for f in FEATURES])
        tr = np.where(log_mask, np.log(np.clip(filled, 1e-3, None)), filled)
        mean, std = tr.mean(axis=0), tr.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return Prep(median, log_mask, mean, std), dict(median=median, mean=mean, std=std, log=log_mask)

    prep_tr, _ = prep_from(X_tr, M_tr)
    X_trva = np.concatenate([X_tr, X_va])
    M_trva = np.concatenate([M_tr, M_va])
    Y_trva = np.concatenate([Y_tr, Y_va])
    prep_final, consts = prep_from(X_trva, M_trva)

    # ------------------------------------------------------------ Mayo score (validation for reference, test once)
    def mayo_of(rs, X, M):
        # The same binned newest step the models see (after carry-forward); still-missing → median.
        newest = np.stack([X[i, int(np.flatnonzero(M[i])[-1])] for i in range(len(rs))])
        newest = np.where(np.isnan(newest), consts["median"], newest)
        col = {name: j for j, (name, *_r) in enumerate(FEATURES)}
        return mayo_score(
            newest[:, col["age"]],
            newest[:, col["bilirubin"]],
            newest[:, col["albumin"]],
            newest[:, col["protime"]],
            newest[:, col["edema"]],
        )

    mayo_va = mayo_of(parts["validation"], X_va, M_va)
    C.log(f"pbc: Mayo risk score validation AUC {MET.roc_auc(Y_va, mayo_va):.3f}")

    demo_expected = {}
    results = {}
    g_te = np.array([r["pid"] for r in parts["test"]])
    mayo_te = mayo_of(parts["test"], X_te, M_te)
    mayo_auc = MET.roc_auc(Y_te, mayo_te)
    mayo_lo, mayo_hi = MET.cluster_bootstrap_ci(MET.roc_auc, g_te, [Y_te, mayo_te], BOOT_SEED, N_BOOT)

    for kind, model_id, family, title in (
        ("gru", "pbc-gru", "rnn", "PBC 2-year death or transplant (GRU over visit history)"),
        ("attention", "pbc-attention", "attention", "PBC 2-year death or transplant (transformer over visit history)"),
    ):
        tk = time.time()
        model_dir = os.path.join(args.out, "models", model_id)
        # -------------------------------------------------------- tune on validation only
        scores = []
        for cfg in GRIDS[kind]:
            _, val_auc = train(kind, prep_tr, cfg, X_tr, M_tr, Y_tr, MAX_EPOCHS, X_va, M_va, Y_va)
            best_ep = int(np.argmax(np.round(val_auc, 12))) + 1
            scores.append((val_auc[best_ep - 1], best_ep, cfg))
            C.log(f"{model_id}: {cfg} best validation AUC {val_auc[best_ep - 1]:.4f} at epoch {best_ep}")
        best_auc, best_ep, best_cfg = max(scores, key=lambda s: (round(s[0], 12), -scores.index(s)))
        C.log(f"{model_id}: chose {best_cfg}, {best_ep} epochs (validation AUC {best_auc:.4f})")

        # -------------------------------------------------------- refit on train+validation, test once
        model, _ = train(kind, prep_final, best_cfg, X_trva, M_trva, Y_trva, best_ep)
        model.eval()
        p_te = predict(model, X_te, M_te)
        auc = MET.roc_auc(Y_te, p_te)
        auc_lo, auc_hi = MET.cluster_bootstrap_ci(MET.roc_auc, g_te, [Y_te, p_te], BOOT_SEED, N_BOOT)
        acc = MET.accuracy_at(Y_te, p_te)
        acc_lo, acc_hi = MET.cluster_bootstrap_ci(MET.accuracy_at, g_te, [Y_te, p_te], BOOT_SEED, N_BOOT)
        brier = MET.brier_score(Y_te, p_te)
        brier_lo, brier_hi = MET.cluster_bootstrap_ci(MET.brier_score, g_te, [Y_te, p_te], BOOT_SEED, N_BOOT)
        diff_lo, diff_hi = MET.cluster_bootstrap_ci(
            lambda y, a, b: MET.roc_auc(y, a) - MET.roc_auc(y, b), g_te, [Y_te, p_te, mayo_te], BOOT_SEED, N_BOOT
        )
        # Secondary view: one sample per test patient (their latest eligible visit).
        last_idx = [i for i, r in enumerate(parts["test"]) if i == len(parts["test"]) - 1 or parts["test"][i + 1]["pid"] != r["pid"]]
        auc_last = MET.roc_auc(Y_te[last_idx], p_te[last_idx])
        mayo_last = MET.roc_auc(Y_te[last_idx], mayo_te[last_idx])
        rel = MET.reliability_table(Y_te, p_te)
        C.log(
            f"{model_id}: held-out test (n={len(Y_te)} samples, {len(split['test'])} patients): AUC {auc:.3f} "
            f"[{auc_lo:.3f}, {auc_hi:.3f}], accuracy {acc:.3f}, Brier {brier:.4f}; Mayo AUC {mayo_auc:.3f} "
            f"[{mayo_lo:.3f}, {mayo_hi:.3f}]"
        )
        if auc < mayo_auc:
            C.log(f"{model_id}: NOTE held-out AUC {auc:.3f} is below the Mayo score's {mayo_auc:.3f} (reported as measured)")

        # -------------------------------------------------------- export, golden
        gidx = pick_golden(parts["test"], BOOT_SEED)
        onnx_path = os.path.join(model_dir, "1", "model.onnx")
        export_onnx(model, onnx_path, X_te[gidx[:2]], M_te[gidx[:2]])
        ref = reference_outputs(model, X_te[gidx], M_te[gidx])
        f32 = p_te[gidx]
        max_dev = float(np.max(np.abs(ref - f32)))
        cases = [
            {
                "rowId": f"{parts['test'][i]['pid']}@{parts['test'][i]['visit']}",
                "x": nested(X_te[i]),
                "mask": [float(v) for v in M_te[i]],
                "expected": [float(e)],
            }
            for i, e in zip(gidx, ref)
        ]
        A.write_golden_inputs(
            os.path.join(model_dir, "golden.json"),
            model_id,
            ["x", "mask"],
            "p",
            cases,
            note="rowId = patient id @ 0-based visit index (the prediction time); x in raw units, null = missing (send NaN); torch float64 outputs",
        )
        A.write_split(
            os.path.join(model_dir, "split.json"),
            split,
            SPLIT_SEED,
            "R survival::pbcseq (patient ids `id`, as in survival::pbc)",
            "split by patient (one row id = one pbcseq patient id, NOT a row position); grid and epochs scored on validation; final model refit on train+validation; test used once; the same split for pbc-gru and pbc-attention",
        )
        metrics = {
            **A.with_ci("auc", auc, auc_lo, auc_hi),
            **A.with_ci("accuracy", acc, acc_lo, acc_hi),
            "brier": round(brier, 4),
            **A.with_ci("mayoAuc", mayo_auc, mayo_lo, mayo_hi),
            "nTest": int(len(Y_te)),
            "nTestPatients": len(split["test"]),
        }
        A.write_manifest(model_dir, manifest_for(model_id, family, title, metrics, max_batch=256), "KIND_GPU")
        for i, r in enumerate(parts["test"]):
            demo_expected.setdefault((r["pid"], r["visit"]), {})[model_id] = float(p_te[i])
        results[model_id] = dict(
            kind=kind,
            family=family,
            title=title,
            cfg=best_cfg,
            epochs=best_ep,
            val_auc=best_auc,
            scores=scores,
            auc=auc,
            auc_lo=auc_lo,
            auc_hi=auc_hi,
            acc=acc,
            acc_lo=acc_lo,
            acc_hi=acc_hi,
            brier=brier,
            brier_lo=brier_lo,
            brier_hi=brier_hi,
            diff_lo=diff_lo,
            diff_hi=diff_hi,
            auc_last=auc_last,
            mayo_last=mayo_last,
            n_last=len(last_idx),
            events_last=int(Y_te[last_idx].sum()),
            rel=rel,
            max_dev=max_dev,
            n_params=sum(p.numel() for p in model.parameters()),
            seconds=time.time() - tk,
            onnx_bytes=os.path.getsize(onnx_path),
        )
        C.log(f"{model_id}: wrote model, golden ({len(cases)} cases), manifest in {time.time() - tk:.1f} s")

    # ------------------------------------------------------------ cards (both, with each other's figures)
    common = dict(
        counts=counts,
        split=split,
        mayo=(mayo_auc, mayo_lo, mayo_hi),
        mayo_va=MET.roc_auc(Y_va, mayo_va),
        consts=consts,
        results=results,
        prevalence=float(Y_trva.mean()),
    )
    for model_id in results:
        A.write_text(os.path.join(args.out, "models", model_id, "card.md"), render_card(model_id, **common))

    # ------------------------------------------------------------ demo cohort (test patients only)
    test_set = set(split["test"])
    demo_patients = []
    for p in patients:
        if p["id"] not in test_set:
            continue
        samples = [
            {"visitIndex": k, "day": v["day"], "label": label_at(p, v["day"]), "expected": demo_expected[(p["id"], k)]}
            for k, v in enumerate(p["visits"])
            if label_at(p, v["day"]) is not None
        ]
        demo_patients.append(
            {
                "patientId": p["id"],
                "sex": "female" if p["sex"] == "f" else "male",
                "ageAtFirstVisit": p["age"],
                "futime": p["futime"],
                "status": p["status"],
                "visits": [
                    {"day": v["day"], **{name: (None if math.isnan(v[col]) else v[col]) for name, col, *_r in FEATURES[2:]}}
                    for v in p["visits"]
                ],
                "samples": samples,
            }
        )
    demo = {
        "dataset": "Mayo Clinic PBC trial, repeated visits (R survival::pbcseq); Fleming & Harrington 1991",
        "licence": "LGPL (R survival package)",
        "split": "test",
        "splitFile": "models/pbc-gru/split.json",
        "models": list(results),
        "units": {name: unit for name, _c, unit, _l in FEATURES[2:] if unit},
        "notes": [
            "day: days since the patient's first visit (registration); visits are in day order",
            "ascites, hepatomegaly, spiders: 1 present, 0 absent; edema: 0 none, 0.5 untreated or resolved with diuretics, 1 despite diuretics; null = not recorded",
            "status at futime (days since registration): 0 censored, 1 liver transplant, 2 death",
            "samples: each visit usable as a prediction time, with the label (death or transplant within 730 days after it) and the models' probabilities given that visit and the earlier ones",
            "ageAtFirstVisit in years; age at a visit = ageAtFirstVisit + day / 365.25",
        ],
        "patients": demo_patients,
    }
    A.write_json(os.path.join(args.out, "local", "demo", "data", "pbc-heldout.json"), demo)
    C.log(f"pbc: done in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
