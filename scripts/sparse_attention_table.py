#!/usr/bin/env python3
"""Joins the JSON of `purbo bench --attention --retrieval R -o json` (an array) and of
bench_torch_sparse_attention.py (JSON lines) into markdown tables of the sparse attention layer.

Prefill, per size: purbo's sparse prefill (retrieval heads dense, local heads window + sinks),
PyTorch's composed prefill (SDPA cuDNN + FlexAttention) and the dense cuDNN and FlashAttention-2
layers, and how many times faster purbo is than each (their ms over purbo's).
Block-sparse prefill (rows of `--block-sparse-prefill`), per size and kept block fraction: purbo's
selection + attention, its selection's share, and how many times faster it is than purbo's paper
mode (retrieval heads dense) and the dense cuDNN and FlashAttention-2 layers.
Decode, per size and kept block fraction: purbo's sparse step (block selection + attention), purbo's
and FA2's dense decode, PyTorch's gather and FlexAttention sparse decodes, how many times faster
purbo's sparse step is than each, the selection's share of the step, and each side's GB/s as a share
of the machine's copy bandwidth (read + written). The header names the card, the torch version, the
date and the machine's references.

On an H100/H200 machine: scripts/bench-gpu.sh --sparse (runs both benchmarks, then this), or
  sparse_attention_table.py purbo.json torch.json
(lines that are not JSON objects are ignored, so a file cut short by a timeout still counts).
Anywhere: sparse_attention_table.py --self-test renders scripts/testdata/sparse-table-*.json and
checks the cells.
"""
import datetime
import os
import sys

from attention_bench_table import fmt, label, read_rows

TORCH_PREFILL = [("composed", "composed"), ("sdpa-cudnn", "cuDNN dense"), ("sdpa-fa2", "FA2 dense")]
TORCH_DECODE = [("sdpa-fa2", "FA2 dense"), ("gather", "gather"), ("flex-decode", "Flex")]


def layer_key(r):
    """The layer a row measures, whichever side wrote it."""
    return (r["shape"], r["heads"], r["kv_heads"], r["head_dim"], r["window"], r["sinks"], r["retrieval_heads"])


def fraction_key(f):
    return None if f is None else round(float(f), 9)


def times(ms, other_ms):
    """How many times faster ms is than other_ms."""
    return fmt(other_ms / ms if ms and other_ms else None, ".2f") + ("x" if ms and other_ms else "")


def share(x, ref):
    return fmt(100 * x / ref if x and ref else None, ".0f") + ("%" if x and ref else "")


