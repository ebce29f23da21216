"""Shared helpers for the training scripts in models/training/.

Everything here is deterministic given its seed: re-running a training script
rewrites the same files (byte for byte, as far as float formatting allows).

Run with Debian's Python (/usr/bin/python3: python3-sklearn, python3-onnx,
python3-torch); there is no skl2onnx, so tree ensembles are written as ONNX-ML
graphs with onnx.helper here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# ONNX versions: opset 17 / ai.onnx.ml 3 are what Debian's onnx 1.12 knows and what
# onnxruntime(-node) 1.30 runs. IR version 8 is onnx 1.12's.
ONNX_OPSET = 17
ONNX_ML_OPSET = 3
ONNX_IR_VERSION = 8


# ---------------------------------------------------------------- command line


def parse_args(description: str) -> argparse.Namespace:
    """`--out ROOT` redirects every written file under ROOT (same relative paths as in
    the repository); `npm run train -- --check` uses it to retrain into a temp dir."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=REPO_ROOT, help="root to write models/ and local/ under (default: the repo)")
    return p.parse_args()


def log(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


# ---------------------------------------------------------------- JSON


def _round_floats(obj: Any, digits: int) -> Any:
    if isinstance(obj, float):
        return float(round(obj, digits))
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round_floats(v, digits) for v in obj]
    return obj


def to_py(obj: Any) -> Any:
    """numpy scalars/arrays → plain Python, for json.dump."""
    if isinstance(obj, np.ndarray):
        return [to_py(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, dict):
        return {k: to_py(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_py(v) for v in obj]
    return obj


def write_json(path: str, obj: Any, indent: Optional[int] = 2, digits: Optional[int] = None) -> None:
    """Writes JSON deterministically (insertion order kept, trailing newline). `digits`
    rounds every float; without it floats are written with Python's shortest repr."""
    obj = to_py(obj)
    if digits is not None:
        obj = _round_floats(obj, digits)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")


# ---------------------------------------------------------------- splitting


def split_rows(
    n_rows: int,
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    names: Sequence[str] = ("train", "validation", "test"),
    stratify: Optional[np.ndarray] = None,
) -> Dict[str, List[int]]:
    """A fixed random split of row ids 0..n_rows-1 (each row is one patient). Returns
    sorted row ids per part. With `stratify` (class labels), each class is split on its
    own so the parts keep the class balance. The last part takes the rounding rest."""
    assert len(fractions) == len(names) and abs(sum(fractions) - 1.0) < 1e-9
    rng = np.random.RandomState(seed)
    groups = [np.arange(n_rows)] if stratify is None else [np.flatnonzero(stratify == c) for c in np.unique(stratify)]
    parts: Dict[str, List[int]] = {name: [] for name in names}
    for ids in groups:
        perm = rng.permutation(ids)
        start = 0
        for i, name in enumerate(names):
            end = len(perm) if i == len(names) - 1 else start + int(round(fractions[i] * len(perm)))
            parts[name].extend(int(r) for r in perm[start:end])
            start = end
    return {name: sorted(ids) for name, ids in parts.items()}


def write_split(path: str, split: Dict[str, List[int]], seed: int, source: str, note: str = "") -> None:
    """split.json: the row ids (0-based positions in `source`) of every part."""
    doc: Dict[str, Any] = {
        "source": source,
        "rowId": "0-based row position in the source data set (one row = one patient)",
        "seed": seed,
        "counts": {k: len(v) for k, v in split.items()},
    }
    if note:
        doc["note"] = note
    doc.update(split)
    obj = to_py(doc)
    # One line per part keeps the file short and diffable.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = ["{"]
    items = list(obj.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, separators=(', ', ': '))}{comma}")
    lines.append("}")
    write_text(path, "\n".join(lines))


# ---------------------------------------------------------------- metrics


def r2_score(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot


def mae_score(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, dtype=np.float64) - np.asarray(p, dtype=np.float64))))


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
    arr = np.asarray(stats)
    return float(np.percentile(arr, 100 * alpha / 2)), float(np.percentile(arr, 100 * (1 - alpha / 2)))


