#!/usr/bin/env bash
# How long `rollup settlement` and `rollup sequencer` take from start to serving, and what they
# hold resident then, with and without --verifier-keys (docs/services.md, "Verifier keys"); and
# how long `rollup prover` takes from start to registered at a sequencer, building its circuits
# or reading them with --prover-data ("Prover data"). Three rounds of each; the files are
# written first by `rollup circuits`. Run from the repository root after `cargo build
# --release`.
set -euo pipefail
R=${ROLLUP:-target/release/rollup}
W=$(mktemp -d /tmp/startup-time.XXXXXX)
export ROLLUP_TOKEN=startup-time
"$R" circuits --verifier-keys-out "$W/keys.bin" --prover-data-out "$W/prover.bin" --no-proof \
  > /dev/null 2> "$W/circuits.log"
measure() { # NAME [WORD] ARGS...: seconds until WORD ("serving") is logged, then VmRSS and VmHWM
  local name=$1 log=$W/$1.log word=serving start pid up
  shift
  if [ "$1" = registered ]; then word=registered; shift; fi
  start=$(date +%s.%N)
  "$R" "$@" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 3000); do
    grep -q "$word" "$log" && break
    sleep 0.02
  done
  up=$(echo "$(date +%s.%N) - $start" | bc)
  sleep 0.5
  echo "$name: $word after ${up} s, $(grep -E 'VmRSS|VmHWM' /proc/$pid/status | tr -s ' \t\n' ' ')"
  kill "$pid"
  wait "$pid" 2> /dev/null || true
}
for round in 1 2 3; do
  rm -rf "$W/s" "$W/q"
  measure settlement-building settlement --listen 127.0.0.1:47011 --data-dir "$W/s"
  measure settlement-keys settlement --listen 127.0.0.1:47011 --data-dir "$W/s" --verifier-keys "$W/keys.bin"
  measure sequencer-building sequencer --listen 127.0.0.1:47012 --settlement http://127.0.0.1:47011 --data-dir "$W/q"
  measure sequencer-keys sequencer --listen 127.0.0.1:47012 --settlement http://127.0.0.1:47011 \
    --data-dir "$W/q" --verifier-keys "$W/keys.bin"
  "$R" sequencer --listen 127.0.0.1:47012 --settlement http://127.0.0.1:47011 --data-dir "$W/q" \
    --verifier-keys "$W/keys.bin" > "$W/coordinator.log" 2>&1 &
  coordinator=$!
  worker=(prover --coordinator http://127.0.0.1:47012 --backend cpu)
  measure prover-building registered "${worker[@]}"
  measure prover-data registered "${worker[@]}" --prover-data "$W/prover.bin"
  kill "$coordinator"
  wait "$coordinator" 2> /dev/null || true
done
rm -rf "$W"
