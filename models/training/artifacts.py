"""The files a training script writes, in the repository's formats: deterministic JSON and
text, split.json, golden.json, the manifest (and its recurring blocks: project codes, output
bands, report, serving, metrics with intervals, patient features) and Triton's config.pbtxt.

Every writer keeps insertion order and ends files with a newline, so re-running a training
script rewrites the same bytes (as far as the numbers themselves repeat)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# The project's code system for everything without a standard code (conclusions, report codes).
PROJECT = "urn:fhir-analytics:code"
LOINC = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service sections
# Diagnostic service sections the models' reports use: (code, display).
LAB = ("LAB", "Laboratory")
CYTOPATHOLOGY = ("CP", "Cytopathology")
RADIOLOGY = ("RAD", "Radiology")

# ---------------------------------------------------------------- JSON and text


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


def _write_lines_json(path: str, head: Dict[str, Any], key: str, items: Sequence[Any]) -> None:
    """A JSON object written by hand for short diffs: each `head` entry on its own line, then
    `key` as an array with one compact item per line."""
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append(f"  {json.dumps(key)}: [")
    for i, item in enumerate(items):
        sep = "," if i < len(items) - 1 else ""
        lines.append("    " + json.dumps(to_py(item), separators=(", ", ": "), allow_nan=False) + sep)
    lines.append("  ]")
    lines.append("}")
    write_text(path, "\n".join(lines))


# ---------------------------------------------------------------- split.json


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


# ---------------------------------------------------------------- golden.json


def raw_value(v: float) -> Optional[float]:
    """A raw input value for golden.json: NaN (missing) → null, which parity sends as NaN."""
    return None if np.isnan(v) else float(v)


def tabular_cases(rows: Sequence[int], X: np.ndarray, expected: Sequence[Any]) -> List[Dict[str, Any]]:
    """Golden cases of a tabular model: {rowId, x: the row in raw units (NaN → null), expected}
    for every held-out row id with its reference output (a number or a list)."""
    return [{"rowId": int(r), "x": [raw_value(v) for v in X[r]], "expected": e} for r, e in zip(rows, expected)]


def write_golden(
    path: str, model_id: str, input_name: str, output_name: str, cases: List[Dict[str, Any]]
) -> None:
    """golden.json: inputs in raw units and the reference (float64) outputs. `cases`:
    [{rowId, x: [...], expected: number | [...]}]. One case per line, for diffs."""
    _write_lines_json(path, {"model": model_id, "input": input_name, "output": output_name}, "cases", cases)


def write_golden_inputs(
    path: str, model_id: str, input_names: List[str], output_name: str, cases: List[Dict[str, Any]], note: str = ""
) -> None:
    """golden.json for a model with several input tensors: `inputs` lists the tensor names
    and every case carries one value per name (`{rowId, x: ..., mask: ..., expected}`);
    models/training/parity.mjs batches each input over the cases. One case per line."""
    head: Dict[str, Any] = {"model": model_id, "inputs": input_names, "output": output_name}
    if note:
        head["note"] = note
    _write_lines_json(path, head, "cases", cases)


# ---------------------------------------------------------------- manifest blocks


def code(code_: str, display: str, system: str = PROJECT) -> Dict[str, str]:
    return {"system": system, "code": code_, "display": display}


def loinc(code_: str, display: str) -> Dict[str, str]:
    return code(code_, display, LOINC)


def label(code_: str, display: str) -> Dict[str, Any]:
    """An output label (class) in the project code system."""
    return {"code": code(code_, display)}


def band(at_or_above: float, indicator: str, code_: str, display: str) -> Dict[str, Any]:
    """An output band: from `at_or_above` up, the report's indicator and conclusion."""
    return {"atOrAbove": at_or_above, "indicator": indicator, "conclusion": code(code_, display)}


def probability_output(
    tensor: str, labels: List[Dict[str, Any]], thresholds: List[Dict[str, Any]], code_: Dict[str, str]
) -> Dict[str, Any]:
    """The manifest's `output` of a classifier: the positive-class probability (unit `1`) in
    `tensor`, its class labels, bands and result code."""
    return {"kind": "probability", "tensor": tensor, "labels": labels, "thresholds": thresholds, "unit": "1", "code": code_}


