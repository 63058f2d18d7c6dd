#!/usr/bin/env python3
"""The exported EfficientNet-Lite0 feature model against a plain numpy forward pass of the
same weights (unfolded batch norm, padding computed here): agreement within 1e-4."""

import unittest

import export_efficientnet as ee
import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-4


def conv2d(x, w, stride, groups):
    """x [C,H,W], w [O, C/groups, k, k]; TensorFlow SAME padding."""
    c, h, wd = x.shape
    k = w.shape[-1]
    out_h, out_w = -(-h // stride), -(-wd // stride)
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - wd, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)))
    out = np.zeros((w.shape[0], out_h, out_w))
    per_group_in, per_group_out = c // groups, w.shape[0] // groups
    for gi in range(groups):
        xs = xp[gi * per_group_in : (gi + 1) * per_group_in]
        ws = w[gi * per_group_out : (gi + 1) * per_group_out]
        for dy in range(k):
            for dx in range(k):
                patch = xs[:, dy : dy + stride * out_h : stride, dx : dx + stride * out_w : stride]
                out[gi * per_group_out : (gi + 1) * per_group_out] += np.einsum("oc,chw->ohw", ws[:, :, dy, dx], patch)
    return out


def batch_norm(x, sd, name):
    g, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    m, v = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + 1e-3) * g[:, None, None] + b[:, None, None]


def relu6(x):
    return np.minimum(np.maximum(x, 0), 6)


def forward_blocks(sd, x):
    """[3,S,S] normalised image -> {block index: output} for blocks 0..10."""
    x = relu6(batch_norm(conv2d(x, sd["_conv_stem.weight"], 2, 1), sd, "_bn0"))
    outputs = {}
    for index, _kernel, stride, expand, c_in, c_out in ee.blocks():
        p = f"_blocks.{index}"
        h = x
        if expand != 1:
            h = relu6(batch_norm(conv2d(h, sd[f"{p}._expand_conv.weight"], 1, 1), sd, f"{p}._bn0"))
        h = relu6(batch_norm(conv2d(h, sd[f"{p}._depthwise_conv.weight"], stride, h.shape[0]), sd, f"{p}._bn1"))
        h = batch_norm(conv2d(h, sd[f"{p}._project_conv.weight"], 1, 1), sd, f"{p}._bn2")
        x = x + h if (stride == 1 and c_in == c_out) else h
        outputs[index] = x
    return outputs


def average_3x3(x):
    """3x3 mean, stride 1, borders averaging only the pixels inside."""
    c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((h, w)), 1)
    total = sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    count = sum(ones[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return total / count


def upsample2(x):
    """Bilinear x2, half-pixel centres, edges clamped."""

    def axis(n):
        src = np.clip((np.arange(2 * n) + 0.5) / 2 - 0.5, 0, n - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n - 1), src - i0

    r0, r1, rt = axis(x.shape[1])
    c0, c1, ct = axis(x.shape[2])
    rows = x[:, r0] * (1 - rt)[None, :, None] + x[:, r1] * rt[None, :, None]
    return rows[:, :, c0] * (1 - ct) + rows[:, :, c1] * ct


def patch_features(sd, image):
    blocks = forward_blocks(sd, image)
    fine = average_3x3(blocks[4])
    coarse = upsample2(average_3x3(blocks[10]))
    unit = [f / np.linalg.norm(f, axis=0, keepdims=True) for f in (fine, coarse)]
    both = np.concatenate(unit, axis=0) / np.sqrt(2)
    return both.reshape(both.shape[0], -1).T


class ExportMatchesNumpy(unittest.TestCase):
    def test_onnx_patch_features_match_numpy_forward(self):
        sd = ee.load_legacy_state_dict(ee.weights_path())
        rng = np.random.default_rng(0)
        # A smooth random image (noise alone would be an unusual input for ImageNet weights).
        raw = rng.uniform(0, 255, (3, 16, 16)).repeat(16, axis=1).repeat(16, axis=2)
        image = (raw + rng.normal(0, 10, raw.shape) - 127.0) / 128.0
        model = ee.build()
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (actual,) = session.run(None, {"image": image[None].astype(np.float32)})
        expected = patch_features(sd, image)
        diff = np.abs(actual[0] - expected).max()
        self.assertLessEqual(diff, TOLERANCE, f"max abs diff {diff}")


if __name__ == "__main__":
    unittest.main()
