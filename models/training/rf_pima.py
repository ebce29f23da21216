"""Random forest for diabetes (onset) in Pima Indian women, with missing values imputed
inside the ONNX graph.

    /usr/bin/python3 models/training/rf_pima.py [--out ROOT]

Writes, under ROOT (default: the repository):
  models/diabetes-onset-rf/{split.json, manifest.json, config.pbtxt, 1/model.onnx, golden.json, card.md}
  local/demo/data/pima-heldout.json   (the held-out test rows, for the demo cohort)

Data: `data(PimaIndiansDiabetes2, package = "mlbench")` (Debian r-cran-mlbench), exported to
a temporary CSV with Rscript at train time (nothing of it is committed except the held-out
demo rows). Missing values (NA) stay missing.

Protocol: a fixed stratified 60/20/20 train/validation/test split of the 768 women (seeded);
a grid of forests (median imputation → RandomForestClassifier) fitted on train and scored by
AUC on validation only; a refit of the chosen setting on train+validation (medians of
train+validation); ONE evaluation on test (AUC, accuracy, Brier score with
percentile-bootstrap 95% CIs, reliability table).

ONNX: ai.onnx.ml Imputer (NaN → the train+validation medians) → TreeEnsembleClassifier
(leaf class probability / n_trees, post_transform NONE) = sklearn's predict_proba.
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import tempfile
import time

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifacts as A  # noqa: E402
import cards  # noqa: E402
import common as C  # noqa: E402
import metrics as MET  # noqa: E402

MODEL_ID = "diabetes-onset-rf"
VERSION = "1.0.0"
SPLIT_SEED = 20240603
MODEL_SEED = 0
BOOT_SEED = 7
N_BOOT = 2000
# `npm run train -- --check` tolerances (models/training/run.mjs TOLERANCES; keep in sync).
CHECK_TOLERANCE = {"auc": 0.005, "accuracy": 0.01, "brier": 0.005}
TARGET_AUC = 0.82

GRID = {
    "n_estimators": [300],
    "max_features": ["sqrt", 0.5],
    "min_samples_leaf": [1, 3, 5, 10, 20],
    "max_depth": [None, 6],
}


# Feature order = the column order of the input tensor `x` = mlbench's column order.
# (name, mlbench column, unit, description)
FEATURES = [
    ("pregnancies", "pregnant", "{#}", "number of times pregnant"),
    ("glucose_2h_ogtt", "glucose", "mg/dL", "plasma glucose 2 h after a 75 g oral glucose load"),
    ("diastolic_bp", "pressure", "mm[Hg]", "diastolic blood pressure"),
    ("triceps_skinfold", "triceps", "mm", "triceps skin fold thickness"),
    ("insulin_2h", "insulin", "u[IU]/mL", "2-hour serum insulin (µU/mL)"),
    ("bmi", "mass", "kg/m2", "body mass index"),
    ("diabetes_pedigree", "pedigree", "1", "diabetes pedigree function (family history score)"),
    ("age", "age", "a", "age in years"),
]
R_EXPR = "data(PimaIndiansDiabetes2, package = 'mlbench'); .d <- PimaIndiansDiabetes2"


def load_pima() -> tuple:
    """(X float64 with NaN for NA, y 1 = diabetes 'pos') from the installed mlbench package."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pima.csv")
        C.rscript_csv(R_EXPR, path)
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == [f[1] for f in FEATURES] + ["diabetes"], header
    X = np.array([[np.nan if v == "NA" else float(v) for v in r[:-1]] for r in body], dtype=np.float64)
    labels = [r[-1] for r in body]
    assert set(labels) == {"neg", "pos"}
    y = np.array([1 if v == "pos" else 0 for v in labels], dtype=int)
    return X, y


