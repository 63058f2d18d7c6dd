#!/usr/bin/env python3
"""Makes the goldens the Rust tests compare against (tests/data/goldens/*.json).

For the tiny CLIP-ADA fixture, on sample images (models/make_samples.py) and one image smaller
than the model input (tests/data/images/small_scratch.png, to exercise enlarging):
  - `input`:  the model input tensor made by reference.preprocess,
  - `raw`:    onnxruntime's outputs for that input (the independent engine reference),
  - `refined` / `unrefined`: reference.score on those raw outputs (map [H,W], score, verdict).
For the default EfficientNet-Lite0 model, on one sample: every 16th value of the reference
input tensor and of onnxruntime's patch features (default-efficientnet.json).

Usage: python models/make_goldens.py [--check]   (--check: regenerate in memory, compare, write nothing)
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

import make_samples
import reference

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
TINY = HERE / "fixtures" / "tiny-clipada.onnx"
DEFAULT = HERE / "default" / "efficientnet-lite0.onnx"
GOLDENS = ROOT / "tests" / "data" / "goldens"
SMALL_IMAGE = ROOT / "tests" / "data" / "images" / "small_scratch.png"
# golden name -> image (relative to the repository root)
TINY_GOLDENS = {
    "good": "models/samples/part/test/good/000.png",
    "scratch": "models/samples/part/test/scratch/000.png",
    "contamination": "models/samples/part/test/contamination/000.png",
    "small_scratch": "tests/data/images/small_scratch.png",
}
DEFAULT_GOLDEN_IMAGE = "models/samples/part/test/chip/000.png"
SUBSAMPLE = 16
CHECK_TOLERANCE = 1e-5


def read_png(path):
    """Decodes the PNGs make_samples.png_bytes writes (8-bit, filter 0, no interlace)."""
    import struct
    import zlib

    data = path.read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, _ = header
    assert depth == 8 and colour == 2, f"{path}: only 8-bit RGB"
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all(), f"{path}: only filter 0"
    return rows[:, 1:].reshape(height, width, 3)


def flat(array):
    return {"shape": list(array.shape), "data": [float(f"{v:.9g}") for v in np.asarray(array, dtype=np.float32).ravel()]}


def spec_of(model_path):
    return json.loads({p.key: p.value for p in onnx.load(model_path).metadata_props}["clipada"])


def run(session, spec, x):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {spec["input"]["name"]: x})))


def tiny_golden(image, session, spec):
    x = reference.preprocess(read_png(ROOT / image), spec["input"])
    raw = run(session, spec, x)
    doc = {"image": image, "input": flat(x), "raw": {k: flat(v) for k, v in raw.items()}}
    for key, enabled in (("refined", True), ("unrefined", False)):
        full, s, v = reference.score(raw, spec, refine_enabled=enabled)
        doc[key] = {"map": flat(full), "score": s, "verdict": v}
    return doc


def default_golden():
    spec = spec_of(DEFAULT)
    session = ort.InferenceSession(str(DEFAULT), providers=["CPUExecutionProvider"])
    x = reference.preprocess(read_png(ROOT / DEFAULT_GOLDEN_IMAGE), spec["input"])
    features = run(session, spec, x)["patch_features"]
    return {
        "image": DEFAULT_GOLDEN_IMAGE,
        "every": SUBSAMPLE,
        "input": flat(x.ravel()[::SUBSAMPLE]),
        "patch_features": flat(features.ravel()[::SUBSAMPLE]),
    }


def max_diff(a, b):
    if isinstance(a, dict):
        return max((max_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return max((max_diff(p, q) for p, q in zip(a, b)), default=0.0) if len(a) == len(b) else float("inf")
    if isinstance(a, str):
        return 0.0 if a == b else float("inf")
    return abs(a - b)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args()
    small = make_samples.png_bytes(make_samples.draw_part(7, "scratch", (40, 52))[0])
    if args.check:
        assert SMALL_IMAGE.read_bytes() == small, f"{SMALL_IMAGE} differs from a fresh drawing"
    else:
        SMALL_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        SMALL_IMAGE.write_bytes(small)
    spec = spec_of(TINY)
    session = ort.InferenceSession(str(TINY), providers=["CPUExecutionProvider"])
    docs = {name: (lambda image=image: tiny_golden(image, session, spec)) for name, image in TINY_GOLDENS.items()}
    docs["default-efficientnet"] = default_golden
    failures = []
    for name, make in docs.items():
        doc, path = make(), GOLDENS / f"{name}.json"
        if args.check:
            diff = max_diff(doc, json.loads(path.read_text()))
            print(f"{path.relative_to(ROOT)}: max abs diff {diff:.2e} {'ok' if diff <= CHECK_TOLERANCE else 'DIFFERS'}")
            if diff > CHECK_TOLERANCE:
                failures.append(name)
        else:
            GOLDENS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc))
            print(f"wrote {path.relative_to(ROOT)}")
    if failures:
        sys.exit(f"goldens differ from a fresh run: {', '.join(failures)}")


if __name__ == "__main__":
    main()
