#!/usr/bin/env bash
# One attention layer on a GPU machine: `purbo bench --attention` (CUDA backend) against PyTorch
# (FlashAttention-2 and cuDNN through SDPA; FlexAttention for the sliding-window + sinks cases)
# on the same shapes, sizes and time budget, then one combined table. With --sparse, the sparse
# layer instead (`purbo bench --attention --retrieval R`: retrieval heads dense or over selected
# blocks, local heads window + sinks) against its PyTorch peers (bench_torch_sparse_attention.py:
# composed SDPA + FlexAttention prefill, gather and FlexAttention decode, dense baselines). Builds
# purbo with CUDA first when the build folder has no purbo binary. The whole run aims to end within
# --total-seconds (default 480), build included: each phase gets a share of the time left and
# skips the cases it predicts would pass it.
#
# usage: scripts/bench-gpu.sh [--quick] [--sparse] [--shape qwen3-30b-a3b|llama3-8b] [--window W]
#                             [--sinks S] [--retrieval R] [--block B] [--fractions LIST]
#                             [--block-sparse-prefill [--prefill-samples K] [--prefill-query-block N]]
#                             [--max-seconds S] [--total-seconds S] [--build-dir DIR] [--out DIR]
#   --quick          prefill 8K,32K and decode 32K,128K only (--sparse: prefill 32K,128K)
#   --window W       also the sliding-window + sinks cases (default 4096; 0: none), --sinks S (default 4)
#   --sparse         the sparse layer: window default 8192, prefill and decode 32K,128K,512K,1M
#   --retrieval R    --sparse: share of retrieval heads (default 0.15); --block B (default 64);
#                    --fractions LIST: decode block shares kept (default 1,0.2,0.1,0.05,0.02)
#   --block-sparse-prefill  --sparse: also prefill with retrieval heads over selected blocks, per fraction
#                    (one selection per query block); --prefill-samples K: from K of its tokens (default all);
#                    --prefill-query-block N: groups of N tokens (a multiple of B; 128 fills cuDNN's tiles)
#   --max-seconds S  skip a case predicted to take longer (default 30)
#   --out DIR        the JSON and logs (default <build-dir>/attention-bench)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)

shape="qwen3-30b-a3b"
quick=0
sparse=0
window=""
sinks=4
retrieval=0.15
block=64
fractions="1,0.2,0.1,0.05,0.02"
block_sparse_prefill=()
max_seconds=30
total=480
build="build-gpu"
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=1; shift ;;
        --sparse) sparse=1; shift ;;
        --shape) shape="$2"; shift 2 ;;
        --window) window="$2"; shift 2 ;;
        --sinks) sinks="$2"; shift 2 ;;
        --retrieval) retrieval="$2"; shift 2 ;;
        --block) block="$2"; shift 2 ;;
        --fractions) fractions="$2"; shift 2 ;;
        --block-sparse-prefill) block_sparse_prefill+=(--block-sparse-prefill); shift ;;
        --prefill-samples) block_sparse_prefill+=(--prefill-samples "$2"); shift 2 ;;
        --prefill-query-block) block_sparse_prefill+=(--prefill-query-block "$2"); shift 2 ;;
        --max-seconds) max_seconds="$2"; shift 2 ;;
        --total-seconds) total="$2"; shift 2 ;;
        --build-dir) build="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n 2,25p "$0"; exit 0 ;;
        *) echo "bench-gpu: unknown flag '$1'" >&2; exit 2 ;;
    esac
done
if (( sparse )); then
    window="${window:-8192}"
    if [[ "$window" == 0 ]]; then
        echo "bench-gpu: --sparse needs a window (--window > 0)" >&2
        exit 2
    fi
    prefill="32K,128K,512K,1M"
    decode="32K,128K,512K,1M"
    (( quick )) && { prefill="32K,128K"; decode="32K,128K"; }
else
    window="${window:-4096}"
    prefill="8K,32K,128K,512K,1M"
    decode="32K,128K,512K,1M"
    (( quick )) && { prefill="8K,32K"; decode="32K,128K"; }
