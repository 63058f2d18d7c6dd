#!/usr/bin/env bash
# Tests of CLIP-ADA training and export (models/train.py, models/feature_cache.py,
# models/export.py) on a tiny open_clip configuration with random weights, on the CPU: installs
# models/requirements-train.txt into models/.venv-train (PyTorch with its NVIDIA libraries: about
# 5 GB), builds the runtime and runs test_train.py, whose classes check:
#   SyntheticAnomalies: anomalies change the image only inside their mask;
#   Prompts: the prompt learner gives open_clip's own text embeddings;
#   Training: a few steps lower the loss and train only adapters and prompts; a checkpoint
#     restores the same model;
#   CachedTraining: cached features train the same adapters as the image tower every step
#     (cached = uncached, 1e-5); the cache is reused while its key holds, rebuilt when it changes;
#   CacheFolder: a cache folder holding foreign files or symbolic links, or that is a file, is
#     refused and left as it was; damaged shards and manifests are rebuilt, never read;
#   Checkpoints: resuming continues as the uninterrupted run; a resume takes its command line's
#     --lr; bf16 and fp16 keep float32 checkpoints that export;
#   Refusals: resume refusals (another model, other CLIP weights, a damaged checkpoint; a finished
#     run trains nothing), command-line refusals (numbers out of range, by option), symlink-safe
#     checkpoint writes (a symbolic link in OUT is never written through);
#   Distributed: DDP equivalence (two gloo processes under torchrun, stopped and resumed, train
#     as one process with their global batch, 1e-5);
#   Export: onnxruntime matches PyTorch, the contract describes the graph, and `clipada infer`
#     on the exported model gives PyTorch's maps followed by reference.py;
#   Documentation: this header and models/README.md name every test class.
# With CLIPADA_BIN set it uses that binary and builds nothing; else it builds into
# ${CARGO_TARGET_DIR:-target}.
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
