#!/usr/bin/env bash
# Network benchmarks of voxdbd over loopback, side by side with Redis and iperf3.
#
#   tests/bench/net_bench.sh BUILD_DIR
#
# Starts BUILD_DIR/daemon/voxdbd (defaults: sync durability, threads = cores)
# on an ephemeral loopback port with a temporary data directory, loads the
# first $NET_BENCH_CHUNKS surface chunks of the terrain generator and FLUSHes
# them, then with BUILD_DIR/tests/net_bench measures:
#   - GET_CHUNKS of one chunk per request at 1, 16 and 64 connections, and of
#     16 chunks per request on one connection (for information);
#   - PING at 64 connections (a round trip that does no work: the ceiling
#     of any request on this machine);
#   - durable single-voxel SET_VOXELS at 64 connections, and GET_VOXELS
#     latency on one more connection meanwhile;
# and next to each, when installed, Debian's redis-server (on a loopback port, temporary
# directory, no RDB snapshots) with redis-benchmark:
#   - GET of values the size of the chunk records voxdbd served (mean), keys
#     populated first, at 1, 16 and 64 connections (--appendonly no);
#   - PING at 64 connections;
#   - SET of 1-byte values at 64 connections with --appendonly yes
#     --appendfsync always;
# and iperf3's loopback bandwidth with 1 and 16 streams. First it times
# O_DSYNC writes in the temporary directory (what a durable write waits for)
# and it reports the load average: on a busy machine the figures mean
# little. Prints a markdown table with the ratios against the targets.
# Every process it started is stopped on exit. Takes about two minutes.
#
# Every measurement runs right after (or before) the one it is compared with,
# in NET_BENCH_ROUNDS rounds (default 2); the table shows the median of each
# figure over the rounds.
#
# Environment: NET_BENCH_SECONDS (per measurement, default 4),
# NET_BENCH_ROUNDS (default 2), NET_BENCH_CHUNKS (default 64),
# NET_BENCH_CLIENT_THREADS (net_bench client threads, default 1 like
# redis-benchmark's single event loop).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD=$1
VOXDBD=$BUILD/daemon/voxdbd
NET_BENCH=$BUILD/tests/net_bench
SECS=${NET_BENCH_SECONDS:-4}
ROUNDS=${NET_BENCH_ROUNDS:-2}
CHUNKS=${NET_BENCH_CHUNKS:-64}
CLIENT_THREADS=${NET_BENCH_CLIENT_THREADS:-1}
for f in "$VOXDBD" "$NET_BENCH"; do
  [[ -x $f ]] || { echo "$f is missing: build the voxdbd and net_bench targets" >&2; exit 2; }
done

source "$(dirname "$0")/bench_lib.sh" net_bench
# Field NAME=value of the RESULT lines of KIND in FILE: the median over the rounds.
field() {
  { grep "^RESULT $2 " "$1" || true; } | tr ' ' '\n' | sed -n "s/^$3=//p" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
# awk arithmetic: calc EXPR [var=value ...]
calc() {
  local expr=$1
  shift
  awk "$@" "BEGIN { printf \"%s\", ($expr) }" </dev/null
}
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

# --- the disk ------------------------------------------------------------------------
# Durable writes wait for fsyncs: time 200 O_DSYNC writes of 4 KiB where the
# databases live.
log "disk: 200 x 4 KiB O_DSYNC writes in $TMP"
t0=$(date +%s%N)
dd if=/dev/zero of="$TMP/dsync" bs=4k count=200 oflag=dsync 2>/dev/null
FSYNC_US=$(calc "(t1 - t0) / 200 / 1000" -v t0="$t0" -v t1="$(date +%s%N)")
rm -f "$TMP/dsync"
echo "RESULT dsync_write us=$FSYNC_US"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)

# --- start everything ---------------------------------------------------------------
HAVE_REDIS=0
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null &&
  command -v redis-cli >/dev/null; then
  HAVE_REDIS=1
else
  log "redis-server / redis-benchmark not installed (apt-get install redis-server redis-tools):" \
    "no Redis comparison"
fi
HAVE_IPERF=0
if command -v iperf3 >/dev/null; then
  HAVE_IPERF=1
else
  log "iperf3 not installed (apt-get install iperf3): no loopback bandwidth comparison"
