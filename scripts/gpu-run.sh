#!/usr/bin/env bash
# Runs every GPU check and benchmark on a lent device, writes the full results under $OUT, and
# prints a short table last. Expects the binaries staged by scripts/gpu-build.sh.
# `bash scripts/gpu-run.sh checks` runs the tests, `... benches` the criterion benches, `... rollup`
# the `rollup bench` runs: one device call each (a call has ten minutes; `all`, the default, runs
# them in order in one call and skips what its time does not hold). Each step has its own time
# limit, cut to what is left of the call's BUDGET seconds (570 unless set), so a step that hangs
# costs its limit and not the rest of the run, and the summary always prints; each step prints one
# line as it ends.
set -uo pipefail
PHASE=${1:-all}
DEADLINE=$((SECONDS + ${BUDGET:-570}))
case "$PHASE" in all | checks | benches | rollup) ;; *) echo "unknown phase $PHASE: all, checks, benches or rollup" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if [ -z "$(ls /usr/lib/x86_64-linux-gnu/libnvrtc* 2>/dev/null)" ]; then
  lib=$(ls -d /usr/local/cuda*/lib64 2>/dev/null | head -n 1)
  [ -n "$lib" ] && export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
# The host CPU: the rayon rows depend on it (AVX-512F or not decides the rayon backend's Poseidon).
lscpu > "$OUT/lscpu.txt" 2>&1
status=()
run() {
  local name=$1 limit=$2 start=$SECONDS rc=0
  shift 2
  # What is left of the call, less a margin for the summary.
  local left=$((DEADLINE - SECONDS - 15))
  if [ "$left" -lt 10 ]; then
    status+=("$name SKIPPED: no time left in this call (run its phase in a call of its own)")
    echo "${status[-1]}"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    status+=("$name ok (${took} s)")
  elif [ "$rc" = 124 ]; then
    status+=("$name TIMED OUT after ${limit} s (see $name.log)")
  else
    status+=("$name FAILED, exit $rc after ${took} s (see $name.log)")
  fi
  echo "${status[-1]}"
}
checks() { [ "$PHASE" = all ] || [ "$PHASE" = checks ]; }
benches() { [ "$PHASE" = all ] || [ "$PHASE" = benches ]; }
rollup() { [ "$PHASE" = all ] || [ "$PHASE" = rollup ]; }
# The crate's unit tests: among them the rayon backend's vector Poseidon against plonky2's, on
# whatever instruction sets this host's CPU has.
if checks; then
  run lib 60 .device/lib-prover_gpu
  # Kernels bit-identical to the CPU backend (the ignored GPU test runs here). The emulated
  # versions of the device tests ran on every other machine, and need a C++ compiler.
  run kernels 120 .device/test-kernels --include-ignored --skip emulated --nocapture
  # Whole proofs on the CUDA pipeline verify, and agree with rayon kernel by kernel (dual backend).
  run pipeline 150 .device/test-pipeline --include-ignored --skip emulated
  # The quotient kernel (NVRTC) against plonky2's gates inside whole proofs. Only the CUDA test: the
  # host-C ones need a C compiler, which the device may not have (they run on every other machine).
  run quotient 120 .device/test-host_quotient --ignored cuda_
fi
if benches; then
  # Commitment benches per backend, CUDA rows included.
  run bench-kernels 240 .device/bench-kernels --bench
  # Batch proof: stock plonky2, our pipeline on rayon, on CUDA; same circuit, one run.
  run bench-batch 180 .device/bench-batch --bench batch_proof
fi
# One `rollup bench` run: its name, then the arguments after `--json`; ROLLUP_CUDA_STREAMS from
# the environment. Its last line, the JSON object, also goes to NAME.json.
rollup_bench() {
  local name=$1
  shift
  run "$name" 150 .device/rollup bench --json "$@"
  [ -f "$OUT/$name.log" ] && tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
}
if rollup; then
  # The whole proving path on each backend: CUDA with 1, 4 and 8 workers (a stream per worker),
  # CUDA with 4 workers on one stream (what the streams are worth), then rayon with 1 and 4.
  for w in 1 4 8; do
    rollup_bench "rollup-bench-cuda-w$w" --backend cuda --workers "$w"
  done
  ROLLUP_CUDA_STREAMS=1 rollup_bench rollup-bench-cuda-w4-one-stream --backend cuda --workers 4
  for w in 1 4; do
    rollup_bench "rollup-bench-cpu-w$w" --backend cpu --workers "$w"
  done
fi
echo "---- GPU run summary ----"
head -n 1 "$OUT/nvidia-smi.txt"
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores, AVX-512F: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
printf '%s\n' "${status[@]}"
if checks; then
  # Each kernel's block, registers and local memory as this driver compiled it.
  grep -E "^kernel " "$OUT/kernels.log" 2>/dev/null
fi
if benches; then
  grep -B1 -E "time:" "$OUT/bench-kernels.log" 2>/dev/null | head -n 72
  grep -B1 -E "time:" "$OUT/bench-batch.log" 2>/dev/null | head -n 12
fi
if rollup; then
  for f in "$OUT"/rollup-bench-*.json; do
    [ -f "$f" ] || continue
    echo "$(basename "$f"): $(head -c 300 "$f")"
    grep -o -E '"(batch_speedup_vs_stock|peak_device_memory_mib|cuda_streams)":[^,]*|"batch_proof_transfers_mib":\{[^}]*\}' "$f" | tr '\n' ' '
    echo
  done
fi
