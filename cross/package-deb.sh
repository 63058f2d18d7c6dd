#!/usr/bin/env bash
# The arm64 Debian package, from the container-free build's binary (cross/build-aarch64.sh):
#   bash cross/package-deb.sh           # builds target/debian/clipada_<version>_arm64.deb
#   bash cross/package-deb.sh --check   # and checks its contents and its service unit
# Contents: the binary, the systemd unit, the udev rules, the default config (a conffile),
# the board profiles, the default model, /etc/default/clipada; maintainer scripts from board/.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=target/aarch64-unknown-linux-gnu/release/clipada
[ -x "$binary" ] || { echo "$binary missing: run cross/build-aarch64.sh first" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"$/\1/p;T;q' Cargo.toml)
# The newest glibc symbol version the binary needs is the libc6 it depends on.
glibc=$(aarch64-linux-gnu-objdump -T "$binary" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$binary" "$stage/usr/bin/clipada"
aarch64-linux-gnu-strip "$stage/usr/bin/clipada"
install -D -m 0644 board/clipada.service "$stage/lib/systemd/system/clipada.service"
install -D -m 0644 board/network.conf "$stage/usr/share/clipada/network.conf"
install -D -m 0644 board/99-clipada.rules "$stage/lib/udev/rules.d/99-clipada.rules"
install -D -m 0644 board/station.toml "$stage/etc/clipada/station.toml"
install -D -m 0644 board/clipada.default "$stage/etc/default/clipada"
install -D -m 0644 models/default/efficientnet-lite0.onnx "$stage/usr/share/clipada/models/efficientnet-lite0.onnx"
for profile in board/*.toml; do install -D -m 0644 "$profile" "$stage/usr/share/clipada/board/$(basename "$profile")"; done
install -D -m 0644 README.md "$stage/usr/share/doc/clipada/README.md"
install -d "$stage/DEBIAN"
install -m 0755 board/postinst board/prerm board/postrm "$stage/DEBIAN/"
printf '/etc/clipada/station.toml\n/etc/default/clipada\n' >"$stage/DEBIAN/conffiles"
# Checksums of every file but the configuration (debsums, dpkg --verify).
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f ! -path ./etc/\* -printf '%P\0' | sort -z |
  xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
cat >"$stage/DEBIAN/control" <<CONTROL
Package: clipada
Version: $version
Architecture: arm64
Maintainer: clipada developers <dev@clipada.invalid>
Depends: libc6 (>= $glibc), passwd, udev
Recommends: systemd
Section: misc
Priority: optional
Installed-Size: $(du -sk "$stage" --exclude=DEBIAN | cut -f1)
Description: visual-inspection station running CLIP-ADA anomaly detection
 Judges each camera frame PASS or FAIL with a CLIP-ADA (or feature-memory) ONNX model on
 ONNX Runtime (TensorRT, CUDA, CPU) or tract, shows the anomaly overlay on the attached
 display and signals the verdict on GPIO lines; runs as the clipada systemd service.
CONTROL
mkdir -p target/debian
deb=target/debian/clipada_${version}_arm64.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "built $deb (libc6 >= $glibc)"
[ "${1:-}" = --check ] || exit 0

echo "== checking $deb"
dpkg-deb -c "$deb" | awk '{print $6}' | sort >"$stage/contents"
for wanted in ./usr/bin/clipada ./lib/systemd/system/clipada.service ./lib/udev/rules.d/99-clipada.rules \
  ./etc/clipada/station.toml ./etc/default/clipada ./usr/share/clipada/models/efficientnet-lite0.onnx \
  ./usr/share/clipada/board/jetson-orin-nano.toml ./usr/share/clipada/board/jetson-xavier-nx.toml \
  ./usr/share/clipada/board/raspberry-pi-5.toml ./usr/share/clipada/network.conf; do
  grep -qx "$wanted" "$stage/contents" || { echo "missing from the package: $wanted" >&2; exit 1; }
done
[ "$(dpkg-deb -f "$deb" Architecture)" = arm64 ] || { echo "not an arm64 package" >&2; exit 1; }
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/clipada >"$stage/clipada"
chmod +x "$stage/clipada"
file "$stage/clipada" | grep 'ARM aarch64' >/dev/null || { echo "the packaged binary is not aarch64" >&2; exit 1; }
# The unit as packaged, checked by systemd itself; ExecStart pointed at the packaged binary
# (systemd-analyze checks that it exists), the user and groups taken as the package makes them.
unit_dir=$stage/unit-check
mkdir "$unit_dir"
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/clipada.service |
  sed "s|^ExecStart=/usr/bin/clipada|ExecStart=$stage/clipada|" >"$unit_dir/clipada.service"
verify=$(systemd-analyze verify --man=no "$unit_dir/clipada.service" 2>&1 || true)
if [ -n "$verify" ]; then
  echo "systemd-analyze verify: $verify" >&2
  exit 1
fi
# The sandbox: systemd's own exposure score, at most 1.5 (of 10); with the plant networks'
# drop-in (board/network.conf, its [Service] lines added to the unit's) at most 2.0.
exposure_of() {
  systemd-analyze security --offline=yes "$1" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p'
}
sed '/^\[Install\]/,$d' "$unit_dir/clipada.service" >"$unit_dir/clipada-network.service"
sed '1,/^\[Service\]/d' board/network.conf >>"$unit_dir/clipada-network.service"
verify=$(systemd-analyze verify --man=no "$unit_dir/clipada-network.service" 2>&1 || true)
[ -z "$verify" ] || { echo "systemd-analyze verify, with the network drop-in: $verify" >&2; exit 1; }
exposure=$(exposure_of board/clipada.service)
[ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 1.5) }' ||
  { echo "systemd-analyze security: exposure ${exposure:-unknown} above 1.5" >&2; exit 1; }
network_exposure=$(exposure_of "$unit_dir/clipada-network.service")
[ -n "$network_exposure" ] && awk -v e="$network_exposure" 'BEGIN { exit !(e <= 2.0) }' ||
  { echo "systemd-analyze security with the network drop-in: exposure ${network_exposure:-unknown} above 2.0" >&2; exit 1; }
# Maintainer scripts and checksums in the package; no path of the build machine in the binary.
# (Read whole, not piped into `grep -q`: under pipefail a writer cut off by grep's early exit
# fails the check at random.)
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
for member in ./postinst ./prerm ./postrm ./md5sums ./conffiles; do
  grep -qFx -- "$member" <<<"$control" || { echo "$member missing from the package's control files" >&2; exit 1; }
done
for path in "$PWD" "${CARGO_HOME:-$HOME/.cargo}"; do
  if grep -q --fixed-strings "$path" "$stage/clipada"; then
    echo "the packaged binary holds the build machine's path $path" >&2
    exit 1
  fi
done
echo "contents, architecture, checksums, service unit (exposure $exposure; $network_exposure with the network drop-in) ok"
