#!/usr/bin/env bash
# Compiles the CUDA kernels as the backend does, on a machine with no GPU: NVRTC (CUDA 13.0, the
# lent devices' version) from PyPI's nvidia-cuda-nvrtc wheel, then ptxas for the H100 (sm_90)
# from nvidia-cuda-nvcc, and a SASS count from cuobjdump and nvdisasm. Prints one line per kernel:
# registers per thread, stack frame, spills, and SASS instructions (static: loops count once).
# Fails if NVRTC or ptxas rejects a source, or a kernel the backend loads is missing.
# The wheels (about 180 MB) are fetched once into target/cuda-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=target/cuda-tools
ARCH=${ARCH:-sm_90}
mkdir -p "$TOOLS/wheels"
fetch() {
  local pkg=$1
  if ! ls "$TOOLS/wheels/${pkg//-/_}"-*.whl > /dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --dest "$TOOLS/wheels" "$pkg$2"
  fi
  unzip -q -o "$TOOLS/wheels/${pkg//-/_}"-*.whl -d "$TOOLS"
}
fetch nvidia-cuda-nvrtc "==13.0.*"
fetch nvidia-cuda-nvcc "==13.0.*"
# PyPI has no 13.0 build of these two; a later 13.x reads sm_90 code the same way.
fetch nvidia-cuda-cuobjdump "<14"
fetch nvidia-cuda-nvdisasm "<14"
CUDA=$TOOLS/nvidia/cu13
PTX=target/cuda-tools/ptx
rm -rf "$PTX" && mkdir -p "$PTX"
LD_LIBRARY_PATH="$PWD/$CUDA/lib:${LD_LIBRARY_PATH:-}" PTX_DIR="$PWD/$PTX" \
  cargo test --release -p prover-gpu --test kernels -- --ignored --exact nvrtc_compiles_every_kernel_the_backend_loads --nocapture
export PATH="$PWD/$CUDA/bin:$PATH"
printf '%-22s %9s %7s %7s %6s\n' kernel registers stack spills SASS
for src in kernels quotient; do
  ptxas -v --gpu-name "$ARCH" -O3 "$PTX/$src.ptx" -o "$PTX/$src.cubin" 2> "$PTX/$src.ptxas"
  cuobjdump -sass "$PTX/$src.cubin" > "$PTX/$src.sass"
  # ptxas -v: per function, "Compiling entry function 'f'", "N bytes stack frame, S bytes spill
  # stores, L bytes spill loads", "Used R registers".
  awk -v sass="$PTX/$src.sass" '
    BEGIN {
      while ((getline line < sass) > 0) {
        if (line ~ /Function :/) { split(line, a, " : "); f = a[2]; gsub(/[ \t]/, "", f) }
        else if (line ~ /^ +\/\*[0-9a-f]+\*\/ /) n[f]++
      }
    }
    /Compiling entry function/ { match($0, /'\''[A-Za-z0-9_]+'\''/); f = substr($0, RSTART + 1, RLENGTH - 2) }
    /bytes stack frame/ { stack[f] = $1; spill[f] = $5 + $9 }
    /Used [0-9]+ registers/ { match($0, /Used [0-9]+/); regs[f] = substr($0, RSTART + 5, RLENGTH - 5); order[++k] = f }
    END { for (i = 1; i <= k; i++) { f = order[i]; printf "%-22s %9s %7s %7s %6s\n", f, regs[f], stack[f], spill[f], n[f] } }
  ' "$PTX/$src.ptxas"
done
