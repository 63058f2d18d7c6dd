#!/usr/bin/env bash
# INT8 (static QDQ, dynamic) against FP32 on ONNX Runtime (CPU) and tract, for the default
# model and the ViT-B/16 fixture, in one run: median inference ms per engine and form, and
# each form's ratio to FP32 on the same engine (issue: GPU path, speed (c)). Makes the
# quantized files in models/build/ when missing. Needs a release build and models/.venv.
#   bash benches/quantized.sh IMAGES_DIR [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/helpers.sh
images=$1 iterations=${2:-20}
py=models/.venv/bin/python
ORT_DYLIB_PATH=$(ort_library "$py")
export ORT_DYLIB_PATH
mkdir -p models/build
[ -f models/build/vit-b16-clipada.onnx ] || $py models/make_fixtures.py --variant vit-b16
declare -A source=([effnet]=models/default/efficientnet-lite0.onnx [vit-b16]=models/build/vit-b16-clipada.onnx)
for model in effnet vit-b16; do
  [ -f "models/build/$model-static.onnx" ] ||
    (cd models && .venv/bin/python quantize.py "../${source[$model]}" --mode static --calibration "$images" --limit 16 --out "build/$model-static.onnx" >/dev/null)
  [ -f "models/build/$model-dynamic.onnx" ] ||
    (cd models && .venv/bin/python quantize.py "../${source[$model]}" --mode dynamic --out "build/$model-dynamic.onnx" >/dev/null)
done
memory=$(mktemp --suffix=.memory)
trap 'rm -f "$memory"' EXIT
printf '| model | engine | FP32 ms | static QDQ INT8 ms (ratio) | dynamic INT8 ms (ratio) |\n|---|---|---|---|---|\n'
for model in effnet vit-b16; do
  for engine in ort tract; do
    row="| $model | $engine"
    fp32=
    for form in fp32 static dynamic; do
      file=${source[$model]}
      [ $form = fp32 ] || file=models/build/$model-$form.onnx
      args=(--backend $engine --allow-insecure-library --model "$file" --images "$images" --iterations "$iterations" --warmup 2 --json)
      if [ $model = effnet ]; then
        ./target/release/clipada calibrate --backend $engine --allow-insecure-library --model "$file" --good "$images" --out "$memory" >/dev/null 2>&1
        args+=(--memory "$memory")
      fi
      ms=$(./target/release/clipada bench "${args[@]}" 2>/dev/null | $py -c 'import json, sys; print(json.load(sys.stdin)["stages"]["inference"]["median_ms"])')
      if [ $form = fp32 ]; then fp32=$ms; row+=" | $(printf %.1f "$ms")"; else
        row+=" | $(printf %.1f "$ms") ($($py -c "print(f'{$ms / $fp32:.2f}x')"))"; fi
    done
    echo "$row |"
  done
done
