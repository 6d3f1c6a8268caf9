#!/usr/bin/env bash
# Builds a `--features cuda` triage on a machine with no GPU and no CUDA install, and fills
# .gpu/ (git-ignored) with what bench/gpu/check.sh needs on a GPU machine that has no Rust:
# the stripped binary as triage.xz, a trimmed SmolLM2 GGUF (under 20 MB), the configs and
# the scripts. Everything fits the device tool's 64 MiB working-tree limit (~30 MB).
#
#   bench/gpu/prepare.sh            # from the repo root; ~36 min on 2 shared cores (nvcc)
#
# Knobs: CUDA_DIR (default /work/cuda13: toolchain from PyPI wheels), CARGO_TARGET_DIR
# (default /work/target-cuda), CUDA_COMPUTE_CAP (default 90: H100/H200, sm_90a), PYTHON.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CUDA_DIR=${CUDA_DIR:-/work/cuda13}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
PYTHON=${PYTHON:-python3}

# 1. CUDA 13.0 toolchain from PyPI wheels. 13.0, not newer: a 580 driver (CUDA 13.0)
#    rejects PTX of a newer ISA, and the oldest 13.0 libraries let any 13.x runtime serve.
if [ ! -x "$CUDA_DIR/home/bin/nvcc" ]; then
  mkdir -p "$CUDA_DIR/wheels" "$CUDA_DIR/x"
  (cd "$CUDA_DIR/wheels" && "$PYTHON" -m pip download -q --no-deps \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.48 nvidia-cuda-nvrtc==13.0.48 \
    nvidia-curand==10.4.0.35 nvidia-cublas==13.0.0.19)
  for w in "$CUDA_DIR"/wheels/*.whl; do unzip -q -o "$w" -d "$CUDA_DIR/x"; done
  ln -sfn x/nvidia/cu13 "$CUDA_DIR/home"
  ln -sfn lib "$CUDA_DIR/home/lib64"
  (cd "$CUDA_DIR/home/lib" && for l in cudart.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 nvrtc.so.13; do
    ln -sf "lib$l" "lib${l%.*}"; done)
fi
# candle-core enables cudarc's `dynamic-linking`, so the link needs a libcuda.so, which is
# the driver's and not on PyPI (cudarc's build script adds $CUDA_HOME/lib/stubs to the
# link search): a stub whose every cu* entry point (from cudarc's driver
# bindings) returns CUDA_ERROR_STUB_LIBRARY (34). The real driver replaces it at run time.
STUBS=$CUDA_DIR/home/lib/stubs
if [ ! -f "$STUBS/libcuda.so" ]; then
  mkdir -p "$STUBS"
  cargo fetch --locked
  CUDARC=$(cargo metadata --locked --format-version 1 --features cuda |
    "$PYTHON" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
  grep -ohP '^\s+fn \Kcu[A-Za-z0-9_]+(?=\()' "$(dirname "$CUDARC")/src/driver/sys/mod.rs" |
    sort -u | awk '{print "int " $1 "(void){return 34;}"}' >"$STUBS/cuda_stub.c"
  gcc -O2 -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUBS/libcuda.so" "$STUBS/cuda_stub.c"
  ln -sf libcuda.so "$STUBS/libcuda.so.1"
fi

# 2. The binary. x86-64-v3, not this repo's `native`: a build host with AVX-512 FP16
#    would make a binary that dies on an AMD GPU host.
export CUDA_HOME=$CUDA_DIR/home PATH=$CUDA_DIR/home/bin:$PATH
RUSTFLAGS="-C target-cpu=x86-64-v3" cargo build --release --locked --features cuda --bin triage
mkdir -p .gpu
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qx '/.gpu/' "$EXCLUDE" 2>/dev/null || echo '/.gpu/' >>"$EXCLUDE"
strip -o .gpu/triage.stripped "$CARGO_TARGET_DIR/release/triage"
xz -9e -T2 -c .gpu/triage.stripped >.gpu/triage.xz && rm .gpu/triage.stripped

# 3. A real model small enough to carry: SmolLM2's first 4 blocks and first 16384 tokens,
#    every kept tensor as stored (Q4_1 blocks, Q8_0 embedding, f32 norms).
if [ ! -f .gpu/smollm2-4blk-16k-q4_1.gguf ]; then
  VENV=$CUDA_DIR/gguf-venv   # outside .gpu/, which travels whole
  [ -x "$VENV/bin/python" ] || { "$PYTHON" -m venv "$VENV" && "$VENV/bin/pip" install -q gguf==0.19.0; }
  "$VENV/bin/python" bench/gpu/trim_gguf.py models/smollm2-135m-instruct-q4_1.gguf \
    .gpu/smollm2-4blk-16k-q4_1.gguf 4 16384
fi
cp bench/gpu/check.sh bench/gpu/lib.sh bench/gpu/analyze.py bench/gpu/full.sh bench/gpu/gpu.toml bench/gpu/gpu-direct.toml .gpu/
du -sh .gpu
echo "ready: carry .gpu and run \`bash .gpu/check.sh\` on the GPU machine"
