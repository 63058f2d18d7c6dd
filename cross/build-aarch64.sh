#!/usr/bin/env bash
# The container-free aarch64 build (what `cross build` does in a container, done on the host):
# installs the cross toolchain and qemu, builds the aarch64 release binary at
# target/aarch64-unknown-linux-gnu/release/clipada, runs the emulable part of the test suite
# under qemu-aarch64 (all but the slowest emulated: listed below), and checks that `clipada
# infer` gives the x86 build's verdicts and scores (within 1e-4), on tract and on ONNX
# Runtime's aarch64 library: the tiny fixture on all ten sample parts (both engines), the
# default model with a memory on a good and a scratched one (tract).
#
#   bash cross/build-aarch64.sh            # everything
#   bash cross/build-aarch64.sh --build    # install and build only
#
# Needs Debian bookworm (or later) with apt, run as root or with sudo; the x86 reference
# binary (target/debug/clipada) and models/.venv come from tests/run-all.sh, which calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/helpers.sh
target=aarch64-unknown-linux-gnu
out=target/$target/release
sudo=$([ "$(id -u)" = 0 ] || echo sudo)

step "aarch64 toolchain and qemu"
dpkg --print-foreign-architectures | grep -x arm64 >/dev/null || $sudo dpkg --add-architecture arm64
apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross libc6:arm64 libstdc++6:arm64 linux-libc-dev:arm64
# ONNX Runtime's aarch64 library crashes qemu 7.2 (bookworm's) reading /proc/cpuinfo; qemu 10
# from bookworm-backports runs it.
if ! qemu-aarch64 --version 2>/dev/null | grep -E 'version (9|[1-9][0-9])\.' >/dev/null; then
  if ! apt-cache policy | grep bookworm-backports >/dev/null; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
      $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
    $sudo apt-get update -qq
  fi
  $sudo apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-user
fi
rustup target list --installed | grep -x "$target" >/dev/null || rustup target add "$target"

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# The package strips the binary anyway: no line tables, a faster link.
export CARGO_PROFILE_RELEASE_DEBUG=false
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# No path of the build machine in the binary (panic locations name sources by these instead).
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="--remap-path-prefix=$PWD=clipada --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=cargo"
# With multiarch libc6:arm64 the loader is at /lib/ld-linux-aarch64.so.1 already; a
# QEMU_LD_PREFIX would make threaded programs hang.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
unset QEMU_LD_PREFIX

step "aarch64 release build"
cargo build --release --locked --target "$target"
file "$out/clipada" | grep 'ARM aarch64' >/dev/null || { echo "not an aarch64 binary: $out/clipada"; exit 1; }
[ "${1:-}" = --build ] && exit 0

step "ONNX Runtime's aarch64 library (the pinned wheel for manylinux aarch64)"
py=models/.venv/bin/python
version=$($py -c 'import onnxruntime; print(onnxruntime.__version__)')
ort_dir=target/onnxruntime-aarch64-$version
if [ ! -f "$ort_dir/libonnxruntime.so" ]; then
  rm -rf "$ort_dir" && mkdir -p "$ort_dir"
  $py -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_aarch64 --python-version 3.11 "onnxruntime==$version" -d "$ort_dir"
  $py - "$ort_dir" <<'PY'
