#!/usr/bin/env python3
"""The written specification of clipada's preprocessing and scoring, in plain numpy.

Every step the Rust runtime performs between the decoded image and the verdict is defined here,
the way the runtime must compute it; tests compare the runtime against goldens made with this
file (models/make_goldens.py). Equations and their rationale: docs/ARCHITECTURE.md.

Shapes: H, W model input size; h, w patch grid; L tapped layers; N = h*w; E feature size.
"""

import math

import numpy as np


# ---------------------------------------------------------------- preprocessing
def resize_taps(n_in, n_out):
    """Tent-filter taps for resampling n_in samples to n_out (half-pixel centres).

    Output sample o is centred at c = (o + 0.5) * s in input coordinates, s = n_in / n_out. The
    tent's half-width is f = max(s, 1): plain linear interpolation when enlarging, an
    area-covering (anti-aliasing) filter when reducing. Input j (centre j + 0.5) gets weight
    max(0, 1 - |j + 0.5 - c| / f); the weights of each output are normalised to sum to 1.
    Returns a list of (first input index, weights).
    """
    s = n_in / n_out
    f = max(s, 1.0)
    taps = []
    for o in range(n_out):
        c = (o + 0.5) * s
        lo = max(0, math.floor(c - f))
        hi = min(n_in, math.ceil(c + f))
        j = np.arange(lo, hi)
        wts = np.maximum(0.0, 1.0 - np.abs(j + 0.5 - c) / f)
        taps.append((lo, wts / wts.sum()))
    return taps


def resize(image, out_h, out_w):
    """Resizes an [H0,W0,C] float image: horizontal pass first, then vertical."""
    in_h, in_w, channels = image.shape
    tmp = np.empty((in_h, out_w, channels))
    for o, (lo, wts) in enumerate(resize_taps(in_w, out_w)):
        tmp[:, o, :] = np.tensordot(image[:, lo : lo + len(wts), :], wts, axes=([1], [0]))
    out = np.empty((out_h, out_w, channels))
    for o, (lo, wts) in enumerate(resize_taps(in_h, out_h)):
        out[o] = np.tensordot(wts, tmp[lo : lo + len(wts)], axes=([0], [0]))
    return out


def preprocess(rgb, spec_input):
    """[H0,W0,3] uint8 RGB -> [1,3,H,W] float32 model input, as the contract's `input` says."""
    height, width = spec_input["size"]
    x = resize(rgb.astype(np.float64), height, width)
    if not spec_input["normalized_in_graph"]:
        x = (x / 255.0 - np.array(spec_input["mean"])) / np.array(spec_input["std"])
    return x.transpose(2, 0, 1)[None].astype(np.float32)


# ---------------------------------------------------------------- scoring
def layer_probabilities(patch_logits):
    """[L,2,h,w] normal/abnormal logits -> [L,h,w] abnormal probability (softmax over the pair)."""
    z = patch_logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def fuse_layers(probabilities):
    """[L,h,w] -> [h,w]: mean over the tapped layers."""
    return probabilities.mean(axis=0)


def refine(coarse, radius, sharpness):
    """Anomaly region refinement: each region of the coarse map reshaped around its core.

    a_i coarse score of patch i; M_i the largest a_j with |y_i - y_j| <= radius and
    |x_i - x_j| <= radius (the window stops at the grid border).
      r_i = a_i * (a_i / M_i) ** sharpness        (0 where M_i = 0)
    A region's core (its local maximum) keeps its score; its shoulders, which the patch grid and
    feature aggregation blur outwards, drop in proportion to how far below the core they are.
    """
    h, w = coarse.shape
    refined = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            m = coarse[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].max()
            if m > 0:
                refined[y, x] = coarse[y, x] * (coarse[y, x] / m) ** sharpness
    return refined


