#!/usr/bin/env python3
"""Exports a trained CLIP-ADA checkpoint (models/train.py) to one ONNX file the clipada runtime
runs unchanged.

The text branch is computed once, here: the learned prompt context and the pre-defined
templates go through the frozen CLIP text encoder, and the two resulting embeddings (normal,
abnormal) are baked into the graph as constants. The graph takes the normalised image
[1,3,S,S] and gives patch_logits [L,2,h,w], image_logits [1,2] and patch_features [L,N,E]; the
`clipada` contract metadata (docs/ARCHITECTURE.md) is written with it. The export is checked
with onnxruntime against the PyTorch forward (largest difference must be <= 1e-4), and can
be quantized with models/quantize.py.

CLIP weights are never downloaded: --weights is the local open_clip checkpoint the model was
trained with (see models/README.md for where to get them).

    python models/export.py --checkpoint runs/vitb16/checkpoint.pt --weights ViT-B-16.bin \
        --out clipada-vitb16.onnx [--quantize static --calibration DIR]
"""

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import clipada_torch  # noqa: E402
from common import cpu_session  # noqa: E402
from make_fixtures import contract_for  # noqa: E402

TOLERANCE = 1e-4
OPSET = 17


class ExportGraph(torch.nn.Module):
    """The model with its text embeddings fixed, for one image, in the contract's layout."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("text", model.text_embeddings().detach().clone())

    def forward(self, image):
        out = self.model(image, text=self.text)
        return out["patch_logits"][0], out["image_logits"], out["patch_features"][0]


def export_onnx(graph, example, out):
    """TorchScript-based export (opset 17: tract and every ONNX Runtime we support load it)."""
    torch.onnx.export(
        graph,
        (example,),
        str(out),
        input_names=["image"],
        output_names=["patch_logits", "image_logits", "patch_features"],
        opset_version=OPSET,
        dynamo=False,
    )


def export(model, out, name=None):
    """Writes `model` to `out` with its contract; returns the largest difference between
    onnxruntime and PyTorch on a random input."""
    model = model.eval()
    graph = ExportGraph(model).eval()
    size = model.config.image_size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # nn.MultiheadAttention's fused inference kernel has no ONNX form: export the plain ops.
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        export_onnx(graph, example, out)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    onnx_model = onnx.load(str(out))
    embed = model.clip.visual.proj.shape[1]
    contract = contract_for(name or out.stem, size, model.grid, list(model.config.taps), embed)
    contract["input"]["mean"], contract["input"]["std"] = list(clipada_torch.CLIP_MEAN), list(clipada_torch.CLIP_STD)
    onnx.helper.set_model_props(onnx_model, {"clipada": json.dumps(contract)})
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save(onnx_model, str(out))
    return check(graph, out, example)


def check(graph, path, example):
    """Largest absolute difference of onnxruntime's outputs from PyTorch's, over all outputs."""
    with torch.no_grad():
        expected = [t.numpy() for t in graph(example)]
    session = cpu_session(pathlib.Path(path))
    actual = session.run(None, {"image": example.numpy()})
    return max(float(np.abs(a - e).max()) for a, e in zip(actual, expected, strict=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=pathlib.Path, required=True)
    parser.add_argument("--weights", type=pathlib.Path, help="the local open_clip weights it was trained with")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--name", help="the model's name in the contract (default: the file stem)")
    parser.add_argument("--quantize", choices=["static", "dynamic", "fp16"], help="also write OUT-<mode>.onnx")
    parser.add_argument("--calibration", type=pathlib.Path, help="images for --quantize static")
    args = parser.parse_args()
    model = clipada_torch.from_checkpoint(args.checkpoint, args.weights)
    worst = export(model, args.out, args.name)
    print(f"wrote {args.out}: onnxruntime vs PyTorch, largest difference {worst:.2e}")
    if worst > TOLERANCE:
        sys.exit(f"the export differs from PyTorch by {worst:.2e} > {TOLERANCE}")
    if args.quantize:
        quantized = args.out.with_name(f"{args.out.stem}-{args.quantize}.onnx")
        command = [
            sys.executable,
            str(HERE / "quantize.py"),
            str(args.out),
            "--mode",
            args.quantize,
            "--out",
            str(quantized),
        ]
        if args.calibration:
            command += ["--calibration", str(args.calibration)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
