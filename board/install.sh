#!/bin/sh
# Installs the station on a board from a checkout with a cross-built binary (the .deb does the
# same through its maintainer scripts):
#   sudo sh board/install.sh [PROFILE]        PROFILE: jetson-orin-nano, jetson-xavier-nx,
#                                             raspberry-pi-5 (default: the generic station.toml)
# Then put images of good parts in /var/lib/clipada/good and `systemctl start clipada`.
set -eu
cd "$(dirname "$0")/.."
profile=${1:-}
binary=target/aarch64-unknown-linux-gnu/release/clipada
[ -x "$binary" ] || binary=target/release/clipada
[ -x "$binary" ] || { echo "no clipada binary: cross build it first (README, 'Deploy to a Jetson')" >&2; exit 1; }

install -D -m 0755 "$binary" /usr/bin/clipada
install -D -m 0644 models/default/efficientnet-lite0.onnx /usr/share/clipada/models/efficientnet-lite0.onnx
install -d /usr/share/clipada/board
install -m 0644 board/*.toml /usr/share/clipada/board/
install -D -m 0644 board/clipada.service /lib/systemd/system/clipada.service
install -D -m 0644 board/99-clipada.rules /lib/udev/rules.d/99-clipada.rules
[ -e /etc/default/clipada ] || install -D -m 0644 board/clipada.default /etc/default/clipada
if [ ! -e /etc/clipada/station.toml ]; then
  install -d /etc/clipada
  install -m 0644 "board/${profile:-station}.toml" /etc/clipada/station.toml
fi
sh board/postinst configure
echo "installed; put good parts' images in /var/lib/clipada/good, then: systemctl start clipada"