# ---------------------------------------------------------------- ONNX tree ensembles


def float32_floor(t: float) -> float:
    """The largest float32 ≤ t. sklearn compares float32-cast features with a float64
    threshold (`x <= t`); for any float32 x, `x <= t` ⇔ `x <= float32_floor(t)`, so the
    ONNX BRANCH_LEQ graph with float32 thresholds takes exactly sklearn's branches."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf), dtype=np.float32)
    return float(f)


class TreeAttrs:
    """Accumulates the flat node/leaf attribute lists of TreeEnsembleRegressor/Classifier."""

    def __init__(self) -> None:
        self.nodes_treeids: List[int] = []
        self.nodes_nodeids: List[int] = []
        self.nodes_featureids: List[int] = []
        self.nodes_values: List[float] = []
        self.nodes_modes: List[str] = []
        self.nodes_truenodeids: List[int] = []
        self.nodes_falsenodeids: List[int] = []
        self.nodes_hitrates: List[float] = []
        self.nodes_missing_value_tracks_true: List[int] = []
        self.leaf_treeids: List[int] = []
        self.leaf_nodeids: List[int] = []
        self.leaf_targetids: List[int] = []
        self.leaf_weights: List[float] = []

    def add_tree(self, tree: Any, tree_id: int, leaf_values: Callable[[int], Iterable[tuple]]) -> None:
        """Adds one sklearn `tree_`. `leaf_values(node)` yields (target_or_class_id, weight)
        pairs for a leaf. sklearn's convention: left child when x <= threshold."""
        left, right = tree.children_left, tree.children_right
        for node in range(tree.node_count):
            self.nodes_treeids.append(tree_id)
            self.nodes_nodeids.append(node)
            self.nodes_hitrates.append(1.0)
            self.nodes_missing_value_tracks_true.append(0)
            if left[node] == -1:  # leaf
                self.nodes_featureids.append(0)
                self.nodes_values.append(0.0)
                self.nodes_modes.append("LEAF")
                self.nodes_truenodeids.append(0)
                self.nodes_falsenodeids.append(0)
                for target, weight in leaf_values(node):
                    self.leaf_treeids.append(tree_id)
                    self.leaf_nodeids.append(node)
                    self.leaf_targetids.append(int(target))
                    self.leaf_weights.append(float(weight))
            else:
                self.nodes_featureids.append(int(tree.feature[node]))
                self.nodes_values.append(float32_floor(float(tree.threshold[node])))
                self.nodes_modes.append("BRANCH_LEQ")
                self.nodes_truenodeids.append(int(left[node]))
                self.nodes_falsenodeids.append(int(right[node]))


def _io_model(node: Any, n_features: int, input_name: str, outputs: List[Any], doc: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_features])
    graph = helper.make_graph([node], "model", [x], outputs)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)],
        producer_name="fhir-analytics/models/training",
        doc_string=doc,
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def gbm_regressor_to_onnx(
    gbm: Any, n_features: int, input_name: str = "x", output_name: str = "y", doc: str = ""
) -> onnx.ModelProto:
    """sklearn GradientBoostingRegressor (squared_error/absolute_error/huber/quantile with
    a constant init) → ai.onnx.ml TreeEnsembleRegressor, input [N, n_features] float32,
    output [N, 1] float32. prediction = init + learning_rate · Σ tree(x)."""
    init = gbm.init_
    if init == "zero":
        base = 0.0
    else:
        base = float(np.asarray(init.predict(np.zeros((1, n_features)))).reshape(-1)[0])
        # The init must be a constant (DummyRegressor-like) for base_values to be exact.
        probe = np.asarray(init.predict(np.ones((1, n_features)) * 1e3)).reshape(-1)[0]
        assert probe == base, "init estimator is not constant; cannot be expressed as base_values"
    lr = float(gbm.learning_rate)
    attrs = TreeAttrs()
    for i, est in enumerate(gbm.estimators_[:, 0]):
        t = est.tree_
        attrs.add_tree(t, i, lambda node, t=t: [(0, lr * float(t.value[node][0][0]))])
    node = helper.make_node(
        "TreeEnsembleRegressor",
        [input_name],
        [output_name],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        base_values=[base],
        nodes_treeids=attrs.nodes_treeids,
        nodes_nodeids=attrs.nodes_nodeids,
        nodes_featureids=attrs.nodes_featureids,
        nodes_values=attrs.nodes_values,
        nodes_modes=attrs.nodes_modes,
        nodes_truenodeids=attrs.nodes_truenodeids,
        nodes_falsenodeids=attrs.nodes_falsenodeids,
        nodes_hitrates=attrs.nodes_hitrates,
        nodes_missing_value_tracks_true=attrs.nodes_missing_value_tracks_true,
        target_treeids=attrs.leaf_treeids,
        target_nodeids=attrs.leaf_nodeids,
        target_ids=attrs.leaf_targetids,
        target_weights=attrs.leaf_weights,
    )
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1])
    return _io_model(node, n_features, input_name, [y], doc)