fi
out="${out:-$build/attention-bench}"
mkdir -p "$out"

if ! command -v nvcc >/dev/null 2>&1 && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
# The GPU image may lack the build's libraries; they also have to be found when purbo runs.
if [[ -d .gpu-deps ]]; then
    # shellcheck disable=SC1091
    source scripts/gpu-deps.sh install .gpu-deps /tmp/purbo-deps
fi
nvidia-smi -L || echo "bench-gpu: nvidia-smi failed"

bin="$build/bin/purbo"
if [[ ! -x "$bin" ]]; then
    echo "== building purbo with CUDA in $build"
    # cuDNN attention needs the frontend headers (PyPI); without network they must already be in
    # .cache/cudnn-frontend, else the build leaves the cuDNN path out and says so.
    bash scripts/fetch-cudnn-frontend.sh || echo "== no cuDNN frontend headers: prefill on purbo's own kernels"
    generator=()
    command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
    cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DPURBO_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90a -DPURBO_TESTS=OFF -DPURBO_BENCH=OFF
    cmake --build "$build" -j 16 --target purbo-cli
fi
echo "== build ready after $(( $(date +%s) - start )) s"

# Seconds for the next phase: its share (percent) of the time left, less a margin for the table.
phase_seconds() {
    local left=$(( total - ($(date +%s) - start) - 15 ))
    (( left < 10 )) && left=10
    echo $(( left * $1 / 100 ))
}

# run_phase NAME SECONDS CMD...: the command's stdout to $out/NAME.json, stderr shown and logged.
# A hard stop (timeout) 60 s past its deadline keeps the lines it already wrote.
run_phase() {
    local name="$1" seconds="$2"
    shift 2
    echo "== $name (deadline ${seconds} s)"
    timeout $(( seconds + 60 )) "$@" > "$out/$name.json" 2> >(tee "$out/$name.log" >&2) ||
        echo "bench-gpu: $name exited with status $? (its finished cases still count)"
}

common=(--shape "$shape" --prefill "$prefill" --decode "$decode" --max-seconds "$max_seconds")
export PYTHONUNBUFFERED=1
if (( sparse )); then
    layer=(--window "$window" --sinks "$sinks" --retrieval "$retrieval" --block "$block" --fractions "$fractions")
    s=$(phase_seconds 40)
    run_phase purbo-sparse "$s" "$bin" bench --attention --device cuda "${common[@]}" "${layer[@]}" \
        "${block_sparse_prefill[@]}" --deadline "$s" -o json
    s=$(phase_seconds 100)
    run_phase torch-sparse "$s" python3 scripts/bench_torch_sparse_attention.py "${common[@]}" "${layer[@]}" \
        --deadline "$s"
    python3 scripts/sparse_attention_table.py "$out/purbo-sparse.json" "$out/torch-sparse.json" |
        tee "$out/sparse-table.md"
    echo "bench-gpu: done in $(( $(date +%s) - start )) s; JSON and logs in $out"
    exit 0
fi
s=$(phase_seconds 25)
run_phase purbo "$s" "$bin" bench --attention --device cuda "${common[@]}" --deadline "$s" -o json
s=$(phase_seconds 45)
run_phase torch "$s" python3 scripts/bench_torch_attention.py "${common[@]}" --deadline "$s"
files=("$out/purbo.json" "$out/torch.json")
if [[ "$window" != 0 ]]; then
    win=(--window "$window" --sinks "$sinks")
    s=$(phase_seconds 30)
    run_phase purbo-window "$s" "$bin" bench --attention --device cuda "${common[@]}" "${win[@]}" \
        --deadline "$s" -o json
    s=$(phase_seconds 100)
    run_phase torch-window "$s" python3 scripts/bench_torch_attention.py "${common[@]}" "${win[@]}" \
        --no-machine --deadline "$s"
    files+=("$out/purbo-window.json" "$out/torch-window.json")
fi

python3 scripts/attention_bench_table.py "${files[@]}" | tee "$out/table.md"
echo "bench-gpu: done in $(( $(date +%s) - start )) s; JSON and logs in $out"
