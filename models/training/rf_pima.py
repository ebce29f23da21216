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
from rf_pima_card import render_card  # noqa: E402

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
PROTOCOL = cards.Protocol(MODEL_ID, VERSION, SPLIT_SEED, MODEL_SEED, BOOT_SEED, N_BOOT, GRID, TARGET_AUC, CHECK_TOLERANCE)


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
        PROTOCOL,
        FEATURES,
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


if __name__ == "__main__":
    main()