def gbm_prediction_bounds(gbm: Any, n_features: int) -> tuple:
    """Smallest and largest value the ensemble can output (init + Σ min/max leaf · lr)."""
    base = 0.0 if gbm.init_ == "zero" else float(np.asarray(gbm.init_.predict(np.zeros((1, n_features)))).reshape(-1)[0])
    lr = float(gbm.learning_rate)
    lo = hi = base
    for est in gbm.estimators_[:, 0]:
        t = est.tree_
        leaves = t.value[t.children_left == -1][:, 0, 0] * lr
        lo += float(leaves.min())
        hi += float(leaves.max())
    return lo, hi


def save_onnx(model: onnx.ModelProto, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(model, path)
    onnx.checker.check_model(path, full_check=True)


# ---------------------------------------------------------------- serving files


_TRITON_TYPES = {"FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32", "BOOL": "TYPE_BOOL"}


def config_pbtxt(
    name: str, max_batch_size: int, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]], kind: str = "KIND_CPU"
) -> str:
    """Triton model configuration. `inputs`/`outputs` are the manifest's serving tensors
    ({name, datatype, dims} with dims without the batch dimension)."""

    def tensors(ts: List[Dict[str, Any]]) -> str:
        out = []
        for i, t in enumerate(ts):
            dims = ", ".join(str(d) for d in t["dims"])
            sep = "," if i < len(ts) - 1 else ""
            out.append(
                "  {\n"
                f'    name: "{t["name"]}"\n'
                f"    data_type: {_TRITON_TYPES[t['datatype']]}\n"
                f"    dims: [ {dims} ]\n"
                f"  }}{sep}"
            )
        return "\n".join(out)

    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(outputs)}\n]\n"
        f"instance_group [\n  {{\n    count: 1\n    kind: {kind}\n  }}\n]\n"
        "dynamic_batching { }\n"
    )


def write_golden(path: str, model_id: str, input_name: str, output_name: str, cases: List[Dict[str, Any]]) -> None:
    """golden.json: inputs in raw units and the reference (float64) outputs. `cases`:
    [{rowId, x: [...], expected: number | [...]}]. One case per line, for diffs."""
    head = {"model": model_id, "input": input_name, "output": output_name}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
    lines.append('  "cases": [')
    for i, c in enumerate(cases):
        sep = "," if i < len(cases) - 1 else ""
        lines.append("    " + json.dumps(to_py(c), separators=(", ", ": "), allow_nan=False) + sep)
    lines.append("  ]")
    lines.append("}")
    write_text(path, "\n".join(lines))


def fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}"


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


# ---------------------------------------------------------------- classification (svm, rf)
# Appended for the tabular classifiers (tab_* names: the neural models' helpers below
# have their own accuracy_at/brier_score/reliability_* with other signatures).


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count one half)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y), np.asarray(p, dtype=np.float64)))