fi

log "voxdbd: starting ($VOXDBD)"
start_voxdbd "$VOXDBD" voxdb --metrics-listen 127.0.0.1:0
R=$TMP/results.txt
: >"$R"
# net_bench KIND ARGS: appends its RESULT lines to $R, get_chunks ones renamed KIND.
run() {
  local kind=$1
  shift
  "$NET_BENCH" --address "$ADDR" --chunks "$CHUNKS" "$@" |
    sed "s/^RESULT get_chunks /RESULT $kind /" | tee -a "$R"
}
voxdbd_alive() {
  kill -0 "$VOXDBD_PID" 2>/dev/null && return 0
  echo "voxdbd died:" >&2
  cat "$TMP/voxdb.out" >&2
  exit 1
}
log "voxdbd on $ADDR: loading $CHUNKS surface chunks"
run load --mode load
SIZE=$(field "$R" load mean_record_bytes)

start_redis() {  # NAME PORT ARGS...: starts it, waits for it; sets REDIS_PID
  local name=$1 port=$2
  shift 2
  mkdir -p "$TMP/$name"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$TMP/$name" --save '' \
    --daemonize no --logfile "$TMP/$name/log" "$@" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$port" || { echo "redis-server did not start" >&2; cat "$TMP/$name/log" >&2; exit 1; }
}
# redis-benchmark ARGS: prints "rps p50_ms p99_ms" of its CSV line. Runs a
# short calibration first so that the measured run takes about $SECS s.
redis_bench() {
  local rps n
  rps=$(redis-benchmark "$@" -n 5000 --csv | tail -1 | tr -d '"' | cut -d, -f2)
  n=$(calc "int(r * s) < 10000 ? 10000 : int(r * s)" -v r="$rps" -v s="$SECS")
  redis-benchmark "$@" -n "$n" --csv | tail -1 | tr -d '"' | awk -F, '{ print $2, $5, $7 }'
}
redis_result() {  # KIND CONNS ARGS...
  local kind=$1 conns=$2 rps p50 p99
  shift 2
  read -r rps p50 p99 < <(redis_bench "$@")
  echo "RESULT $kind conns=$conns ops_s=$rps p50_us=$(calc "a * 1000" -v a="$p50")" \
    "p99_us=$(calc "a * 1000" -v a="$p99")" | tee -a "$R"
}
if ((HAVE_REDIS)); then
  GPORT=$(free_port 1)
  log "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$GPORT," \
    "--appendonly no: populating $CHUNKS keys of $SIZE bytes"
  start_redis redis-get "$GPORT" --appendonly no
  redis-benchmark -p "$GPORT" -t set -d "$SIZE" -r "$CHUNKS" -n $((CHUNKS * 30)) -c 16 -q \
    >/dev/null
  KEYS=$(redis-cli -p "$GPORT" dbsize)
  [[ $KEYS -eq $CHUNKS ]] || log "warning: redis holds $KEYS keys, not $CHUNKS"
  SPORT=$(free_port 2)
  log "redis-server on 127.0.0.1:$SPORT: --appendonly yes --appendfsync always"
  start_redis redis-set "$SPORT" --appendonly yes --appendfsync always
fi
if ((HAVE_IPERF)); then
  IPORT=$(free_port 3)
  iperf3 -s -B 127.0.0.1 -p "$IPORT" >"$TMP/iperf3-server.log" 2>&1 &
  PIDS+=($!)
  wait_port "$IPORT" || { echo "iperf3 -s did not start" >&2; exit 1; }
fi

