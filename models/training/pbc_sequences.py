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

import copy
import csv
import io
import itertools
import math
import os
import subprocess
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifacts as A  # noqa: E402
import cards  # noqa: E402
import common as C  # noqa: E402
import metrics as MET  # noqa: E402

VERSION = "1.0.0"
SPLIT_SEED = 20240611
TORCH_SEED = 0
BOOT_SEED = 7
N_BOOT = 2000
HORIZON_DAYS = 730
# Binning (the manifest's `step`, `steps`, `carryForward`): see bin_visits.
STEP = "P6M"
STEP_DAYS = 365.25 / 2  # 182.625
STEPS = 16
CARRY = "P2Y"
CARRY_BINS = 4  # P2Y / P6M
# Observations older than the window can still be carried into its oldest bins: fetch
# (steps + carry bins) × step = 10 years back.
LOOKBACK = "P10Y"
ONNX_OPSET_SEQ = 14
CHECK_TOLERANCE = {"auc": 0.005, "brier": 0.005, "accuracy": 0.01}
GOLDEN_CASES = 32
PROJECT = A.PROJECT

# Input feature order (the last axis of `x`). (name, pbcseq column, unit, log in graph)
FEATURES = [
    ("age", "age", "a", False),
    ("sex", "sex", None, False),
    ("bilirubin", "bili", "mg/dL", True),
    ("albumin", "albumin", "g/dL", False),
    ("alk_phos", "alk.phos", "U/L", True),
    ("ast", "ast", "U/L", True),
    ("platelets", "platelet", "10*3/uL", False),
    ("protime", "protime", "s", True),
    ("cholesterol", "chol", "mg/dL", True),
    ("ascites", "ascites", None, False),
    ("hepatomegaly", "hepato", None, False),
    ("spiders", "spiders", None, False),
    ("edema", "edema", None, False),
]
F = len(FEATURES)
LAB_COLS = [f[1] for f in FEATURES[2:]]  # the time-varying features, in x order from index 2
N_LABS = len(LAB_COLS)

LAB_CODES = {
    "bilirubin": A.loinc("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma"),
    "albumin": A.loinc("1751-7", "Albumin [Mass/volume] in Serum or Plasma"),
    "alk_phos": A.loinc("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or Plasma"),
    "ast": A.loinc("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma"),
    "platelets": A.loinc("777-3", "Platelets [#/volume] in Blood by Automated count"),
    "protime": A.loinc("5902-2", "Prothrombin time (PT)"),
    "cholesterol": A.loinc("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"),
    "ascites": A.code("pbc-ascites", "Ascites present"),
    "hepatomegaly": A.code("pbc-hepatomegaly", "Hepatomegaly present"),
    "spiders": A.code("pbc-spiders", "Spider angiomata present"),
    "edema": A.code("pbc-edema", "Edema (Mayo PBC edema score)"),
}
BOOL_MAP = {"true": 1, "false": 0}
EDEMA_MAP = {
    f"{PROJECT}|edema-none": 0,
    f"{PROJECT}|edema-untreated-or-resolved": 0.5,
    f"{PROJECT}|edema-despite-diuretics": 1,
}

R_EXPORT = (
    "suppressMessages(library(survival)); d <- pbcseq; d$sex <- as.character(d$sex); "
    "write.csv(d[order(d$id, d$day), c('id','futime','status','age','sex','day','ascites','hepato','spiders',"
    "'edema','bili','chol','albumin','alk.phos','ast','platelet','protime')], stdout(), row.names = FALSE, na = '')"
)


# ---------------------------------------------------------------- data


