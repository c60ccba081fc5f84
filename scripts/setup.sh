#!/usr/bin/env bash
# Sets up purbo on a fresh Debian 12 machine: build dependencies (apt), the cuDNN frontend
# headers when nvcc is found (PyPI), a release build (CUDA backend included when nvcc is
# found), and the default model in models/.
# Safe to run again: apt is skipped when every package is installed, the build is
# incremental, and the model is only downloaded when missing or corrupt.
#
# usage: scripts/setup.sh [--no-apt] [--no-build] [--no-model] [--preset NAME] [-j N]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
do_apt=1
do_build=1
do_model=1
preset="release"
jobs="$(nproc 2>/dev/null || echo 2)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-apt) do_apt=0; shift ;;
        --no-build) do_build=0; shift ;;
        --no-model) do_model=0; shift ;;
        --preset) preset="$2"; shift 2 ;;
        -j) jobs="$2"; shift 2 ;;
        -h|--help) sed -n 2,7p "$0"; exit 0 ;;
        *) echo "setup: unknown flag '$1'" >&2; exit 2 ;;
    esac
done

# Build dependencies. clang + libclang-rt-14-dev are for the libFuzzer targets.
packages=(
    cmake ninja-build g++ pkg-config ccache
    libopenblas-openmp-dev nlohmann-json3-dev libcpp-httplib-dev
    libpcre2-dev libicu-dev libgtest-dev libfmt-dev
    clang libclang-rt-14-dev
)
# pip is only needed by scripts/fetch-model.sh; a python3 with its own pip is fine.
if ! python3 -c "import pip" >/dev/null 2>&1; then
    packages+=(python3 python3-pip)
fi

if [[ $do_apt == 1 ]]; then
    # One dpkg-query for all packages; unknown ones print nothing and count as missing.
    ok="$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null \
        | awk '$NF == "installed" && $(NF-1) == "ok" { sub(/:.*/, "", $1); print $1 }' || true)"
    missing=()
    for p in "${packages[@]}"; do
        grep -qxF "$p" <<<"$ok" || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "setup: all ${#packages[@]} packages already installed"
    else
        echo "setup: installing ${missing[*]}"
        sudo=""
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null || {
                echo "setup: not root and no sudo; install as root: ${missing[*]}" >&2
                exit 1
            }
            sudo="sudo"
        fi
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}"
    fi
fi

# The cuDNN frontend headers (PyPI), for the CUDA backend's cuDNN attention path: only where
# nvcc is; without them (or without cuDNN) that path is left out and the build goes on.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
if command -v nvcc >/dev/null; then
    bash "$root/scripts/fetch-cudnn-frontend.sh" ||
        echo "setup: WARNING: no cuDNN frontend headers; CUDA prefill uses purbo's own kernels only" >&2
fi

if [[ $do_build == 1 ]]; then
    # The CUDA backend is configured when nvcc is found (PURBO_CUDA=AUTO); the toolkit's
    # default location is often not on PATH in non-login shells.
    if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
        export PATH="/usr/local/cuda/bin:$PATH"
    fi
    if command -v nvcc >/dev/null; then
        echo "setup: nvcc found ($(command -v nvcc)): the CUDA backend will be built"
    fi
    cd "$root"
    cmake --preset "$preset"
    cmake --build --preset "$preset" -j "$jobs"
fi

if [[ $do_model == 1 ]]; then
    if ! bash "$root/scripts/fetch-model.sh"; then
        echo "setup: WARNING: the default model could not be fetched; 'purbo run' needs -m," >&2
        echo "setup: WARNING: and tests that need the model will be skipped." >&2
    fi
fi
echo "setup: done"