# --- the rounds: each comparison right after its voxdbd measurement ----------------
for round in $(seq "$ROUNDS"); do
  for c in 1 16 64; do
    log "round $round: voxdbd GET_CHUNKS, $c connections, ${SECS}s"
    run "get_chunks_$c" --mode get-chunks --connections "$c" --client-threads "$CLIENT_THREADS" \
      --seconds "$SECS"
    voxdbd_alive
    if ((HAVE_REDIS)); then
      log "round $round: redis GET -d $SIZE -r $CHUNKS -c $c, ${SECS}s"
      redis_result "redis_get_$c" "$c" -p "$GPORT" -t get -d "$SIZE" -r "$CHUNKS" -c "$c"
    fi
  done
  log "round $round: voxdbd GET_CHUNKS of 16 chunks per request, 1 connection, ${SECS}s"
  run get_chunks_batch16 --mode get-chunks --connections 1 --batch 16 --seconds "$SECS"
  voxdbd_alive
  if ((HAVE_IPERF)); then
    for p in 1 16; do
      log "round $round: iperf3 -c 127.0.0.1 -P $p -t $SECS"
      sleep 0.2  # the server takes one test at a time
      mbit=$(iperf3 -c 127.0.0.1 -p "$IPORT" -P "$p" -t "$SECS" -f m |
        awk '/receiver/ { for (i = 1; i <= NF; ++i) if ($i == "Mbits/sec") v = $(i - 1) }
             END { print v }')
      echo "RESULT iperf3_$p streams=$p mb_s=$(calc "m / 8" -v m="$mbit")" | tee -a "$R"
    done
  fi
done
# Writes last: they leave the chunks dirty (served encoded from memory, not
# from the store) until the flusher writes them back.
for round in $(seq "$ROUNDS"); do
  # The ceiling of any request: a round trip that does no work.
  log "round $round: voxdbd PING, 64 connections, ${SECS}s"
  run ping --mode ping --connections 64 --client-threads "$CLIENT_THREADS" --seconds "$SECS"
  voxdbd_alive
  if ((HAVE_REDIS)); then
    log "round $round: redis PING -c 64, ${SECS}s"
    redis_result redis_ping 64 -p "$GPORT" -t ping_mbulk -c 64
  fi
  log "round $round: voxdbd durable SET_VOXELS, 64 connections, + GET_VOXELS probe, ${SECS}s"
  run set_voxels --mode set-voxels --connections 64 --client-threads "$CLIENT_THREADS" \
    --seconds "$SECS"
  voxdbd_alive
  if ((HAVE_REDIS)); then
    log "round $round: redis SET -d 1 -r 1000000 -c 64, appendfsync always, ${SECS}s"
    redis_result redis_set_always 64 -p "$SPORT" -t set -d 1 -r 1000000 -c 64
  fi
done
kill "$VOXDBD_PID"
wait "$VOXDBD_PID" || { echo "voxdbd did not stop cleanly" >&2; cat "$TMP/voxdb.out" >&2; }

# --- the table ----------------------------------------------------------------------
num() { local v; v=$(field "$R" "$1" "$2"); echo "${v:-0}"; }
us() { calc "x >= 100 ? sprintf(\"%.0f\", x) : sprintf(\"%.1f\", x)" -v x="$(num "$1" "$2")"; }
ratio() { calc "b > 0 ? sprintf(\"%.2f×\", a / b) : \"–\"" -v a="$1" -v b="$2"; }
verdict() { calc "b > 0 ? (a / b >= t ? \"**met**\" : \"missed\") : \"–\"" -v a="$1" -v b="$2" -v t="$3"; }

echo
echo "$(nproc) cores, load average $LOAD_BEFORE before and $(cut -d' ' -f1 /proc/loadavg) after;" \
  "one 4 KiB O_DSYNC write: $(fmt "$FSYNC_US") µs. $CHUNKS surface chunks of $SIZE bytes on" \
  "average (Redis values: the same size); medians of $ROUNDS rounds of ${SECS}s; net_bench with $CLIENT_THREADS" \
  "client thread(s), redis-benchmark with 1."
echo
echo "| measurement | voxdbd | comparison | ratio | target |"
echo "|---|---:|---:|---:|---|"
BEST_MB=0
for c in 1 16 64; do
  ops=$(num "get_chunks_$c" ops_s)
  mb=$(num "get_chunks_$c" mb_s)
  BEST_MB=$(calc "m > b ? m : b" -v m="$mb" -v b="$BEST_MB")
  vox="$(fmt "$ops")/s, $(fmt "$mb") MB/s, p50/p99 $(us "get_chunks_$c" p50_us)/$(us "get_chunks_$c" p99_us) µs"
  if ((HAVE_REDIS)); then
    rops=$(num "redis_get_$c" ops_s)
    rmb=$(calc "r * s / 1e6" -v r="$rops" -v s="$SIZE")
    cmp="Redis GET: $(fmt "$rops")/s, $(fmt "$rmb") MB/s, p50/p99 $(us "redis_get_$c" p50_us)/$(us "redis_get_$c" p99_us) µs"
    echo "| GET_CHUNKS, $c conn. | $vox | $cmp | $(ratio "$ops" "$rops") | ≥ 1.0×: $(verdict "$ops" "$rops" 1.0) |"
  else
    echo "| GET_CHUNKS, $c conn. | $vox | (no redis) | – | ≥ 1.0× Redis GET |"
  fi
done
bops=$(num get_chunks_batch16 ops_s)
bmb=$(num get_chunks_batch16 mb_s)
echo "| GET_CHUNKS, 1 conn., 16 chunks a request | $(fmt "$bops")/s, $(fmt "$bmb") MB/s, p50/p99 $(us get_chunks_batch16 p50_us)/$(us get_chunks_batch16 p99_us) µs a request | | | (information) |"
# GET_CHUNKS is a batch request: the loopback comparison takes the better of
# one chunk a request (many connections) and 16 a request (one connection).
SERVED_MB=$(calc "a > b ? a : b" -v a="$BEST_MB" -v b="$bmb")
if ((HAVE_IPERF)); then
  i1=$(num iperf3_1 mb_s)
  i16=$(num iperf3_16 mb_s)
  ibest=$(calc "a > b ? a : b" -v a="$i1" -v b="$i16")
  echo "| GET_CHUNKS MB/s vs loopback bandwidth | $(fmt "$SERVED_MB") MB/s (1 chunk a request: $(fmt "$BEST_MB") MB/s, $(calc "sprintf(\"%.0f%%\", 100 * a / b)" -v a="$BEST_MB" -v b="$ibest")) | iperf3: $(fmt "$i1") MB/s (1 stream), $(fmt "$i16") MB/s (16) | $(calc "sprintf(\"%.0f%%\", 100 * a / b)" -v a="$SERVED_MB" -v b="$ibest") | ≥ 70%: $(verdict "$SERVED_MB" "$ibest" 0.70) |"
