#!/usr/bin/env python3
"""Quantizes a clipada model, keeping its contract metadata.

Modes:
  static   INT8 in QDQ form, from calibration images (per-channel weights). With --keep-float
           (default: on for ViTs, i.e. graphs with LayerNormalization or Softmax), LayerNorm,
           Softmax and the MatMul that consumes Softmax stay in float: INT8 ViTs lose accuracy
           there, and tract computes a re-quantized Softmax wrongly (the runtime refuses such a
           file on tract).
  dynamic  INT8 weights, activations quantized at run time (the form tract runs correctly).
  fp16     float16 weights and compute for GPUs, float32 input and outputs.

Calibration images are preprocessed exactly as the runtime does (models/reference.py).

Usage:
  python models/quantize.py MODEL.onnx --mode static --calibration DIR [--limit N] --out OUT.onnx
  python models/quantize.py MODEL.onnx --mode dynamic --out OUT.onnx
  python models/quantize.py MODEL.onnx --mode fp16 --out OUT.onnx
"""

import argparse
import pathlib
import sys
import tempfile

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

import reference
from common import contract_of

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


class ImageReader(CalibrationDataReader):
    """Feeds preprocessed calibration images to onnxruntime's calibrator."""

    def __init__(self, folder, spec, limit):
        from PIL import Image

        paths = sorted(p for p in pathlib.Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            sys.exit(f"{folder}: no calibration images")
        step = max(1, len(paths) // limit)
        self.inputs = iter(
            {spec["input"]["name"]: reference.preprocess(np.asarray(Image.open(p).convert("RGB")), spec["input"])}
            for p in paths[::step][:limit]
        )

    def get_next(self):
        return next(self.inputs, None)


def float_islands(model):
    """Nodes kept in float for ViTs: LayerNormalization, Softmax, and MatMuls fed by a Softmax."""
    softmax_outputs = {o for n in model.graph.node if n.op_type == "Softmax" for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in ("LayerNormalization", "Softmax")
        or (n.op_type == "MatMul" and any(i in softmax_outputs for i in n.input))
    ]


def name_nodes(model):
    """Quantization excludes nodes by name: give unnamed nodes stable names."""
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=pathlib.Path)
    parser.add_argument("--mode", choices=["static", "dynamic", "fp16"], required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--calibration", type=pathlib.Path, help="folder of images (static mode)")
    parser.add_argument("--limit", type=int, default=64, help="calibration images used (spread evenly)")
    parser.add_argument("--keep-float", choices=["auto", "yes", "no"], default="auto")
    args = parser.parse_args()

    model = onnx.load(args.model)
    spec = contract_of(model)
    name_nodes(model)
    islands = float_islands(model)
    keep_float = {"yes": True, "no": False, "auto": bool(islands)}[args.keep_float]
    with tempfile.TemporaryDirectory() as tmp:
        named = pathlib.Path(tmp) / "named.onnx"
        onnx.save(model, named)
        if args.mode == "static":
            if not args.calibration:
                sys.exit("--calibration DIR is needed for static quantization")
            quantize_static(
                named,
                args.out,
                ImageReader(args.calibration, spec, args.limit),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=islands if keep_float else [],
            )
        elif args.mode == "dynamic":
            quantize_dynamic(named, args.out, weight_type=QuantType.QInt8, per_channel=True)
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(model, keep_io_types=True), args.out)
    out = onnx.load(args.out)
    # The quantizers rebuild the model: carry the contract (and any other metadata) over.
    onnx.helper.set_model_props(out, {p.key: p.value for p in model.metadata_props})
    onnx.save(out, args.out)
    kept = f", kept in float: {len(islands)} nodes" if args.mode == "static" and keep_float else ""
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {args.mode}{kept})")


if __name__ == "__main__":
    main()
