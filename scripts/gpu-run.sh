#!/usr/bin/env bash
# Runs the GPU checks and benchmarks on a lent device, writes the full results under $OUT, and
# prints a short table last. Expects the binaries staged by scripts/gpu-build.sh.
#
# A task that draws a device gets 15 minutes of it in all, the machine's start (one to two
# minutes) included, and a call runs ten minutes at most. So `all`, the default, is meant as the
# session's one call (timeout_s 570, then give the device back): it runs the steps in the order
# of what they are worth and skips what its BUDGET (seconds, 500 unless set) does not hold. First
# the device's correctness (the unit tests, every kernel against rayon), then the figure the
# issues ask for (`rollup bench` on CUDA and on rayon, each against stock plonky2 on the same
# host in the same run), then whole proofs and the quotient kernel against rayon, more workers
# and one stream, one sequencer's acceptance rate and execution on the host's cores, and last the
# criterion benches. `checks`, `rollup` and `benches` run one group
# alone, for a session with more time. Each step has its own time limit, cut to what is left of
# the BUDGET, so a step that hangs costs its limit and not the rest of the run, and the summary
# always prints; each step prints one line as it ends.
set -uo pipefail
PHASE=${1:-all}
DEADLINE=$((SECONDS + ${BUDGET:-500}))
case "$PHASE" in all | checks | benches | rollup) ;; *) echo "unknown phase $PHASE: all, checks, benches or rollup" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
# The device tool brings back at most 8 files from $OUT: the logs are written beside it and packed
# into $OUT/gpu-run.tar.gz after every step (so a call cut off at its limit still brings back
# what ran), with the summary in $OUT/summary.txt.
OUT=${OUT:-/tmp/gpu-out}
LOGS=$(mktemp -d /tmp/gpu-run-logs.XXXXXX)
mkdir -p "$OUT"
pack() { tar -czf "$OUT/gpu-run.tar.gz" -C "$LOGS" . 2> /dev/null; }
# cudarc opens libcuda and libnvrtc (libnvrtc.so.13 among the names it tries) at run time. Where
# the dynamic loader does not find one, its folder goes on LD_LIBRARY_PATH: first the CUDA
# toolkit's and the driver's usual folders, then any copy under /usr/local, /opt or /usr/lib (the
# image's Python packages carry an NVRTC too). Without this a missing path would cost the one
# device call: every CUDA step would fail with "libcuda or libnvrtc not found".
find_lib() {
  local name=$1 dir file path=${LD_LIBRARY_PATH:-}
  if ldconfig -p 2> /dev/null | grep -q "$name\.so"; then
    echo "$name: the loader's cache"
    return
  fi
  for dir in ${path//:/ } /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/lib64; do
    if ls "$dir/$name".so* > /dev/null 2>&1; then
      export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "$name: $dir"
      return
    fi
  done
  file=$(timeout 20 find /usr/local /opt /usr/lib -xdev -name "$name.so*" 2> /dev/null | sort | head -n 1)
  if [ -n "$file" ]; then
    dir=$(dirname "$file")
    export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "$name: $dir (found by search)"
  else
    echo "$name: NOT FOUND; the CUDA steps will fail"
  fi
}
{ find_lib libcuda; find_lib libnvrtc; } > "$LOGS/libraries.txt"
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1
# The host CPU: the rayon rows depend on it (AVX-512F or not decides the rayon backend's Poseidon).
lscpu > "$LOGS/lscpu.txt" 2>&1
pack
status=()
run() {
  local name=$1 limit=$2 start=$SECONDS rc=0
  shift 2
  # What is left of the call, less a margin for the summary.
  local left=$((DEADLINE - SECONDS - 10))
  if [ "$left" -lt 20 ]; then
    status+=("$name SKIPPED: no time left in this call")
    echo "${status[-1]}"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1 || rc=$?
  local took=$((SECONDS - start))
  if [ "$rc" = 0 ]; then
    status+=("$name ok (${took} s)")
  elif [ "$rc" = 124 ]; then
    status+=("$name TIMED OUT after ${limit} s (see $name.log)")
  else
    status+=("$name FAILED, exit $rc after ${took} s (see $name.log)")
  fi
  echo "${status[-1]}"
  pack
}
checks() { [ "$PHASE" = all ] || [ "$PHASE" = checks ]; }
benches() { [ "$PHASE" = all ] || [ "$PHASE" = benches ]; }
rollup() { [ "$PHASE" = all ] || [ "$PHASE" = rollup ]; }
# The circuits' prover data, written once by the `circuits` step for every `rollup bench` run,
# which reads it in a few seconds where it would build the circuits (docs/services.md, "Prover
# data"): seven builds of the device's time otherwise. Beside the logs, not under $OUT (548 MiB).
# A run whose file is missing (the step failed or was skipped) builds as before.
PROVER_DATA=$(mktemp -d /tmp/gpu-run-data.XXXXXX)/prover.bin
# One `rollup bench` run: its name, then its arguments; ROLLUP_CUDA_STREAMS from the
# environment. 16 full batches of 183 and their 3 merges, after the bench's warm-up: enough proofs
# that a device's rate is not a handful of launches, and 8 workers get two batches each. The
# report, the one line of the log that is a JSON object, also goes to NAME.json.
rollup_bench() {
  local name=$1 data=()
  shift
  [ -s "$PROVER_DATA" ] && data=(--prover-data "$PROVER_DATA")
  run "$name" 120 .device/rollup bench --json --txs 2928 ${data[@]+"${data[@]}"} "$@"
  grep -E '^\{' "$LOGS/$name.log" 2> /dev/null | tail -n 1 > "$LOGS/$name.json"
  [ -s "$LOGS/$name.json" ] || rm -f "$LOGS/$name.json"
}

# The steps, most valuable first.
if checks; then
  # The crate's unit tests: among them the rayon backend's vector Poseidon against plonky2's, on
  # whatever instruction sets this host's CPU has.
  run lib 30 .device/lib-prover_gpu
  # Every kernel bit-identical to the CPU backend (the ignored device test), NVRTC's verdict and
  # compile times. The emulated versions of the device tests ran on every other machine, and
  # need a C++ compiler.
  run kernels 90 .device/test-kernels --include-ignored --skip emulated --nocapture
fi
if rollup; then
  run circuits 90 .device/rollup circuits --no-proof --prover-data-out "$PROVER_DATA"
  # The whole proving path on CUDA with one worker, then on rayon, each against stock plonky2.
  rollup_bench rollup-bench-cuda-w1 --backend cuda --workers 1
  rollup_bench rollup-bench-cpu-w1 --backend cpu --workers 1
fi
if checks; then
  # Whole proofs on the CUDA pipeline verify, and agree with rayon kernel by kernel (dual
  # backend), four at once on one stream and on eight.
  run pipeline 120 .device/test-pipeline --include-ignored --skip emulated --nocapture
  # The quotient kernel against plonky2's gates inside whole proofs. Only the CUDA test: the
  # host-C ones need a C compiler, which the device may not have.
  run quotient 90 .device/test-host_quotient --ignored cuda_
fi
if rollup; then
  # Workers sharing the device, a stream each; eight that sleep while waiting; four on one stream
  # (what the streams are worth); rayon with four workers.
  for w in 4 8; do
    rollup_bench "rollup-bench-cuda-w$w" --backend cuda --workers "$w"
  done
  # Eight workers whose threads sleep while they wait for the device rather than spin: the
  # batch proofs' cpu_seconds against the run above say whether spinning takes the host cores
  # the other workers' witness generation needs.
  ROLLUP_CUDA_SYNC=block rollup_bench rollup-bench-cuda-w8-block --backend cuda --workers 8
  ROLLUP_CUDA_STREAMS=1 rollup_bench rollup-bench-cuda-w4-one-stream --backend cuda --workers 4
  rollup_bench rollup-bench-cpu-w4 --backend cpu --workers 4
  # Past the provers, on a host with real cores: what one sequencer accepts over gRPC (its
  # signature checks and seal hashing spread over the cores; dev-2c's two vCPUs took about 2 900
  # tx/s), and execution alone (the seal's level-by-level hashing across the cores).
  run rollup-bench-sequencer 90 .device/rollup bench --sequencer --json
  grep -E '^\{' "$LOGS/rollup-bench-sequencer.log" 2> /dev/null | tail -n 1 > "$LOGS/rollup-bench-sequencer.json"
  run bench-execution 60 .device/bench-batch --bench execution
fi
if benches; then
  # Batch proof: stock plonky2, our pipeline on rayon, on CUDA; same circuit, one run.
  run bench-batch 150 .device/bench-batch --bench batch_proof
  # Commitment benches per backend, CUDA rows included.
  run bench-kernels 240 .device/bench-kernels --bench
fi

rm -rf "$(dirname "$PROVER_DATA")"

summary() {
echo "---- GPU run summary ----"
head -n 1 "$LOGS/nvidia-smi.txt"
cat "$LOGS/libraries.txt"
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores, AVX-512F: $(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
printf '%s\n' "${status[@]}"
if checks; then
  # NVRTC's compile times, and each kernel's block, registers and local memory as this driver
  # compiled it.
  grep -E "^(nvrtc|kernel) " "$LOGS/kernels.log" 2>/dev/null
  # Device memory of four proofs at once, sampled, beside the estimate a prover checks first.
  grep -E "^four proofs in flight" "$LOGS/pipeline.log" 2>/dev/null
fi
if rollup; then
  for f in "$LOGS"/rollup-bench-*.json; do
    [ -f "$f" ] || continue
    echo "$(basename "$f"): $(head -c 300 "$f")"
    grep -o -E '"(signatures_alone_tps|execution_alone_tps|core_alone_tps|log_alone_tps|coordinator_alone_tps|settle_alone_tps|batch_speedup_vs_stock|merge_speedup_vs_stock|peak_device_memory_mib|device_memory_estimate_mib|cuda_streams)":[^,]*|"batch_proof_transfers_mib":\{[^}]*\}|"memory":\{[^}]*\}|"name":"warmup","seconds":[^,]*|"name":"batch_proofs","seconds":[^,]*,"jobs":[^,]*,"cpu_seconds":[^}]*' "$f" | tr '\n' ' '
    echo
  done
fi
if rollup; then
  grep -B1 -E "time:" "$LOGS/bench-execution.log" 2>/dev/null | head -n 4
fi
if benches; then
  grep -B1 -E "time:" "$LOGS/bench-batch.log" 2>/dev/null | head -n 12
  grep -B1 -E "time:" "$LOGS/bench-kernels.log" 2>/dev/null | head -n 72
fi
}
summary | tee "$OUT/summary.txt"
cp "$OUT/summary.txt" "$LOGS/" && pack
