#!/usr/bin/env python3
"""Builds CLIP-ADA fixture models with seeded random weights.

The graph is the one our exporter produces from real CLIP weights (see models/README.md):

    image [1,3,H,W]
      -> conv patch embedding (stride = patch) -> tokens [1,N,D]
      -> prepend class token, add positional embedding, ln_pre
      -> pre-LN transformer blocks: x += MHA(LN(x)); x += MLP(LN(x)), MLP = fc -> QuickGELU -> proj
      -> for each tapped block l: patch tokens -> ln_post -> proj (D->E) -> linear adapter (E->E)
         -> L2 normalise -> patch_features[l]
         -> logit_scale * cos(feature, text[normal|abnormal]) -> patch_logits[l]  [2,h,w]
      -> class token of the last block -> ln_post -> proj -> L2 normalise
         -> logit_scale * cos(., text) -> image_logits [1,2]

The two text embeddings (normal, abnormal) stand in for the CLIP text encoder's output for the
pre-defined plus learned prompts: the exporter computes them once and bakes them in as constants,
exactly as here. The contract metadata (`metadata_props["clipada"]`) is written with the model.

Usage:
    python models/make_fixtures.py                      # writes models/fixtures/tiny-clipada.onnx
    python models/make_fixtures.py --variant vit-b16    # models/build/vit-b16-clipada.onnx (~350 MB)
    python models/make_fixtures.py --check              # the committed file is what this script makes
"""

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import HERE, artefact_arguments, exit_for, write_or_check

