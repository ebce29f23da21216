"""The model card (models/breast-cancer-svm/card.md) of the WDBC support-vector classifier. See
svm_breast_cancer.py, which passes its protocol constants, its features (name, code, unit) and
the figures it measured."""

from __future__ import annotations

import os
import sys
from typing import Any, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cards  # noqa: E402


def render_card(p: cards.Protocol, features: List[Tuple[str, str, str]], **k: Any) -> str:
    m = k["met"]
    s = k["split"]
    y = k["y"]
    f = cards.fmt
    best = k["best"]
    rows = "\n".join(f"| {j} | {name} | `{code}` | `{unit}` |" for j, (name, code, unit) in enumerate(features))
    counts = cards.split_counts(s, y)
    results = cards.classification_results(
        p,
        counts,
        k,
        positives="malignant",
        accuracy_label="accuracy (malignant if p ≥ 0.5)",
        reference="",
        calibration_note=f"With {counts['test'][0]} test patients most predictions sit near 0 or 1 and the middle bins are thin; the\n"
        "table shows calibration at the extremes, not a fine-grained curve.",
        band_label="P(malignant)",
        band_counts_label="test patients",
    )
    return f"""{cards.header(p.model_id, p.version)}

## What it does

A support-vector classifier (scikit-learn `SVC`, RBF kernel) on standardised inputs,
with a Platt sigmoid that turns its decision value into a calibrated probability that a
breast mass sampled by fine-needle aspiration (FNA) is **malignant**, from the 30
nuclear measurements of the Wisconsin Diagnostic Breast Cancer image analysis.

Served as ONNX (opset 17, plain operators only, no `ai.onnx.ml`): input `x` FP32
`[N, 30]` in raw units, output `probabilities` FP32 `[N, 2]` = (benign, malignant); the
positive class is last. The standardisation is inside the graph. Triton `onnxruntime`
backend, `KIND_GPU` on `ml.g5.xlarge` (the graph also runs on CPU).

### Why plain ONNX operators and not `ai.onnx.ml` `SVMClassifier`

The probability here is sklearn's `CalibratedClassifierCV(method="sigmoid",
ensemble=False)`: a Platt sigmoid fitted on 5-fold out-of-fold decision values, applied as
`p = 1 / (1 + exp(a·f + b))` to the decision value `f` of one SVC refitted on all fitting
rows. `SVMClassifier`'s `prob_a`/`prob_b` are libsvm's probability parameters (meant for
`SVC(probability=True)`'s internal, randomised Platt fit, with libsvm's sign and
class-order conventions); an export through it was not tried, because writing the formula
out reproduces this calibration by construction, and because ONNX-ML operators run on CPU
only while plain operators also run on the CUDA execution provider. The graph is
therefore written out (`models/training/common.py`,
`rbf_svm_platt_to_onnx`):

```
z = (x − mean) / scale
d = max(0, ‖z‖² − 2·z·SVᵀ + ‖SV‖²)          # squared distances to the {k['n_sv']} support vectors
f = exp(−γ·d) · dual_coef + intercept        # sklearn's decision_function
p_malignant = sigmoid(−(a·f + b)),  output = [1 − p_malignant, p_malignant]
```

with γ = {best['gamma']}, C = {best['C']}, Platt a = {f(k['platt'][0], 4)}, b = {f(k['platt'][1], 4)}. The training script
checks its own reading of these pieces against sklearn's `decision_function` and
`predict_proba` before writing the graph.

## Data

- Source: Wisconsin Diagnostic Breast Cancer (WDBC) data, W. N. Street, W. H. Wolberg,
  O. L. Mangasarian, "Nuclear feature extraction for breast tumor diagnosis", IS&T/SPIE
  1993; UCI Machine Learning Repository (CC BY 4.0). The copy used is scikit-learn's
  bundled `sklearn/datasets/data/breast_cancer.csv` (Debian `python3-sklearn`,
  BSD-3-Clause), read with `load_breast_cancer()`.
- Cohort: {len(y)} patients (one FNA image each) from the University of Wisconsin Hospitals,
  {int(y.sum())} malignant and {int(len(y) - y.sum())} benign by the study's diagnosis. No missing values.
- Label: 1 = malignant. sklearn codes the target the other way round (0 = malignant);
  the script flips it.
- Split (seed {p.split_seed}, stratified by diagnosis, row ids in `split.json`): train
  {counts['train'][0]} ({counts['train'][1]} malignant), validation {counts['validation'][0]} ({counts['validation'][1]}), test {counts['test'][0]} ({counts['test'][1]}) (60/20/20).

## Features (tensor column order)

All 30 are required Observations (latest within P1Y), coded in the project code system
`urn:fhir-analytics:code`: they are outputs of one image-analysis program, not laboratory
tests, and have no LOINC codes. They may arrive as separate Observations or as components
of one `wdbc-fna-cytology-panel` Observation; either that panel code or `wdbc-mean-radius`
triggers the model.

**Units, honestly:** the source data give no units. Radius and perimeter are taken to be
lengths in the digitised image's pixel units (`{{pixel}}`), area square pixels (`{{pixel2}}`),
texture a standard deviation of grey levels (`{{gray_level}}`); the other seven measures are
normalised, dimensionless quantities (`1`). UCUM annotations are dimensionless, so the unit converter
treats `{{pixel}}`, `{{pixel2}}` and `1` as interchangeable: the unit strings document, they do not
protect. The pixel scale depends on the original microscope and scanner set-up; values
from any other imaging system are not comparable.

| # | name | code | unit |
|---|---|---|---|
{rows}

`mean_*` is the mean over the nuclei in the image, `se_*` the standard error, `worst_*`
the mean of the three largest values.

## Training

- Grid of {k['n_grid']} settings (C {p.grid['C']}, gamma {p.grid['gamma']} on standardised inputs). Each is
  the full pipeline (StandardScaler → SVC → Platt sigmoid on 5-fold out-of-fold decision
  values, folds seeded {p.model_seed}) fitted on train and scored on validation only, by log loss.
- Chosen: C = {best['C']}, gamma = {best['gamma']} (validation log loss {f(k['best_ll'], 4)}, validation AUC {f(k['best_auc_va'], 4)}).
- Final model refit with those settings on train+validation ({counts['train'][0] + counts['validation'][0]} patients): {k['n_sv']} support
  vectors. The test rows were used once, for the figures below.

{results}

## Export and parity

`golden.json` holds every test row in raw units with sklearn's float64
`predict_proba` (both columns); `npm run train` and `test/unit/model-parity.test.ts`
require onnxruntime to match within 1e-4 × max(1, |expected|).
`npm run train -- --check` retrains into a temporary directory and fails if held-out AUC
moves by more than {p.check_tolerance['auc']}, accuracy by more than {p.check_tolerance['accuracy']} or Brier score by more than
{p.check_tolerance['brier']} from `manifest.json`'s `metrics` (training is seeded, so they should not move).

{cards.serving_figures("")}

## Intended use and limitations

- Intended use: demonstrating the FHIR → features → inference → DiagnosticReport
  pipeline with a real, public data set. Not for clinical use.
- {len(y)} patients from one centre, collected 1989–1995, measured by one image-analysis
  program (Xcyt) on one imaging set-up; the features do not exist outside that workflow,
  and their pixel units tie them to it. Unknown transportability.
- The diagnosis label is the study's (cytology confirmed by histology or follow-up); the
  data set is enriched for malignancy ({f(100 * y.mean(), 0)}%) relative to most clinical FNA
  populations, so the probabilities are calibrated to this prevalence, not to any clinic's.
- The small test set (n = {counts['test'][0]}) makes the intervals wide at this level of accuracy;
  an AUC near 1 on this data set is typical and says little about real-world use.
- The model does not flag inputs outside the training range.
"""
