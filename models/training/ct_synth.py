"""Seeded synthetic CT lung patches (Hounsfield units) and a DICOM Part 10 writer.

No real imaging data can be had here, so the CNN learns on synthetic patches: lung parenchyma
around -850 HU with smooth texture and quantum-like noise, vessels as bright thin curves (some
cut across, as small dots), and, in half of them, one nodule of varied size, shape, edge
sharpness and density (ground glass to solid). Everything is derived from the seed, so a
seed always gives the same patches, labels and DICOM files (UIDs included).

    /usr/bin/python3 models/training/ct_synth.py --dicom DIR --seed N --count 12

writes DIR/<k>.dcm (CT Image Storage, explicit VR little endian, uint16 stored values with
Rescale Intercept -1024 and Slope 1) and DIR/index.json. The DICOM writer is by hand (no
pydicom): preamble, `DICM`, group 0002 meta, then the data set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import struct
from typing import Any, Dict, List, Tuple

import numpy as np

SIZE = 64
PIXEL_MM = 0.7  # pixel spacing (mm); 64 px ≈ 45 mm
SLICE_MM = 1.0
LUNG_WINDOW = {"center": -600.0, "width": 1500.0}
RESCALE_INTERCEPT = -1024
HU_MIN, HU_MAX = -1024, 3071  # what uint16 stored values with intercept -1024 (12 bits used) hold


# ---------------------------------------------------------------- patches


def _smooth_noise(rng: np.random.RandomState, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise (FFT, periodic)."""
    white = rng.standard_normal((SIZE, SIZE))
    f = np.fft.fftfreq(SIZE)
    k2 = f[:, None] ** 2 + f[None, :] ** 2
    out = np.real(np.fft.ifft2(np.fft.fft2(white) * np.exp(-2 * (math.pi**2) * (sigma_px**2) * k2)))
    return out / (out.std() + 1e-12)


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)


def _vessel(rng: np.random.RandomState, hu: np.ndarray) -> None:
    """A thin bright curve (quadratic Bézier across the patch), tapering Gaussian profile."""
    p0, p2 = rng.uniform(-8, SIZE + 8, 2), rng.uniform(-8, SIZE + 8, 2)
    p1 = rng.uniform(0, SIZE, 2)
    t = np.linspace(0, 1, 60)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # [60, 2] (y, x)
    best = np.full((SIZE, SIZE), np.inf)
    t_at = np.zeros((SIZE, SIZE))
    for i in range(len(pts)):  # nearest curve point per pixel (and its curve parameter)
        d2 = (_YY - pts[i, 0]) ** 2 + (_XX - pts[i, 1]) ** 2
        closer = d2 < best
        best = np.where(closer, d2, best)
        t_at = np.where(closer, t[i, 0], t_at)
    dist = np.sqrt(best)
    width = rng.uniform(0.5, 1.4) * (1.0 - 0.5 * t_at)  # tapers along the curve
    peak = rng.uniform(-150, 40)
    a = np.exp(-0.5 * (dist / width) ** 2)
    hu += a * (peak - hu)


def _dot(rng: np.random.RandomState, hu: np.ndarray) -> None:
    """A vessel seen end-on: a small bright dot (radius ≤ 1.3 px ≈ 1 mm; nodules start at 2 px)."""
    cy, cx = rng.uniform(4, SIZE - 4, 2)
    r = rng.uniform(0.6, 1.3)
    dist = np.sqrt((_YY - cy) ** 2 + (_XX - cx) ** 2)
    a = 1 / (1 + np.exp((dist - r) / 0.4))
    hu += a * (rng.uniform(-200, 20) - hu)


