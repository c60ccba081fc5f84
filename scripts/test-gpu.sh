#!/usr/bin/env bash
# Builds purbo with the CUDA backend (sm_90a: H100/H200) and runs every test, CPU and CUDA,
# on a machine with an NVIDIA GPU. Tests that need the default model skip when it is absent
# (set PURBO_MODEL to a .gguf to run them). Fails when the build fails, any test fails, or a
# GPU is visible but the CUDA cases skipped anyway (the backend did not see the device).
#
# usage: scripts/test-gpu.sh [-j N] [--build-dir DIR] [--nmse]
#   --nmse  also print each op case's nmse and tolerance on cuda (test-backend-ops)
# env:   PURBO_MODEL=path  -> the default model file for model-level tests
# exit:  non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

jobs=16
build="build-gpu"
print_nmse=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -j) jobs="$2"; shift 2 ;;
        --build-dir) build="$2"; shift 2 ;;
        --nmse) print_nmse=1; shift ;;
        -h|--help) sed -n 2,10p "$0"; exit 0 ;;
        *) echo "test-gpu: unknown flag '$1'" >&2; exit 2 ;;
    esac
done

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
command -v nvcc >/dev/null 2>&1 || { echo "test-gpu: nvcc not found (install the CUDA toolkit)" >&2; exit 1; }
# The GPU image may lack the build's libraries (scripts/gpu-deps.sh); the tests load them too.
if [[ -d .gpu-deps ]]; then
    # shellcheck disable=SC1091
    source scripts/gpu-deps.sh install .gpu-deps /tmp/purbo-deps
fi
echo "== nvcc: $(nvcc --version | tail -1)"
gpu_visible=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    gpu_visible=1
    nvidia-smi -L
else
    echo "== no GPU visible (nvidia-smi): CUDA cases will skip"
fi

if [[ -n "${PURBO_MODEL:-}" ]]; then
    if [[ -f "$PURBO_MODEL" ]]; then
        echo "== model: $PURBO_MODEL"
    else
        echo "== PURBO_MODEL=$PURBO_MODEL is not a file: model tests will skip"
        unset PURBO_MODEL
    fi
elif [[ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]]; then
    echo "== model: models/SmolLM2-135M-Instruct.Q4_1.gguf"
else
    echo "== no model (models/ absent, PURBO_MODEL unset): model tests will skip"
fi

# cuDNN attention needs the frontend headers (PyPI); without network they must already be in
# .cache/cudnn-frontend, else the build leaves the cuDNN path out and says so.
bash scripts/fetch-cudnn-frontend.sh || echo "== no cuDNN frontend headers: prefill on purbo's own kernels"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DPURBO_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90a
cmake --build "$build" -j "$jobs"

status=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" 2>&1 | tee "$build/ctest.log" || status=1

if [[ "$gpu_visible" == 1 ]]; then
    # A GPU is here: the CUDA cases must have run, not skipped.
    cuda_bin="$build/tests/test-cuda"
    if [[ -x "$cuda_bin" ]]; then
        skipped=$("$cuda_bin" --gtest_filter='Cuda.*' 2>&1 | grep -c '^\[  SKIPPED \]' || true)
        if [[ "$skipped" != 0 ]]; then
            echo "test-gpu: a GPU is visible but $skipped CUDA cases skipped (backend_available() lacks cuda)" >&2
            status=1
        fi
    fi
fi

if [[ "$print_nmse" == 1 ]]; then
    echo "== cuda nmse per op case (nmse, tolerance)"
    PURBO_PRINT_NMSE=1 "$build/tests/test-backend-ops" --gtest_filter='Cases/BackendOps.*' 2>&1 \
        | grep -E ' cuda +nmse' || true
fi

echo "== summary"
grep -E 'tests passed|tests failed|Total Test time' "$build/ctest.log" || true
grep -E '^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess aborted)\)' "$build/ctest.log" || true
if [[ "$status" == 0 ]]; then echo "test-gpu: OK"; else echo "test-gpu: FAILED" >&2; fi
exit "$status"
