#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, then checks that the
# default build needs no libclang and the shipped V4L2 bindings are a fresh bindgen run's,
# installs the real peers the plant-network and operator-interface tests start (Mosquitto;
# pymodbus in the venv; Chromium with Playwright from the venv; curl), runs
# the Python tooling's lint and the numpy reference's own tests, checks that the committed
# fixture and goldens are what the scripts make, Rust formatting, lint (both feature sets),
# documentation and the minimum supported Rust version, cargo's tests (both feature sets), the
# demo without libclang, and the aarch64 build (tests under qemu, outputs against x86), its
# .deb (contents, checksums, the unit's sandbox score) and its maintainer scripts. CI
# (.ci/run) runs exactly this. The training tests, which need PyTorch (about 5 GB), are
# separate: bash models/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/helpers.sh

step "the default build needs no libclang (the V4L2 bindings are shipped: cross/v4l2-sys)"
# (The whole graph listed first: a `cargo tree` that fails for another reason fails the check.)
graph=$(cargo tree --locked -q -e normal,build --prefix none -f '{p}')
if grep -q '^clang-sys ' <<<"$graph"; then
  echo "clang-sys (libclang) is in the default build graph:"; cargo tree --locked -e normal,build -i clang-sys; exit 1
fi
bash cross/v4l2-sys/generate.sh --check

step "Python tooling (models/requirements-test.txt into models/.venv)"
[ -x models/.venv/bin/python ] || python3 -m venv models/.venv
models/.venv/bin/python -m pip install -q --disable-pip-version-check -r models/requirements-test.txt

step "real peers: Mosquitto broker and clients (plant networks), Chromium (the operator page, driven by Playwright from the venv), curl and openssl (TLS)"
apt_install mosquitto mosquitto-clients openssl chromium curl

step "Python lint and format (ruff, models/pyproject.toml)"
models/.venv/bin/ruff check --config models/pyproject.toml models benches tests
models/.venv/bin/ruff format --check --config models/pyproject.toml models benches tests

step "reference scoring, fixture and goldens"
(cd models && .venv/bin/python -m unittest test_reference test_efficientnet)
models/.venv/bin/python models/make_fixtures.py --check
models/.venv/bin/python models/make_samples.py --check
models/.venv/bin/python models/export_efficientnet.py --check
models/.venv/bin/python models/make_goldens.py --check
models/.venv/bin/python models/make_metric_goldens.py --check

# The ONNX Runtime engine loads libonnxruntime at run time: the one from the pinned wheel.
ORT_DYLIB_PATH=$(ort_library)
export ORT_DYLIB_PATH

step "Rust: format, lint, documentation, minimum Rust version, tests"
rustup component list --installed 2>/dev/null | grep '^clippy' >/dev/null || rustup component add clippy rustfmt
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --no-default-features --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps -q
# cargo's tests, the demo and the x86 reference binary are built with the minimum supported
# Rust (Cargo.toml's rust-version): that proves it builds and passes there without a build of
# its own; lint and documentation above and the aarch64 build below use the current stable.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
rustup toolchain list | grep "^$msrv-" >/dev/null || rustup toolchain install "$msrv" --profile minimal
step "cargo test with Rust $msrv (both feature sets)"
cargo "+$msrv" test --locked --lib --bins --tests
cargo "+$msrv" test --locked --no-default-features --lib --tests

step "the README's first command, with libclang out of reach"
LIBCLANG_PATH=/nonexistent cargo "+$msrv" run --locked -q -- demo --output target/ci-demo

step "aarch64: container-free cross build, tests under qemu, outputs against x86; the .deb"
bash cross/build-aarch64.sh
bash cross/package-deb.sh --check

step "the package's maintainer scripts in a temporary root, with planted links"
bash tests/packaging.sh
step "all passed"