def pipeline(**params) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("rf", RandomForestClassifier(random_state=MODEL_SEED, n_jobs=1, **params)),
        ]
    )


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0])
    t0 = time.time()
    model_dir = os.path.join(args.out, "models", MODEL_ID)
    demo_path = os.path.join(args.out, "local", "demo", "data", "pima-heldout.json")

    # ------------------------------------------------------------ data and split
    X, y = load_pima()
    n = len(y)
    assert X.shape == (768, 8), X.shape
    missing = {name: int(np.isnan(X[:, j]).sum()) for j, (name, _, _, _) in enumerate(FEATURES)}
    split = A.split_rows(n, SPLIT_SEED, (0.6, 0.2, 0.2), ("train", "validation", "test"), stratify=y)
    tr, va, te = (np.asarray(split[k]) for k in ("train", "validation", "test"))
    C.log(f"{MODEL_ID}: {n} women ({int(y.sum())} diabetes), split train {len(tr)} / validation {len(va)} / test {len(te)} (seed {SPLIT_SEED}); missing {missing}")
    A.write_split(
        os.path.join(model_dir, "split.json"),
        split,
        SPLIT_SEED,
        "R: data(PimaIndiansDiabetes2, package = 'mlbench') (row order as shipped)",
        "stratified by diabetes; grid scored on validation; final model refit on train+validation; test used once",
    )

    # ------------------------------------------------------------ tune on validation only
    keys = list(GRID)
    scores = []
    for values in itertools.product(*(GRID[k] for k in keys)):
        params = dict(zip(keys, values))
        m = pipeline(**params).fit(X[tr], y[tr])
        p = m.predict_proba(X[va])[:, 1]
        scores.append((MET.auc_score(y[va], p), MET.log_loss_score(y[va], p), params))
    # Highest validation AUC; ties (to 1e-12) go to the earlier grid entry.
    best_auc_va, best_ll_va, best = max(scores, key=lambda s: (round(s[0], 12), -scores.index(s)))
    C.log(f"{MODEL_ID}: grid of {len(scores)} settings; best validation AUC {best_auc_va:.4f} (log loss {best_ll_va:.4f}) with {best}")

    # ------------------------------------------------------------ refit on train+validation, test once
    trva = np.sort(np.concatenate([tr, va]))
    model = pipeline(**best).fit(X[trva], y[trva])
    imputer, rf = model.named_steps["impute"], model.named_steps["rf"]
    proba_te = model.predict_proba(X[te])
    p_te = proba_te[:, 1]
    y_te = y[te]
    met = MET.classification_metrics(y_te, p_te, BOOT_SEED, N_BOOT)
    rel = MET.tab_reliability_table(y_te, p_te)
    medians = [float(v) for v in imputer.statistics_]
    te_missing = int(np.isnan(X[te]).any(axis=1).sum())
    # Complete-case subgroup of test (reported, not tuned on).
    cc = ~np.isnan(X[te]).any(axis=1)
    auc_cc = MET.auc_score(y_te[cc], p_te[cc]) if 0 < y_te[cc].sum() < cc.sum() else float("nan")
    C.log(
        f"{MODEL_ID}: held-out test (n={len(te)}): AUC {met['auc']:.4f} [{met['auc_lo']:.4f}, {met['auc_hi']:.4f}], "
        f"accuracy {met['accuracy']:.4f} [{met['accuracy_lo']:.4f}, {met['accuracy_hi']:.4f}], Brier {met['brier']:.4f}"
    )
    if met["auc"] < TARGET_AUC:
        C.log(f"{MODEL_ID}: NOTE held-out AUC {met['auc']:.4f} is below the {TARGET_AUC} target (reported as measured)")
    # Context for the held-out figure (neither is used to choose anything): 5-fold CV AUC of
    # the chosen setting on train+validation, and an untuned logistic regression reference
    # fitted on train+validation and scored on the same test rows.
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=MODEL_SEED)
    cv_aucs = [
        MET.auc_score(y[trva][b], pipeline(**best).fit(X[trva][a], y[trva][a]).predict_proba(X[trva][b])[:, 1])
        for a, b in cv.split(X[trva], y[trva])
    ]
    lr = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=1000))
    auc_lr = MET.auc_score(y_te, lr.fit(X[trva], y[trva]).predict_proba(X[te])[:, 1])
    C.log(f"{MODEL_ID}: context: 5-fold CV AUC on train+validation {np.mean(cv_aucs):.4f} ± {np.std(cv_aucs):.4f}; logistic-regression reference test AUC {auc_lr:.4f}")
    importances = sorted(
        ((FEATURES[j][0], float(v)) for j, v in enumerate(rf.feature_importances_)), key=lambda t: -t[1]
    )

    # ------------------------------------------------------------ ONNX (Imputer → TreeEnsembleClassifier)
    onnx_model = C.rf_classifier_to_onnx(
        rf,
        X.shape[1],
        "x",
        "probabilities",
        impute_values=medians,
        doc=f"{MODEL_ID} {VERSION}: SimpleImputer(median) + RandomForestClassifier {best}; output [negative, positive]",
    )
    onnx_path = os.path.join(model_dir, "1", "model.onnx")
    C.save_onnx(onnx_model, onnx_path)
    C.log(f"{MODEL_ID}: wrote {os.path.relpath(onnx_path, args.out)} ({os.path.getsize(onnx_path)} bytes), check_model ok")

    # ------------------------------------------------------------ golden (all test rows; null = missing → NaN)
    cases = A.tabular_cases(te, X, [[float(a), float(b)] for a, b in proba_te])
    A.write_golden(os.path.join(model_dir, "golden.json"), MODEL_ID, "x", "probabilities", cases)

    # ------------------------------------------------------------ manifest
    def obs(name, codes, unit, required):
        lookback = "P1Y" if name != "pregnancies" else "P5Y"
        imputation = {"strategy": "none"} if required else {"strategy": "nan"}
        return A.observation_feature(name, codes, unit, required, lookback=lookback, imputation=imputation)

    codes = {
        "pregnancies": [A.loinc("11996-6", "[#] Pregnancies")],
        "glucose_2h_ogtt": [A.loinc("20438-8", "Glucose [Mass/volume] in Serum or Plasma --2 hours post 75 g glucose PO")],
        "diastolic_bp": [A.loinc("8462-4", "Diastolic blood pressure")],
        "triceps_skinfold": [A.loinc("39106-0", "Triceps skinfold thickness")],
        "insulin_2h": [A.loinc("20448-7", "Insulin [Units/volume] in Serum or Plasma")],
        "bmi": [A.loinc("39156-5", "Body mass index (BMI) [Ratio]")],
        "diabetes_pedigree": [A.code("diabetes-pedigree-function", "Diabetes pedigree function (Smith et al. 1988)")],
    }
    features = [
        obs("pregnancies", codes["pregnancies"], "{#}", False),
        {**obs("glucose_2h_ogtt", codes["glucose_2h_ogtt"], "mg/dL", True), "molecularWeight": 180.156},
        obs("diastolic_bp", codes["diastolic_bp"], "mm[Hg]", False),
        obs("triceps_skinfold", codes["triceps_skinfold"], "mm", False),
        obs("insulin_2h", codes["insulin_2h"], "u[IU]/mL", False),
        obs("bmi", codes["bmi"], "kg/m2", False),
        obs("diabetes_pedigree", codes["diabetes_pedigree"], "1", False),
        A.patient_age(),
    ]
    assert [f["name"] for f in features] == [f[0] for f in FEATURES]
    metrics = {**A.all_with_ci(met, ("auc", "accuracy", "brier")), "nTest": int(len(te))}
    serving_inputs = [{"name": "x", "datatype": "FP32", "dims": [len(FEATURES)]}]
    serving_outputs = [{"name": "probabilities", "datatype": "FP32", "dims": [2]}]
    max_batch = 1024

    manifest = {
        "id": MODEL_ID,
        "version": VERSION,
        "family": "rf",
        "task": "classification",
        "title": "Diabetes in adult Pima Indian women from OGTT glucose and clinical measurements (random forest)",
        "intendedUse": (
            "Research and pipeline demonstration: estimates the probability that a woman aged 21 or "
            "over of Pima Indian heritage has (or, in the original study, develops within five years) "
            "diabetes by WHO criteria, from the 2-hour OGTT glucose, age and up to six further "
            "measurements; missing optional measurements are imputed inside the model."
        ),
        "notForClinicalUse": True,
        "triggers": [{"resourceType": "Observation", "codes": codes["glucose_2h_ogtt"]}],
        "input": {"kind": "tabular", "tensor": "x", "features": features},
        "output": A.probability_output(
            "probabilities",
            [
                A.label("diabetes-onset-negative", "No diabetes (PimaIndiansDiabetes2 'neg')"),
                A.label("diabetes-onset-positive", "Diabetes (PimaIndiansDiabetes2 'pos')"),
            ],
            [
                A.band(0, "info", "diabetes-onset-risk-low", "Low modelled probability of diabetes"),
                A.band(0.5, "warning", "diabetes-onset-risk-elevated", "Elevated modelled probability of diabetes"),
                A.band(0.8, "critical", "diabetes-onset-risk-high", "High modelled probability of diabetes"),
            ],
            A.code("diabetes-onset-rf-probability", "Probability of diabetes (Pima random forest)"),
        ),
        "report": A.report("diabetes-onset-rf-report", "Diabetes onset model report", A.LAB),
        "serving": A.serving(MODEL_ID, "ml.c6i.xlarge", max_batch, serving_inputs, serving_outputs),
        "metrics": metrics,
    }
    A.write_manifest(model_dir, manifest, "KIND_CPU")

    # ------------------------------------------------------------ demo cohort source rows (test only)
    demo = {
        **A.demo_source(
            "Pima Indians Diabetes, R mlbench PimaIndiansDiabetes2 (zeros recoded as NA)",
            "mlbench (Debian r-cran-mlbench), GPL-2; data originally from the National Institute of Diabetes and Digestive and Kidney Diseases via the UCI Machine Learning Repository",
            MODEL_ID,
        ),
        "labels": ["negative", "positive"],
        "columns": [
            {"name": name, "rName": rn, "unit": unit, "description": desc} for name, rn, unit, desc in FEATURES
        ],
        "notes": [
            "one row = one woman (Pima Indian heritage, aged 21 or over)",
            "null = missing in the source (NA): write no Observation for it",
            "label: 1 = diabetes ('pos'), 0 = no diabetes ('neg')",
            "insulin is in µU/mL (UCUM u[IU]/mL); glucose is the 2-hour OGTT value (LOINC 20438-8)",
        ],
        "rows": [
            {
                "rowId": int(r),
                "values": {name: A.raw_value(X[r, j]) for j, (name, _, _, _) in enumerate(FEATURES)},
                "label": int(y[r]),
            }
            for r in te
        ],
    }
    A.write_json(demo_path, demo)

    # ------------------------------------------------------------ card
    card = render_card(
        best=best,
        best_auc_va=best_auc_va,
        n_grid=len(scores),
        split=split,
        y=y,
        X=X,
        met=met,
        rel=rel,
        medians=medians,
        missing=missing,
        te_missing=te_missing,
        auc_cc=auc_cc,
        n_cc=int(cc.sum()),
        importances=importances,
        cv_aucs=cv_aucs,
        auc_lr=auc_lr,
        n_trees=len(rf.estimators_),
        n_nodes=int(sum(e.tree_.node_count for e in rf.estimators_)),
        p_te=p_te,
        thresholds=manifest["output"]["thresholds"],
        onnx_bytes=os.path.getsize(onnx_path),
    )
    A.write_text(os.path.join(model_dir, "card.md"), card)
    C.log(f"{MODEL_ID}: wrote {os.path.relpath(model_dir, args.out)}/ and {os.path.relpath(demo_path, args.out)} in {time.time() - t0:.1f} s")


