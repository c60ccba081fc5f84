#!/usr/bin/env python3
"""Joins the JSON of `purbo bench --attention -o json` and of bench_torch_attention.py into one
markdown table per case: purbo's time and rates, FlashAttention-2, cuDNN and FlexAttention times,
the ratios purbo / torch (above 1: purbo is slower), and each side's rate as a fraction of the
machine's references (prefill: TFLOP/s over the bf16 GEMM rate; decode: GB/s over the device
copy bandwidth, read + written).

usage: attention_bench_table.py FILE...   (lines that are not JSON objects are ignored, so a file
                                           cut short by a timeout still counts)
"""
import json
import sys

TORCH = [("fa2", "FA2"), ("cudnn", "cuDNN"), ("flex", "Flex")]


def read_rows(paths):
    rows = []
    for path in paths:
        try:
            lines = open(path).read().splitlines()
        except OSError as e:
            print(f"attention-table: {path}: {e}", file=sys.stderr)
            continue
        for line in lines:
            line = line.strip().rstrip(",")
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def label(n):
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    return f"{n >> 10}K" if n % 1024 == 0 else str(n)


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(paths):
    rows = read_rows(paths)
    machine = next((r for r in rows if r.get("machine")), {})
    gemm, copy = machine.get("gemm_bf16_tflops"), machine.get("copy_gbps")
    print(f"\nGPU: {machine.get('device', '?')}, torch {machine.get('torch', '?')}; "
          f"bf16 GEMM {fmt(gemm, '.0f')} TFLOP/s, device copy {fmt(copy, '.0f')} GB/s (read + written)")

    cases = {}  # (shape, mode, n, window, sinks) -> {backend: row}
    for r in rows:
        if r.get("machine"):
            continue
        key = (r["shape"], r["mode"], r["n"], r["window"], r["sinks"])
        cases.setdefault(key, {})[r.get("backend", "purbo")] = r

    def peak_fraction(r, mode):
        if r is None or r.get("ms") is None:
            return None
        if mode == "prefill":
            return r["tflops"] / gemm if gemm else None
        return r["gbps"] / copy if copy else None

    head = ["shape", "mode", "n", "window", "sinks", "purbo ms", "purbo TFLOP/s", "purbo GB/s"]
    head += [f"{name} ms" for _, name in TORCH] + [f"purbo/{name}" for _, name in TORCH]
    head += ["purbo % peak", "best torch % peak"]
    print("\n| " + " | ".join(head) + " |")
    print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |")
    notes = []
    order = {"prefill": 0, "decode": 1}
    for key in sorted(cases, key=lambda k: (k[0], k[3], order.get(k[1], 2), k[2])):
        shape, mode, n, window, sinks = key
        by = cases[key]
        p = by.get("purbo")
        p_ms = p.get("ms") if p else None
        cells = [shape, mode, label(n), str(window), str(sinks), fmt(p_ms, ".3f"),
                 fmt(p and p.get("tflops"), ".2f"), fmt(p and p.get("gbps"), ".1f")]
        ratios, torch_fracs = [], []
        for backend, name in TORCH:
            t = by.get(backend)
            t_ms = t.get("ms") if t else None
            cells.append(fmt(t_ms, ".3f") + (f" ({t['gqa']})" if t and t.get("gqa") else ""))
            ratios.append(fmt(p_ms / t_ms if p_ms and t_ms else None, ".2f"))
            torch_fracs.append(peak_fraction(t, mode))
        cells += ratios
        pf = peak_fraction(p, mode)
        best = max([f for f in torch_fracs if f is not None], default=None)
        cells += [fmt(pf and 100 * pf, ".1f"), fmt(best and 100 * best, ".1f")]
        print("| " + " | ".join(cells) + " |")
        for backend, r in by.items():
            if r.get("skipped"):
                notes.append(f"{shape} {mode} {label(n)} w{window} s{sinks} {backend}: {r['skipped']}")
    if notes:
        print("\nnot timed:")
        for line in notes:
            print("  " + line)
    print("\n(gqa: native = enable_gqa=True, repeat = K/V repeat_interleave'd before timing; purbo: f32 q "
          "and out, KV cache as its JSON 'cache' field says (bf16 by default on cuda); torch: bf16;\n purbo/X: purbo ms over X ms, above 1 when purbo "
          "is slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
