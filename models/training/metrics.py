"""Held-out metrics for the training scripts in models/training/: regression (R², MAE,
residuals), classification (AUC, accuracy, Brier, log loss), bootstrap intervals (by row or
by patient) and calibration tables. Everything is deterministic given its seed."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

# ---------------------------------------------------------------- regression


def r2_score(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot


def mae_score(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, dtype=np.float64) - np.asarray(p, dtype=np.float64))))


def residual_summary(y: np.ndarray, p: np.ndarray) -> Dict[str, float]:
    r = np.asarray(y, dtype=np.float64) - np.asarray(p, dtype=np.float64)
    q = np.percentile(r, [5, 25, 50, 75, 95])
    return {
        "mean": float(r.mean()),
        "sd": float(r.std(ddof=1)),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "rmse": float(math.sqrt(np.mean(r**2))),
    }


# ---------------------------------------------------------------- classification


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by scikit-learn (Mann-Whitney, ties count one half); the tabular models' AUC."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y), np.asarray(p, dtype=np.float64)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half) without scikit-learn;
    the neural models' AUC (their scripts do not import sklearn)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), dtype=np.float64)
    sp = p[order]
    i = 0
    while i < len(sp):  # average ranks over ties
        j = i
        while j + 1 < len(sp) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy_at(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Accuracy of `p >= threshold` as the positive class."""
    return float(np.mean((np.asarray(p) >= threshold).astype(int) == np.asarray(y).astype(int)))


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the positive-class probability."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def log_loss_score(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


# ---------------------------------------------------------------- bootstrap intervals


def _percentiles(stats: List[float], alpha: float) -> Tuple[float, float]:
    arr = np.asarray(stats)
    return float(np.percentile(arr, 100 * alpha / 2)), float(np.percentile(arr, 100 * (1 - alpha / 2)))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y: np.ndarray,
    p: np.ndarray,
    seed: int,
    n_boot: int = 2000,
    alpha: float = 0.05,
) -> tuple:
    """Percentile bootstrap (resampling held-out rows with replacement) → (low, high)."""
    rng = np.random.RandomState(seed)
    n = len(y)
    stats = []
    for _ in range(n_boot):
        idx = rng.randint(0, n, n)
        yy = y[idx]
        if np.all(yy == yy[0]):  # degenerate resample (undefined R²/AUC); skip it
            continue
        stats.append(metric(yy, p[idx]))
    return _percentiles(stats, alpha)


def cluster_bootstrap_ci(
    metric: Callable[..., float],
    groups: np.ndarray,
    arrays: Sequence[np.ndarray],
    seed: int,
    n_boot: int = 2000,
    alpha: float = 0.05,
    label_index: int = 0,
) -> tuple:
    """Percentile bootstrap that resamples whole groups (patients) with replacement, for
    held-out sets with several rows per patient. `metric(*arrays)` on the resampled rows;
    resamples where `arrays[label_index]` has one class only are skipped (undefined AUC)."""
    rng = np.random.RandomState(seed)
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    rows_of = {g: np.flatnonzero(groups == g) for g in uniq}
    stats = []
    for _ in range(n_boot):
        pick = rng.randint(0, len(uniq), len(uniq))
        idx = np.concatenate([rows_of[uniq[k]] for k in pick])
        yy = arrays[label_index][idx]
        if np.all(yy == yy[0]):
            continue
        stats.append(metric(*(a[idx] for a in arrays)))
    return _percentiles(stats, alpha)


def classification_metrics(y: np.ndarray, p: np.ndarray, seed: int, n_boot: int = 2000) -> Dict[str, float]:
    """Held-out AUC, accuracy (p ≥ 0.5) and Brier score of the positive-class probability,
    each with a percentile-bootstrap 95% interval over rows (same resamples for each):
    {auc, auc_lo, auc_hi, accuracy, ...}."""
    out: Dict[str, float] = {}
    for name, fn in (("auc", auc_score), ("accuracy", accuracy_at), ("brier", brier_score)):
        lo, hi = bootstrap_ci(fn, y, p, seed, n_boot)
        out[name] = fn(y, p)
        out[f"{name}_lo"] = lo
        out[f"{name}_hi"] = hi
    return out


# ---------------------------------------------------------------- calibration


def _bins(p: np.ndarray, edges: Sequence[float]) -> Iterator[Tuple[float, float, np.ndarray]]:
    """(lo, hi, rows in [lo, hi)) per probability bin; the last bin is closed."""
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        yield lo, hi, (p >= lo) & ((p < hi) if i < len(edges) - 2 else (p <= hi))


def tab_reliability_table(
    y: np.ndarray, p: np.ndarray, edges: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
) -> List[Dict[str, Any]]:
    """The tabular classifiers' calibration: rows {lo, hi, n, meanPredicted, observed,
    positives} for every bin, empty ones included (their means None)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    rows = []
    for lo, hi, m in _bins(p, edges):
        n = int(m.sum())
        rows.append(
            {
                "lo": lo,
                "hi": hi,
                "n": n,
                "meanPredicted": float(p[m].mean()) if n else None,
                "observed": float(y[m].mean()) if n else None,
                "positives": int(y[m].sum()) if n else 0,
            }
        )
    return rows


def reliability_table(y: np.ndarray, p: np.ndarray, edges: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)) -> List[Dict[str, Any]]:
    """The neural models' calibration: [{lo, hi, n, meanPredicted, observedRate}] with
    empty bins left out."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    rows = []
    for lo, hi, sel in _bins(p, edges):
        if sel.sum() == 0:
            continue
        rows.append({"lo": lo, "hi": hi, "n": int(sel.sum()), "meanPredicted": float(p[sel].mean()), "observedRate": float(y[sel].mean())})
    return rows