import pathlib, sys, zipfile
folder = pathlib.Path(sys.argv[1])
wheel = next(folder.glob("onnxruntime-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if "/capi/libonnxruntime.so" in n)
    (folder / "libonnxruntime.so").write_bytes(z.read(name))
PY
fi
ort_aarch64=$PWD/$ort_dir/libonnxruntime.so

step "the test suite under qemu-aarch64"
# Tests that start the clipada binary need the kernel to hand aarch64 programs to qemu
# (binfmt_misc); as root, register it if it is not there yet.
if ! "$out/clipada" --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64:F' \
    >/proc/sys/fs/binfmt_misc/register 2>/dev/null || true
fi
# Left out under emulation, the slowest (minutes emulated): memory_eval, quantized, the station
# replays with the default model and the tests that calibrate it first (fail-safe items 2, 9,
# 13, the fresh-frame test, the scripted-trigger and reject-gate timings, which assume a part is
# judged within about a second, and the part-ID records); and tests of logic with no arithmetic that depends on the
# processor (log levels, the full-disk and failing-source station runs, the plant networks
# against their real peers: the Modbus server's own unit tests do run). The
# architecture-specific code they run (tract's kernels, the NEON nearest-patch kernel,
# calibration, zune-jpeg's NEON paths) is covered by the goldens, the unit tests, the property
# tests (which calibrate the tiny fixture and decode edited JPEGs), and the comparison with the
# x86 build below, which judges sample parts with the default model and a memory.
tests=(--lib --test it)
skip=(--skip memory_eval:: --skip quantized:: --skip replay
  --skip failsafe::item_2_ --skip failsafe::item_9_ --skip failsafe::item_13_
  --skip station_run::a_frame_exposed_before_its_trigger --skip station_run::triggers_while_busy
  --skip station_run::results_go_on_the_lines --skip station_run::every_record_names --skip station_run::the_shipped_line_config
  --skip cli::log_lines_name_their_level --skip station_run::a_full_disk
  --skip station_run::a_source_failing_mid_run --skip station_run::a_part_triggered_after_the_source_ended
  --skip plant_networks:: --skip operator_interface::)
if ! "$out/clipada" --version >/dev/null 2>&1; then
  echo "(no binfmt_misc for aarch64: the tests that start the binary are skipped)"
  skip+=(--skip infer_cli:: --skip cli_exits_1 --skip under_systemd --skip control_from_the_command_line
    --skip missing_library_falls_back --skip check_command_names)
fi
ORT_DYLIB_PATH=$ort_aarch64 cargo test --release --locked --target "$target" "${tests[@]}" -- "${skip[@]}"

step "clipada infer: aarch64 (qemu) against x86, tract and ONNX Runtime"
x86=target/debug/clipada
[ -x "$x86" ] || cargo build --locked
x86_ort=$(ort_library "$py")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$x86 calibrate --backend tract --model models/default/efficientnet-lite0.onnx \
  --good models/samples/part/train/good --out "$work/part.memory" >/dev/null
# The tiny fixture judges all ten sample parts on both engines; the default model (about a
# minute an image emulated) a good part and a scratched one, on tract: preprocessing and
# scoring, clipada's code on the processor, are the same for both engines, and ONNX Runtime's
# aarch64 kernels are compared on the tiny fixture.
for backend in tract ort; do
  models=(tiny)
  [ $backend = tract ] && models+=(default)
  for model in "${models[@]}"; do
    case $model in
      tiny) args=(--model models/fixtures/tiny-clipada.onnx)
        images=(models/samples/part/test) count=10 ;;
      default) args=(--model models/default/efficientnet-lite0.onnx --memory "$work/part.memory")
        images=(models/samples/part/test/good/000.png models/samples/part/test/scratch/000.png) count=2 ;;
    esac
    ORT_DYLIB_PATH=$x86_ort $x86 infer --json --backend $backend --allow-insecure-library "${args[@]}" "${images[@]}" >"$work/x86.jsonl" 2>"$work/x86.err" ||
      { cat "$work/x86.err"; exit 1; }
    ORT_DYLIB_PATH=$ort_aarch64 qemu-aarch64 "$out/clipada" infer --json --backend $backend --allow-insecure-library "${args[@]}" "${images[@]}" \
      >"$work/aarch64.jsonl" 2>"$work/aarch64.err" || { cat "$work/aarch64.err"; exit 1; }
    $py - "$work/x86.jsonl" "$work/aarch64.jsonl" "$backend $model" "$count" <<'PY'
import json, sys
x86, arm = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
assert len(x86) == len(arm) == int(sys.argv[4]), (len(x86), len(arm))
if sys.argv[3].endswith("default"):
    assert {a["verdict"] for a in x86} == {"pass", "fail"}, "a good and a scratched part: both verdicts compared"
worst = 0.0
for a, b in zip(x86, arm):
    assert a["path"] == b["path"] and a["verdict"] == b["verdict"], (a, b)
    worst = max(worst, abs(a["score"] - b["score"]))
assert worst <= 1e-4, f"{sys.argv[3]}: scores differ by {worst}"
print(f"{sys.argv[3]}: {len(arm)} images, same verdicts, largest score difference {worst:.2e}")
PY
  done
done
