#!/usr/bin/env bash
# Tests of CLIP-ADA training and export (models/train.py, models/export.py) on a tiny open_clip
# configuration with random weights, on the CPU: installs models/requirements-train.txt into
# models/.venv-train (PyTorch with its NVIDIA libraries: about 5 GB), builds the runtime, and
# checks that training lowers the loss, that the export matches PyTorch in onnxruntime, and
# that `clipada infer` on the exported model gives PyTorch's maps followed by reference.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/helpers.sh
[ -x models/.venv-train/bin/python ] || python3 -m venv models/.venv-train
models/.venv-train/bin/python -m pip install -q --disable-pip-version-check -r models/requirements-train.txt
cargo build --locked
export CLIPADA_BIN=$PWD/target/debug/clipada
ORT_DYLIB_PATH=$(ort_library models/.venv-train/bin/python)
export ORT_DYLIB_PATH
cd models
.venv-train/bin/python -W ignore::DeprecationWarning -m unittest -v test_train
