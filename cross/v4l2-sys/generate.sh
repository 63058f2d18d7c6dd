#!/usr/bin/env bash
# Regenerates the shipped V4L2 bindings (src/bindings/<arch>.rs) with bindgen, for x86_64 and
# aarch64 Linux; with --check, generates them into a temporary folder and fails if they differ
# from the shipped ones. Needs libclang (libclang-dev) and both architectures' C library and
# kernel headers (the host's, and libc6-dev-arm64-cross); installs them with apt when missing
# (root or sudo).
set -euo pipefail
cd "$(dirname "$0")"
. ../../tests/helpers.sh
apt_install libclang-dev libc6-dev-arm64-cross
out=src/bindings
[ "${1:-}" = --check ] && out=$(mktemp -d)
mkdir -p "$out"
export CARGO_TARGET_DIR=../../target/v4l2-sys-generate
# An unoptimised build: compiles in half the time, and one header is quick to translate anyway.
cargo build -q --locked --manifest-path generate/Cargo.toml
generator=$CARGO_TARGET_DIR/debug/v4l2-sys-generate
$generator x86_64-linux-gnu "$out/x86_64.rs"
BINDGEN_EXTRA_CLANG_ARGS="-isystem /usr/aarch64-linux-gnu/include" $generator aarch64-linux-gnu "$out/aarch64.rs"
if [ "${1:-}" = --check ]; then
  for arch in x86_64 aarch64; do
    diff -q "$out/$arch.rs" "src/bindings/$arch.rs" >/dev/null ||
      { echo "cross/v4l2-sys/src/bindings/$arch.rs differs from a fresh bindgen run: run bash cross/v4l2-sys/generate.sh"; exit 1; }
  done
  rm -rf "$out"
  echo "V4L2 bindings: the shipped files match a fresh bindgen run (x86_64, aarch64)"
fi
