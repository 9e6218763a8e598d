#!/usr/bin/env bash
# Throughput of `voxdb export` and `voxdb import` (Zarr v2, level 0) over loopback.
#
#   tests/bench/zarr_bench.sh BUILD_DIR
#
# Starts BUILD_DIR/daemon/voxdbd (defaults: sync durability, threads = cores)
# on an ephemeral loopback port with a temporary data directory, loads the
# first $ZARR_BENCH_CHUNKS surface chunks of the terrain generator with
# BUILD_DIR/tests/net_bench --mode load (PUT_CHUNK, then FLUSH), then for each
# compressor, zstd and blosc, in $ZARR_BENCH_ROUNDS rounds:
#   - times `voxdb export --out DIR --compressor C` (the whole world: every
#     stored chunk);
#   - starts a second voxdbd on an empty data directory and times
#     `voxdb import DIR` into it;
#   - exports the imported database again (untimed) and compares the two
#     stores file for file (`cmp`): the compressors are deterministic, so the
#     same voxels give the same bytes, and a lossy import cannot pass;
#   - stops the second voxdbd;
# and times `voxdb export --lod 4` (zstd, with the arrays lod_1 .. lod_4;
# its MB/s count the level-0 voxels).
# The figures are raw voxels (128^3 bytes a chunk file) per second of the
# whole `voxdb` process (connect, HELLO, the transfer; for export the write
# of every file, for import the last acknowledged write), the median over
# the rounds. Prints a markdown table with the command line and the targets
# (export and import each >= 500 MB/s). Every process it started is stopped
# on exit, and its temporary directory removed.
#
# Environment: ZARR_BENCH_CHUNKS (default 256), ZARR_BENCH_ROUNDS (default 3).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD=$1
VOXDBD=$BUILD/daemon/voxdbd
VOXDB=$BUILD/cli/voxdb
NET_BENCH=$BUILD/tests/net_bench
CHUNKS=${ZARR_BENCH_CHUNKS:-256}
ROUNDS=${ZARR_BENCH_ROUNDS:-3}
TARGET_MB_S=500
CHUNK_BYTES=2097152  # 128^3
for f in "$VOXDBD" "$VOXDB" "$NET_BENCH"; do
  [[ -x $f ]] || { echo "$f is missing: build the voxdbd, voxdb and net_bench targets" >&2; exit 2; }
done

source "$(dirname "$0")/bench_lib.sh" zarr_bench
# The median of the numbers on stdin.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.0f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# stop_voxdbd PID NAME: SIGTERM, and it must exit 0.
stop_voxdbd() {
  kill "$1"
  if ! wait "$1"; then
    echo "voxdbd ($2) did not stop cleanly:" >&2
    cat "$TMP/$2.out" >&2
    exit 1
  fi
}
# timed OUTFILE CMD...: runs CMD (stdout to OUTFILE, stderr shown on failure);
# prints its wall-clock seconds.
timed() {
  local out=$1 t0 t1
  shift
  t0=$(date +%s%N)
  if ! "$@" >"$out" 2>"$out.err"; then
    echo "failed: $*" >&2
    cat "$out" "$out.err" >&2
    exit 1
  fi
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", (b - a) / 1e9 }' </dev/null
}
# files DIR: the number of chunk files of its array.
files() { find "$1/world_voxels" -type f ! -name '.*' | wc -l; }

LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
start_voxdbd "$VOXDBD" source --metrics-listen off
SRC_PID=$VOXDBD_PID
SRC_ADDR=$ADDR
log "voxdbd on $SRC_ADDR: loading $CHUNKS surface chunks"
"$NET_BENCH" --mode load --address "$SRC_ADDR" --chunks "$CHUNKS" >"$TMP/load.out"
R=$TMP/results.txt
: >"$R"

for round in $(seq "$ROUNDS"); do
  for comp in zstd blosc; do
    out=$TMP/export-$comp-$round
    log "round $round: export --compressor $comp"
    secs=$(timed "$TMP/export.out" "$VOXDB" --address "$SRC_ADDR" export --out "$out" \
      --compressor "$comp")
    n=$(files "$out")
    if [[ $n -eq 0 ]]; then
      echo "export $comp wrote no chunk file" >&2
      exit 1
    fi
    echo "export_$comp $n $secs" >>"$R"

    log "round $round: import ($comp, $n chunk files) into a new voxdbd"
    start_voxdbd "$VOXDBD" "import-$comp-$round" --metrics-listen off
    DST_PID=$VOXDBD_PID
    secs=$(timed "$TMP/import.out" "$VOXDB" --address "$ADDR" import "$out")
    echo "import_$comp $n $secs" >>"$R"
    # The round trip: the imported chunks export to the same bytes.
    timed "$TMP/reexport.out" "$VOXDB" --address "$ADDR" export --out "$out.again" \
      --compressor "$comp" >/dev/null
    if [[ $(files "$out.again") -ne $n ]] ||
      ! (cd "$out/world_voxels" && find . -type f ! -name '.*' -print0 |
        xargs -0 -I{} cmp -s {} "$out.again/world_voxels/{}"); then
      echo "import $comp did not round-trip: $out and $out.again differ" >&2
      exit 1
    fi
    stop_voxdbd "$DST_PID" "import-$comp-$round"
    rm -rf "$out" "$out.again" "$TMP/import-$comp-$round"
  done
  # With the LOD arrays (lod_1 .. lod_4, computed from the exported level 0).
  out=$TMP/export-lod-$round
  log "round $round: export --lod 4"
  secs=$(timed "$TMP/export.out" "$VOXDB" --address "$SRC_ADDR" export --out "$out" --lod 4)
  echo "export_zstd,_--lod_4 $(files "$out") $secs" >>"$R"
  rm -rf "$out"
done
stop_voxdbd "$SRC_PID" source

# --- the table ----------------------------------------------------------------------
echo
echo "\`$0 $*\` (ZARR_BENCH_CHUNKS=$CHUNKS ZARR_BENCH_ROUNDS=$ROUNDS): $(nproc) cores," \
  "load average $LOAD_BEFORE before and $(cut -d' ' -f1 /proc/loadavg) after; $CHUNKS" \
  "surface chunks loaded, medians of $ROUNDS rounds; MB/s of raw voxels (128^3 bytes a" \
  "chunk file) over the wall-clock time of the voxdb process."
echo
echo "| measurement | chunk files | seconds | raw MB/s | voxels/s | target |"
echo "|---|---:|---:|---:|---:|---|"
for kind in export_zstd export_blosc import_zstd import_blosc export_zstd,_--lod_4; do
  n=$(awk -v k="$kind" '$1 == k { print $2; exit }' "$R")
  mb=$(awk -v k="$kind" -v b="$CHUNK_BYTES" '$1 == k { print $2 * b / $3 / 1e6 }' "$R" | median)
  secs=$(awk -v k="$kind" '$1 == k { print $3 * 1000 }' "$R" | median)
  vox=$(awk -v k="$kind" -v b="$CHUNK_BYTES" '$1 == k { print $2 * b / $3 }' "$R" | median)
  verdict=$(awk -v m="$mb" -v t="$TARGET_MB_S" 'BEGIN { print (m >= t ? "**met**" : "missed") }')
  echo "| ${kind//_/ } | $n | $(awk -v s="$secs" 'BEGIN { printf "%.3f", s / 1000 }') |" \
    "$(fmt "$mb") | $(fmt "$vox") | ≥ $TARGET_MB_S MB/s: $verdict |"
done