def render(rows, date):
    machine = next((r for r in rows if r.get("machine")), {})
    gemm, copy = machine.get("gemm_bf16_tflops"), machine.get("copy_gbps")
    prefill, block_prefill, decode, notes = {}, {}, {}, []
    for r in rows:
        if r.get("machine") or "mode" not in r:
            continue
        side = r.get("backend", "purbo")
        if side == "purbo" and r["mode"] == "decode":
            side = "purbo-dense"
        by_fraction = r["mode"] in ("decode-sparse", "prefill-block-sparse") or side in ("gather", "flex-decode")
        frac = fraction_key(r.get("fraction")) if by_fraction else None
        try:
            key = layer_key(r) + (r["n"],)
        except KeyError:
            continue
        if r["mode"] in ("prefill", "prefill-sparse"):
            prefill.setdefault(key, {})[side] = r
        elif r["mode"] == "prefill-block-sparse":
            block_prefill.setdefault(key, {})[frac] = r
        else:
            decode.setdefault(key, {}).setdefault(frac, {})[side] = r
        if r.get("skipped"):
            kept = f" kept {100 * frac:g}%" if frac is not None else ""
            notes.append(f"{r['shape']} {r['mode']} {label(r['n'])}{kept} {side}: {r['skipped']}")

    out = [f"GPU: {machine.get('device', '?')}, torch {machine.get('torch', '?')}, {date}; "
           f"bf16 GEMM {fmt(gemm, '.0f')} TFLOP/s, device copy {fmt(copy, '.0f')} GB/s (read + written)"]
    layers = sorted({k[:-1] for k in prefill} | {k[:-1] for k in block_prefill} | {k[:-1] for k in decode})
    for shape, h, g, d, window, sinks, hr in layers:
        out.append(f"\n{shape} ({h} query heads, {g} KV heads, d {d}): {hr} retrieval heads, {h - hr} local heads "
                   f"(window {window}, sinks {sinks})")
        this = (shape, h, g, d, window, sinks, hr)
        p_keys = sorted(k for k in prefill if k[:-1] == this)
        if p_keys:
            head = ["n", "purbo sparse ms", "purbo TFLOP/s"] + [f"{name} ms" for _, name in TORCH_PREFILL]
            head += [f"vs {name}" for _, name in TORCH_PREFILL[1:]] + ["vs composed", "composed parts ms"]
            out += ["", "Prefill (vs X: X ms over purbo ms, above 1x: purbo is faster)", "",
                    "| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * len(head)) + " |"]
            for key in p_keys:
                by = prefill[key]
                p = by.get("purbo", {})
                p_ms = p.get("ms")
                t_ms = {b: by.get(b, {}).get("ms") for b, _ in TORCH_PREFILL}
                tflops = p.get("tflops")
                cells = [label(key[-1]), fmt(p_ms, ".3f"),
                         fmt(tflops, ".1f") + (f" ({share(tflops, gemm)} GEMM)" if tflops and gemm else "")]
                cells += [fmt(t_ms[b], ".3f") for b, _ in TORCH_PREFILL]
                cells += [times(p_ms, t_ms[b]) for b, _ in TORCH_PREFILL[1:]] + [times(p_ms, t_ms["composed"])]
                parts = by.get("composed", {}).get("parts") or {}
                cells.append(" + ".join(f"{k} {v:.3f}" for k, v in parts.items()) or "-")
                out.append("| " + " | ".join(cells) + " |")
        b_keys = sorted(k for k in block_prefill if k[:-1] == this)
        if b_keys:
            head = ["n", "kept", "purbo ms", "select share", "purbo TFLOP/s", "paper mode ms", "cuDNN dense ms",
                    "FA2 dense ms", "vs paper mode", "vs cuDNN dense", "vs FA2 dense"]
            def granularity(row):
                if row.get("select", "token") == "token":
                    return "token"
                return f"query block (from {row['samples']} of its tokens)" if row.get("samples") else "query block"
            per = " / ".join(sorted({granularity(next(iter(block_prefill[k].values()))) for k in b_keys}))
            out += ["", f"Block-sparse prefill: retrieval heads over their selected blocks, one selection per {per} "
                    "(kept: the blocks each retrieval head keeps; paper mode: purbo's prefill with retrieval heads "
                    "dense)", "",
                    "| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * len(head)) + " |"]
            for key in b_keys:
                by = prefill.get(key, {})
                paper = by.get("purbo", {}).get("ms")
                cudnn, fa2 = by.get("sdpa-cudnn", {}).get("ms"), by.get("sdpa-fa2", {}).get("ms")
                for f in sorted(block_prefill[key], reverse=True):
                    p = block_prefill[key][f]
                    p_ms, tflops = p.get("ms"), p.get("tflops")
                    cells = [label(key[-1]), f"{100 * f:g}%", fmt(p_ms, ".3f"), share(p.get("select_ms"), p_ms),
                             fmt(tflops, ".1f") + (f" ({share(tflops, gemm)} GEMM)" if tflops and gemm else ""),
                             fmt(paper, ".3f"), fmt(cudnn, ".3f"), fmt(fa2, ".3f"),
                             times(p_ms, paper), times(p_ms, cudnn), times(p_ms, fa2)]
                    out.append("| " + " | ".join(cells) + " |")
        d_keys = sorted(k for k in decode if k[:-1] == this)
        if d_keys:
            head = ["n", "kept", "purbo sparse ms", "select share", "purbo dense ms"]
            head += [f"{name} ms" for _, name in TORCH_DECODE]
            head += ["vs purbo dense"] + [f"vs {name}" for _, name in TORCH_DECODE]
            head += ["purbo GB/s (of copy)", "gather GB/s (of copy)", "Flex GB/s (of copy)"]
            out += ["", "Decode, one query (vs X: X ms over purbo's sparse ms; GB/s: K/V rows read)", "",
                    "| " + " | ".join(head) + " |", "| " + " | ".join(["---:"] * len(head)) + " |"]
            for key in d_keys:
                by_frac = decode[key]
                dense_purbo = by_frac.get(None, {}).get("purbo-dense", {}).get("ms")
                dense_fa2 = by_frac.get(None, {}).get("sdpa-fa2", {}).get("ms")
                fracs = sorted((f for f in by_frac if f is not None), reverse=True) or [None]
                for f in fracs:
                    by = by_frac.get(f, {})
                    p = by.get("purbo", {})
                    p_ms = p.get("ms")
                    t_ms = {"sdpa-fa2": dense_fa2, "gather": by.get("gather", {}).get("ms"),
                            "flex-decode": by.get("flex-decode", {}).get("ms")}
                    cells = [label(key[-1]), "-" if f is None else f"{100 * f:g}%", fmt(p_ms, ".3f"),
                             share(p.get("select_ms"), p_ms), fmt(dense_purbo, ".3f")]
                    cells += [fmt(t_ms[b], ".3f") for b, _ in TORCH_DECODE]
                    cells += [times(p_ms, dense_purbo)] + [times(p_ms, t_ms[b]) for b, _ in TORCH_DECODE]
                    for r in (p, by.get("gather", {}), by.get("flex-decode", {})):
                        gbps = r.get("gbps")
                        cells.append(fmt(gbps, ".0f") + (f" ({share(gbps, copy)})" if gbps and copy else ""))
                    out.append("| " + " | ".join(cells) + " |")
    if notes:
        out += ["", "not timed:"] + ["  " + line for line in notes]
    caches = sorted({r["cache"] for r in rows if r.get("backend", "purbo") == "purbo" and r.get("cache")}) or ["f32"]
    keys = sorted({r["index_keys"] for r in rows if r.get("backend", "purbo") == "purbo" and r.get("index_keys")})
    key_note = f", {'/'.join(keys)} index keys" if keys else ""
    out += ["", f"(purbo: f32 q and out, {'/'.join(caches)} KV cache{key_note}; its GB/s counts the cache's bytes over its "
            "attention time; torch: bf16, GB/s over the whole step;", " purbo sparse decode ms = select + attention; "
            "composed = retrieval heads through SDPA cuDNN, then local heads through FlexAttention)"]
    return out


# ---- self-test ----

def self_test():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
    rows = read_rows([os.path.join(here, "sparse-table-purbo.json"), os.path.join(here, "sparse-table-torch.jsonl")])
    lines = render(rows, "2000-01-01")
    text = "\n".join(lines)
    failures = []

    def row_of(prefix):
        found = [line for line in lines if line.startswith(prefix)]
        return [c.strip() for c in found[0].strip("|").split("|")] if found else []

    def expect(prefix, column, want):
        cells = row_of(prefix)
        got = cells[column] if column < len(cells) else None
        if got != want:
            failures.append(f"{prefix!r} column {column}: {got!r} != {want!r}")

    # The files' numbers are chosen so each cell is plain arithmetic (see the files).
    if not lines[0].startswith("GPU: NVIDIA H200, torch 2.9.0, 2000-01-01; bf16 GEMM 800 TFLOP/s, device copy 4000"):
        failures.append(f"header: {lines[0]}")
    expect("| 32K |", 1, "10.000")  # purbo sparse prefill ms
    expect("| 32K |", 2, "200.0 (25% GEMM)")  # its TFLOP/s over the 800 TFLOP/s GEMM
    expect("| 32K |", 3, "30.000")  # composed
    expect("| 32K |", 6, "4.00x")  # cuDNN dense 40 ms / 10 ms
    expect("| 32K |", 7, "5.00x")  # FA2 dense 50 ms / 10 ms
    expect("| 32K |", 8, "3.00x")  # composed 30 ms / 10 ms
    expect("| 32K |", 9, "retrieval 12.000 + local 17.000")
    expect("| 128K |", 1, "-")  # purbo skipped
    expect("| 128K |", 6, "-")
    expect("| 32K | 100% |", 2, "0.500")  # purbo sparse decode ms
    expect("| 32K | 100% |", 3, "20%")  # select 0.1 of 0.5 ms
    expect("| 32K | 100% |", 4, "0.400")  # purbo dense
    expect("| 32K | 10% |", 2, "0.200")
    expect("| 32K | 10% |", 8, "2.00x")  # purbo dense 0.4 / 0.2
    expect("| 32K | 10% |", 9, "1.50x")  # FA2 dense 0.3 / 0.2
    expect("| 32K | 10% |", 10, "3.00x")  # gather 0.6 / 0.2
    expect("| 32K | 10% |", 11, "-")  # flex failed
    expect("| 32K | 10% |", 12, "2000 (50%)")  # purbo GB/s over the 4000 GB/s copy
    expect("| 32K | 10% |", 13, "1000 (25%)")
    if "32K kept 10% flex-decode: failed: RuntimeError: no decode" not in text:
        failures.append("the failed flex row is not listed under 'not timed'")
    expect("| 32K | 25% |", 2, "2.000")  # block-sparse prefill ms
    expect("| 32K | 25% |", 3, "25%")  # select 0.5 of 2 ms
    expect("| 32K | 25% |", 5, "10.000")  # paper mode (purbo prefill-sparse)
    expect("| 32K | 25% |", 8, "5.00x")  # paper mode 10 ms / 2 ms
    expect("| 32K | 25% |", 9, "20.00x")  # cuDNN dense 40 ms / 2 ms
    expect("| 32K | 25% |", 10, "25.00x")  # FA2 dense 50 ms / 2 ms
    if "one selection per token" not in text:  # rows without "select" predate per-block selection
        failures.append("the block-sparse table does not name its selection's granularity")
    if "prefill-block-sparse 128K kept 25% purbo: skipped: predicted" not in text:
        failures.append("the skipped block-sparse row is not listed under 'not timed'")
    if "prefill-sparse 128K purbo: skipped: predicted" not in text:
        failures.append("the skipped purbo row is not listed under 'not timed'")
    # Without the machine line and with purbo's array cut short: still a table.
    cut = [r for r in rows if not r.get("machine")][:3]
    short = render(cut, "2000-01-01")
    if not short[0].startswith("GPU: ?, torch ?") or not any(line.startswith("| 32K |") for line in short):
        failures.append("a cut input: " + "\n".join(short))
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    if failures:
        print(text, file=sys.stderr)
    print(f"sparse-table self-test: {'FAILED' if failures else 'passed'}", file=sys.stderr)
    return 1 if failures else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if not argv or any(a.startswith("-") for a in argv):
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(render(read_rows(argv), datetime.date.today().isoformat())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