# name: (image size, patch, width D, blocks, heads, embed E, tapped blocks (1-based), seed)
VARIANTS = {
    "tiny": dict(size=64, patch=8, width=64, blocks=3, heads=4, embed=32, taps=[2, 3], seed=7),
    "vit-b16": dict(size=224, patch=16, width=768, blocks=12, heads=12, embed=512, taps=[6, 9, 12], seed=11),
}
OPSET = 17
LOGIT_SCALE = 100.0  # CLIP's learned temperature, exp(4.6052)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes = []
        self.inits = []
        self.count = 0

    def name(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem, array):
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, stem, shape, std):
        return self.const(stem, (self.rng.standard_normal(shape) * std).astype(np.float32))

    def op(self, op_type, inputs, stem=None, **attrs):
        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def layer_norm(self, x, dim, stem):
        gamma = self.const(stem + "_g", (1.0 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        beta = self.const(stem + "_b", (0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        return self.op("LayerNormalization", [x, gamma, beta], stem, axis=-1, epsilon=1e-5)

    def linear(self, x, d_in, d_out, stem, bias=True):
        w = self.weight(stem + "_w", (d_in, d_out), d_in**-0.5)
        y = self.op("MatMul", [x, w], stem)
        if bias:
            b = self.weight(stem + "_bias", (d_out,), 0.02)
            y = self.op("Add", [y, b], stem + "_add")
        return y

    def shape(self, dims):
        return self.const("shape", np.array(dims, dtype=np.int64))

    def l2_normalise(self, x):
        sq = self.op("ReduceSumSquare", [x], "sumsq", axes=[-1], keepdims=1)
        norm = self.op("Sqrt", [sq], "norm")
        return self.op("Div", [x, norm], "unit")


def attention(g, x, tokens, width, heads):
    head_dim = width // heads
    qkv = g.linear(x, width, 3 * width, "qkv")
    qkv = g.op("Reshape", [qkv, g.shape([1, tokens, 3, heads, head_dim])])
    qkv = g.op("Transpose", [qkv], perm=[2, 0, 3, 1, 4])  # [3,1,heads,T,hd]
    q, k, v = (
        g.op("Gather", [qkv, g.const("index", np.array(i, dtype=np.int64))], f"qkv{i}", axis=0) for i in range(3)
    )
    q = g.op("Mul", [q, g.const("scale", np.array(head_dim**-0.5, dtype=np.float32))])
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    weights = g.op("Softmax", [g.op("MatMul", [q, kt])], axis=-1)
    ctx = g.op("MatMul", [weights, v])  # [1,heads,T,hd]
    ctx = g.op("Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.shape([1, tokens, width])])
    return g.linear(ctx, width, width, "attn_out")


def mlp(g, x, width):
    h = g.linear(x, width, 4 * width, "fc")
    gate = g.op("Sigmoid", [g.op("Mul", [h, g.const("quick_gelu", np.array(1.702, dtype=np.float32))])])
    h = g.op("Mul", [h, gate], "quick_gelu")
    return g.linear(h, 4 * width, width, "mlp_out")


def build(variant, name):
    cfg = VARIANTS[variant]
    size, patch, width, heads, embed = cfg["size"], cfg["patch"], cfg["width"], cfg["heads"], cfg["embed"]
    grid = size // patch
    patches = grid * grid
    tokens = patches + 1
    g = GraphBuilder(np.random.default_rng(cfg["seed"]))

    # Patch embedding, class token, positional embedding, ln_pre.
    conv_w = g.weight("conv_w", (width, 3, patch, patch), (3 * patch * patch) ** -0.5)
    x = g.op("Conv", ["image", conv_w], "patch_embed", kernel_shape=[patch, patch], strides=[patch, patch])
    x = g.op("Reshape", [x, g.shape([1, width, patches])])
    x = g.op("Transpose", [x], perm=[0, 2, 1])
    cls = g.weight("class_embedding", (1, 1, width), width**-0.5)
    x = g.op("Concat", [cls, x], "tokens", axis=1)
    x = g.op("Add", [x, g.weight("positional_embedding", (1, tokens, width), 0.1)], "pos")
    x = g.layer_norm(x, width, "ln_pre")

    # Normal and abnormal prompt embeddings are close in CLIP space (cosine ~0.97), so logit
    # differences stay a few units, as with real prompts, and the maps are not saturated.
    normal = g.rng.standard_normal(embed)
    abnormal = normal + 0.25 * g.rng.standard_normal(embed)
    text = np.stack([normal, abnormal], axis=1)
    text = (text / np.linalg.norm(text, axis=0, keepdims=True)).astype(np.float32)
    text_scaled = g.const("text_embeddings", (LOGIT_SCALE * text).astype(np.float32))
    ln_post_g = g.const("ln_post_g", (1.0 + 0.1 * g.rng.standard_normal(width)).astype(np.float32))
    ln_post_b = g.const("ln_post_b", (0.1 * g.rng.standard_normal(width)).astype(np.float32))
    proj = g.weight("proj", (width, embed), width**-0.5)

    def to_joint_space(t):
        t = g.op("LayerNormalization", [t, ln_post_g, ln_post_b], "ln_post", axis=-1, epsilon=1e-5)
        return g.op("MatMul", [t, proj], "proj")

    logits, features = [], []
    for block in range(1, cfg["blocks"] + 1):
        x = g.op("Add", [x, attention(g, g.layer_norm(x, width, "ln_1"), tokens, width, heads)], "res_attn")
        x = g.op("Add", [x, mlp(g, g.layer_norm(x, width, "ln_2"), width)], "res_mlp")
        if block in cfg["taps"]:
            starts, ends, axes = (
                g.const(s, np.array(v, dtype=np.int64)) for s, v in (("starts", [1]), ("ends", [tokens]), ("axes", [1]))
            )
            t = g.op("Slice", [x, starts, ends, axes], "patch_tokens")
            t = g.linear(to_joint_space(t), embed, embed, "adapter")
            t = g.l2_normalise(t)  # [1,N,E]
            features.append(t)
            sim = g.op("MatMul", [t, text_scaled], "similarity")  # [1,N,2]
            sim = g.op("Transpose", [sim], perm=[0, 2, 1])
            logits.append(g.op("Reshape", [sim, g.shape([1, 2, grid, grid])], "layer_logits"))
    cls_tok = g.op("Gather", [x, g.const("index", np.array([0], dtype=np.int64))], "cls", axis=1)
    cls_tok = g.l2_normalise(to_joint_space(cls_tok))  # [1,1,E]
    image_logits = g.op("MatMul", [cls_tok, text_scaled], "image_sim")
    g.nodes.append(helper.make_node("Reshape", [image_logits, g.shape([1, 2])], ["image_logits"]))
    g.nodes.append(helper.make_node("Concat", logits, ["patch_logits"], axis=0))
    g.nodes.append(helper.make_node("Concat", features, ["patch_features"], axis=0))

    layers = len(cfg["taps"])
    graph = helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("patch_logits", TensorProto.FLOAT, [layers, 2, grid, grid]),
            helper.make_tensor_value_info("image_logits", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("patch_features", TensorProto.FLOAT, [layers, patches, embed]),
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="clipada")
    model.ir_version = 8
    contract = contract_for(name, size, grid, cfg["taps"], embed)
    helper.set_model_props(model, {"clipada": json.dumps(contract)})
    onnx.checker.check_model(model, full_check=True)
    return model


def contract_for(name, size, grid, taps, embed):
    """The `clipada` metadata document (contract version 1, see docs/ARCHITECTURE.md)."""
    return {
        "contract": 1,
        "name": name,
        "input": {
            "name": "image",
            "layout": "NCHW",
            "size": [size, size],
            "dtype": "f32",
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "normalized_in_graph": False,
        },
        "grid": [grid, grid],
        "layers": taps,
        "feature_dim": embed,
        "outputs": {
            "patch_logits": "patch_logits",
            "image_logits": "image_logits",
            "patch_features": "patch_features",
        },
        "refine": {"radius": 1, "sharpness": 1.0},
        "score": {"sigma": size / 56.0, "top_k": 0.01, "image_logits_weight": 0.5, "threshold": 0.5},
    }


def main():
    parser = artefact_arguments(__doc__)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="tiny")
    parser.add_argument("--out", type=pathlib.Path, help="output file (default by variant)")
    args = parser.parse_args()
    default_out = {
        "tiny": HERE / "fixtures" / "tiny-clipada.onnx",
        "vit-b16": HERE / "build" / "vit-b16-clipada.onnx",
    }[args.variant]
    out = args.out or default_out
    exit_for(write_or_check(out, build(args.variant, out.stem).SerializeToString(), args.check))


if __name__ == "__main__":
    main()
