"""PBC sequence models' data and protocol: the pbcseq export, labels, the binning the manifest
describes (the TypeScript sequence extractor mirrors `bin_visits`), the Mayo risk score, and the
constants that the training script, the manifest and the card share. See pbc_sequences.py."""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifacts as A  # noqa: E402

VERSION = "1.0.0"
SPLIT_SEED = 20240611
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

# Bilirubin, albumin and prothrombin time (the Mayo score's labs) must have been measured at least once.
REQUIRED_LABS = ("bilirubin", "albumin", "protime")
# Output bands, fixed a priori (manifest and card).
BANDS = [
    A.band(0, "info", "pbc-2y-risk-low", "Predicted 2-year risk of death or transplant below 10%"),
    A.band(0.1, "warning", "pbc-2y-risk-elevated", "Predicted 2-year risk of death or transplant 10% or more"),
    A.band(0.3, "critical", "pbc-2y-risk-high", "Predicted 2-year risk of death or transplant 30% or more"),
]


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
