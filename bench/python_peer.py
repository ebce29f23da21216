#!/usr/bin/python3
"""Python peers for bench/inference.ts: the same predictions with scikit-learn and PyTorch in
Debian's python3, vectorised as their users call them, on batches of the same shape.

    /usr/bin/python3 bench/python_peer.py < request.json > result.json

Request: {"batch": 1024, "minSeconds": 0.3, "models": [{"id", "family", "rowShape"}]}.
Result: {"python", "sklearn", "torch", "models": {id: {...}}}; a model whose library is missing
is reported as skipped with the reason.

What is timed (per model, median over repeats, after a warm-up call):
- batched: one vectorised call on `batch` rows: `predict_proba(X)` (classifiers) or
  `predict(X)` (the GBM regressor); `model(x, mask)` / `model(x)` under `torch.no_grad()`;
- perRow: the same call on one row, repeated (what a row-at-a-time caller pays).

What is loaded (nothing is trained for the ONNX files; the fitted estimators are not saved):
- sklearn models are RE-FITTED with the training module's own pipeline functions and chosen
  hyperparameters (read from the model card's "Chosen:" line) on the same dataset (the whole
  dataset, not exactly the training split): the same estimator family, size and settings, so
  the same predict cost, though not bit-identical predictions. GBM: GradientBoostingRegressor
  (load_diabetes); SVM: svm_breast_cancer.pipeline(C, gamma) = scaler + RBF SVC + sigmoid
  calibration (load_breast_cancer); RF: rf_pima.pipeline(...) = imputer + RandomForest
  (rf_pima.load_pima(), mlbench via Rscript).
- torch models are the training modules' own architectures (cnn_lung.Cnn,
  pbc_nets.GruModel / AttnModel with the card's width) with seeded random weights: the
  same operations and FLOPs as the exported graph, not the trained weights.
"""
import json
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "models", "training"))


def timed(fn, min_seconds):
    fn()  # warm-up
    samples = []
    start = time.perf_counter()
    while len(samples) < 3 or (time.perf_counter() - start < min_seconds and len(samples) < 200):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000.0


def chosen(model_id):
    """key=value pairs of the card's 'Chosen:' line."""
    try:
        with open(os.path.join(ROOT, "models", model_id, "card.md"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return {}
    m = re.search(r"Chosen:\s*([^\n(]*)", text)
    if not m:
        return {}
    out = {}
    for k, v in re.findall(r"(\w+)\s*=\s*([\w.]+)", m.group(1)):
        try:
            out[k] = int(v) if re.fullmatch(r"-?\d+", v) else float(v)
        except ValueError:
            out[k] = None if v == "None" else v
    return out


def sklearn_model(spec):
    import numpy as np

    family, mid = spec["family"], spec["id"]
    params = chosen(mid)
    if family == "gbm":
        from sklearn.datasets import load_diabetes
        from sklearn.ensemble import GradientBoostingRegressor

        X, y = load_diabetes(return_X_y=True, scaled=False)
        keys = ("n_estimators", "learning_rate", "max_depth", "subsample", "min_samples_leaf")
        est = GradientBoostingRegressor(random_state=0, **{k: params[k] for k in keys if k in params}).fit(X, y)
        return X, est.predict, {"estimator": "GradientBoostingRegressor", "params": params, "call": "predict"}
    if family == "svm":
        import svm_breast_cancer as S
        from sklearn.datasets import load_breast_cancer

        X, y = load_breast_cancer(return_X_y=True)
        c, gamma = params.get("C", 10.0), params.get("gamma", 0.01)
        est = S.pipeline(c, gamma).fit(X, y)
        return X, est.predict_proba, {"estimator": "scaler + SVC(rbf) + sigmoid calibration", "C": c, "gamma": gamma, "call": "predict_proba"}
    if family == "rf":
        import rf_pima as R

        X, y = R.load_pima()
        keys = ("n_estimators", "max_features", "min_samples_leaf", "max_depth")
        kw = {k: params[k] for k in keys if k in params}
        est = R.pipeline(**kw).fit(X, y)
        return X, est.predict_proba, {"estimator": "imputer + RandomForestClassifier", "params": kw, "call": "predict_proba"}
    raise ValueError(family)


def torch_model(spec):
    import torch

    torch.manual_seed(0)
    family, shape = spec["family"], spec["rowShape"]
    if family == "cnn":
        import cnn_lung

        model = cnn_lung.Cnn().eval()
        return model, lambda x: model(x), {"architecture": "cnn_lung.Cnn (random weights)"}
    import numpy as np
    import pbc_nets as P

    F = shape[1]
    prep = P.Prep(np.zeros(F), np.zeros(F, dtype=bool), np.zeros(F), np.ones(F))
    width = int(chosen(spec["id"]).get("width", 16))
    model = (P.GruModel(prep, width, 0.0) if family == "rnn" else P.AttnModel(prep, width, 0.0)).eval()
    return model, None, {"architecture": f"pbc_nets.{'GruModel' if family == 'rnn' else 'AttnModel'} width {width} (random weights)"}


def bench_model(spec, batch, min_seconds):
    import numpy as np

    rng = np.random.default_rng(0)
    family = spec["family"]
    if family in ("gbm", "svm", "rf"):
        X, call, info = sklearn_model(spec)
        rows = X[rng.integers(0, len(X), batch)]
        one = rows[:1]
        return {
            "library": "sklearn",
            **info,
            "batchedMs": timed(lambda: call(rows), min_seconds),
            "perRowMs": timed(lambda: call(one), min_seconds / 3),
        }
    import torch

    model, _, info = torch_model(spec)
    shape = spec["rowShape"]
    x = torch.rand(batch, *shape)
    if family == "cnn":
        run = lambda n: model(x[:n])  # noqa: E731
    else:
        mask = torch.ones(batch, shape[0])
        run = lambda n: model(x[:n], mask[:n])  # noqa: E731
    with torch.no_grad():
        return {
            "library": "torch",
            **info,
            "threads": torch.get_num_threads(),
            "batchedMs": timed(lambda: run(batch), min_seconds),
            "perRowMs": timed(lambda: run(1), min_seconds / 3),
        }


def main():
    req = json.load(sys.stdin)
    batch, min_seconds = int(req.get("batch", 1024)), float(req.get("minSeconds", 0.3))
    out = {"python": sys.version.split()[0], "models": {}}
    for lib in ("sklearn", "torch"):
        try:
            out[lib] = __import__(lib).__version__
        except ImportError:
            out[lib] = None
    for spec in req["models"]:
        lib = "sklearn" if spec["family"] in ("gbm", "svm", "rf") else "torch"
        if out[lib] is None:
            out["models"][spec["id"]] = {"skipped": f"{lib} is not installed for {sys.executable}"}
            continue
        try:
            r = bench_model(spec, batch, min_seconds)
            r["batchRowsPerSec"] = batch / (r["batchedMs"] / 1000.0)
            r["perRowRowsPerSec"] = 1000.0 / r["perRowMs"]
            out["models"][spec["id"]] = r
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            out["models"][spec["id"]] = {"skipped": f"{type(e).__name__}: {e}"}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