def tab_brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the positive-class probability."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def tab_accuracy_at(threshold: float = 0.5) -> Callable[[np.ndarray, np.ndarray], float]:
    """Accuracy of `p >= threshold` as the positive class."""

    def acc(y: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean((np.asarray(p) >= threshold).astype(int) == np.asarray(y).astype(int)))

    return acc


def log_loss_score(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def classification_metrics(y: np.ndarray, p: np.ndarray, seed: int, n_boot: int = 2000) -> Dict[str, float]:
    """Held-out AUC, accuracy (p ≥ 0.5) and Brier score of the positive-class probability,
    each with a percentile-bootstrap 95% interval over rows (same resamples for each)."""
    out: Dict[str, float] = {}
    for name, fn in (("auc", auc_score), ("accuracy", tab_accuracy_at(0.5)), ("brier", tab_brier)):
        lo, hi = bootstrap_ci(fn, y, p, seed, n_boot)
        out[name] = fn(y, p)
        out[f"{name}_lo"] = lo
        out[f"{name}_hi"] = hi
    return out


def tab_reliability_table(
    y: np.ndarray, p: np.ndarray, edges: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
) -> List[Dict[str, Any]]:
    """Rows {lo, hi, n, meanPredicted, observed} per probability bin [lo, hi) (last bin closed)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    rows = []
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        m = (p >= lo) & ((p < hi) if i < len(edges) - 2 else (p <= hi))
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


def tab_reliability_markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ["| predicted probability | n | mean predicted | observed positive rate |", "|---|---|---|---|"]
    for i, r in enumerate(rows):
        close = "]" if i == len(rows) - 1 else ")"
        mp = "—" if r["meanPredicted"] is None else fmt(r["meanPredicted"])
        ob = "—" if r["observed"] is None else f"{fmt(r['observed'])} ({r['positives']}/{r['n']})"
        lines.append(f"| [{r['lo']:.1f}, {r['hi']:.1f}{close} | {r['n']} | {mp} | {ob} |")
    return "\n".join(lines)


def make_model(
    nodes: List[Any],
    inputs: List[Any],
    outputs: List[Any],
    initializers: Optional[List[Any]] = None,
    doc: str = "",
    ml: bool = True,
) -> onnx.ModelProto:
    """A checked model from nodes (opset ONNX_OPSET, plus ai.onnx.ml when `ml`)."""
    graph = helper.make_graph(nodes, "model", inputs, outputs, initializer=initializers or [])
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    if ml:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="fhir-analytics/models/training", doc_string=doc)
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def rf_classifier_to_onnx(
    rf: Any,
    n_features: int,
    input_name: str = "x",
    output_name: str = "probabilities",
    impute_values: Optional[Sequence[float]] = None,
    doc: str = "",
) -> onnx.ModelProto:
    """sklearn RandomForestClassifier (binary or multiclass, no class weights needed) →
    [ai.onnx.ml Imputer (NaN → impute_values)] → ai.onnx.ml TreeEnsembleClassifier.
    Input [N, n_features] float32; output `output_name` [N, n_classes] float32 = the mean of
    the trees' leaf class probabilities (sklearn's predict_proba): every leaf carries every
    class's weight (leaf probability / n_trees), post_transform NONE, so onnxruntime does
    not take its one-class 'binary case' path. The label output is computed but not
    exposed. Thresholds are float32_floor'ed as for the GBM (exact branches)."""
    n_trees = len(rf.estimators_)
    classes = [int(c) for c in rf.classes_]
    assert classes == list(range(len(classes))), "classes must be 0..k-1"
    attrs = TreeAttrs()
    for i, est in enumerate(rf.estimators_):
        t = est.tree_

        def leaf(node: int, t: Any = t) -> Iterable[tuple]:
            v = np.asarray(t.value[node][0], dtype=np.float64)
            prob = v / v.sum()
            return [(k, float(prob[k]) / n_trees) for k in range(len(classes))]

        attrs.add_tree(t, i, leaf)
    nodes = []
    tree_in = input_name
    if impute_values is not None:
        assert len(impute_values) == n_features
        nodes.append(
            helper.make_node(
                "Imputer",
                [input_name],
                ["x_imputed"],
                domain="ai.onnx.ml",
                imputed_value_floats=[float(np.float32(v)) for v in impute_values],
                replaced_value_float=float("nan"),
            )
        )
        tree_in = "x_imputed"
    nodes.append(
        helper.make_node(
            "TreeEnsembleClassifier",
            [tree_in],
            ["label", output_name],
            domain="ai.onnx.ml",
            classlabels_int64s=classes,
            post_transform="NONE",
            nodes_treeids=attrs.nodes_treeids,
            nodes_nodeids=attrs.nodes_nodeids,
            nodes_featureids=attrs.nodes_featureids,
            nodes_values=attrs.nodes_values,
            nodes_modes=attrs.nodes_modes,
            nodes_truenodeids=attrs.nodes_truenodeids,
            nodes_falsenodeids=attrs.nodes_falsenodeids,
            nodes_hitrates=attrs.nodes_hitrates,
            nodes_missing_value_tracks_true=attrs.nodes_missing_value_tracks_true,
            class_treeids=attrs.leaf_treeids,
            class_nodeids=attrs.leaf_nodeids,
            class_ids=attrs.leaf_targetids,
            class_weights=attrs.leaf_weights,
        )
    )
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_features])
    z = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", len(classes)])
    return make_model(nodes, [x], [z], doc=doc, ml=True)


