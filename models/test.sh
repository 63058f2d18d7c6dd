#!/usr/bin/env bash
# Tests of CLIP-ADA training and export (models/train.py, models/export.py) on a tiny open_clip
# configuration with random weights, on the CPU: installs models/requirements-train.txt into
# models/.venv-train (PyTorch with its NVIDIA libraries: about 5 GB), builds the runtime, and
# checks that training lowers the loss, that cached features, resuming and two gloo processes
# (torchrun) train as the plain single-process run does, that the export matches PyTorch in
# onnxruntime, and that `clipada infer` on the exported model gives PyTorch's maps followed by
# reference.py. With CLIPADA_BIN set it uses that binary and builds nothing; else it builds
# into ${CARGO_TARGET_DIR:-target}.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/helpers.sh
[ -x models/.venv-train/bin/python ] || python3 -m venv models/.venv-train
models/.venv-train/bin/python -m pip install -q --disable-pip-version-check -r models/requirements-train.txt
if [ -z "${CLIPADA_BIN:-}" ]; then
  cargo build --locked
  CLIPADA_BIN=$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/clipada
fi
export CLIPADA_BIN
ORT_DYLIB_PATH=$(ort_library models/.venv-train/bin/python)
export ORT_DYLIB_PATH
cd models
.venv-train/bin/python -W ignore::DeprecationWarning -m unittest -v test_train