def load_pbcseq():
    """pbcseq via Rscript → {id: {futime, status, age, sex, visits: [{day, <lab col>: float|nan}]}}."""
    r = subprocess.run(["Rscript", "-e", R_EXPORT], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"Rscript failed (apt-get install -y r-base-core r-cran-survival):\n{r.stderr}")
    patients = {}
    for row in csv.DictReader(io.StringIO(r.stdout)):
        pid = int(row["id"])
        p = patients.setdefault(
            pid,
            {
                "id": pid,
                "futime": int(row["futime"]),
                "status": int(row["status"]),
                "age": float(row["age"]),
                "sex": row["sex"],
                "visits": [],
            },
        )
        v = {"day": int(row["day"])}
        for col in LAB_COLS:
            v[col] = float(row[col]) if row[col] != "" else math.nan
        p["visits"].append(v)
    for p in patients.values():
        p["visits"].sort(key=lambda v: v["day"])
        assert p["visits"][-1]["day"] <= p["futime"]
    return [patients[k] for k in sorted(patients)]


def label_at(p, day):
    """1 = death (status 2) or transplant (status 1) within HORIZON_DAYS after `day`; 0 = no
    event in that window and followed beyond it; None = censored inside the window (excluded)."""
    gap = p["futime"] - day
    if p["status"] in (1, 2) and gap <= HORIZON_DAYS:
        return 1
    if gap > HORIZON_DAYS:
        return 0
    return None


def bin_visits(visits, age_years, female):
    """The binned representation the manifest describes (the TypeScript extractor mirrors it).

    t_ref = the newest visit's day (the prediction time). A value observed at day t goes to
    bin j = floor((t_ref - t) / 182.625 + 0.5) (nearest whole number of P6M steps back; the
    newest is bin 0); bins j >= STEPS are dropped. Tensor step T-1-j holds bin j (newest last).
    Per feature the latest value in a bin wins. mask = 1 for a bin with at least one lab value.
    A feature missing in a masked bin takes its value from the nearest older bin (any bin index,
    including those beyond the window) at most CARRY_BINS bins older; else NaN (imputed inside
    the graph). age = age at t_ref in years, sex 1 female 0 male, on every masked step.
    Unmasked steps are all 0. Returns x [STEPS, F] float64 (NaN = missing), mask [STEPS]."""
    t_ref = visits[-1]["day"]
    n_bins = int(math.floor((t_ref - visits[0]["day"]) / STEP_DAYS + 0.5)) + 1
    vals = np.full((n_bins, N_LABS), np.nan)
    times = np.full((n_bins, N_LABS), -np.inf)
    has = np.zeros(n_bins, dtype=bool)
    for v in visits:
        j = int(math.floor((t_ref - v["day"]) / STEP_DAYS + 0.5))
        for k, col in enumerate(LAB_COLS):
            val = v[col]
            if not math.isnan(val):
                has[j] = True
                if v["day"] >= times[j, k]:
                    vals[j, k] = val
                    times[j, k] = v["day"]
    x = np.zeros((STEPS, F))
    mask = np.zeros(STEPS)
    for j in range(min(n_bins, STEPS)):
        if not has[j]:
            continue
        row = vals[j].copy()
        for k in range(N_LABS):
            if math.isnan(row[k]):
                for jj in range(j + 1, min(n_bins, j + CARRY_BINS + 1)):
                    if not math.isnan(vals[jj, k]):
                        row[k] = vals[jj, k]
                        break
        t = STEPS - 1 - j
        mask[t] = 1.0
        x[t, 0] = age_years
        x[t, 1] = 1.0 if female else 0.0
        x[t, 2:] = row
    return x, mask


def build_samples(patients):
    """One sample per (patient, visit) with a defined label."""
    rows = []
    for p in patients:
        for k, v in enumerate(p["visits"]):
            y = label_at(p, v["day"])
            if y is None:
                continue
            age = p["age"] + v["day"] / 365.25
            x, m = bin_visits(p["visits"][: k + 1], age, p["sex"] == "f")
            rows.append({"pid": p["id"], "visit": k, "day": v["day"], "y": y, "x": x, "mask": m, "age": age, "v": v})
    return rows


def mayo_score(age, bili, albumin, protime, edema):
    """Published Mayo PBC risk score (Dickson et al. 1989), natural logs."""
    return 0.871 * np.log(bili) - 2.53 * np.log(albumin) + 0.039 * age + 2.38 * np.log(protime) + 0.859 * edema


