# Shell helpers of the benchmark scripts (net_bench.sh, zarr_bench.sh):
#   source "$(dirname "$0")/bench_lib.sh" NAME
# makes a temporary directory $TMP (NAME.XXXXXX under $TMPDIR or /tmp),
# stops every process whose pid is in PIDS and removes $TMP on exit.
# shellcheck shell=bash

TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
PIDS=()
bench_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

fmt() {  # a whole number with thousands separators
  awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); o = ""
    while (length(s) > 3) { o = "," substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }
    print s o }' </dev/null
}

# start_voxdbd VOXDBD NAME [ARGS...]: starts VOXDBD on an ephemeral loopback
# port with the data directory $TMP/NAME (output in $TMP/NAME.out), waits for
# its "listening on" line; sets VOXDBD_PID and ADDR (127.0.0.1:PORT).
start_voxdbd() {
  local voxdbd=$1 name=$2 port=
  shift 2
  "$voxdbd" --data "$TMP/$name" --listen 127.0.0.1:0 "$@" >"$TMP/$name.out" 2>&1 &
  VOXDBD_PID=$!
  PIDS+=("$VOXDBD_PID")
  for _ in $(seq 300); do
    port=$(sed -n 's/^voxdbd listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$TMP/$name.out")
    [[ -n $port ]] && break
    kill -0 "$VOXDBD_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    echo "voxdbd did not start:" >&2
    cat "$TMP/$name.out" >&2
    exit 1
  fi
  ADDR=127.0.0.1:$port
}
