#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/fuzz-*.cpp) with clang, ASan and UBSan in build-fuzz/ and
# runs each for N seconds (default 30) on a copy of its seed corpus.
#   scripts/fuzz.sh [seconds] [target...]        e.g. scripts/fuzz.sh 60 fuzz-gguf
# Seeds: tests/fixtures/<name after "fuzz-">/ (fuzz-gguf: tests/fixtures/gguf/*.gguf).
# Findings (crash-*, leak-*, timeout-*) are written to build-fuzz/findings/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
build=build-fuzz

CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPURBO_FUZZ=ON -DPURBO_SANITIZE=ON -DPURBO_TESTS=OFF -DPURBO_CUDA=OFF >/dev/null

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for src in fuzz/fuzz-*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
cmake --build "$build" -j"${PURBO_JOBS:-2}" --target "${targets[@]}"

status=0
for target in "${targets[@]}"; do
    corpus="$build/corpus/$target"
    findings="$build/findings/$target"
    mkdir -p "$corpus" "$findings"
    seeds="tests/fixtures/${target#fuzz-}"
    if [[ -d "$seeds" ]]; then
        find "$seeds" -maxdepth 1 -type f -name "*.${target#fuzz-}" -exec cp {} "$corpus/" \;
    fi
    echo "== $target: ${seconds}s, corpus $corpus"
    if ! "$build/fuzz/$target" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 \
            -max_len=65536 -artifact_prefix="$findings/" -print_final_stats=1; then
        echo "!! $target: finding written under $findings" >&2
        status=1
    fi
done
exit $status
