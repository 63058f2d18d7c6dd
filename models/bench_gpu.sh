#!/usr/bin/env bash
# The GPU measurement for models/README.md: seconds per CLIP-ADA training step on the GPU(s) of
# this machine, frozen image tower every step vs cached features, fp32 vs bf16, one process vs one
# per GPU where there are several; one table per model (models/bench_train_step.py). Random CLIP
# weights: nothing is downloaded and nothing but the repository is needed. Needs a Python with
# PyTorch (CUDA) and open_clip_torch (models/requirements-train.txt), named by PYTHON (default
# python3). Expected to take 3 to 6 minutes, mostly process start-up; each model is capped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import torch, open_clip; assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "CUDA", torch.version.cuda, "open_clip", open_clip.__version__)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 210 "$PYTHON" models/bench_train_step.py --device cuda --clip ViT-B-16 --image-size 224 \
  --taps 6 9 12 --batch 32 --steps 10 --precisions fp32 bf16
timeout 240 "$PYTHON" models/bench_train_step.py --device cuda --clip ViT-L-14-336 --image-size 518 \
  --taps 6 12 18 24 --batch 8 --steps 5 --precisions bf16 fp32
