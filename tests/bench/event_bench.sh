#!/usr/bin/env bash
# Subscription events under a durable write load: medians of a few rounds
# of tests/bench/event_bench.cc.
#
#   tests/bench/event_bench.sh BUILD_DIR [event_bench options...]
#
# Runs BUILD_DIR/tests/event_bench --voxdbd BUILD_DIR/daemon/voxdbd with the
# given options (default: 64 writers, 100 subscribers, 5 s after 1 s, both
# region layouts) EVENT_BENCH_ROUNDS times (default 3), each against a fresh
# voxdbd with its data under $TMPDIR (TMPDIR=/dev/shm takes the disk out of
# the figures), and prints a markdown table of the median of each figure
# over the rounds, per layout. Reports the load average first: on a busy
# machine the figures mean little. Exits 1 if any round found a delivery
# violation (a missing, repeated or out-of-order event).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [event_bench options...]" >&2
  exit 2
fi
BUILD=$1
shift
VOXDBD=$BUILD/daemon/voxdbd
EVENT_BENCH=$BUILD/tests/event_bench
ROUNDS=${EVENT_BENCH_ROUNDS:-3}
for f in "$VOXDBD" "$EVENT_BENCH"; do
  [[ -x $f ]] || { echo "$f is missing: build the voxdbd and event_bench targets" >&2; exit 2; }
done

source "$(dirname "$0")/bench_lib.sh" event_bench

# Field NAME of the RESULT lines of LAYOUT: the median over the rounds.
median() {
  { grep "^RESULT event_bench regions=$1 " "$TMP/results" || true; } | tr ' ' '\n' |
    sed -n "s/^$2=//p" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
ms() { awk -v x="$1" 'BEGIN { printf "%.2f", x / 1000 }' </dev/null; }

log "load average: $(cut -d' ' -f1-3 /proc/loadavg), TMPDIR=${TMPDIR:-/tmp}"
failed=0
for round in $(seq "$ROUNDS"); do
  log "round $round of $ROUNDS"
  if ! "$EVENT_BENCH" --voxdbd "$VOXDBD" "$@" >"$TMP/round.out" 2>"$TMP/round.err"; then
    failed=1
    grep -v ' INFO ' "$TMP/round.err" >&2 || true
  fi
  cat "$TMP/round.out" >&2
  grep '^RESULT event_bench ' "$TMP/round.out" >>"$TMP/results" || true
done

echo
echo "| subscribers watch | writes/s | events/s delivered | ack→event p50 / p99 / max | send→event p50 / p99 / max | events before their ack |"
echo "|---|---:|---:|---:|---:|---:|"
for layout in all split; do
  grep -q "^RESULT event_bench regions=$layout " "$TMP/results" 2>/dev/null || continue
  first=$(grep -m1 "^RESULT event_bench regions=$layout " "$TMP/results")
  subs=$(sed -n 's/.* subscribers=\([0-9]*\).*/\1/p' <<<"$first")
  writers=$(sed -n 's/.* writers=\([0-9]*\).*/\1/p' <<<"$first")
  chunks=$(sed -n 's/.* chunks=\([0-9]*\).*/\1/p' <<<"$first")
  rate=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' <<<"$first")
  fanout=$(median "$layout" fanout)
  load="$writers writers, $([[ $rate == 0 ]] && echo "closed loop" || echo "paced at $(fmt "$rate")/s")"
  if [[ $layout == all ]]; then
    what="all $chunks chunks written ($subs subscribers, fan-out $(fmt "$fanout"); $load)"
  else
    what="1 of the $chunks chunks each ($subs subscribers, fan-out $(fmt "$fanout"); $load)"
  fi
  printf '| %s | %s | %s | %s / %s / %s ms | %s / %s / %s ms | %s%% |\n' "$what" \
    "$(fmt "$(median "$layout" writes_s)")" "$(fmt "$(median "$layout" events_s)")" \
    "$(ms "$(median "$layout" ack_event_p50_us)")" "$(ms "$(median "$layout" ack_event_p99_us)")" \
    "$(ms "$(median "$layout" ack_event_max_us)")" \
    "$(ms "$(median "$layout" send_event_p50_us)")" "$(ms "$(median "$layout" send_event_p99_us)")" \
    "$(ms "$(median "$layout" send_event_max_us)")" \
    "$(awk -v x="$(median "$layout" before_ack)" 'BEGIN { printf "%.0f", x * 100 }' </dev/null)"
done
echo
echo "Medians of $ROUNDS rounds; load average after: $(cut -d' ' -f1-3 /proc/loadavg)."
if [[ $failed -ne 0 ]]; then
  echo "event_bench: a round FAILED (delivery violations above)" >&2
  exit 1
fi
