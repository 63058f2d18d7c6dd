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

import json
import sys

import numpy as np

import make_samples
import reference
from common import HERE, ROOT, artefact_arguments, contract_of, cpu_session, png_bytes, read_png, run_session

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
# The two images whose patches make the memory of memory-mask.json.
MEMORY_GOLDEN_IMAGES = ["models/samples/part/train/good/000.png", "models/samples/part/train/good/001.png"]
SUBSAMPLE = 16
CHECK_TOLERANCE = 1e-5


def flat(array):
    return {
        "shape": list(array.shape),
        "data": [float(f"{v:.9g}") for v in np.asarray(array, dtype=np.float32).ravel()],
    }


def tiny_golden(image, session, spec):
    x = reference.preprocess(read_png(ROOT / image), spec["input"])
    raw = run_session(session, spec, x)
    doc = {"image": image, "input": flat(x), "raw": {k: flat(v) for k, v in raw.items()}}
    for key, enabled in (("refined", True), ("unrefined", False)):
        full, s, v = reference.score(raw, spec, refine_enabled=enabled)
        doc[key] = {"map": flat(full), "score": s, "verdict": v}
    return doc


def default_golden():
    spec = contract_of(DEFAULT)
    session = cpu_session(DEFAULT)
    x = reference.preprocess(read_png(ROOT / DEFAULT_GOLDEN_IMAGE), spec["input"])
    features = run_session(session, spec, x)["patch_features"]
    return {
        "image": DEFAULT_GOLDEN_IMAGE,
        "every": SUBSAMPLE,
        "input": flat(x.ravel()[::SUBSAMPLE]),
        "patch_features": flat(features.ravel()[::SUBSAMPLE]),
    }


def memory_golden(session, spec):
    """The memory branch and the ignore mask on the tiny model: the scratch sample scored against a
    bank of every patch of two other images (sources 0 and 1), with the left quarter of the
    input ignored; refined, unrefined, and leaving image 0 out."""
    raw = run_session(session, spec, reference.preprocess(read_png(ROOT / TINY_GOLDENS["scratch"]), spec["input"]))
    banked = [MEMORY_GOLDEN_IMAGES[0], MEMORY_GOLDEN_IMAGES[1]]
    rows = []
    for image in banked:
        features = run_session(session, spec, reference.preprocess(read_png(ROOT / image), spec["input"]))[
            "patch_features"
        ]
        layers, patches, dim = features.shape
        rows.append(features.transpose(1, 0, 2).reshape(patches, layers * dim))
    bank = np.concatenate(rows).astype(np.float32)
    sources = np.repeat(np.arange(len(banked)), rows[0].shape[0])
    height, width = spec["input"]["size"]
    inspected = np.zeros((height, width), bool)
    inspected[:, width // 4 :] = True
    doc = {
        "image": TINY_GOLDENS["scratch"],
        "banked": banked,
        "raw": {k: flat(v) for k, v in raw.items()},
        "bank": flat(bank),
        "sources": sources.tolist(),
        "inspected": flat(inspected.astype(np.float32)),
    }
    for key, enabled, exclude in (("refined", True, None), ("unrefined", False, None), ("refined_without_0", True, 0)):
        full, s, _ = reference.score(
            raw, spec, refine_enabled=enabled, memory=(bank, sources), inspected=inspected, exclude=exclude
        )
        doc[key] = {"map": flat(full), "score": s}
    return doc


def max_diff(a, b):
    if isinstance(a, dict):
        return max((max_diff(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list):
        return (
            max((max_diff(p, q) for p, q in zip(a, b, strict=True)), default=0.0) if len(a) == len(b) else float("inf")
        )
    if isinstance(a, str):
        return 0.0 if a == b else float("inf")
    return abs(a - b)


def main():
    args = artefact_arguments(__doc__).parse_args()
    small = png_bytes(make_samples.draw_part(7, "scratch", (40, 52))[0])
    if args.check:
        assert SMALL_IMAGE.read_bytes() == small, f"{SMALL_IMAGE} differs from a fresh drawing"
    else:
        SMALL_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        SMALL_IMAGE.write_bytes(small)
    spec = contract_of(TINY)
    session = cpu_session(TINY)
    docs = {name: (lambda image=image: tiny_golden(image, session, spec)) for name, image in TINY_GOLDENS.items()}
    docs["default-efficientnet"] = default_golden
    docs["memory-mask"] = lambda: memory_golden(session, spec)
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
