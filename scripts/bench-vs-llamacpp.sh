#!/usr/bin/env bash
# Speed of purbo against llama.cpp on the same model, threads and tests:
#   pp512, pp4096 (prefill t/s), tg128 (decode t/s), tg128 @ d4096 (decode after 4096 tokens).
# llama-bench comes from scripts/build-llamacpp.sh; purbo from build/bin/purbo (its `bench`
# subcommand takes llama-bench's flags and writes the same JSON fields).
#
# usage: scripts/bench-vs-llamacpp.sh [-m MODEL] [-t THREADS] [-r REPS] [--out DIR]
#                                     [--llama-bench PATH] [--purbo PATH] [--no-llama] [--q8]
#   --q8  also run purbo with --q8-activations (8-bit activations in decode, llama.cpp's
#         numerics), as a third engine "purbo-q8"
# writes DIR/llama.json, DIR/purbo.json (DIR/purbo-q8.json) and DIR/report.md
# (default DIR: out/bench-<time>/)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
threads=2
reps=3
out="$root/out/bench-$(date -u +%Y%m%d-%H%M%S)"
llama_bench=""
purbo="$root/build/bin/purbo"
run_llama=1
run_q8=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -m) model="$2"; shift 2 ;;
        -t) threads="$2"; shift 2 ;;
        -r) reps="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --llama-bench) llama_bench="$2"; shift 2 ;;
        --purbo) purbo="$2"; shift 2 ;;
        --no-llama) run_llama=0; shift ;;
        --q8) run_q8=1; shift ;;
        -h|--help) sed -n 2,13p "$0"; exit 0 ;;
        *) echo "bench: unknown flag '$1'" >&2; exit 2 ;;
    esac
done
[[ -f "$model" ]] || { echo "bench: no model at $model (run scripts/fetch-model.sh)" >&2; exit 1; }
mkdir -p "$out"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# Two invocations per engine: the plain tests, then decode at depth 4096 (prefilled first,
# not timed). Both engines get exactly the same arguments.
args_plain=(-m "$model" -p 512,4096 -n 128 -d 0 -t "$threads" -r "$reps" -o json)
args_depth=(-m "$model" -p 0 -n 128 -d 4096 -t "$threads" -r "$reps" -o json)

# Runs one engine twice and merges both JSON arrays into one file.
run_engine() {
    local name="$1"; shift
    local bin="$1"; shift
    local a="$out/$name.plain.json" b="$out/$name.depth.json"
    echo "bench: $name ${args_plain[*]}" >&2
    "$bin" "$@" "${args_plain[@]}" > "$a"
    echo "bench: $name ${args_depth[*]}" >&2
    "$bin" "$@" "${args_depth[@]}" > "$b"
    python3 - "$a" "$b" "$out/$name.json" <<'PY'
import json, sys
*parts, dst = sys.argv[1:]
rows = []
for p in parts:
    rows += json.load(open(p))
json.dump(rows, open(dst, "w"), indent=1)
PY
    rm -f "$a" "$b"
}

if [[ $run_llama == 1 ]]; then
    if [[ -z "$llama_bench" ]]; then
        llama_bench="$(bash "$root/scripts/build-llamacpp.sh" | tail -1)"
    fi
    run_engine llama "$llama_bench"
fi

if [[ -x "$purbo" ]]; then
    if ! run_engine purbo "$purbo" bench; then
        echo "bench: '$purbo bench' failed; purbo column left empty" >&2
        rm -f "$out/purbo.json"
    fi
    if [[ $run_q8 == 1 ]] && ! run_engine purbo-q8 "$purbo" bench --q8-activations; then
        echo "bench: '$purbo bench --q8-activations' failed; purbo-q8 column left empty" >&2
        rm -f "$out/purbo-q8.json"
    fi
else
    echo "bench: no $purbo; purbo column left empty" >&2
fi

# The decode floor of this run: the weights' bytes (purbo inspect) over the read bandwidth
# measured right after the engines (purbo-membw, same thread count). This VM's bandwidth moves
# by tens of percent within a day, so the floor is measured with every run, not assumed.
membw="$(dirname "$purbo")/purbo-membw"
read_gbs=""
weights_mib=""
if [[ -x "$membw" && -x "$purbo" ]]; then
    read_gbs="$("$membw" --threads "$threads" 2>/dev/null \
        | awk -F'|' -v t="$threads" '$2 ~ /read/ && $3+0 == t {gsub(/ /, "", $4); print $4}' | tail -1)"
    weights_mib="$("$purbo" inspect -m "$model" 2>/dev/null \
        | sed -n 's/^parameters: .*, \([0-9.]*\) MiB$/\1/p' | head -1)"
