#!/usr/bin/env bash
# Builds purbo and runs every test: ctest on the release build (CUDA backend included when
# nvcc is found), then each libFuzzer target briefly under AddressSanitizer when clang exists.
# Tests that need the default model are skipped (not passed) when it cannot be fetched.
#
# usage: scripts/test.sh [--preset NAME] [--no-fuzz] [--fuzz-seconds N] [-j N]
# env:   CI=true  -> 2 build jobs (CI machines have 2 cores; the budget is 90 minutes)
#        PURBO_MODEL=path  -> use this model file instead of models/ (no download)
# exit:  non-zero when the build, any test or any fuzzer fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

preset="release"
fuzz=1
fuzz_seconds=20
if [[ "${CI:-}" == "true" ]]; then
    jobs=2
else
    jobs="$(nproc 2>/dev/null || echo 2)"
fi
while [[ $# -gt 0 ]]; do
    case "$1" in
        --preset) preset="$2"; shift 2 ;;
        --no-fuzz) fuzz=0; shift ;;
        --fuzz-seconds) fuzz_seconds="$2"; shift 2 ;;
        -j) jobs="$2"; shift 2 ;;
        -h|--help) sed -n 2,10p "$0"; exit 0 ;;
        *) echo "test: unknown flag '$1'" >&2; exit 2 ;;
    esac
done

start=$SECONDS
stage() { echo; echo "=== test: $* ($((SECONDS - start)) s) ==="; }

# The CUDA backend is configured when nvcc is found; its default place is often off PATH.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi

stage "dependencies"
# Installs the Debian packages only when some are missing (a fresh machine); fast otherwise.
bash scripts/setup.sh --no-build --no-model

stage "configure + build (preset $preset, -j $jobs)"
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"

stage "model"
if [[ -n "${PURBO_MODEL:-}" ]]; then
    echo "test: PURBO_MODEL=$PURBO_MODEL"
elif bash scripts/fetch-model.sh; then
    export PURBO_MODEL="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
else
    echo "test: WARNING: no model; tests that need it will be reported as skipped" >&2
fi

stage "ctest"
# --timeout: a hung test fails instead of eating the CI budget.
ctest --preset "$preset" -j "$jobs" --timeout 600

if [[ $fuzz == 1 ]]; then
    if [[ ! -f scripts/fuzz.sh ]]; then
        echo "test: no scripts/fuzz.sh; fuzzing skipped"
    elif ! command -v clang++ >/dev/null; then
        echo "test: clang++ not found; fuzzing skipped (scripts/setup.sh installs it)"
    else
        stage "fuzz ($fuzz_seconds s per target, ASan)"
        # scripts/fuzz.sh [seconds] [target...]: builds build-fuzz/ (clang, ASan+UBSan), runs all.
        PURBO_JOBS="$jobs" bash scripts/fuzz.sh "$fuzz_seconds"
    fi
fi

stage "all passed"
