#!/usr/bin/env bash
# Streaming benchmark of voxdbd with iperf3's loopback bandwidth as the
# reference of the unbudgeted stream.
#
#   tests/bench/stream_bench.sh BUILD_DIR [stream_bench options...]
#
# Measures iperf3 over loopback (one stream, STREAM_BENCH_IPERF_ROUNDS
# rounds of STREAM_BENCH_IPERF_SECONDS s, default 3 x 3; the median), then
# runs BUILD_DIR/tests/stream_bench --voxdbd BUILD_DIR/daemon/voxdbd
# --loopback-mb-s <that median> with the other options given, its data
# under a temporary directory of $TMPDIR (or /tmp). stream_bench prints the
# figures, a markdown table and a SUMMARY line (tests/bench/stream_bench.cc).
# Without iperf3 (apt-get install iperf3) stream_bench compares with the
# plain TCP transfer it measures itself. Every process it started is
# stopped on exit. About two minutes with the defaults.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [stream_bench options...]" >&2
  exit 2
fi
BUILD=$1
shift
VOXDBD=$BUILD/daemon/voxdbd
STREAM_BENCH=$BUILD/tests/stream_bench
ROUNDS=${STREAM_BENCH_IPERF_ROUNDS:-3}
SECS=${STREAM_BENCH_IPERF_SECONDS:-3}
for f in "$VOXDBD" "$STREAM_BENCH"; do
  [[ -x $f ]] || { echo "$f is missing: build the voxdbd and stream_bench targets" >&2; exit 2; }
done

source "$(dirname "$0")/bench_lib.sh" stream_bench
# A TCP port nothing listens on (from 20000 up, shifted by our pid).
free_port() {
  local port=$((20000 + ($$ * 7 + $1) % 30000))
  while ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; do port=$((port + 1)); done
  echo "$port"
}
# Waits up to 10 s for a TCP listener on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

log "load average $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
LOOPBACK=()
if command -v iperf3 >/dev/null; then
  IPORT=$(free_port 3)
  iperf3 -s -B 127.0.0.1 -p "$IPORT" >"$TMP/iperf3-server.log" 2>&1 &
  PIDS+=($!)
  wait_port "$IPORT" || { echo "iperf3 -s did not start" >&2; exit 1; }
  runs=()
  for round in $(seq "$ROUNDS"); do
    sleep 0.2  # the server takes one test at a time
    mbit=$(iperf3 -c 127.0.0.1 -p "$IPORT" -P 1 -t "$SECS" -f m |
      awk '/receiver/ { for (i = 1; i <= NF; ++i) if ($i == "Mbits/sec") v = $(i - 1) }
           END { print v }')
    mb=$(awk -v m="$mbit" 'BEGIN { printf "%.0f", m / 8 }')
    log "iperf3 -c 127.0.0.1 -P 1 -t $SECS, round $round: $mb MB/s"
    runs+=("$mb")
  done
  MEDIAN=$(printf '%s\n' "${runs[@]}" | sort -g |
    awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
  echo "RESULT iperf3_1 streams=1 mb_s=$MEDIAN rounds=${runs[*]}"
  LOOPBACK=(--loopback-mb-s "$MEDIAN")
  kill "${PIDS[-1]}" 2>/dev/null || true
else
  log "iperf3 not installed (apt-get install iperf3): stream_bench compares with plain TCP"
fi

TMPDIR=$TMP "$STREAM_BENCH" --voxdbd "$VOXDBD" "${LOOPBACK[@]}" "$@"