# ---------------------------------------------------------------- models


class Prep(nn.Module):
    """Inside the graph: NaN → training median (raw units), ln of skewed labs, standardisation
    with training constants, unmasked steps zeroed."""

    def __init__(self, median, log_mask, mean, std):
        super().__init__()
        self.register_buffer("median", torch.tensor(median, dtype=torch.float32))
        self.register_buffer("logf", torch.tensor(log_mask, dtype=torch.bool))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x, mask):
        x = torch.where(torch.isnan(x), self.median, x)
        x = torch.where(self.logf, torch.log(torch.clamp(x, min=1e-3)), x)
        z = (x - self.mean) / self.std
        real = mask.unsqueeze(-1) > 0.5
        z = torch.where(real, z, torch.zeros_like(z))
        return z


def last_valid(t, mask):
    """Rows of t [N, T, D] at each sequence's last step with mask 1 (by mask, not by T-1)."""
    T = mask.shape[1]
    pos = torch.arange(T, dtype=mask.dtype).unsqueeze(0) + 1.0
    idx = ((mask * pos).max(dim=1).values - 1.0).clamp(min=0.0).long()
    return torch.gather(t, 1, idx.view(-1, 1, 1).expand(-1, 1, t.shape[2])).squeeze(1)


class Head(nn.Module):
    """Logit = MLP([summary, newest step]) + linear(newest step)."""

    def __init__(self, d, hidden, dropout):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d + F, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.lin = nn.Linear(F, 1)

    def forward(self, summary, newest):
        return self.mlp(torch.cat([summary, newest], dim=1)) + self.lin(newest)


class GruModel(nn.Module):
    """GRU over the steps from newest to oldest (so left padding never reaches the gathered
    state: invariant to how many empty steps precede the first visit), state gathered at the
    last valid step of the reversed sequence by mask."""

    def __init__(self, prep, hidden, dropout):
        super().__init__()
        self.prep = prep
        self.gru = nn.GRU(F + 1, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = Head(hidden, 16, dropout)

    def forward(self, x, mask):
        z = self.prep(x, mask)
        inp = torch.cat([z, mask.unsqueeze(-1)], dim=2)
        out, _ = self.gru(torch.flip(inp, dims=[1]))
        h = last_valid(out, torch.flip(mask, dims=[1]))
        newest = last_valid(z, mask)
        return torch.sigmoid(self.head(self.drop(h), newest))


class AttnModel(nn.Module):
    """2-layer transformer encoder, key padding mask from `mask`, position = bins back from the
    newest step (learned embedding), masked mean pooling."""

    def __init__(self, prep, d_model, dropout):
        super().__init__()
        self.prep = prep
        self.proj = nn.Linear(F + 1, d_model)
        self.pos = nn.Embedding(STEPS, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 4, 2 * d_model, dropout, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = Head(d_model, 16, dropout)

    def forward(self, x, mask):
        z = self.prep(x, mask)
        T = mask.shape[1]
        back = torch.clamp(T - 1 - torch.arange(T), max=STEPS - 1)
        e = self.proj(torch.cat([z, mask.unsqueeze(-1)], dim=2)) + self.pos(back).unsqueeze(0)
        h = self.enc(e, src_key_padding_mask=mask < 0.5)
        w = mask.unsqueeze(-1)
        pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)
        newest = last_valid(z, mask)
        return torch.sigmoid(self.head(pooled, newest))


def make_model(kind, prep, cfg):
    torch.manual_seed(TORCH_SEED)
    if kind == "gru":
        return GruModel(copy.deepcopy(prep), cfg["hidden"], cfg["dropout"])
    return AttnModel(copy.deepcopy(prep), cfg["hidden"], cfg["dropout"])


def predict(model, X, M):
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(X, dtype=torch.float32), torch.tensor(M, dtype=torch.float32)).numpy().reshape(-1)


