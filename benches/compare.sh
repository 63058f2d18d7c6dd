#!/usr/bin/env bash
# Speed of the whole clipada pipeline against the same steps in Python with the same ONNX
# Runtime, on the same images, in one run (issue: GPU path, speed (b)). Needs a release build,
# the models/.venv of tests/run-all.sh and a folder of images to calibrate and judge.
#   bash benches/compare.sh GOOD_DIR TEST_DIR [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/helpers.sh
good=$1 test=$2 model=${3:-models/default/efficientnet-lite0.onnx}
py=models/.venv/bin/python
ORT_DYLIB_PATH=$(ort_library "$py")
export ORT_DYLIB_PATH
memory=$(mktemp --suffix=.memory)
trap 'rm -f "$memory"' EXIT
./target/release/clipada calibrate --backend ort --allow-insecure-library --model "$model" --good "$good" --out "$memory" >/dev/null
clipada_ms=$(./target/release/clipada infer --json --backend ort --allow-insecure-library --model "$model" --memory "$memory" "$test" 2>/dev/null |
  $py -c 'import json, sys; t = [json.loads(l)["elapsed_ms"] for l in sys.stdin]; t = t[1:]; print(sum(t) / len(t))')
python_ms=$($py benches/python_pipeline.py --model "$model" --memory "$memory" --images "$test" |
  $py -c 'import json, sys; print(json.load(sys.stdin)["mean_ms"])')
$py -c "print(f'clipada {float($clipada_ms):.2f} ms/image, python {float($python_ms):.2f} ms/image, python/clipada {float($python_ms) / float($clipada_ms):.2f}x')"
