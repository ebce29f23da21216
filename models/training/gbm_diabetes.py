"""Gradient-boosting regressor for diabetes progression (Efron et al. 2004 data).

    /usr/bin/python3 models/training/gbm_diabetes.py [--out ROOT]

Writes, under ROOT (default: the repository):
  models/diabetes-gbm/{split.json, manifest.json, config.pbtxt, 1/model.onnx, golden.json, card.md}
  local/demo/data/diabetes-heldout.json   (the held-out test rows, for the demo cohort)

Protocol: a fixed 60/20/20 train/validation/test split of the 442 patients (seeded),
a small hyper-parameter grid scored on validation only, a refit of the chosen setting on
train+validation, and ONE evaluation on test (R², MAE with percentile-bootstrap 95% CIs).
"""

from __future__ import annotations

import itertools
import os
import sys
import time

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.ensemble import GradientBoostingRegressor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import artifacts as A  # noqa: E402
import cards  # noqa: E402
import common as C  # noqa: E402
import metrics as MET  # noqa: E402
from gbm_diabetes_card import render_card  # noqa: E402

MODEL_ID = "diabetes-gbm"
VERSION = "1.0.0"
SPLIT_SEED = 20240601
MODEL_SEED = 0
BOOT_SEED = 7
N_BOOT = 2000
# `npm run train -- --check` tolerance on the held-out metrics, stated in the card. The
# check itself lives in models/training/run.mjs (TOLERANCES); keep the two in sync.
CHECK_TOLERANCE = {"r2": 0.005, "mae": 0.5}
TARGET_R2 = 0.40

GRID = {
    "n_estimators": [100, 200, 400],
    "learning_rate": [0.02, 0.05, 0.1],
    "max_depth": [2, 3],
    "subsample": [0.7, 1.0],
    "min_samples_leaf": [5, 15],
}
PROTOCOL = cards.Protocol(MODEL_ID, VERSION, SPLIT_SEED, MODEL_SEED, BOOT_SEED, N_BOOT, GRID, TARGET_R2, CHECK_TOLERANCE)


