#!/usr/bin/env python3
"""Draws the project's sample images: a small inspection dataset in the MVTec AD layout.

    models/samples/part/train/good/NNN.png          good parts, for calibration
    models/samples/part/test/good/NNN.png           good parts to judge
    models/samples/part/test/<defect>/NNN.png       scratch, contamination, chip
    models/samples/part/ground_truth/<defect>/NNN_mask.png

and tests/data/images/progressive.jpg (a good part as a progressive JPEG: its scans are cut in
the decoder's tests).

A part is a grey machined disc with grooves on a dark textured belt, drawn from seeded noise
(position, texture and noise vary from part to part). No dataset image is used.

Usage: python models/make_samples.py [--check]   (--check: compare with the files, write nothing)
"""

import numpy as np

from common import HERE, artefact_arguments, exit_for, png_bytes, write_or_check

DATASET = HERE / "samples"
CATEGORY = "part"
SAMPLE_SIZE = (128, 160)  # rows, columns: not the models' sizes nor their aspect, so resizing is exercised
TRAIN_GOOD = 10
TEST = {"good": 4, "scratch": 2, "contamination": 2, "chip": 2}


def draw_part(seed, defect=None, size=SAMPLE_SIZE):
    """Returns (RGB uint8 image, defect mask bool). For another `size`, the part is cut out
    around its centre from the 128x160 drawing."""
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
    mask = np.zeros((h, w), bool)
    if defect == "scratch":
        mask = (np.abs((y - cy) * 0.8 - (x - cx) * 0.6 + rng.uniform(-8, 8)) < 1.5) & (r < 35)
        rgb[mask] = [35, 30, 28]
    elif defect == "contamination":
        mask = np.hypot(y - cy - rng.uniform(10, 22), x - cx + rng.uniform(5, 20)) < 7
        rgb[mask] = [170, 95, 30]
    elif defect == "chip":
        mask = (np.hypot(y - cy + 44, x - cx - rng.uniform(15, 30)) < 14) & inside
        rgb[mask] = np.stack([belt, belt, belt], axis=-1)[mask]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    rgb, mask = rgb[top : top + size[0], left : left + size[1]], mask[top : top + size[0], left : left + size[1]]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mask


def dataset_files():
    """{relative path: PNG bytes} of the whole sample dataset."""
    files, seed = {}, 100
    for i in range(TRAIN_GOOD):
        files[f"{CATEGORY}/train/good/{i:03d}.png"] = png_bytes(draw_part(seed := seed + 1)[0])
    for kind, count in TEST.items():
        for i in range(count):
            rgb, mask = draw_part(seed := seed + 1, None if kind == "good" else kind)
            files[f"{CATEGORY}/test/{kind}/{i:03d}.png"] = png_bytes(rgb)
            if kind != "good":
                files[f"{CATEGORY}/ground_truth/{kind}/{i:03d}_mask.png"] = png_bytes(mask.astype(np.uint8) * 255)
    return files


def progressive_jpeg():
    """A good part as a progressive JPEG (ten scans)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(draw_part(7)[0]).save(out, format="JPEG", quality=90, progressive=True)
    return out.getvalue()


def main():
    args = artefact_arguments(__doc__).parse_args()
    files = {DATASET / path: data for path, data in dataset_files().items()}
    files[HERE.parent / "tests/data/images/progressive.jpg"] = progressive_jpeg()
    exit_for(all([write_or_check(path, data, args.check) for path, data in files.items()]))


if __name__ == "__main__":
    main()
