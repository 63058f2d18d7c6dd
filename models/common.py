"""What the model scripts share: the repository's paths, reading a model's contract, an
onnxruntime CPU session, 8-bit PNG bytes both ways, and the `--check` mode of every script that
makes a committed artefact (rebuild in memory, compare with the file, write nothing)."""

import argparse
import json
import pathlib
import struct
import sys
import zlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def contract_of(model):
    """The `clipada` contract document of an onnx ModelProto or of a model file's path."""
    if isinstance(model, (str, pathlib.Path)):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "clipada" not in props:
        sys.exit("the model has no clipada contract metadata")
    return json.loads(props["clipada"])


def cpu_session(model):
    """An onnxruntime session on the CPU for a model file's path or serialized bytes."""
    import onnxruntime

    source = str(model) if isinstance(model, pathlib.Path) else model
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def run_session(session, spec, x):
    """The model's outputs for input `x`, by output name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {spec["input"]["name"]: x}), strict=True))


def png_bytes(pixels):
    """Minimal 8-bit PNG encoder (grey [H,W] or RGB [H,W,3]; filter 0 on every row)."""
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def read_png(path):
    """Decodes the PNGs `png_bytes` writes (8-bit grey or RGB, filter 0, no interlace)."""
    data = pathlib.Path(path).read_bytes()
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, _ = header
    channels = {0: 1, 2: 3}[colour]
    assert depth == 8, f"{path}: only 8-bit"
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + channels * width)
    assert (rows[:, 0] == 0).all(), f"{path}: only filter 0"
    pixels = rows[:, 1:].reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def artefact_arguments(doc):
    """An argument parser with the script's docstring and `--check`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="rebuild in memory and compare, write nothing")
    return parser


def write_or_check(path, data, check):
    """Writes `data` (bytes) to `path`, or with `check` compares and says whether it is the same.
    Returns whether the file is (now) identical."""
    path = pathlib.Path(path)
    if check:
        same = path.is_file() and path.read_bytes() == data
        print(f"{path}: {'identical to a fresh build' if same else 'DIFFERS from a fresh build'}")
        return same
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    print(f"wrote {path} ({len(data)} bytes)")
    return True


def exit_for(all_same):
    """Exits 0 when every checked artefact was identical, 1 otherwise."""
    sys.exit(0 if all_same else 1)
