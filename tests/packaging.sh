#!/usr/bin/env bash
# The package's maintainer scripts (board/postinst, board/postrm), run into a temporary root
# (DPKG_ROOT) with the links a compromised service user could plant: nothing outside the
# service's own folders may change owner, mode or content. Needs root (chown), as dpkg does:
#   sudo bash tests/packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "packaging: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || exec sudo bash "$0" "$@"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/clipada" "$root/etc/default" "$root/var/lib" "$root/var/cache"
cp /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/login.defs "$root/etc/"
# An earlier install: the generic gpio group, world-readable configuration.
groupadd --prefix "$root" --system gpio 2>/dev/null || true
install -m 0644 board/station.toml "$root/etc/clipada/station.toml"
install -m 0644 board/clipada.default "$root/etc/default/clipada"
owner_mode() { stat -c '%u:%g %a' "$1"; }

echo "== first install"
DPKG_ROOT=$root sh board/postinst configure
uid=$(awk -F: '$1 == "clipada" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "clipada" { print $3 }' "$root/etc/group")
[ -n "$uid" ] && [ -n "$gid" ] || fail "no clipada user or group"
grep -q '^clipada-gpio:.*:clipada$' "$root/etc/group" || fail "clipada is not in the clipada-gpio group"
[ "$(owner_mode "$root/var/lib/clipada")" = "$uid:$gid 750" ] || fail "state folder: $(owner_mode "$root/var/lib/clipada")"
[ "$(owner_mode "$root/var/lib/clipada/good")" = "$uid:$gid 750" ] || fail "good/: $(owner_mode "$root/var/lib/clipada/good")"
[ "$(owner_mode "$root/etc/clipada")" = "0:$gid 750" ] || fail "/etc/clipada: $(owner_mode "$root/etc/clipada")"
[ "$(owner_mode "$root/etc/clipada/station.toml")" = "0:$gid 640" ] || fail "station.toml: $(owner_mode "$root/etc/clipada/station.toml")"
[ "$(owner_mode "$root/etc/default/clipada")" = "0:0 640" ] || fail "/etc/default/clipada: $(owner_mode "$root/etc/default/clipada")"

echo "== upgrade with links planted by the service's user"
# Root's files the links point at; good/ and a new folder name replaced by links.
mkdir -m 0700 "$root/victim"
echo secret >"$root/victim/file"
chmod 0600 "$root/victim/file"
rmdir "$root/var/lib/clipada/good"
ln -s ../../../victim "$root/var/lib/clipada/good"
before=$(owner_mode "$root/victim"; owner_mode "$root/victim/file"; cat "$root/victim/file")
DPKG_ROOT=$root sh board/postinst configure 0.1.0 2>"$root/stderr"
grep -q "good is not a folder: left alone" "$root/stderr" || fail "no word about the link: $(cat "$root/stderr")"
after=$(owner_mode "$root/victim"; owner_mode "$root/victim/file"; cat "$root/victim/file")
[ "$before" = "$after" ] || fail "root's folder changed through the link: $before -> $after"
[ -L "$root/var/lib/clipada/good" ] || fail "the link was replaced"
# A user that predates clipada-gpio is added to it, once.
sed -i 's/^\(clipada-gpio:[^:]*:[^:]*:\).*/\1/' "$root/etc/group"
DPKG_ROOT=$root sh board/postinst configure 0.1.0 2>/dev/null
grep -q '^clipada-gpio:.*:clipada$' "$root/etc/group" || fail "an upgraded user is not in clipada-gpio"

echo "== purge"
mkdir -p "$root/var/cache/clipada/tensorrt"
DPKG_ROOT=$root sh board/postrm purge
[ ! -e "$root/var/lib/clipada" ] && [ ! -e "$root/var/cache/clipada" ] || fail "state or cache left after purge"
after=$(owner_mode "$root/victim"; owner_mode "$root/victim/file"; cat "$root/victim/file")
[ "$before" = "$after" ] || fail "purge reached through the link: $after"
echo "== first install where a clipada group exists without the user"
rm -rf "$root" && mkdir -p "$root/etc" "$root/var/lib" "$root/var/cache"
cp /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/login.defs "$root/etc/"
groupadd --prefix "$root" --system clipada
DPKG_ROOT=$root sh board/postinst configure
gid=$(awk -F: '$1 == "clipada" { print $3 }' "$root/etc/group")
[ "$(awk -F: '$1 == "clipada" { print $4 }' "$root/etc/passwd")" = "$gid" ] || fail "the user is not in its group"
echo "maintainer scripts: no link followed, permissions as documented"
