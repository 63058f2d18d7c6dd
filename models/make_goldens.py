#!/usr/bin/env python3
"""Makes the project's sample images and the goldens the Rust tests compare against.

Sample images (models/samples/*.png) are drawn here from seeded noise: a round machined part on
a dark belt, some with a defect (scratch, contamination spot, chipped rim). No dataset image is
used. For each sample, tests/data/goldens/NAME.json holds:
  - `input`:  the model input tensor made by reference.preprocess,
  - `raw`:    onnxruntime's outputs for that input (the independent engine reference),
  - `refined` / `unrefined`: reference.score on those raw outputs (map [H,W], score, verdict).

Usage: python models/make_goldens.py [--check]   (--check: regenerate in memory, compare, write nothing)
"""
import argparse
import json
import pathlib
import struct
import sys
import zlib

import numpy as np
import onnx
import onnxruntime as ort

import reference

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = HERE / "fixtures" / "tiny-clipada.onnx"
SAMPLES = HERE / "samples"
GOLDENS = ROOT / "tests" / "data" / "goldens"
SAMPLE_SIZE = (128, 160)  # rows, columns: not the model's size nor its aspect, so resizing is exercised
CHECK_TOLERANCE = 1e-5


def write_png(path, rgb):
    """Minimal RGB8 PNG encoder (filter 0 on every row), so no imaging library is needed."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def draw_part(seed, defect, size=SAMPLE_SIZE):
    """A grey machined disc with radial grooves on a dark textured belt; optionally one defect.
    Drawn on a 128x160 canvas and, for another `size`, cut out around the part's centre."""
    rng = np.random.default_rng(seed)
    h, w = SAMPLE_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3)
    r = np.hypot(y - cy, x - cx)
    angle = np.arctan2(y - cy, x - cx)
    belt = 40 + 8 * np.sin(x / 3.0) + rng.normal(0, 3, (h, w))
    disc = 150 + 25 * np.cos(r / 2.5) + 10 * np.sin(6 * angle) + rng.normal(0, 3, (h, w))
    inside = r < 50
    grey = np.where(inside, disc, belt)
    rgb = np.stack([grey * 1.0, grey * 0.97, grey * 0.92], axis=-1)
    if defect == "scratch":
        t = np.abs((y - cy) * 0.8 - (x - cx) * 0.6 + 5) < 1.5
        rgb[t & (r < 35)] = [35, 30, 28]
    elif defect == "contamination":
        spot = np.hypot(y - cy - 18, x - cx + 12) < 7
        rgb[spot] = [170, 95, 30]
    elif defect == "chip":
        bite = np.hypot(y - cy + 44, x - cx - 25) < 14
        rgb[bite & inside] = np.stack([belt, belt, belt], axis=-1)[bite & inside]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    rgb = rgb[top:top + size[0], left:left + size[1]]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


SAMPLE_LIST = [
    # name, seed, defect, size (smaller than the model input: exercises enlarging)
    ("good_1", 1, None),
    ("good_2", 2, None),
    ("good_3", 3, None),
    ("scratch_1", 4, "scratch"),
    ("contamination_1", 5, "contamination"),
    ("chip_1", 6, "chip"),
    ("small_scratch_1", 7, "scratch", (40, 52)),
]
GOLDEN_SAMPLES = ["good_1", "scratch_1", "contamination_1", "small_scratch_1"]


def flat(array):
    return {"shape": list(array.shape), "data": [float(f"{v:.9g}") for v in np.asarray(array, dtype=np.float32).ravel()]}


def golden_for(name, rgb, session, spec):
    x = reference.preprocess(rgb, spec["input"])
    names = [o.name for o in session.get_outputs()]
    raw = dict(zip(names, session.run(None, {spec["input"]["name"]: x})))
    doc = {"image": f"models/samples/{name}.png", "input": flat(x), "raw": {k: flat(v) for k, v in raw.items()}}
    for key, enabled in (("refined", True), ("unrefined", False)):
        full, s, v = reference.score(raw, spec, refine_enabled=enabled)
        doc[key] = {"map": flat(full), "score": s, "verdict": v}
    return doc


def max_diff(a, b):
    if isinstance(a, dict):
        return max((max_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return max((max_diff(p, q) for p, q in zip(a, b)), default=0.0)
    if isinstance(a, str):
        return 0.0 if a == b else float("inf")
    return abs(a - b)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args()
    spec = json.loads({p.key: p.value for p in onnx.load(MODEL).metadata_props}["clipada"])
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    failures = []
    for name, *how in SAMPLE_LIST:
        rgb = draw_part(*how)
        if args.check:
            continue
        SAMPLES.mkdir(parents=True, exist_ok=True)
        write_png(SAMPLES / f"{name}.png", rgb)
    for name in GOLDEN_SAMPLES:
        how = next(rest for n, *rest in SAMPLE_LIST if n == name)
        doc = golden_for(name, draw_part(*how), session, spec)
        path = GOLDENS / f"{name}.json"
        if args.check:
            diff = max_diff(doc, json.loads(path.read_text()))
            status = "ok" if diff <= CHECK_TOLERANCE else "DIFFERS"
            print(f"{path.relative_to(ROOT)}: max abs diff {diff:.2e} {status}")
            if diff > CHECK_TOLERANCE:
                failures.append(name)
        else:
            GOLDENS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc))
            print(f"wrote {path.relative_to(ROOT)}: score {doc['refined']['score']:.4f} "
                  f"({doc['refined']['verdict']}), unrefined {doc['unrefined']['score']:.4f}")
    if failures:
        sys.exit(f"goldens differ from a fresh run: {', '.join(failures)}")


if __name__ == "__main__":
    main()
