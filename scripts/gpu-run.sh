#!/usr/bin/env bash
# Runs every GPU check and benchmark in one call on a lent device, writes the full results under
# $OUT, and prints a short table last. Expects the binaries staged by scripts/gpu-build.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if [ -z "$(ls /usr/lib/x86_64-linux-gnu/libnvrtc* 2>/dev/null)" ]; then
  lib=$(ls -d /usr/local/cuda*/lib64 2>/dev/null | head -n 1)
  [ -n "$lib" ] && export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
status=()
run() {
  local name=$1; shift
  if "$@" > "$OUT/$name.log" 2>&1; then status+=("$name ok"); else status+=("$name FAILED (see $name.log)"); fi
}
# Kernels bit-identical to the CPU backend (the ignored GPU test runs here).
run kernels .device/test-kernels --include-ignored
# Commitment benches per backend, CUDA rows included.
run bench-kernels .device/bench-kernels --bench
# The whole proving path (the CPU path until the CUDA pipeline lands).
run rollup-bench .device/rollup bench --json
cp "$OUT/rollup-bench.log" "$OUT/rollup-bench.json" 2>/dev/null
echo "---- GPU run summary ----"
head -n 1 "$OUT/nvidia-smi.txt"
printf '%s\n' "${status[@]}"
grep -E "time:" "$OUT/bench-kernels.log" | head -n 12
