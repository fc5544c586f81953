#!/usr/bin/env bash
# Runs a command and records its resident memory over time: every INTERVAL seconds (default 2)
# a line "seconds rss_kib peak_kib threads" from /proc/PID/status (VmRSS, VmHWM, Threads) into
# TRACE. How BENCHMARKS.md's "A prover's memory over a long run" was taken:
#
#   scripts/memory-trace.sh /tmp/long.rss rollup bench --backend cpu --txs 14640 --workers 2 --json
#
# The command's own output passes through; its exit status is this script's.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 TRACE COMMAND [ARGS...]" >&2
    exit 2
fi
trace=$1
shift
interval=${INTERVAL:-2}
"$@" &
pid=$!
start=$(date +%s.%N)
: >"$trace"
while kill -0 "$pid" 2>/dev/null; do
    line=$(awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} /^Threads:/ {t=$2} END {if (r) print r, h, t}' \
        "/proc/$pid/status" 2>/dev/null || true)
    if [ -n "$line" ]; then
        echo "$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - s}') $line" >>"$trace"
    fi
    sleep "$interval"
done
wait "$pid"
