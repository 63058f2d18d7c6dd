#!/usr/bin/env python3
"""The clipada pipeline's steps done the usual Python way, with the same ONNX Runtime, for the
speed comparison with `clipada infer --backend ort` (compare.sh beside this file).

Per image, timed from opening the file to the verdict (the span of clipada's `elapsed_ms`):
PIL decode and resize (bilinear, antialiased when reducing), numpy normalisation, the
onnxruntime session, nearest-patch search against a clipada memory file (numpy matmul),
refinement (scipy maximum_filter), bilinear upsampling, Gaussian smoothing (scipy), top-k.

Usage: python benches/python_pipeline.py --model M.onnx --memory M.memory --images DIR
"""

import argparse
import json
import math
import pathlib
import struct
import time

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image
from scipy import ndimage


def read_memory(path):
    data = pathlib.Path(path).read_bytes()
    assert data[:16] == b"CLIPADA-MEMORY\0\0", "not a clipada memory file"
    header_len = struct.unpack_from("<I", data, 20)[0]
    header = json.loads(data[24 : 24 + header_len])
    width = header["layers"] * header["dim"]
    features = np.frombuffer(data, "<f4", header["count"] * width, 24 + header_len).reshape(header["count"], width)
    return features, header


def upsample(grid, out_h, out_w):
    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0)

    r0, r1, rt = taps(grid.shape[0], out_h)
    c0, c1, ct = taps(grid.shape[1], out_w)
    rows = grid[r0] * (1 - rt)[:, None] + grid[r1] * rt[:, None]
    return rows[:, c0] * (1 - ct) + rows[:, c1] * ct


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--memory", required=True)
    parser.add_argument("--images", required=True)
    args = parser.parse_args()
    spec = json.loads({p.key: p.value for p in onnx.load(args.model).metadata_props}["clipada"])
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    memory, header = read_memory(args.memory)
    height, width = spec["input"]["size"]
    mean, std = np.array(spec["input"]["mean"], np.float32), np.array(spec["input"]["std"], np.float32)
    gh, gw = spec["grid"]
    radius, sharpness = spec["refine"]["radius"], spec["refine"]["sharpness"]
    sigma, top_k = spec["score"]["sigma"], spec["score"]["top_k"]
    layers = header["layers"]
    paths = sorted(p for p in pathlib.Path(args.images).rglob("*.png"))
    times = []
    for path in [paths[0]] + paths:  # the first image once more, untimed, as a warm-up
        started = time.perf_counter()
        image = Image.open(path).convert("RGB").resize((width, height), Image.BILINEAR)
        x = ((np.asarray(image, np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None]
        (features,) = session.run(None, {spec["input"]["name"]: np.ascontiguousarray(x)})
        query = features.transpose(1, 0, 2).reshape(features.shape[1], -1)
        distance = 1.0 - (query @ memory.T).max(axis=1) / layers
        coarse = distance.reshape(gh, gw)
        local_max = ndimage.maximum_filter(coarse, size=2 * radius + 1, mode="nearest")
        coarse = np.where(local_max > 0, coarse * (coarse / np.maximum(local_max, 1e-12)) ** sharpness, 0.0)
        full = ndimage.gaussian_filter(upsample(coarse, height, width), sigma, mode="nearest", truncate=3.0)
        k = max(1, math.ceil(top_k * full.size))
        score = float(np.partition(full.ravel(), full.size - k)[-k:].mean())
        _verdict = "fail" if score >= (header["threshold"] or 0.5) else "pass"
        times.append(time.perf_counter() - started)
    times = np.array(times[1:]) * 1e3
    print(json.dumps({"images": len(times), "mean_ms": float(times.mean()), "median_ms": float(np.median(times))}))


if __name__ == "__main__":
    main()
