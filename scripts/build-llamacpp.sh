#!/usr/bin/env bash
# Builds llama.cpp's llama-bench as the speed baseline for bench/RESULTS.md.
# The source comes from the PyPI source distribution of llama-cpp-python, which vendors
# llama.cpp under vendor/llama.cpp. Everything lives under .cache/llamacpp/ (ignored by git).
#
# usage: scripts/build-llamacpp.sh [--version X.Y.Z] [-j N]
# prints the path of llama-bench on its last line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=""
jobs="${JOBS:-2}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --version) version="$2"; shift 2 ;;
        -j) jobs="$2"; shift 2 ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) echo "build-llamacpp: unknown flag '$1'" >&2; exit 2 ;;
    esac
done

cache="$root/.cache/llamacpp"
mkdir -p "$cache"

if [[ -z "$version" ]]; then
    # The newest release on PyPI; pip prints "llama-cpp-python (X.Y.Z)" first.
    version="$(pip index versions llama-cpp-python 2>/dev/null \
        | sed -n 's/^llama-cpp-python (\(.*\))$/\1/p' | head -1)"
    if [[ -z "$version" ]]; then
        existing="$(ls -d "$cache"/llama_cpp_python-*/ 2>/dev/null | sort -V | tail -1 || true)"
        if [[ -n "$existing" ]]; then
            version="$(basename "$existing" | sed 's/^llama_cpp_python-//')"
            echo "build-llamacpp: PyPI unreachable, using cached $version" >&2
        else
            echo "build-llamacpp: cannot reach PyPI and nothing cached in $cache" >&2
            exit 1
        fi
    fi
fi

src="$cache/llama_cpp_python-$version"
if [[ ! -d "$src/vendor/llama.cpp" ]]; then
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    echo "build-llamacpp: downloading llama-cpp-python==$version (source)" >&2
    pip download --quiet --no-binary :all: --no-deps -d "$dl" "llama-cpp-python==$version"
    tar -xzf "$dl"/llama_cpp_python-"$version".tar.gz -C "$cache"
fi
llama="$src/vendor/llama.cpp"
build="$cache/build-$version"

if [[ ! -x "$build/bin/llama-bench" ]]; then
    cmake -S "$llama" -B "$build" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
    cmake --build "$build" -j "$jobs" --target llama-bench >&2
fi

# Record which llama.cpp this is: the sdist vendors llama.cpp as a git checkout, so its
# commit is known; llama-bench also prints it (build_commit) in its JSON output.
{
    echo "llama-cpp-python $version"
    git -C "$llama" log -1 --format='llama.cpp %h (%cs) %s' 2>/dev/null || echo "llama.cpp commit unknown"
} > "$build/VERSION.txt"
cat "$build/VERSION.txt" >&2

echo "$build/bin/llama-bench"
