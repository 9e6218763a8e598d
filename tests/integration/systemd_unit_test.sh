#!/bin/sh
# Checks systemd/voxdbd.service with systemd-analyze (works without a running
# systemd): `verify` reports nothing, and `security --offline` rates the
# unit's exposure at 2.0 or less.
#   systemd_unit_test.sh UNIT VOXDBD_BINARY
set -eu
unit=$1
binary=$2
if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze not installed: skipped"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify insists that ExecStart's binary exists: point it at the build's.
sed "s|/usr/local/bin/voxdbd|$binary|" "$unit" > "$tmp/voxdbd.service"
out=$(systemd-analyze verify "$tmp/voxdbd.service" 2>&1 || true)
if [ -n "$out" ]; then
  echo "systemd-analyze verify reported:"
  echo "$out"
  exit 1
fi
level=$(systemd-analyze security --offline=true "$tmp/voxdbd.service" 2>&1 |
        sed -n 's/.*Overall exposure level for voxdbd.service: \([0-9.]*\).*/\1/p')
echo "exposure level: $level"
awk -v l="$level" 'BEGIN { exit !(l != "" && l <= 2.0) }'