def train(kind, prep, cfg, X, M, Y, epochs, X_val=None, M_val=None, Y_val=None):
    """Adam + BCE, batch 64, seeded shuffles. With validation data, returns the per-epoch
    validation AUCs too (the epoch count is chosen on them)."""
    model = make_model(kind, prep, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wd"])
    gen = torch.Generator().manual_seed(TORCH_SEED)
    Xt = torch.tensor(X, dtype=torch.float32)
    Mt = torch.tensor(M, dtype=torch.float32)
    Yt = torch.tensor(Y, dtype=torch.float32).view(-1, 1)
    loss_fn = nn.BCELoss()
    val_auc = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(Yt), generator=gen)
        for b in range(0, len(perm), 64):
            idx = perm[b : b + 64]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx], Mt[idx]), Yt[idx])
            loss.backward()
            opt.step()
        if X_val is not None:
            val_auc.append(MET.roc_auc(Y_val, predict(model, X_val, M_val)))
    return model, val_auc


GRIDS = {
    "gru": [
        {"hidden": h, "dropout": 0.1, "lr": 3e-3, "wd": wd}
        for h, wd in itertools.product([16, 32], [1e-4, 1e-3])
    ],
    "attention": [
        {"hidden": d, "dropout": 0.1, "lr": 1e-3, "wd": wd}
        for d, wd in itertools.product([16, 32], [1e-4, 1e-3])
    ],
}
MAX_EPOCHS = 40


# ---------------------------------------------------------------- export


def export_onnx(model, path, X_example, M_example):
    model.eval()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(
        model,
        (torch.tensor(X_example, dtype=torch.float32), torch.tensor(M_example, dtype=torch.float32)),
        path,
        input_names=["x", "mask"],
        output_names=["p"],
        opset_version=ONNX_OPSET_SEQ,
        dynamic_axes={"x": {0: "N", 1: "T"}, "mask": {0: "N", 1: "T"}, "p": {0: "N"}},
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(path), full_check=True)


def reference_outputs(model, X, M):
    """The framework's float64 outputs for the golden cases."""
    m64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        return m64(torch.tensor(X, dtype=torch.float64), torch.tensor(M, dtype=torch.float64)).numpy().reshape(-1)


def pick_golden(test_rows, seed):
    """GOLDEN_CASES test samples with varied numbers of real steps (and some with a NaN left
    after carry-forward, to exercise the in-graph imputation)."""
    rng = np.random.RandomState(seed)
    n_real = np.array([int(r["mask"].sum()) for r in test_rows])
    has_nan = np.array([bool(np.isnan(r["x"][r["mask"] > 0]).any()) for r in test_rows])
    chosen = []
    for k in sorted(set(n_real.tolist())):  # one per length first
        cand = np.flatnonzero((n_real == k) & ~np.isin(np.arange(len(test_rows)), chosen))
        if len(cand):
            chosen.append(int(rng.choice(cand)))
    for i in rng.permutation(np.flatnonzero(has_nan))[:4]:
        if int(i) not in chosen:
            chosen.append(int(i))
    rest = [i for i in rng.permutation(len(test_rows)) if int(i) not in chosen]
    chosen += [int(i) for i in rest[: max(0, GOLDEN_CASES - len(chosen))]]
    return sorted(chosen[:GOLDEN_CASES])


def nested(x):
    """x with NaN → None (JSON null = missing; parity.mjs sends NaN)."""
    return [[None if math.isnan(v) else float(v) for v in row] for row in x]


# ---------------------------------------------------------------- manifest and card


REQUIRED_LABS = ("bilirubin", "albumin", "protime")
# Output bands, fixed a priori (manifest and card).
BANDS = [
    A.band(0, "info", "pbc-2y-risk-low", "Predicted 2-year risk of death or transplant below 10%"),
    A.band(0.1, "warning", "pbc-2y-risk-elevated", "Predicted 2-year risk of death or transplant 10% or more"),
    A.band(0.3, "critical", "pbc-2y-risk-high", "Predicted 2-year risk of death or transplant 30% or more"),
]


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


# ---------------------------------------------------------------- card


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


if __name__ == "__main__":
    main()