def upsample_taps(n_in, n_out):
    """Bilinear taps (half-pixel centres, edge clamped): (i0, i1, t) per output sample."""
    taps = []
    for o in range(n_out):
        src = min(max((o + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        i0 = math.floor(src)
        taps.append((i0, min(i0 + 1, n_in - 1), src - i0))
    return taps


def upsample(grid_map, out_h, out_w):
    """[h,w] -> [H,W] bilinear."""
    rows = np.array(
        [(1 - t) * grid_map[i0] + t * grid_map[i1] for i0, i1, t in upsample_taps(grid_map.shape[0], out_h)]
    )
    cols = upsample_taps(grid_map.shape[1], out_w)
    return np.stack([(1 - t) * rows[:, i0] + t * rows[:, i1] for i0, i1, t in cols], axis=1)


def gaussian_kernel(sigma):
    """Normalised 1-D Gaussian, radius ceil(3 sigma)."""
    radius = math.ceil(3.0 * sigma)
    t = np.arange(-radius, radius + 1)
    k = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return k / k.sum()


def smooth(full_map, sigma):
    """Separable Gaussian blur (rows, then columns), edges replicated; sigma <= 0: unchanged."""
    if sigma <= 0:
        return full_map.copy()
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    padded = np.pad(full_map, ((0, 0), (r, r)), mode="edge")
    rows = sum(k[i] * padded[:, i : i + full_map.shape[1]] for i in range(len(k)))
    padded = np.pad(rows, ((r, r), (0, 0)), mode="edge")
    return sum(k[i] * padded[i : i + full_map.shape[0], :] for i in range(len(k)))


def memory_distances(features, bank, sources=None, exclude=None):
    """The memory branch: each patch's cosine distance to the nearest remembered good patch.

    features [L,N,E] (the model's `patch_features`, unit length per layer), bank [M,L*E] (each
    remembered patch's features, layer after layer), sources [M] (the good image each came from):
      d_i = 1 - max_j (1/L) sum_l <f_i^l, m_j^l>
    over the remembered patches j not from image `exclude` (leave-one-out at calibration)."""
    layers, patches, dim = features.shape
    queries = features.transpose(1, 0, 2).reshape(patches, layers * dim).astype(np.float64)
    similarity = queries @ np.asarray(bank, dtype=np.float64).T / layers
    if exclude is not None:
        similarity[:, np.asarray(sources) == exclude] = -np.inf
    return 1.0 - similarity.max(axis=1)


def image_score(full_map, top_k, image_logits=None, image_logits_weight=0.0, inspected=None):
    """Mean of the ceil(top_k * n) largest of the n inspected map values (at least one; all
    values without an ignore mask), blended with the class-token abnormal probability when the
    model has image logits:
        s = (1 - w) * s_map + w * softmax(image_logits)[1]."""
    values = full_map.ravel() if inspected is None else full_map[inspected]
    values = np.sort(values)[::-1]
    k = max(1, math.ceil(top_k * values.size))
    s_map = values[:k].mean()
    if image_logits is None:
        return float(s_map)
    p = layer_probabilities(np.asarray(image_logits).reshape(1, 2, 1, 1))[0, 0, 0]
    return float((1.0 - image_logits_weight) * s_map + image_logits_weight * p)


def verdict(score, threshold):
    """'fail' when score >= threshold, 'pass' below it, 'error' when the score is not finite."""
    if not math.isfinite(score):
        return "error"
    return "fail" if score >= threshold else "pass"


def score(raw, spec, refine_enabled=True, threshold=None, memory=None, inspected=None, exclude=None):
    """Raw model outputs -> (anomaly map [H,W], image score, verdict), as the runtime does it.

    memory: (bank [M,L*E], sources [M]) adds the memory branch: with a text branch the coarse map
    is the mean of the text map and the memory distances, without one it is the distances;
    `exclude` leaves one good image's patches out. inspected: [H,W] booleans (the ignore mask at
    the model input's resolution, True = inspected): the image score is taken over the
    inspected pixels only, and the map reads 0 elsewhere."""
    height, width = spec["input"]["size"]
    grid_h, grid_w = spec["grid"]
    text = spec["outputs"].get("patch_logits") is not None
    coarse = fuse_layers(layer_probabilities(raw["patch_logits"])) if text else None
    if memory is not None:
        bank, sources = memory
        distances = memory_distances(raw["patch_features"], bank, sources, exclude).reshape(grid_h, grid_w)
        coarse = distances if coarse is None else 0.5 * (coarse + distances)
    if refine_enabled and spec.get("refine"):
        coarse = refine(coarse, spec["refine"]["radius"], spec["refine"]["sharpness"])
    full = smooth(upsample(coarse, height, width), spec["score"]["sigma"])
    s = image_score(
        full, spec["score"]["top_k"], raw.get("image_logits"), spec["score"]["image_logits_weight"], inspected
    )
    if inspected is not None:
        full = np.where(inspected, full, 0.0)
    t = spec["score"]["threshold"] if threshold is None else threshold
    return full, s, verdict(s, t)
