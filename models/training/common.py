"""Shared helpers for the training scripts in models/training/: the command line, the log
line, and the ONNX export of the scikit-learn models (tree ensembles, RBF SVM).

Other shared pieces have their own modules: artifacts.py (the files a script writes: JSON,
split.json, golden.json, manifest blocks, config.pbtxt), metrics.py (held-out metrics and
bootstrap intervals) and cards.py (the shared parts of the model cards).

Everything here is deterministic given its seed: re-running a training script
rewrites the same files (byte for byte, as far as float formatting allows).

Run with Debian's Python (/usr/bin/python3: python3-sklearn, python3-onnx,
python3-torch); there is no skl2onnx, so tree ensembles are written as ONNX-ML
graphs with onnx.helper here.
"""

from __future__ import annotations

import argparse
import json
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

    def node_attributes(self, leaf_prefix: str) -> Dict[str, List[Any]]:
        """The node and leaf attributes of the ai.onnx.ml operator, as make_node keywords:
        leaves as `target_*` (TreeEnsembleRegressor) or `class_*` (TreeEnsembleClassifier)."""
        return {
            "nodes_treeids": self.nodes_treeids,
            "nodes_nodeids": self.nodes_nodeids,
            "nodes_featureids": self.nodes_featureids,
            "nodes_values": self.nodes_values,
            "nodes_modes": self.nodes_modes,
            "nodes_truenodeids": self.nodes_truenodeids,
            "nodes_falsenodeids": self.nodes_falsenodeids,
            "nodes_hitrates": self.nodes_hitrates,
            "nodes_missing_value_tracks_true": self.nodes_missing_value_tracks_true,
            f"{leaf_prefix}_treeids": self.leaf_treeids,
            f"{leaf_prefix}_nodeids": self.leaf_nodeids,
            f"{leaf_prefix}_ids": self.leaf_targetids,
            f"{leaf_prefix}_weights": self.leaf_weights,
        }

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
        **attrs.node_attributes("target"),
    )
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", n_features])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1])
    return make_model([node], [x], [y], doc=doc, ml=True)


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
            **attrs.node_attributes("class"),
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