def rbf_svm_platt_to_onnx(
    mean: np.ndarray,
    scale: np.ndarray,
    support_vectors: np.ndarray,
    dual_coef: np.ndarray,
    intercept: float,
    gamma: float,
    platt_a: float,
    platt_b: float,
    input_name: str = "x",
    output_name: str = "probabilities",
    doc: str = "",
) -> onnx.ModelProto:
    """Standardisation + binary RBF SVM + Platt sigmoid in plain ONNX operators (no
    ai.onnx.ml, so it also runs on the CUDA execution provider):
        z = (x - mean) / scale
        f = Σ_i dual_coef_i · exp(-gamma · ||z - sv_i||²) + intercept   (sklearn's decision_function)
        p1 = sigmoid(-(platt_a · f + platt_b))                           (sklearn _SigmoidCalibration)
        output [N, 2] = [1 - p1, p1]
    ||z - sv||² = ||z||² - 2 z·sv + ||sv||², clamped at 0 (float32 cancellation)."""
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    sv = np.asarray(support_vectors, dtype=np.float64)
    n_features = sv.shape[1]
    dual = np.asarray(dual_coef, dtype=np.float64).reshape(-1, 1)
    inits = [
        numpy_helper.from_array(f32(np.reshape(mean, (1, -1))), "mean"),
        numpy_helper.from_array(f32(np.reshape(scale, (1, -1))), "scale"),
        numpy_helper.from_array(f32(sv.T), "sv_t"),
        numpy_helper.from_array(f32((sv**2).sum(axis=1).reshape(1, -1)), "sv_sq"),
        numpy_helper.from_array(f32([-2.0]), "minus_two"),
        numpy_helper.from_array(f32([-gamma]), "neg_gamma"),
        numpy_helper.from_array(f32(dual), "dual_coef"),
        numpy_helper.from_array(f32([intercept]), "intercept"),
        numpy_helper.from_array(f32([-platt_a]), "neg_platt_a"),
        numpy_helper.from_array(f32([-platt_b]), "neg_platt_b"),
        numpy_helper.from_array(f32([1.0]), "one"),
        numpy_helper.from_array(np.asarray([1], dtype=np.int64), "axis1"),
    ]
    N = helper.make_node
    nodes = [
        N("Sub", [input_name, "mean"], ["centred"]),
        N("Div", ["centred", "scale"], ["z"]),
        N("Mul", ["z", "z"], ["z_sq_el"]),
        N("ReduceSum", ["z_sq_el", "axis1"], ["z_sq"], keepdims=1),  # [N, 1]
        N("MatMul", ["z", "sv_t"], ["cross"]),  # [N, nSV]
        N("Mul", ["cross", "minus_two"], ["cross2"]),
        N("Add", ["cross2", "z_sq"], ["d_partial"]),
        N("Add", ["d_partial", "sv_sq"], ["d_raw"]),
        N("Relu", ["d_raw"], ["d"]),  # squared distance ≥ 0
        N("Mul", ["d", "neg_gamma"], ["log_k"]),
        N("Exp", ["log_k"], ["k"]),
        N("MatMul", ["k", "dual_coef"], ["f_raw"]),  # [N, 1]
        N("Add", ["f_raw", "intercept"], ["decision"]),
        N("Mul", ["decision", "neg_platt_a"], ["logit_partial"]),
        N("Add", ["logit_partial", "neg_platt_b"], ["logit"]),
        N("Sigmoid", ["logit"], ["p_pos"]),
        N("Sub", ["one", "p_pos"], ["p_neg"]),
        N("Concat", ["p_neg", "p_pos"], [output_name], axis=1),
    ]
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_features])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 2])
    return make_model(nodes, [x], [y], initializers=inits, doc=doc, ml=False)