def render_card(**k) -> str:
    m = k["met"]
    s = k["split"]
    y = k["y"]
    f = cards.fmt
    best = k["best"]
    med = k["medians"]
    miss = k["missing"]
    counts = {part: (len(ids), int(y[np.asarray(ids)].sum())) for part, ids in s.items()}
    source = {
        "pregnancies": "LOINC 11996-6 [#] Pregnancies",
        "glucose_2h_ogtt": "LOINC 20438-8 Glucose 2 h post 75 g glucose PO (MW 180.156 for mmol/L)",
        "diastolic_bp": "LOINC 8462-4 Diastolic blood pressure (also as a BP-panel component)",
        "triceps_skinfold": "LOINC 39106-0 Triceps skinfold thickness",
        "insulin_2h": "LOINC 20448-7 Insulin in serum or plasma",
        "bmi": "LOINC 39156-5 BMI",
        "diabetes_pedigree": "`urn:fhir-analytics:code` `diabetes-pedigree-function`",
        "age": "`patient.age` (from birthDate)",
    }
    rows = []
    for j, (name, rn, unit, _) in enumerate(FEATURES):
        if name == "glucose_2h_ogtt":
            req = f"required by the manifest (the graph would impute NaN with {f(med[j], 1)})"
        elif name == "age":
            req = "required"
        else:
            req = f"optional: NaN → in-graph median {f(med[j], 3 if name == 'diabetes_pedigree' else 1)}"
        rows.append(f"| {j} | {name} (`{rn}`) | {source[name]} | `{unit}` | {miss[name]} | {req} |")
    miss_note = (
        ""
        if m["auc"] >= TARGET_AUC
        else f"""

**The AUC target is missed** on this test split. The figures point at the small test set
(these rows look harder than the rest) more than at the forest: the interval [{f(m['auc_lo'], 3)}, {f(m['auc_hi'], 3)}] includes
{TARGET_AUC}, cross-validation within train+validation gives {f(float(np.mean(k['cv_aucs'])), 3)}, and the untuned
logistic regression also scores only {f(k['auc_lr'], 3)} on these rows. The split, grid and model
were not changed after the test figure was seen; the miss stands as measured."""
    )
    imp = ", ".join(f"{name} {f(v, 3)}" for name, v in k["importances"])
    return f"""{cards.header(MODEL_ID, VERSION)}

## What it does

A random forest (scikit-learn `RandomForestClassifier`, preceded by median imputation)
that estimates the probability of diabetes in an adult woman of Pima Indian heritage from
the 2-hour oral glucose tolerance test (OGTT) glucose, age and up to six further
measurements. Served as ONNX-ML (`ai.onnx.ml` opset 3, ONNX opset 17): input `x` FP32
`[N, 8]` in raw units with **NaN for a missing value**, an `Imputer` that replaces NaN
with the train+validation medians, then a `TreeEnsembleClassifier`; output
`probabilities` FP32 `[N, 2]` = (negative, positive), the positive class last. Triton
`onnxruntime` backend on CPU (`KIND_CPU`, `ml.c6i.xlarge`): ONNX-ML operators run on CPU
only. The manifest therefore sends optional features with imputation strategy `nan`.

## Data

- Source: Pima Indians Diabetes Database (National Institute of Diabetes and Digestive
  and Kidney Diseases; J. W. Smith et al., "Using the ADAP learning algorithm to forecast
  the onset of diabetes mellitus", Proc. Symp. Computer Applications in Medical Care,
  1988, 261–265), as `PimaIndiansDiabetes2` in the R package mlbench (Debian
  `r-cran-mlbench`, GPL-2), exported at train time with `Rscript` to a temporary CSV (not
  committed). `PimaIndiansDiabetes2` is the corrected version in which physiologically
  impossible zeros are recoded as missing (NA).
- Cohort: {len(y)} women aged 21 or over of Pima Indian heritage (Gila River Indian
  Community, Arizona); {int(y.sum())} ({f(100 * y.mean(), 1)}%) labelled `pos` (diabetes by WHO criteria at
  a follow-up examination; the source's exact timing of onset is not documented per row).
- Missing values: {', '.join(f'{name} {v}' for name, v in miss.items() if v)} of {len(y)}
  rows; {k['te_missing']} of {counts['test'][0]} test rows have at least one missing value.
- Split (seed {SPLIT_SEED}, stratified by label, row ids in `split.json` = 0-based row
  positions in `PimaIndiansDiabetes2`): train {counts['train'][0]} ({counts['train'][1]} pos), validation
  {counts['validation'][0]} ({counts['validation'][1]}), test {counts['test'][0]} ({counts['test'][1]}) (60/20/20).

## Features (tensor column order)

| # | name (mlbench) | FHIR source and code | unit | missing in source | |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Observation features: latest value within P1Y (pregnancies: P5Y). Notes on the codes:
- Glucose is the 2-hour OGTT value, so only LOINC 20438-8 matches (not a random or
  fasting glucose, 2345-7 / 1558-6); it is required, and it triggers the model.
- Insulin: the source is 2-hour serum insulin in µU/mL = UCUM `u[IU]/mL`. LOINC 20448-7
  is insulin in serum or plasma without the 2-hour timing, so any insulin result matches;
  a fasting insulin is not what the model was trained on. UCUM `[IU]` is an arbitrary
  unit: the converter does not convert `m[IU]/L` (numerically equal) to `u[IU]/mL`, so an
  Observation in `m[IU]/L` is skipped as unconvertible and, with no other value, the
  feature goes to the graph as NaN and is imputed.
- The diabetes pedigree function is a family-history score defined for this study; no
  EHR will hold it under any standard code, so it is optional and almost always imputed
  in practice (project code `diabetes-pedigree-function`, unitless).
- Pregnancies is optional and imputed when absent (all training rows are women).

## Training

- Grid of {k['n_grid']} settings (n_estimators {GRID['n_estimators']}, max_features {GRID['max_features']},
  min_samples_leaf {GRID['min_samples_leaf']}, max_depth {GRID['max_depth']}; random_state {MODEL_SEED}), each
  median imputation (medians of train) + forest fitted on train and scored by AUC on
  validation only.
- Chosen: {', '.join(f'{key}={val}' for key, val in best.items())} (validation AUC {f(k['best_auc_va'], 4)}).
- Final model refit with those settings on train+validation ({counts['train'][0] + counts['validation'][0]} women; medians recomputed
  on them): {k['n_trees']} trees, {k['n_nodes']} nodes, ONNX file {k['onnx_bytes']} bytes. The test rows were used once, for the
  figures below.
- Impurity-based feature importances (train+validation): {imp}.

## Held-out performance (test, n = {counts['test'][0]}, {counts['test'][1]} positive, evaluated once)

{cards.metric_table(cards.classification_rows(m, "accuracy (positive if p ≥ 0.5)"))}

Percentile bootstrap over test rows, {N_BOOT} resamples, seed {BOOT_SEED}. Target was
AUC ≥ {TARGET_AUC}: {'met' if m['auc'] >= TARGET_AUC else 'NOT met'}. For reference (not tuned on): AUC on the {k['n_cc']}
complete-case test rows {f(k['auc_cc'], 4)}; 5-fold cross-validated AUC of the chosen setting
within train+validation {f(float(np.mean(k['cv_aucs'])), 4)} (fold SD {f(float(np.std(k['cv_aucs'])), 4)}); an untuned logistic regression
(median imputation, standardisation) fitted on train+validation scores test AUC
{f(k['auc_lr'], 4)} on the same rows. Neither figure chose anything. Prevalence in test is {f(100 * counts['test'][1] / counts['test'][0], 1)}%, so predicting
"negative" for everyone scores an accuracy of {f(1 - counts['test'][1] / counts['test'][0], 4)}.{miss_note}

### Calibration (test)

{cards.tab_reliability_markdown(k['rel'])}

A random forest's averaged leaf frequencies are not a fitted probability model; they were
not recalibrated.

## Output bands

{cards.bands_table("P(diabetes)", k['thresholds'], counts_label="test women", p=k['p_te'])}

Fixed probability cut-offs for the demonstration, not clinical decision thresholds.

## Export and parity

`models/training/common.py` (`rf_classifier_to_onnx`) writes an `Imputer`
(`replaced_value_float` NaN, `imputed_value_floats` = the medians) and a
`TreeEnsembleClassifier` with `BRANCH_LEQ` on float32 thresholds (each sklearn float64
threshold rounded down to the largest float32 not above it, so float32 inputs take
exactly sklearn's branches, as sklearn itself casts inputs to float32), every leaf
carrying both classes' weights = leaf class frequency / {k['n_trees']}, `post_transform` NONE: the
sum over trees is sklearn's averaged `predict_proba`. The label output is computed but
not exposed. `golden.json` holds every test row in raw units (`null` = missing, sent as
NaN) with sklearn's float64 `predict_proba`; `npm run train` and
`test/unit/model-parity.test.ts` require onnxruntime to match within
1e-4 × max(1, |expected|). `npm run train -- --check` retrains into a temporary directory
and fails if held-out AUC moves by more than {CHECK_TOLERANCE['auc']}, accuracy by more than
{CHECK_TOLERANCE['accuracy']} or Brier score by more than {CHECK_TOLERANCE['brier']} from `manifest.json`'s `metrics`.

## Serving figures

GPU latency and throughput: not measured (tree model, served on CPU).

## Intended use and limitations

- Intended use: demonstrating the FHIR → features → inference → DiagnosticReport
  pipeline with a real, public data set, including in-graph handling of missing values.
  Not for clinical use.
- One population ({len(y)} women of one community, examined decades ago); not transportable to
  men, to other populations or to current diagnostic criteria (HbA1c).
- Many values are missing in the source (insulin in about half the rows), and
  missingness is not at random; median imputation ignores that. A deployed FHIR record
  will usually lack the pedigree function and the skinfold, so real inputs are imputed far
  more often than the training data were.
- The label mixes prevalent and incident diabetes as the source defines it; "onset" in the
  model's name follows the data set's usual description.
- The wide bootstrap intervals reflect the small test set (n = {counts['test'][0]}).
"""


if __name__ == "__main__":
    main()