def demo_source(dataset: str, licence: str, model_id: str) -> Dict[str, Any]:
    """The head of a demo cohort file (local/demo/data/*-heldout.json): where the held-out
    rows come from and which model's split they are the test part of."""
    return {
        "dataset": dataset,
        "licence": licence,
        "split": "test",
        "splitFile": f"models/{model_id}/split.json",
        "model": model_id,
    }


def report(code_: str, display: str, category: Tuple[str, str]) -> Dict[str, Any]:
    """The manifest's `report`: the DiagnosticReport's code, its v2-0074 category, preliminary."""
    return {
        "code": code(code_, display),
        "category": [code(category[0], category[1], V2_0074)],
        "status": "preliminary",
    }


def serving(
    model_id: str, instance_type: str, max_batch: int, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]
) -> Dict[str, Any]:
    """The manifest's `serving`: Triton model name, SageMaker instance type and tensors
    ({name, datatype, dims} without the batch dimension)."""
    return {
        "tritonModelName": model_id,
        "instanceType": instance_type,
        "maxBatchSize": max_batch,
        "inputs": inputs,
        "outputs": outputs,
    }


def with_ci(name: str, value: float, lo: float, hi: float, digits: int = 4) -> Dict[str, float]:
    """A held-out metric and its 95% interval as manifest `metrics` entries, rounded:
    {name, nameCi95Low, nameCi95High}."""
    return {name: round(value, digits), f"{name}Ci95Low": round(lo, digits), f"{name}Ci95High": round(hi, digits)}


def all_with_ci(met: Dict[str, float], names: Sequence[str], digits: int = 4) -> Dict[str, float]:
    """with_ci for each of `names` from a {name, name_lo, name_hi} dict
    (metrics.classification_metrics')."""
    out: Dict[str, float] = {}
    for name in names:
        out.update(with_ci(name, met[name], met[f"{name}_lo"], met[f"{name}_hi"], digits))
    return out


def patient_age() -> Dict[str, Any]:
    return {"name": "age", "source": "patient.age", "required": True, "imputation": {"strategy": "none"}}


def patient_sex(value_map: Dict[str, float]) -> Dict[str, Any]:
    return {
        "name": "sex",
        "source": "patient.sex",
        "required": True,
        "imputation": {"strategy": "none"},
        "valueMap": value_map,
    }


def observation_feature(
    name: str,
    codes: List[Dict[str, str]],
    unit: Optional[str],
    required: bool,
    molecular_weight: Optional[float] = None,
    lookback: str = "P1Y",
    imputation: Optional[Dict[str, Any]] = None,
    **extra: Any,
) -> Dict[str, Any]:
    """A manifest feature read from Observations (the latest within `lookback`), in the
    manifest's key order; `unit` None for a unitless value, `imputation` default none;
    `extra` (transform, valueMap) goes last, None values left out."""
    f: Dict[str, Any] = {"name": name, "source": "observation", "codes": codes}
    if unit:
        f["unit"] = unit
    if molecular_weight is not None:
        f["molecularWeight"] = molecular_weight
    f.update({"aggregate": "latest", "lookback": lookback, "required": required})
    f["imputation"] = imputation or {"strategy": "none"}
    f.update({k: v for k, v in extra.items() if v is not None})
    return f


def write_manifest(model_dir: str, manifest: Dict[str, Any], kind: str) -> None:
    """Writes manifest.json and, from its `serving` block, Triton's config.pbtxt with
    instance group `kind` (KIND_CPU for ONNX-ML tree operators, else KIND_GPU)."""
    s = manifest["serving"]
    write_json(os.path.join(model_dir, "manifest.json"), manifest)
    write_text(
        os.path.join(model_dir, "config.pbtxt"),
        config_pbtxt(s["tritonModelName"], s["maxBatchSize"], s["inputs"], s["outputs"], kind=kind),
    )


# ---------------------------------------------------------------- config.pbtxt


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