def rscript_csv(r_expr: str, path: str) -> None:
    """Runs `Rscript -e` to write a data set to CSV (NA for missing values)."""
    import subprocess

    code = f"{r_expr}; write.csv(.d, {json.dumps(path)}, row.names = FALSE, na = 'NA')"
    r = subprocess.run(["Rscript", "--vanilla", "-e", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"Rscript failed ({r.returncode}): {r.stderr.strip()}")


# ---------------------------------------------------------------- classification metrics (neural models)


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half)."""
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
    return float(np.mean((np.asarray(p) >= threshold).astype(int) == np.asarray(y).astype(int)))


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


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
    arr = np.asarray(stats)
    return float(np.percentile(arr, 100 * alpha / 2)), float(np.percentile(arr, 100 * (1 - alpha / 2)))


def reliability_table(y: np.ndarray, p: np.ndarray, edges: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)) -> List[Dict[str, Any]]:
    """Calibration by fixed probability bins: [{lo, hi, n, meanPredicted, observedRate}]
    (empty bins left out). The last bin includes 1.0."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    rows = []
    for i in range(len(edges) - 1):
        lo, hi = edges[i], edges[i + 1]
        sel = (p >= lo) & ((p < hi) if i < len(edges) - 2 else (p <= hi))
        if sel.sum() == 0:
            continue
        rows.append({"lo": lo, "hi": hi, "n": int(sel.sum()), "meanPredicted": float(p[sel].mean()), "observedRate": float(y[sel].mean())})
    return rows


def reliability_markdown(rows: List[Dict[str, Any]]) -> str:
    lines = ["| predicted probability | n | mean predicted | observed rate |", "|---|---|---|---|"]
    for r in rows:
        close = "]" if r["hi"] >= 1.0 else ")"
        lines.append(f"| [{r['lo']:.1f}, {r['hi']:.1f}{close} | {r['n']} | {r['meanPredicted']:.3f} | {r['observedRate']:.3f} |")
    return "\n".join(lines)


def write_golden_inputs(
    path: str, model_id: str, input_names: List[str], output_name: str, cases: List[Dict[str, Any]], note: str = ""
) -> None:
    """golden.json for a model with several input tensors: `inputs` lists the tensor names
    and every case carries one value per name (`{rowId, x: ..., mask: ..., expected}`);
    models/training/parity.mjs batches each input over the cases. One case per line."""
    head: Dict[str, Any] = {"model": model_id, "inputs": input_names, "output": output_name}
    if note:
        head["note"] = note
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "cases": [')
    for i, c in enumerate(cases):
        sep = "," if i < len(cases) - 1 else ""
        lines.append("    " + json.dumps(to_py(c), separators=(", ", ": "), allow_nan=False) + sep)
    lines.append("  ]")
    lines.append("}")
    write_text(path, "\n".join(lines))
