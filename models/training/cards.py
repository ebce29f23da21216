"""Pieces of the model cards (models/<id>/card.md) that the training scripts share: the
title and not-for-clinical-use notice, the held-out metric table, the output-band table
(read from the manifest's thresholds, so card and manifest cannot disagree), the
calibration tables, and for the tabular scripts (gbm_diabetes, svm_breast_cancer, rf_pima)
their protocol constants and the held-out sections of a binary classifier's card. Each
script's *_card.py module keeps its own prose around them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np


def fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}"


@dataclass(frozen=True)
class Protocol:
    """A tabular training script's constants that its card states: the model, the seeds, the
    hyper-parameter grid, the held-out target and the `npm run train -- --check` tolerances
    (models/training/run.mjs TOLERANCES; keep in sync)."""

    model_id: str
    version: str
    split_seed: int
    model_seed: int  # random_state of the model (of the calibration folds, for the SVM)
    boot_seed: int
    n_boot: int
    grid: Dict[str, List[Any]]
    target: float  # held-out AUC (classifiers) or R² (regression) aimed at
    check_tolerance: Dict[str, float]


def split_counts(split: Dict[str, List[int]], y: np.ndarray) -> Dict[str, Tuple[int, int]]:
    """{part: (rows, positives)} of a split of a binary label."""
    return {part: (len(ids), int(y[np.asarray(ids)].sum())) for part, ids in split.items()}


def met(value: float, target: float) -> str:
    return "met" if value >= target else "NOT met"


def bootstrap_note(p: Protocol) -> str:
    return f"Percentile bootstrap over test rows, {p.n_boot} resamples, seed {p.boot_seed}."


def serving_figures(why: str) -> str:
    """The card's serving section: no GPU figure was measured (`why`, if given, says why)."""
    return f"## Serving figures\n\nGPU latency and throughput: not measured{f' ({why})' if why else ''}."


def header(model_id: str, version: str) -> str:
    """The card's first lines: title and the not-for-clinical-use notice."""
    return f"""# Model card: {model_id} {version}

**Not for clinical use.** Research and pipeline demonstration only; it has not been
validated for, and must not inform, the care of any patient."""


# A metric table row: (label, value, interval low, interval high, digits).
MetricRow = Tuple[str, float, float, float, int]


def metric_table(rows: Sequence[MetricRow]) -> str:
    """| metric | value | bootstrap 95% CI | with one row per held-out metric."""
    lines = ["| metric | value | bootstrap 95% CI |", "|---|---|---|"]
    for name, v, lo, hi, d in rows:
        lines.append(f"| {name} | {fmt(v, d)} | [{fmt(lo, d)}, {fmt(hi, d)}] |")
    return "\n".join(lines)


def classification_rows(m: Dict[str, float], accuracy_label: str, digits: int = 4) -> List[MetricRow]:
    """AUC, accuracy and Brier rows from metrics.classification_metrics' dict."""
    return [
        (label, m[key], m[f"{key}_lo"], m[f"{key}_hi"], digits)
        for label, key in (("AUC", "auc"), (accuracy_label, "accuracy"), ("Brier score", "brier"))
    ]


def bands_table(
    value_label: str,
    thresholds: List[Dict[str, Any]],
    at: Callable[[float], str] = str,
    counts_label: str = "",
    p: Optional[np.ndarray] = None,
) -> str:
    """The output bands of a manifest (`output.thresholds`, lowest first) as a table: value
    range, indicator, conclusion code; with `p` (held-out predictions) also how many of
    them fall in each band, under the column `counts_label`."""
    cols = [value_label, "indicator", "conclusion (`urn:fhir-analytics:code`)"] + ([counts_label] if p is not None else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, t in enumerate(thresholds):
        hi = thresholds[i + 1]["atOrAbove"] if i + 1 < len(thresholds) else math.inf
        cells = [f"< {at(hi)}" if i == 0 else f"≥ {at(t['atOrAbove'])}", t["indicator"], f"`{t['conclusion']['code']}`"]
        if p is not None:
            cells.append(str(int(np.sum((p >= t["atOrAbove"]) & (p < hi)))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tab_reliability_markdown(rows: List[Dict[str, Any]]) -> str:
    """metrics.tab_reliability_table's rows (every bin, with positives) as a table."""
    lines = ["| predicted probability | n | mean predicted | observed positive rate |", "|---|---|---|---|"]
    for i, r in enumerate(rows):
        close = "]" if i == len(rows) - 1 else ")"
        mp = "—" if r["meanPredicted"] is None else fmt(r["meanPredicted"])
        ob = "—" if r["observed"] is None else f"{fmt(r['observed'])} ({r['positives']}/{r['n']})"
        lines.append(f"| [{r['lo']:.1f}, {r['hi']:.1f}{close} | {r['n']} | {mp} | {ob} |")
    return "\n".join(lines)


def reliability_markdown(rows: List[Dict[str, Any]]) -> str:
    """metrics.reliability_table's rows (non-empty bins) as a table."""
    lines = ["| predicted probability | n | mean predicted | observed rate |", "|---|---|---|---|"]
    for r in rows:
        close = "]" if r["hi"] >= 1.0 else ")"
        lines.append(f"| [{r['lo']:.1f}, {r['hi']:.1f}{close} | {r['n']} | {r['meanPredicted']:.3f} | {r['observedRate']:.3f} |")
    return "\n".join(lines)


def classification_results(
    p: Protocol,
    counts: Dict[str, Tuple[int, int]],
    k: Dict[str, Any],
    *,
    positives: str,
    accuracy_label: str,
    reference: str,
    calibration_note: str,
    band_label: str,
    band_counts_label: str,
) -> str:
    """A binary classifier's held-out performance (metric table, bootstrap, AUC target),
    calibration and output-band sections. `k` holds the held-out `met`
    (metrics.classification_metrics), `rel` (metrics.tab_reliability_table), `thresholds`
    (the manifest's) and `p_te` (the test predictions); `positives` is what a positive test
    row is called, `reference` the text that follows the target sentence."""
    m = k["met"]
    n_te, pos_te = counts["test"]
    return f"""## Held-out performance (test, n = {n_te}, {pos_te} {positives}, evaluated once)

{metric_table(classification_rows(m, accuracy_label))}

{bootstrap_note(p)} Target was
AUC ≥ {p.target}: {met(m['auc'], p.target)}.{reference}

### Calibration (test)

{tab_reliability_markdown(k['rel'])}

{calibration_note}

## Output bands

{bands_table(band_label, k['thresholds'], counts_label=band_counts_label, p=k['p_te'])}

Fixed probability cut-offs for the demonstration, not clinical decision thresholds."""
