"""The model card (models/diabetes-onset-rf/card.md) of the Pima random forest. See rf_pima.py,
which passes its protocol constants, its features and the figures it measured."""

from __future__ import annotations

import os
import sys
from typing import Any, List, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cards  # noqa: E402


def render_card(p: cards.Protocol, features: List[Tuple[str, str, str, str]], **k: Any) -> str:
    m = k["met"]
    s = k["split"]
    y = k["y"]
    f = cards.fmt
    best = k["best"]
    med = k["medians"]
    miss = k["missing"]
    counts = cards.split_counts(s, y)
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
    for j, (name, rn, unit, _) in enumerate(features):
        if name == "glucose_2h_ogtt":
            req = f"required by the manifest (the graph would impute NaN with {f(med[j], 1)})"
        elif name == "age":
            req = "required"
        else:
            req = f"optional: NaN → in-graph median {f(med[j], 3 if name == 'diabetes_pedigree' else 1)}"
        rows.append(f"| {j} | {name} (`{rn}`) | {source[name]} | `{unit}` | {miss[name]} | {req} |")
    miss_note = (
        ""
        if m["auc"] >= p.target
        else f"""

**The AUC target is missed** on this test split. The figures point at the small test set
(these rows look harder than the rest) more than at the forest: the interval [{f(m['auc_lo'], 3)}, {f(m['auc_hi'], 3)}] includes
{p.target}, cross-validation within train+validation gives {f(float(np.mean(k['cv_aucs'])), 3)}, and the untuned
logistic regression also scores only {f(k['auc_lr'], 3)} on these rows. The split, grid and model
were not changed after the test figure was seen; the miss stands as measured."""
    )
    imp = ", ".join(f"{name} {f(v, 3)}" for name, v in k["importances"])
    reference = f""" For reference (not tuned on): AUC on the {k['n_cc']}
complete-case test rows {f(k['auc_cc'], 4)}; 5-fold cross-validated AUC of the chosen setting
within train+validation {f(float(np.mean(k['cv_aucs'])), 4)} (fold SD {f(float(np.std(k['cv_aucs'])), 4)}); an untuned logistic regression
(median imputation, standardisation) fitted on train+validation scores test AUC
{f(k['auc_lr'], 4)} on the same rows. Neither figure chose anything. Prevalence in test is {f(100 * counts['test'][1] / counts['test'][0], 1)}%, so predicting
"negative" for everyone scores an accuracy of {f(1 - counts['test'][1] / counts['test'][0], 4)}.{miss_note}"""
    results = cards.classification_results(
        p,
        counts,
        k,
        positives="positive",
        accuracy_label="accuracy (positive if p ≥ 0.5)",
        reference=reference,
        calibration_note="A random forest's averaged leaf frequencies are not a fitted probability model; they were\n"
        "not recalibrated.",
        band_label="P(diabetes)",
        band_counts_label="test women",
    )
    return f"""{cards.header(p.model_id, p.version)}

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
- Split (seed {p.split_seed}, stratified by label, row ids in `split.json` = 0-based row
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

- Grid of {k['n_grid']} settings (n_estimators {p.grid['n_estimators']}, max_features {p.grid['max_features']},
  min_samples_leaf {p.grid['min_samples_leaf']}, max_depth {p.grid['max_depth']}; random_state {p.model_seed}), each
  median imputation (medians of train) + forest fitted on train and scored by AUC on
  validation only.
- Chosen: {', '.join(f'{key}={val}' for key, val in best.items())} (validation AUC {f(k['best_auc_va'], 4)}).
- Final model refit with those settings on train+validation ({counts['train'][0] + counts['validation'][0]} women; medians recomputed
  on them): {k['n_trees']} trees, {k['n_nodes']} nodes, ONNX file {k['onnx_bytes']} bytes. The test rows were used once, for the
  figures below.
- Impurity-based feature importances (train+validation): {imp}.

{results}

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
and fails if held-out AUC moves by more than {p.check_tolerance['auc']}, accuracy by more than
{p.check_tolerance['accuracy']} or Brier score by more than {p.check_tolerance['brier']} from `manifest.json`'s `metrics`.

{cards.serving_figures("tree model, served on CPU")}

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
