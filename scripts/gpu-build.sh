#!/usr/bin/env bash
# Builds, on this machine, everything the GPU checks run, for a generic x86-64-v3 CPU, and stages
# the stripped binaries under .device/ for the device tool (`run` with carry [".device"]).
# Then, on the device: `bash scripts/gpu-run.sh` (see ../shared/GPU.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# RUSTFLAGS replaces .cargo/config.toml's rustflags, so the shared generics are named again here.
export RUSTFLAGS="-C target-cpu=x86-64-v3 -Zshare-generics=y"
target=target/device
rm -rf .device && mkdir -p .device
cargo build --release --target-dir "$target" --bin rollup
cp "$target/release/rollup" .device/
# Test and bench executables: their paths come from cargo's JSON messages.
for spec in "test --release -p prover-gpu --lib" "test --release -p prover-gpu --test kernels" "test --release -p prover-gpu --test pipeline" \
  "test --release -p prover-gpu --test host_quotient" \
  "bench -p benches --bench kernels" "bench -p benches --bench batch"; do
  # shellcheck disable=SC2086
  cargo $spec --target-dir "$target" --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"][0] in ("lib","test","bench") and m["profile"]["test"]:
        print(m["target"]["kind"][0], m["executable"])' \
    | while read -r kind exe; do cp "$exe" ".device/$kind-$(basename "$exe" | sed 's/-[0-9a-f]*$//')"; done
done
strip .device/* || true
du -sh .device