else
  echo "| GET_CHUNKS MB/s vs loopback bandwidth | $(fmt "$SERVED_MB") MB/s | (no iperf3) | – | ≥ 70% of iperf3 |"
fi
sops=$(num set_voxels ops_s)
svox="$(fmt "$sops")/s, p50/p99 $(us set_voxels p50_us)/$(us set_voxels p99_us) µs, $(num set_voxels writes_per_commit) writes per journal commit"
if ((HAVE_REDIS)); then
  rops=$(num redis_set_always ops_s)
  echo "| durable SET_VOXELS (1 voxel), 64 conn. | $svox | Redis SET, appendfsync always: $(fmt "$rops")/s, p50/p99 $(us redis_set_always p50_us)/$(us redis_set_always p99_us) µs | $(ratio "$sops" "$rops") | ≥ 1.5×: $(verdict "$sops" "$rops" 1.5) |"
else
  echo "| durable SET_VOXELS (1 voxel), 64 conn. | $svox | (no redis) | – | ≥ 1.5× Redis SET always |"
fi
pops=$(num ping ops_s)
if ((HAVE_REDIS)); then
  echo "| PING (no work: the ceiling of any request), 64 conn. | $(fmt "$pops")/s, p50/p99 $(us ping p50_us)/$(us ping p99_us) µs | Redis PING: $(fmt "$(num redis_ping ops_s)")/s | $(ratio "$pops" "$(num redis_ping ops_s)") | (information: 1.5× Redis SET always is $(fmt "$(calc "1.5 * r" -v r="$rops")")/s) |"
else
  echo "| PING (no work: the ceiling of any request), 64 conn. | $(fmt "$pops")/s, p50/p99 $(us ping p50_us)/$(us ping p99_us) µs | (no redis) | – | (information) |"
fi
gp99=$(us get_voxels_under_writes p99_us)
echo "| GET_VOXELS p99 under that load | p50 $(us get_voxels_under_writes p50_us) µs, p99 $gp99 µs ($(fmt "$(num get_voxels_under_writes samples)") samples) | | | ≤ 1 ms: $(calc "p <= 1000 ? \"**met**\" : \"missed\"" -v p="$gp99") |"