fi

# Context for the figures: machine, date, commit, and how busy the machine was.
{
    echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs;" \
        "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); purbo commit:" \
        "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
} > "$out/report.md"
python3 - "$out" "$threads" "$read_gbs" "$weights_mib" >> "$out/report.md" <<'PY'
import json, os, subprocess, sys

out, threads, read_gbs, weights_mib = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]

def load(name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    try:
        rows = json.load(open(path))
    except (json.JSONDecodeError, OSError) as e:
        print(f"bench: {path} is not JSON ({e}); ignored", file=sys.stderr)
        return None
    if not isinstance(rows, list):
        print(f"bench: {path}: expected a JSON array of tests; ignored", file=sys.stderr)
        return None
    return rows

def test_name(r):
    # llama-bench's naming: pp<n_prompt>, tg<n_gen>, pp<p>+tg<g>, then " @ d<depth>".
    p, g, d = int(r.get("n_prompt", 0)), int(r.get("n_gen", 0)), int(r.get("n_depth", 0))
    name = f"pp{p}" if g == 0 else f"tg{g}" if p == 0 else f"pp{p}+tg{g}"
    return name + (f" @ d{d}" if d else "")

def key(r):
    return (int(r.get("n_prompt", 0)), int(r.get("n_gen", 0)), int(r.get("n_depth", 0)))

engines = {"llama.cpp": load("llama"), "purbo": load("purbo"),
           "purbo --q8-activations": load("purbo-q8")}
for label, rows in engines.items():
    if not rows:
        continue
    first = rows[0]
    extra = ""
    if label == "llama.cpp":
        extra = f", build {first.get('build_commit', '?')} ({first.get('build_number', '?')})"
    print(f"### {label}: {os.path.basename(str(first.get('model_filename', first.get('model', '?'))))}"
          f", {first.get('cpu_info', '')}{extra}\n")
    # best = the fastest repetition: on a shared machine it is the least disturbed one.
    print("| test | threads | mean t/s | stddev | best t/s |\n|---|---:|---:|---:|---:|")
    for r in rows:
        best = max(r.get("samples_ts") or [r["avg_ts"]])
        print(f"| {test_name(r)} | {r.get('n_threads', threads)} | {float(r['avg_ts']):.2f}"
              f" | {float(r.get('stddev_ts', 0)):.2f} | {float(best):.2f} |")
    print()

llama = engines["llama.cpp"]
for label in ("purbo", "purbo --q8-activations"):
    purbo = engines[label]
    if not (llama and purbo):
        continue
    by_key = {key(r): r for r in purbo}
    print(f"### {label} / llama.cpp (higher is better for purbo)\n")
    print(f"| test | llama.cpp t/s | {label} t/s | ratio |\n|---|---:|---:|---:|")
    for r in llama:
        p = by_key.get(key(r))
        if p is None:
            print(f"| {test_name(r)} | {float(r['avg_ts']):.2f} | missing | - |")
            continue
        a, b = float(r["avg_ts"]), float(p["avg_ts"])
        print(f"| {test_name(r)} | {a:.2f} | {b:.2f} | {b / a:.2f} |")
    print("\n(ratio of mean t/s; compare only runs made on the same machine at the same time)")
    print()

# Decode at depth 0 against the floor: every weight byte read once per token (tied embeddings:
# the LM head reads the embedding matrix; with untied ones this overstates the bytes a little).
try:
    gbs, mib = float(read_gbs), float(weights_mib)
except ValueError:
    gbs = mib = 0.0
if gbs > 0 and mib > 0:
    mb = mib * 1048576 / 1e6
    floor_ts = gbs * 1e3 / mb
    print(f"### decode floor\n\nread bandwidth {gbs:.1f} GB/s ({threads} threads, purbo-membw right after"
          f" the engines), weights {mb:.1f} MB per token: at most {floor_ts:.0f} t/s.\n")
    print("| engine | tg128 t/s | share of the floor |\n|---|---:|---:|")
    for label, rows in engines.items():
        for r in rows or []:
            if key(r) == (0, 128, 0):
                ts = float(r["avg_ts"])
                print(f"| {label} | {ts:.2f} | {100 * ts / floor_ts:.0f} % |")
    print()
PY
cat "$out/report.md"
echo "bench: results in $out" >&2