def _nodule(rng: np.random.RandomState, hu: np.ndarray) -> Dict[str, float]:
    """A lobulated nodule, 3-15 mm across, density -450 (ground glass) to +60 HU (solid)."""
    diameter_mm = float(rng.uniform(3.0, 15.0))
    r0 = diameter_mm / 2 / PIXEL_MM
    cy, cx = rng.uniform(r0 + 2, SIZE - r0 - 2, 2)
    theta = np.arctan2(_YY - cy, _XX - cx)
    lob = 1 + sum(rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    dist = np.sqrt((_YY - cy) ** 2 + (_XX - cx) ** 2)
    edge = rng.uniform(0.3, 1.2)
    a = 1 / (1 + np.exp((dist - r0 * lob) / edge))
    density = float(rng.uniform(-450, 60))
    hu += a * (density + rng.normal(0, 15, hu.shape) - hu)
    return {"diameterMm": round(diameter_mm, 2), "densityHu": round(density, 1), "centerRow": round(float(cy), 2), "centerCol": round(float(cx), 2)}


def patch(rng: np.random.RandomState, nodule: bool) -> Tuple[np.ndarray, Dict[str, Any]]:
    """One 64×64 patch in integer HU (int16), and what was drawn."""
    base = rng.uniform(-890, -800)
    hu = base + rng.uniform(15, 45) * _smooth_noise(rng, rng.uniform(1.5, 3.5))
    for _ in range(rng.randint(1, 5)):
        _vessel(rng, hu)
    for _ in range(rng.randint(0, 4)):
        _dot(rng, hu)
    info: Dict[str, Any] = {"nodule": bool(nodule)}
    if nodule:
        info.update(_nodule(rng, hu))
    hu += rng.normal(0, rng.uniform(10, 30), hu.shape)  # quantum noise
    return np.clip(np.round(hu), HU_MIN, HU_MAX).astype(np.int16), info


def dataset(seed: int, n: int) -> Tuple[np.ndarray, np.ndarray, List[Dict[str, Any]]]:
    """n patches (half with a nodule, in seeded order): HU [n, 64, 64] int16, labels [n]."""
    rng = np.random.RandomState(seed)
    labels = np.zeros(n, dtype=np.int64)
    labels[: n // 2] = 1
    labels = labels[rng.permutation(n)]
    images = np.empty((n, SIZE, SIZE), dtype=np.int16)
    infos = []
    for i in range(n):
        images[i], info = patch(rng, bool(labels[i]))
        infos.append(info)
    return images, labels, infos


def window(hu: np.ndarray, center: float = LUNG_WINDOW["center"], width: float = LUNG_WINDOW["width"]) -> np.ndarray:
    """The manifest's `window` + `normalisation: unit`: (HU − (c − w/2)) / w, clipped to [0, 1]."""
    return np.clip((hu.astype(np.float64) - (center - width / 2)) / width, 0.0, 1.0)


# ---------------------------------------------------------------- DICOM Part 10, by hand

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_CLASS_UID = "2.25.150377223906466914546203914372425066301"  # fixed, from uuid4
IMPLEMENTATION_VERSION = "FHIRANALYTICS1"
_LONG_VRS = {"OB", "OW", "OF", "SQ", "UT", "UN"}


def uid(seed: int, *parts: Any) -> str:
    """A deterministic UID under the 2.25 (UUID-derived) root: 2.25.<128-bit integer>."""
    h = hashlib.sha256(("fhir-analytics/ct_synth|" + "|".join(str(p) for p in (seed, *parts))).encode()).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def _element(group: int, elem: int, vr: str, value: Any) -> bytes:
    if vr in ("UI",):
        raw = value.encode("ascii")
        raw += b"\x00" * (len(raw) % 2)
    elif vr in ("US",):
        raw = b"".join(struct.pack("<H", v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    elif vr in ("UL",):
        raw = struct.pack("<I", value)
    elif vr in ("OB", "OW"):
        raw = bytes(value)
        raw += b"\x00" * (len(raw) % 2)
    else:  # text VRs: CS, DA, TM, DS, IS, LO, SH, PN
        raw = str(value).encode("ascii")
        raw += b" " * (len(raw) % 2)
    head = struct.pack("<HH", group, elem) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + b"\x00\x00" + struct.pack("<I", len(raw)) + raw
    assert len(raw) < 0x10000
    return head + struct.pack("<H", len(raw)) + raw


def _ds(v: float) -> str:
    s = f"{v:.6g}"
    assert len(s) <= 16
    return s


def dicom_bytes(hu: np.ndarray, meta: Dict[str, Any]) -> bytes:
    """A CT Image Storage Part 10 file: stored value = HU − (−1024) as uint16, explicit VR LE."""
    stored = (hu.astype(np.int32) - RESCALE_INTERCEPT).astype("<u2")
    assert stored.min() >= 0 and stored.max() <= 4095
    sop = meta["sopInstanceUid"]
    file_meta = b"".join(
        [
            _element(0x0002, 0x0001, "OB", b"\x00\x01"),
            _element(0x0002, 0x0002, "UI", CT_IMAGE_STORAGE),
            _element(0x0002, 0x0003, "UI", sop),
            _element(0x0002, 0x0010, "UI", EXPLICIT_VR_LE),
            _element(0x0002, 0x0012, "UI", IMPLEMENTATION_CLASS_UID),
            _element(0x0002, 0x0013, "SH", IMPLEMENTATION_VERSION),
        ]
    )
    group_length = _element(0x0002, 0x0000, "UL", len(file_meta))
    z = float(meta["sliceLocation"])
    elements = [
        (0x0008, 0x0008, "CS", "ORIGINAL\\PRIMARY\\AXIAL"),
        (0x0008, 0x0016, "UI", CT_IMAGE_STORAGE),
        (0x0008, 0x0018, "UI", sop),
        (0x0008, 0x0020, "DA", meta["studyDate"]),
        (0x0008, 0x0030, "TM", "090000"),
        (0x0008, 0x0050, "SH", meta["accessionNumber"]),
        (0x0008, 0x0060, "CS", "CT"),
        (0x0008, 0x0070, "LO", "fhir-analytics synthetic"),
        (0x0008, 0x0090, "PN", ""),
        (0x0008, 0x1030, "LO", "Synthetic chest CT patch"),
        (0x0008, 0x103E, "LO", "Synthetic lung patch 64x64"),
        (0x0010, 0x0010, "PN", meta["patientName"]),
        (0x0010, 0x0020, "LO", meta["patientId"]),
        (0x0010, 0x0030, "DA", ""),
        (0x0010, 0x0040, "CS", ""),
        (0x0018, 0x0015, "CS", "CHEST"),
        (0x0018, 0x0050, "DS", _ds(SLICE_MM)),
        (0x0020, 0x000D, "UI", meta["studyInstanceUid"]),
        (0x0020, 0x000E, "UI", meta["seriesInstanceUid"]),
        (0x0020, 0x0010, "SH", meta["studyId"]),
        (0x0020, 0x0011, "IS", "1"),
        (0x0020, 0x0013, "IS", "1"),
        (0x0020, 0x0032, "DS", f"{_ds(-SIZE * PIXEL_MM / 2)}\\{_ds(-SIZE * PIXEL_MM / 2)}\\{_ds(z)}"),
        (0x0020, 0x0037, "DS", "1\\0\\0\\0\\1\\0"),
        (0x0020, 0x0052, "UI", meta["frameOfReferenceUid"]),
        (0x0020, 0x1041, "DS", _ds(z)),
        (0x0028, 0x0002, "US", 1),
        (0x0028, 0x0004, "CS", "MONOCHROME2"),
        (0x0028, 0x0010, "US", SIZE),
        (0x0028, 0x0011, "US", SIZE),
        (0x0028, 0x0030, "DS", f"{_ds(PIXEL_MM)}\\{_ds(PIXEL_MM)}"),
        (0x0028, 0x0100, "US", 16),
        (0x0028, 0x0101, "US", 12),
        (0x0028, 0x0102, "US", 11),
        (0x0028, 0x0103, "US", 0),
        (0x0028, 0x1050, "DS", _ds(LUNG_WINDOW["center"])),
        (0x0028, 0x1051, "DS", _ds(LUNG_WINDOW["width"])),
        (0x0028, 0x1052, "DS", _ds(RESCALE_INTERCEPT)),
        (0x0028, 0x1053, "DS", "1"),
        (0x0028, 0x1054, "LO", "HU"),
        (0x7FE0, 0x0010, "OW", stored.tobytes()),
    ]
    assert [(g, e) for g, e, *_ in elements] == sorted((g, e) for g, e, *_ in elements)
    body = b"".join(_element(*el) for el in elements)
    return b"\x00" * 128 + b"DICM" + group_length + file_meta + body


def write_dicom_set(out_dir: str, seed: int, count: int, rel_to: str = "") -> List[Dict[str, Any]]:
    """`count` patches (first half with a nodule, then without, each drawn from `seed`), one
    study/series/instance each, as DIR/<k>.dcm, plus DIR/index.json."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.RandomState(seed)
    entries = []
    for k in range(count):
        has = k < (count + 1) // 2
        hu, info = patch(rng, has)
        name = f"ct-{k + 1:02d}.dcm"
        meta = {
            "patientId": f"synthetic-ct-{k + 1:02d}",
            "patientName": f"Synthetic^Patch{k + 1:02d}",
            "studyInstanceUid": uid(seed, "study", k),
            "seriesInstanceUid": uid(seed, "series", k),
            "sopInstanceUid": uid(seed, "instance", k),
            "frameOfReferenceUid": uid(seed, "frame", k),
            "studyId": f"S{k + 1:02d}",
            "accessionNumber": f"SYN{seed % 100000:05d}{k + 1:02d}",
            "studyDate": f"2024{1 + k % 12:02d}{10 + k:02d}",
            "sliceLocation": -120.0 + 10 * k,
        }
        data = dicom_bytes(hu, meta)
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        entries.append(
            {
                "file": name,
                "patientId": meta["patientId"],
                "studyInstanceUid": meta["studyInstanceUid"],
                "seriesInstanceUid": meta["seriesInstanceUid"],
                "sopInstanceUid": meta["sopInstanceUid"],
                "sopClassUid": CT_IMAGE_STORAGE,
                "transferSyntaxUid": EXPLICIT_VR_LE,
                "studyDate": meta["studyDate"],
                "modality": "CT",
                "rows": SIZE,
                "columns": SIZE,
                "pixelSpacingMm": PIXEL_MM,
                "label": "nodule" if has else "no-nodule",
                "drawn": info,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    index = {
        "generator": "models/training/ct_synth.py",
        "seed": seed,
        "synthetic": True,
        "note": "Synthetic CT patches (not patient data) for the imaging pipeline demo; stored value = HU + 1024 (uint16, Rescale Intercept -1024, Slope 1); held out: generated with a different seed than the CNN's training data",
        "instances": entries,
    }
    with open(os.path.join(out_dir, "index.json"), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return entries


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="synthetic CT patches as DICOM Part 10")
    ap.add_argument("--dicom", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=424242)
    ap.add_argument("--count", type=int, default=12)
    a = ap.parse_args()
    for e in write_dicom_set(a.dicom, a.seed, a.count):
        print(e["file"], e["label"], e["sopInstanceUid"])
