#!/usr/bin/env python3
"""Synthetic scores, maps and masks, with the metrics that scikit-learn and an independent
numpy AUPRO give for them: tests/data/metrics/cases.json, for tests/metrics.rs.

The cases include tied scores, an all-normal set (metrics undefined: null), one-pixel regions,
regions touching only diagonally (one 8-connected region) and an image without defects.

Usage: python models/make_metric_goldens.py [--check]
"""

import json

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from common import ROOT, artefact_arguments, exit_for, write_or_check

OUT = ROOT / "tests" / "data" / "metrics" / "cases.json"
FPR_LIMIT = 0.3


def f1_max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1.max())


def classification(labels, scores):
    labels, scores = np.asarray(labels, bool), np.asarray(scores, np.float32)
    if labels.all() or not labels.any():
        return {
            "auroc": None,
            "ap": None if not labels.any() else float(average_precision_score(labels, scores)),
            "f1_max": None if not labels.any() else f1_max(labels, scores),
        }
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "ap": float(average_precision_score(labels, scores)),
        "f1_max": f1_max(labels, scores),
    }


def aupro(maps, masks):
    """Per-region overlap against FPR, by brute force over every distinct threshold."""
    regions = []
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labelled == k) for k in range(1, count + 1)]
    normal = sum(int((~m).sum()) for m in masks)
    if not regions or normal == 0:
        return None
    fprs, pros = [0.0], [0.0]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        fprs.append(sum(int(((mp >= t) & ~mk).sum()) for mp, mk in zip(maps, masks, strict=True)) / normal)
        pros.append(float(np.mean([((maps[i] >= t) & r).sum() / r.sum() for i, r in regions])))
    area = 0.0
    for j in range(1, len(fprs)):
        if fprs[j] >= FPR_LIMIT:
            t = (FPR_LIMIT - fprs[j - 1]) / (fprs[j] - fprs[j - 1])
            at_limit = pros[j - 1] + t * (pros[j] - pros[j - 1])
            area += (FPR_LIMIT - fprs[j - 1]) * (pros[j - 1] + at_limit) / 2
            return area / FPR_LIMIT
        area += (fprs[j] - fprs[j - 1]) * (pros[j - 1] + pros[j]) / 2
    return area / FPR_LIMIT


def f32(values):
    """Values as the float32 numbers both sides compute with (exact in JSON)."""
    return np.asarray(values, np.float32).tolist()


def cases():
    rng = np.random.default_rng(2024)
    out = []
    # Image-level sets.
    labels = rng.random(60) < 0.4
    scores = np.round(rng.normal(labels * 0.8, 0.6), 1)  # rounded: many ties
    out.append({"name": "tied_scores", "labels": labels.tolist(), "scores": f32(scores)})
    labels = rng.random(200) < 0.2
    out.append({"name": "continuous", "labels": labels.tolist(), "scores": f32(rng.normal(labels * 1.5, 1.0))})
    out.append({"name": "all_normal", "labels": [False] * 10, "scores": f32(rng.random(10))})
    # Pixel-level set: maps and masks.
    h, w = 12, 16
    masks = [np.zeros((h, w), bool) for _ in range(5)]
    masks[0][2:6, 3:8] = True  # a block
    masks[1][5, 9] = True  # one pixel
    masks[1][0, 0] = True  # one pixel in a corner
    masks[2][3, 3] = masks[2][4, 4] = True  # diagonal neighbours: one region
    masks[2][8:11, 10:15] = True
    # masks[3] stays empty: a good image
    masks[4][6:12, 0:2] = True
    maps = []
    for mask in masks:
        base = rng.random((h, w)) * 0.6 + mask * rng.uniform(0.2, 0.6)
        maps.append((np.round(base * 20) / 20).astype(np.float32))  # quantised: ties
    out.append(
        {
            "name": "pixels",
            "width": w,
            "maps": [m.ravel().tolist() for m in maps],
            "masks": [m.ravel().tolist() for m in masks],
        }
    )
    return out


def expected(case):
    if "maps" in case:
        maps = [np.array(m, np.float32).reshape(-1, case["width"]) for m in case["maps"]]
        masks = [np.array(m, bool).reshape(-1, case["width"]) for m in case["masks"]]
        result = classification(np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in maps]))
        result["aupro"] = aupro(maps, masks)
        return result
    return classification(case["labels"], case["scores"])


def main():
    args = artefact_arguments(__doc__).parse_args()
    doc = [dict(case, expected=expected(case)) for case in cases()]
    exit_for(write_or_check(OUT, json.dumps(doc, indent=None).encode(), args.check))


if __name__ == "__main__":
    main()
