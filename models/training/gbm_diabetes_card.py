"""The model card (models/diabetes-gbm/card.md) of the diabetes-progression gradient boosting.
See gbm_diabetes.py, which passes its protocol constants and the figures it measured."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cards  # noqa: E402


def render_card(p: cards.Protocol, **k: Any) -> str:
    m = k["metrics"]
    r = k["resid"]
    s = k["split"]
    best = k["best"]
    f = cards.fmt
    feature_rows = "\n".join(
        [
            "| 0 | age | `patient.age` (from birthDate) | a (years) | required |",
            '| 1 | sex | `patient.sex`, valueMap `{"female": 1, "male": 2}` | — | required |',
            "| 2 | bmi | LOINC 39156-5 BMI | kg/m2 | required |",
            "| 3 | mean_bp | LOINC 8478-0 Mean blood pressure | mm[Hg] | required |",
            "| 4 | total_cholesterol | LOINC 2093-3 Cholesterol total (MW 386.65 for mmol/L) | mg/dL | required |",
            "| 5 | ldl_cholesterol | LOINC 2089-1 or 13457-7 (calculated) LDL cholesterol (MW 386.65) | mg/dL | required |",
            "| 6 | hdl_cholesterol | LOINC 2085-9 HDL cholesterol (MW 386.65) | mg/dL | required |",
            f"| 7 | tc_hdl_ratio | LOINC 9830-1 Cholesterol total/HDL | {{ratio}} | optional: imputed with the train+validation median {f(k['ratio_median'], 2)} |",
            "| 8 | ln_triglycerides | LOINC 2571-8 Triglyceride (MW 885.7), transform `ln` after conversion to mg/dL | ln(mg/dL) | required |",
            "| 9 | glucose | LOINC 2345-7 Glucose in serum or plasma (MW 180.156) | mg/dL | required |",
        ]
    )
    lo, hi = k["bounds"]
    return f"""{cards.header(p.model_id, p.version)}

## What it does

Gradient-boosted regression trees (scikit-learn `GradientBoostingRegressor`, squared
error) that estimate the Efron et al. *disease progression one year after baseline*
score (a unitless quantitative measure, {f(float(k['y_fit'].min()), 0)}–{f(float(k['y_fit'].max()), 0)} in the
training data) for an adult with diabetes from ten baseline variables. Served as an
ONNX-ML `TreeEnsembleRegressor` (`ai.onnx.ml` opset 3, ONNX opset 17): input `x`
FP32 `[N, 10]`, output `y` FP32 `[N, 1]`; Triton `onnxruntime` backend on CPU
(`KIND_CPU`, `ml.c6i.xlarge`): ONNX-ML tree operators run on CPU only.

## Data

- Source: the diabetes data of Efron, Hastie, Johnstone and Tibshirani (2004), "Least
  Angle Regression", *Annals of Statistics* 32(2):407–499, as bundled with
  scikit-learn (Debian `python3-sklearn`, BSD-3-Clause licence),
  `sklearn.datasets.load_diabetes(scaled=False)` — raw units, not the scaled copy.
- Cohort: 442 patients with diabetes, one row each; 10 baseline variables and the
  progression score one year later. No missing values.
- Sex coding: the source labels sex only as 1/2 without saying which is which. Group 1
  has the higher mean HDL ({f(k['hdl_by_sex'][1], 1)} vs {f(k['hdl_by_sex'][2], 1)} mg/dL, all 442 rows) and lower mean BP, as expected of women,
  so this model assumes **1 = female, 2 = male**. This is an inference, not documented.
- Split (seed {p.split_seed}, row ids in `split.json`): train {len(s['train'])}, validation
  {len(s['validation'])}, test {len(s['test'])} patients (60/20/20).

## Features (tensor column order)

| # | name | FHIR source and code | unit | |
|---|---|---|---|---|
{feature_rows}

