#!/bin/bash
# Makes datadir.tar.gz and expected.txt: a data directory written by voxdb
# 0.1 before partitions (commit 87e2812), for the upgrade test
# (tests/integration/upgrade_test.cc). Run it with that build's binaries:
#
#   git worktree add /tmp/old 87e2812 && cmake -S /tmp/old -B /tmp/old/build &&
#   cmake --build /tmp/old/build --target voxdbd voxdb
#   tests/data/format-0.1/make.sh /tmp/old/build/daemon/voxdbd /tmp/old/build/cli/voxdb
#
# The directory holds flushed chunks (two level-4 cubes, so it can be split
# between them), fills, a WRITE_BOX across a chunk border, a deleted chunk,
# LOD records and index entries, and journal records not yet flushed (the
# server is killed with SIGKILL), which the new build must replay.
# expected.txt is what the old build reads back after replaying them.
set -euo pipefail
voxdbd=$1 voxdb=$2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$work"' EXIT

start() {  # start DIR: voxdbd on DIR, sets pid and VOXDB_ADDRESS
  "$voxdbd" --data "$1" --listen 127.0.0.1:0 --metrics-listen off >"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/.* on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/log" | head -1)
    [ -n "$port" ] && break
    sleep 0.1
  done
  export VOXDB_ADDRESS=127.0.0.1:$port
}

# Chunk A = (1000000, 400000, 312500); chunk B = A + 16 in x, another
# level-4 cube. Voxel coordinates are chunk coordinates x 128.
ax=128000000 ay=51200000 az=40000000
bx=$((ax + 16 * 128))
start "$work/data"
"$voxdb" fill $((ax - 64)) $ay $az $((bx + 200)) $((ay + 64)) $((az + 8)) 7
"$voxdb" set-voxel $ax $ay $az 5
"$voxdb" set-voxel $((ax + 127)) $((ay + 127)) $((az + 127)) 6
"$voxdb" set-voxel $bx $ay $az 9
head -c $((256 * 4 * 4)) /dev/zero | tr '\0' '\003' >"$work/box.raw"
"$voxdb" write-box $((bx - 128)) $((ay + 10)) $((az + 10)) $((bx + 128)) $((ay + 14)) $((az + 14)) "$work/box.raw"
"$voxdb" set-voxel $((ax + 5 * 128)) $ay $az 11
"$voxdb" flush
"$voxdb" delete-chunk 1000005,400000,312500
"$voxdb" set-voxel $((ax + 1)) $ay $az 12   # journal only from here on
"$voxdb" set-voxel $((bx + 1)) $ay $az 13
"$voxdb" fill $((bx + 300)) $ay $az $((bx + 310)) $((ay + 10)) $((az + 10)) 21
kill -9 $pid
wait $pid 2>/dev/null || true
tar -C "$work/data" -czf "$here/datadir.tar.gz" --owner=0 --group=0 --numeric-owner .

# What the old build reads after replaying the journal.
cp -r "$work/data" "$work/replay"
start "$work/replay"
{
  for v in "$ax $ay $az" "$((ax + 1)) $ay $az" "$((ax + 127)) $((ay + 127)) $((az + 127))" \
           "$bx $ay $az" "$((bx + 1)) $ay $az" "$((ax + 5 * 128)) $ay $az" \
           "$((ax - 64)) $ay $az" "$((bx + 150)) $ay $az" "$((bx - 100)) $((ay + 11)) $((az + 11))" \
           "$((bx + 305)) $((ay + 5)) $((az + 5))" "$((bx + 305)) $((ay + 5)) $((az + 50))"; do
    echo "voxel $v $("$voxdb" get-voxel $v)"
  done
  for c in 1000000,400000,312500 1000016,400000,312500 1000015,400000,312500 \
           1000005,400000,312500 1000002,400000,312500; do
    "$voxdb" get-chunk $c "$work/chunk" --json >"$work/chunk.json"
    echo "chunk $c $(sed -n 's/.*"version":\([0-9]*\).*/\1/p' "$work/chunk.json")"
  done
  "$voxdb" read-box $((ax - 64)) $ay $az $((bx + 320)) $((ay + 64)) $((az + 16)) "$work/region.raw" >/dev/null
  echo "box $((ax - 64)) $ay $az $((bx + 320)) $((ay + 64)) $((az + 16)) $(sha256sum <"$work/region.raw" | cut -d' ' -f1)"
} >"$here/expected.txt"
kill -TERM $pid
wait $pid 2>/dev/null || true