# Feature order = the column order of the input tensor `x` = sklearn's column order.
# (name, sklearn column, unit, description)
FEATURES = [
    ("age", "age", "a", "age in years"),
    ("sex", "sex", None, "sex, 1 = female, 2 = male (inferred, see card)"),
    ("bmi", "bmi", "kg/m2", "body mass index"),
    ("mean_bp", "bp", "mm[Hg]", "mean arterial blood pressure"),
    ("total_cholesterol", "s1", "mg/dL", "total serum cholesterol (tc)"),
    ("ldl_cholesterol", "s2", "mg/dL", "low-density lipoprotein cholesterol (ldl)"),
    ("hdl_cholesterol", "s3", "mg/dL", "high-density lipoprotein cholesterol (hdl)"),
    ("tc_hdl_ratio", "s4", "{ratio}", "total cholesterol / HDL (tch)"),
    ("ln_triglycerides", "s5", "ln(mg/dL)", "natural log of serum triglycerides in mg/dL (ltg)"),
    ("glucose", "s6", "mg/dL", "blood glucose (glu)"),
]


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0])
    t0 = time.time()
    model_dir = os.path.join(args.out, "models", MODEL_ID)
    demo_path = os.path.join(args.out, "local", "demo", "data", "diabetes-heldout.json")

    # ------------------------------------------------------------ data and split
    ds = load_diabetes(scaled=False)
    X = np.asarray(ds.data, dtype=np.float64)
    y = np.asarray(ds.target, dtype=np.float64)
    assert list(ds.feature_names) == [f[1] for f in FEATURES], ds.feature_names
    assert set(np.unique(X[:, 1])) == {1.0, 2.0}
    n = len(y)
    split = A.split_rows(n, SPLIT_SEED, (0.6, 0.2, 0.2), ("train", "validation", "test"))
    tr, va, te = (np.asarray(split[k]) for k in ("train", "validation", "test"))
    C.log(f"{MODEL_ID}: {n} patients, split train {len(tr)} / validation {len(va)} / test {len(te)} (seed {SPLIT_SEED})")
    A.write_split(
        os.path.join(model_dir, "split.json"),
        split,
        SPLIT_SEED,
        "sklearn.datasets.load_diabetes(scaled=False)",
        "grid scored on validation; final model refit on train+validation; test used once",
    )

    # ------------------------------------------------------------ tune on validation only
    keys = list(GRID)
    scores = []
    for values in itertools.product(*(GRID[k] for k in keys)):
        params = dict(zip(keys, values))
        m = GradientBoostingRegressor(random_state=MODEL_SEED, **params).fit(X[tr], y[tr])
        scores.append((MET.r2_score(y[va], m.predict(X[va])), params))
    # Best validation R²; ties (to 1e-12) go to the earlier grid entry (smaller model).
    best_r2, best = max(scores, key=lambda s: (round(s[0], 12), -scores.index(s)))
    C.log(f"{MODEL_ID}: grid of {len(scores)} settings; best validation R² {best_r2:.4f} with {best}")

    # ------------------------------------------------------------ refit on train+validation, test once
    trva = np.sort(np.concatenate([tr, va]))
    gbm = GradientBoostingRegressor(random_state=MODEL_SEED, **best).fit(X[trva], y[trva])
    p_te = gbm.predict(X[te])
    y_te = y[te]
    r2 = MET.r2_score(y_te, p_te)
    mae = MET.mae_score(y_te, p_te)
    r2_lo, r2_hi = MET.bootstrap_ci(MET.r2_score, y_te, p_te, BOOT_SEED, N_BOOT)
    mae_lo, mae_hi = MET.bootstrap_ci(MET.mae_score, y_te, p_te, BOOT_SEED, N_BOOT)
    resid = MET.residual_summary(y_te, p_te)
    # Deployment scenario (reported, not tuned on): the optional TC/HDL ratio missing for
    # everyone and imputed with the train+validation median, as the manifest does.
    ratio_median = float(np.median(X[trva, 7]))
    X_imp = X[te].copy()
    X_imp[:, 7] = ratio_median
    r2_imputed = MET.r2_score(y_te, gbm.predict(X_imp))
    hdl_by_sex = {int(v): float(X[X[:, 1] == v, 6].mean()) for v in (1, 2)}
    baseline_mae = MET.mae_score(y_te, np.full_like(y_te, y[trva].mean()))
    C.log(
        f"{MODEL_ID}: held-out test (n={len(te)}): R² {r2:.3f} [{r2_lo:.3f}, {r2_hi:.3f}], "
        f"MAE {mae:.2f} [{mae_lo:.2f}, {mae_hi:.2f}]"
    )
    if r2 < TARGET_R2:
        C.log(f"{MODEL_ID}: NOTE held-out R² {r2:.3f} is below the {TARGET_R2:.2f} target (reported as measured)")

    # ------------------------------------------------------------ thresholds from training quantiles
    y_fit = y[trva]
    q50, q90 = (float(v) for v in np.percentile(y_fit, [50, 90]))
    t_elev = float(round(q50 / 10.0) * 10)
    t_high = float(round(q90 / 10.0) * 10)
    lo_bound, hi_bound = C.gbm_prediction_bounds(gbm, X.shape[1])
    assert lo_bound >= 0.0, "the lowest band starts at 0; the model can output below it"

    # ------------------------------------------------------------ ONNX
    onnx_model = C.gbm_regressor_to_onnx(
        gbm, X.shape[1], "x", "y", doc=f"{MODEL_ID} {VERSION}: GradientBoostingRegressor {best}"
    )
    onnx_path = os.path.join(model_dir, "1", "model.onnx")
    C.save_onnx(onnx_model, onnx_path)
    C.log(f"{MODEL_ID}: wrote {os.path.relpath(onnx_path, args.out)} ({os.path.getsize(onnx_path)} bytes), check_model ok")

    # ------------------------------------------------------------ golden (all test rows, float64 outputs)
    A.write_golden(os.path.join(model_dir, "golden.json"), MODEL_ID, "x", "y", A.tabular_cases(te, X, p_te))

    # ------------------------------------------------------------ manifest
    codes = {
        "bmi": [A.loinc("39156-5", "Body mass index (BMI) [Ratio]")],
        "mean_bp": [A.loinc("8478-0", "Mean blood pressure")],
        "tc": [A.loinc("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma")],
        "ldl": [
            A.loinc("2089-1", "Cholesterol in LDL [Mass/volume] in Serum or Plasma"),
            A.loinc("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation"),
        ],
        "hdl": [A.loinc("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma")],
        "ratio": [A.loinc("9830-1", "Cholesterol.total/Cholesterol in HDL [Mass Ratio] in Serum or Plasma")],
        "tg": [A.loinc("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma")],
        "glu": [A.loinc("2345-7", "Glucose [Mass/volume] in Serum or Plasma")],
    }
    features = [
        A.patient_age(),
        A.patient_sex({"female": 1, "male": 2}),
        A.observation_feature("bmi", codes["bmi"], "kg/m2", True),
        A.observation_feature("mean_bp", codes["mean_bp"], "mm[Hg]", True),
        A.observation_feature("total_cholesterol", codes["tc"], "mg/dL", True, molecular_weight=386.65),
        A.observation_feature("ldl_cholesterol", codes["ldl"], "mg/dL", True, molecular_weight=386.65),
        A.observation_feature("hdl_cholesterol", codes["hdl"], "mg/dL", True, molecular_weight=386.65),
        A.observation_feature(
            "tc_hdl_ratio",
            codes["ratio"],
            "{ratio}",
            False,
            imputation={"strategy": "constant", "value": ratio_median},
        ),
        A.observation_feature("ln_triglycerides", codes["tg"], "mg/dL", True, molecular_weight=885.7, transform="ln"),
        A.observation_feature("glucose", codes["glu"], "mg/dL", True, molecular_weight=180.156),
    ]
    assert [f["name"] for f in features] == [f[0] for f in FEATURES]
    trigger_codes = [c for key in ("glu", "tc", "ldl", "hdl", "ratio", "tg", "bmi", "mean_bp") for c in codes[key]]
    metrics = {**A.with_ci("r2", r2, r2_lo, r2_hi, 4), **A.with_ci("mae", mae, mae_lo, mae_hi, 3), "nTest": int(len(te))}
    serving_inputs = [{"name": "x", "datatype": "FP32", "dims": [10]}]
    serving_outputs = [{"name": "y", "datatype": "FP32", "dims": [1]}]
    max_batch = 1024
    manifest = {
        "id": MODEL_ID,
        "version": VERSION,
        "family": "gbm",
        "task": "regression",
        "title": "Diabetes progression at one year (gradient boosting)",
        "intendedUse": (
            "Research and pipeline demonstration: estimates the Efron et al. one-year diabetes "
            "progression score (a quantitative measure, roughly 25-346 in the training data) for an "
            "adult with diabetes from age, sex, BMI, mean blood pressure and six serum measurements."
        ),
        "notForClinicalUse": True,
        "triggers": [{"resourceType": "Observation", "codes": trigger_codes}],
        "input": {"kind": "tabular", "tensor": "x", "features": features},
        "output": {
            "kind": "regression",
            "tensor": "y",
            "labels": [],
            "thresholds": [
                A.band(0, "info", "diabetes-progression-low", "Predicted diabetes progression below the training median"),
                A.band(
                    t_elev,
                    "warning",
                    "diabetes-progression-elevated",
                    "Predicted diabetes progression at or above the training median",
                ),
                A.band(
                    t_high,
                    "critical",
                    "diabetes-progression-high",
                    "Predicted diabetes progression at or above the training 90th percentile",
                ),
            ],
            "unit": "{score}",
            "code": A.code("diabetes-progression-score", "Diabetes progression score"),
        },
        "report": A.report("diabetes-progression-report", "Diabetes progression model report", A.LAB),
        "serving": A.serving(MODEL_ID, "ml.c6i.xlarge", max_batch, serving_inputs, serving_outputs),
        "metrics": metrics,
    }
    A.write_manifest(model_dir, manifest, "KIND_CPU")

    # ------------------------------------------------------------ demo cohort source rows (test only)
    demo = {
        **A.demo_source(
            "Efron et al. (2004) diabetes data, sklearn.datasets.load_diabetes(scaled=False)",
            "BSD-3-Clause (scikit-learn's bundled copy)",
            MODEL_ID,
        ),
        "columns": [
            {"name": name, "sklearnName": sk, "unit": unit, "description": desc} for name, sk, unit, desc in FEATURES
        ],
        "notes": [
            "sex: 1 = female, 2 = male (inferred from HDL being higher in group 1; the source does not say)",
            "ln_triglycerides is ln(triglycerides in mg/dL): the Observation value is exp(ln_triglycerides) mg/dL",
            "target: the disease-progression score one year after baseline (unitless)",
        ],
        "rows": [
            {
                "rowId": int(r),
                "values": {name: float(X[r, j]) for j, (name, _, _, _) in enumerate(FEATURES)},
                "target": float(y[r]),
            }
            for r in te
        ],
    }
    A.write_json(demo_path, demo)

    # ------------------------------------------------------------ card
    elapsed = time.time() - t0
    card = render_card(
        PROTOCOL,
        best=best,
        best_r2=best_r2,
        n_grid=len(scores),
        split=split,
        metrics=dict(r2=r2, r2_lo=r2_lo, r2_hi=r2_hi, mae=mae, mae_lo=mae_lo, mae_hi=mae_hi),
        baseline_mae=baseline_mae,
        resid=resid,
        q50=q50,
        q90=q90,
        thresholds=manifest["output"]["thresholds"],
        bounds=(lo_bound, hi_bound),
        ratio_median=ratio_median,
        r2_imputed=r2_imputed,
        hdl_by_sex=hdl_by_sex,
        n_trees=int(gbm.n_estimators_),
        n_nodes=int(sum(e.tree_.node_count for e in gbm.estimators_[:, 0])),
        n_leaves=int(sum(e.tree_.n_leaves for e in gbm.estimators_[:, 0])),
        ratio_splits=int(sum(int(np.sum(e.tree_.feature == 7)) for e in gbm.estimators_[:, 0])),
        y_fit=y_fit,
    )
    A.write_text(os.path.join(model_dir, "card.md"), card)
    C.log(f"{MODEL_ID}: wrote {os.path.relpath(model_dir, args.out)}/ and {os.path.relpath(demo_path, args.out)} in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