All Observation features: latest value within a P1Y lookback; values are converted to
the unit shown (mass↔molar with the molecular weight given). The TC/HDL ratio is
optional because the featurizer cannot derive it from TC and HDL; when absent it takes
the training median, which loses the information the ratio carries: with the ratio
imputed for every test patient, held-out R² is {f(k['r2_imputed'], 4)} (vs {f(m['r2'], 4)} with it; the trees split on the
ratio only {k['ratio_splits']} times in {k['n_nodes'] - k['n_leaves']} splits).

## Training

- Grid of {k['n_grid']} settings (n_estimators {p.grid['n_estimators']}, learning_rate
  {p.grid['learning_rate']}, max_depth {p.grid['max_depth']}, subsample {p.grid['subsample']},
  min_samples_leaf {p.grid['min_samples_leaf']}; random_state {p.model_seed}), each fitted on
  train and scored by R² on validation only.
- Chosen: {', '.join(f'{key}={val}' for key, val in best.items())} (validation R²
  {f(k['best_r2'])}).
- Final model refit with those settings on train+validation ({len(s['train']) + len(s['validation'])} patients):
  {k['n_trees']} trees, {k['n_nodes']} nodes. The test rows were used once, for the figures below.

## Held-out performance (test, n = {len(s['test'])}, evaluated once)

{cards.metric_table([("R²", m['r2'], m['r2_lo'], m['r2_hi'], 3), ("MAE (score units)", m['mae'], m['mae_lo'], m['mae_hi'], 2)])}

{cards.bootstrap_note(p)} For scale:
predicting the training mean for everyone gives a test MAE of {f(k['baseline_mae'], 2)}.
Target was R² ≥ {f(p.target, 2)}: {cards.met(m['r2'], p.target)}.

Calibration (in the classification sense) does not apply to a regression model; the
residuals (observed − predicted) on the test set:

| mean | SD | RMSE | 5th | 25th | median | 75th | 95th |
|---|---|---|---|---|---|---|---|
| {f(r['mean'], 1)} | {f(r['sd'], 1)} | {f(r['rmse'], 1)} | {f(r['p5'], 1)} | {f(r['p25'], 1)} | {f(r['median'], 1)} | {f(r['p75'], 1)} | {f(r['p95'], 1)} |

## Output bands

Chosen from the train+validation target distribution (not from test): the median
({f(k['q50'], 1)}) and the 90th percentile ({f(k['q90'], 1)}), each rounded to the nearest 10.

{cards.bands_table("score", k['thresholds'], at=lambda v: f(v, 0))}

The ensemble's output is bounded by construction to [{f(lo, 1)}, {f(hi, 1)}], so the lowest
band (from 0) covers every possible score. The bands are population quantiles, not
clinical cut-offs.

## Export and parity

`models/training/common.py` writes the trees with `onnx.helper`: `BRANCH_LEQ` on float32
thresholds (each sklearn float64 threshold rounded down to the largest float32 not above
it, so float32 inputs take exactly sklearn's branches), leaf weights × learning rate,
`base_values` = the init estimator's constant prediction. `golden.json` holds every test
row in raw units with sklearn's float64 prediction; `npm run train` and
`test/unit/model-parity.test.ts` require onnxruntime to match within
1e-4 × max(1, |expected|).

`npm run train -- --check` retrains into a temporary directory and fails if held-out R²
moves by more than {p.check_tolerance['r2']} or MAE by more than {p.check_tolerance['mae']} from
`manifest.json`'s `metrics` (training is seeded, so it should not move at all).

{cards.serving_figures("tree model, served on CPU")}

## Intended use and limitations

- Intended use: demonstrating the FHIR → features → inference → DiagnosticReport
  pipeline with a real, public data set. Not for clinical use.
- 442 patients from one 2004 study; the population, assays and the exact definition of
  the progression score are not documented in detail. Unknown transportability.
- The wide bootstrap intervals reflect the small test set (n = {len(s['test'])}).
- Sex coding is inferred (above); the TC/HDL ratio in the source looks rounded for
  many patients; triglycerides enter as ln(mg/dL).
- Inputs outside the training range are handled by the trees as the nearest edge
  region; the model does not extrapolate or flag them.
"""
