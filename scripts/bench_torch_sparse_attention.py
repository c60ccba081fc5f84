#!/usr/bin/env python3
"""The sparse attention layer in PyTorch, bf16, on the shapes and sizes of
`purbo bench --attention --retrieval R`: the first round(R h) query heads are retrieval heads,
the rest local heads (sliding window W + S sink tokens, causal).

Prefill (n queries over the same n keys), per size:
  sdpa-cudnn, sdpa-fa2  dense causal attention over all heads (scaled_dot_product_attention
                        restricted to the cuDNN or the FlashAttention-2 backend): the baselines.
  composed              the method's prefill built from library kernels: the retrieval heads
                        through SDPA (cuDNN backend, causal) and the local heads through
                        FlexAttention (torch.compile'd) with a sliding-window + sinks block mask,
                        run one after the other as one timed call; each part is also timed alone.
Decode (one query at position n - 1 over n cached keys), per size:
  sdpa-fa2              dense decode over all heads (FlashAttention-2, is_causal=False).
  gather                per block fraction f: a plain PyTorch sparse decode. The retrieval heads
                        keep round(f n_blocks) blocks of --block keys (block 0, the last block and
                        the rest evenly spaced: the choice of purbo's bench); their K/V rows are
                        gathered by advanced indexing, each head its own copy, and attended with
                        SDPA (FA2). The local heads attend (SDPA, FA2) to the sinks and the last W
                        keys, sliced and concatenated. Gather and attention are timed together.
  flex-decode           per fraction: FlexAttention with a block mask of the same selection for
                        the retrieval heads and the window + sinks mask for the local heads.
Compiling and building block masks are not timed. Grouped-query attention: a head class that is
not made of whole KV groups is either split at the group boundaries into calls with native GQA
("split") or given K/V gathered to each of its query heads before timing ("repeat"); the first case
keeps the faster. Decode calls pad the query heads of a class to whole KV groups instead (the
padded heads read no extra K/V; their outputs are dropped).

Rates: prefill TFLOP/s from the visible (query, key) pairs of the head mix (retrieval heads causal,
local heads window + sinks; 4 d FLOPs per pair and head); decode GB/s from the bytes of the K/V rows
read, counted as purbo's bench counts them (each retrieval head its own kept rows, each KV head that
serves a local head its window once), with bf16 elements. Also the machine's references (bf16 GEMM
and device copy, as bench_torch_attention.py).

Prints progress to stderr and JSON lines to stdout (one "machine" line, then one per case and
backend); --json FILE writes the JSON lines there instead. scripts/sparse_attention_table.py joins
them with purbo's JSON into one table.

On an H100/H200 machine: scripts/bench-gpu.sh --sparse (runs purbo's side too), or alone:
  bench_torch_sparse_attention.py [--shape qwen3-30b-a3b|llama3-8b] [--heads H --kv-heads G
      --head-dim D] [--prefill 8K,32K,...] [--decode 32K,...] [--retrieval R] [--window W]
      [--sinks S] [--block B] [--fractions 1,0.2,...] [-r N] [--max-seconds S] [--deadline S]
      [--json FILE] [--no-machine] [--no-flex-decode]
On any machine (CPU): bench_torch_sparse_attention.py --self-test checks the head split, block
choice and work formulas against purbo's (scripts/testdata/sparse-bench-reference.txt) and each
composed / gathered / FlexAttention call against a dense masked reference, with tiny sizes.
"""
import argparse
import contextlib
import gc
import io
import json
import math
import os
import struct
import sys
import time
import warnings

import torch

from bench_torch_attention import (LONG_CALL_S, SHAPES, Runner, compiled_flex, machine_refs, parse_sizes, run_case,
                                   size_label, sum_of_min, time_fn, visible_keys, work)

ELEM_BYTES = 2  # bf16
FLEX_Q_BLOCK = 128  # FlexAttention's default sparse block along the queries


def log(msg):
    print(f"bench-torch-sparse: {msg}", file=sys.stderr, flush=True)


# ---- purbo's rules (tools/purbo/bench-attention-sparse.cpp, attention-cost.h), ported exactly ----

def llround(x):
    """std::llround: halves away from zero (Python's round() goes to even)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def as_float32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def retrieval_head_count(retrieval, h):
    # purbo reads --retrieval into a float: 0.7 x 5 heads is 3.4999999 there, 3 heads, not 4.
    return llround(as_float32(retrieval) * h)


def kv_heads_with_local(h, g, hr):
    """KV heads that some local head (query head >= hr) reads."""
    per = h // g
    return sum(1 for kv in range(g) if (kv + 1) * per - 1 >= hr)


def spread_blocks(n_blocks, kept):
    """Block ids of a selection keeping `kept` of `n_blocks` blocks: the sink block, the current
    block and the others evenly spaced (purbo's spread_blocks)."""
    kept = min(max(kept, min(2, n_blocks)), n_blocks)
    ids = []
    for i in range(kept):
        b = 0 if kept == 1 else i * (n_blocks - 1) // (kept - 1)
        if not ids or ids[-1] != b:
            ids.append(b)
    return ids


def selected_blocks(n, block, fraction):
    n_blocks = (n + block - 1) // block
    return spread_blocks(n_blocks, llround(fraction * n_blocks))


def prefill_pairs(n, window, sinks):
    if window <= 0:
        return n * (n + 1) // 2
    return sum_of_min(n, window) + sum_of_min(n - window, sinks)


def sparse_prefill_pairs(n, hr, hl, window, sinks):
    """Visible pairs of the head mix: retrieval heads causal, local heads window + sinks."""
    return hr * prefill_pairs(n, 0, 0) + hl * prefill_pairs(n, window, sinks)


def sparse_decode_work(n, h, g, d, hr, window, sinks, block, fraction, elem_bytes=ELEM_BYTES):
    """(kept blocks, kept keys, local keys, flops, bytes) of one decode-sparse step, as purbo counts:
    each retrieval head reads its own kept K/V rows, each KV head serving a local head its window."""
    ids = selected_blocks(n, block, fraction)
    kept_keys = min(n, len(ids) * block)
    local_keys = visible_keys(n - 1, window, sinks)
    flops = 4.0 * d * (hr * kept_keys + (h - hr) * local_keys)
    nbytes = 2.0 * d * elem_bytes * (hr * kept_keys + kv_heads_with_local(h, g, hr) * local_keys)
    return len(ids), kept_keys, local_keys, flops, nbytes


def local_key_ranges(n, window, sinks):
    """[sink_end) and [window_start, n): the keys a local head's query at n - 1 sees."""
    in_window = min(window, n)
    return min(sinks, n - in_window), n - in_window


# ---- head classes and grouped-query attention ----

def group_runs(lo, hi, grp):
    """Splits query heads [lo, hi) at KV-group boundaries into runs plain GQA can take:
    (q_lo, q_hi, kv_lo, kv_hi), query head j reading KV head j // grp; a run is a part of one
    group or whole groups."""
    runs, j = [], lo
    if j % grp and j < hi:
        end = min(hi, (j // grp + 1) * grp)
        runs.append((j, end, j // grp, j // grp + 1))
        j = end
    full_end = max(j, hi // grp * grp)
    if j < full_end:
        runs.append((j, full_end, j // grp, full_end // grp))
        j = full_end
    if j < hi:
        runs.append((j, hi, j // grp, j // grp + 1))
    return runs


def padded_groups(lo, hi, grp):
    """The KV heads [kv_lo, kv_hi) that query heads [lo, hi) read; their whole groups are the
    query heads [kv_lo grp, kv_hi grp)."""
    return lo // grp, (hi - 1) // grp + 1


class Part:
    """One head class's share of the layer: calls that each return (1, heads, q_len, d) for the
    query heads from `first` on. `heads` are the class's query heads; other heads in an output
    (padding to whole KV groups) are dropped."""

    def __init__(self, name, form, heads, calls):
        self.name, self.form, self.heads, self.calls = name, form, heads, calls

    def __call__(self):
        return [(fn(), first) for fn, first in self.calls]


def sdpa_fn(q, k, v, causal):
    sdpa = torch.nn.functional.scaled_dot_product_attention
    gqa = q.shape[1] != k.shape[1]
    if gqa:
        return lambda: sdpa(q, k, v, is_causal=causal, enable_gqa=True)
    return lambda: sdpa(q, k, v, is_causal=causal)


def flex_fn(flex, q, k, v, block_mask):
    gqa = q.shape[1] != k.shape[1]
    return lambda: flex(q, k, v, block_mask=block_mask, enable_gqa=gqa)


def repeat_kv(k, v, lo, hi, grp):
    """K/V of query heads [lo, hi), one KV head per query head: (1, hi - lo, n, d)."""
    idx = torch.arange(lo, hi, device=k.device) // grp
    return k.index_select(1, idx), v.index_select(1, idx)


def class_part(name, form, q, k, v, lo, hi, grp, make_fn):
    """Query heads [lo, hi) of (1, h, n_q, d) q over (1, g, n, d) k, v; make_fn(q, k, v) -> call.
    form: split (native GQA per group run) or repeat (K/V gathered to each query head first)."""
    if form == "repeat":
        kr, vr = repeat_kv(k, v, lo, hi, grp)
        return Part(name, form, (lo, hi), [(make_fn(q[:, lo:hi], kr, vr), lo)])
    calls = [(make_fn(q[:, a:b], k[:, ka:kb], v[:, ka:kb]), a) for a, b, ka, kb in group_runs(lo, hi, grp)]
    return Part(name, form, (lo, hi), calls)


def window_mask_mod(window, sinks, offset):
    def mask_mod(b, h, q_idx, kv_idx):
        p = q_idx + offset  # the query's position; a decode query sits at n - 1
        return (kv_idx <= p) & ((p - kv_idx < window) | (kv_idx < sinks))

    return mask_mod


def window_block_mask(n_q, n, window, sinks, device):
    from torch.nn.attention.flex_attention import create_block_mask

    size = dict(B=None, H=None, Q_LEN=n_q, KV_LEN=n, device=device)
    mod = window_mask_mod(window, sinks, n - n_q)
    if device == "cpu":
        return create_block_mask(mod, **size)
    try:  # compiled: builds the block mask without materialising the (q, kv) grid
        return create_block_mask(mod, **size, _compile=True)
    except TypeError:  # a torch without the _compile argument
        return create_block_mask(mod, **size)


def selection_block_mask(ids, n, block, keep, mask_mod):
    """One decode query over the blocks `ids` of `block` keys (the same for every head). The kept
    blocks are full blocks, which the compiled kernel reads without evaluating mask_mod; mask_mod
    (selection_mask_mod over `keep`, (n_blocks,) bool, set here) states the same selection for
    FlexAttention's eager path, which reads only mask_mod."""
    from torch.nn.attention.flex_attention import BlockMask

    n_blocks, device = keep.shape[0], keep.device
    keep.zero_()
    keep[torch.tensor(ids, device=device)] = True
    # A last block cut short by n stays partial: mask_mod bounds it (a full block is not checked).
    partial = [n_blocks - 1] if n % block and ids[-1] == n_blocks - 1 else []
    full = [b for b in ids if b not in partial]

    def blocks(chosen):
        indices = torch.zeros(1, 1, 1, n_blocks, dtype=torch.int32, device=device)
        if chosen:
            indices[0, 0, 0, :len(chosen)] = torch.tensor(chosen, dtype=torch.int32, device=device)
        return torch.full((1, 1, 1), len(chosen), dtype=torch.int32, device=device), indices

    return BlockMask.from_kv_blocks(*blocks(partial), *blocks(full), BLOCK_SIZE=(FLEX_Q_BLOCK, block),
                                    mask_mod=mask_mod, seq_lengths=(1, n))


def selection_mask_mod(keep, n, block):
    def mask_mod(b, h, q_idx, kv_idx):
        return keep[kv_idx // block] & (kv_idx < n)

    return mask_mod


def flex_decode_path(h_q, h_kv):
    """Which FlexAttention kernel a one-query call with a one-head block mask gets: its decode
    kernel needs a power-of-two number of query heads per KV head (torch/_inductor flex_decoding
    _use_flex_decoding), else its general kernel pads the one query to a tile."""
    ratio = h_q // h_kv
    return "decode" if ratio > 0 and ratio & (ratio - 1) == 0 else "attention"


# ---- the cases ----

class Layer:
    """The tensors of one case: q (1, h, n_q, d), k and v (1, g, n, d) as views of the
    (1, tokens, heads, d) layout a model produces; the head split; the flex callable."""

    def __init__(self, q, k, v, hr, flex, window, sinks, block):
        self.q, self.k, self.v = q, k, v
        self.h, self.g, self.n = q.shape[1], k.shape[1], k.shape[2]
        self.grp = self.h // self.g
        self.hr, self.flex = hr, flex
        self.window, self.sinks, self.block = window, sinks, block
        self.device = q.device.type
        self.local_mask = None  # the window + sinks block mask, built once
        # The decode selection: one mask_mod over one (n_blocks,) tensor whose contents change with
        # the fraction, so that a compiled FlexAttention sees the same function and does not
        # recompile for each fraction. A selection mask holds until the next one is built.
        self.keep = torch.zeros((self.n + block - 1) // block, dtype=torch.bool, device=q.device)
        self.keep_mod = selection_mask_mod(self.keep, self.n, block)

    def window_mask(self):
        if self.local_mask is None:
            t0 = time.perf_counter()
            self.local_mask = window_block_mask(self.q.shape[2], self.n, self.window, self.sinks, self.device)
            if time.perf_counter() - t0 > 0.1:
                log(f"  window block mask in {time.perf_counter() - t0:.1f} s")
        return self.local_mask

    def classes(self):
        """The head classes present: retrieval (heads [0, hr)) and local (heads [hr, h))."""
        return [name for name, present in (("retrieval", self.hr > 0), ("local", self.hr < self.h)) if present]

    def heads(self, name):
        return (0, self.hr) if name == "retrieval" else (self.hr, self.h)

    # Prefill: the retrieval heads dense causal (SDPA), the local heads window + sinks (Flex).
    def prefill_part(self, name, form):
        lo, hi = self.heads(name)
        if name == "retrieval":
            make = lambda q, k, v: sdpa_fn(q, k, v, True)  # noqa: E731
        else:
            bm = self.window_mask()
            make = lambda q, k, v: flex_fn(self.flex, q, k, v, bm)  # noqa: E731
        return class_part(name, form, self.q, self.k, self.v, lo, hi, self.grp, make)

    # Decode, gather: retrieval heads over their own gathered rows (the selection is per head in
    # the method; here every head keeps the same ids, as in purbo's bench, but each gets its copy);
    # local heads over the sinks and the window of their KV heads.
    def gather_part(self, name, ids, form="native"):
        q, k, v, grp, n, block = self.q, self.k, self.v, self.grp, self.n, self.block
        lo, hi = self.heads(name)
        if name == "retrieval":
            kv_of_head = (torch.arange(lo, hi, device=q.device) // grp)[:, None]  # (hr, 1)
            blocks = torch.tensor(ids, dtype=torch.int64, device=q.device).expand(hi - lo, len(ids))  # (hr, kept)
            offsets = torch.arange(block, device=q.device)
            n_blocks = (n + block - 1) // block
            # A kept last block may end past n: drop its keys beyond n (they sit at the row's end).
            n_keys = len(ids) * block - (n_blocks * block - n if ids[-1] == n_blocks - 1 else 0)
            k3, v3, qr = k[0], v[0], q[:, lo:hi]  # (g, n, d), (g, n, d), (1, hr, 1, d)

            def retrieval():
                tokens = (blocks[:, :, None] * block + offsets).reshape(hi - lo, -1)[:, :n_keys]  # (hr, n_keys)
                ks, vs = k3[kv_of_head, tokens], v3[kv_of_head, tokens]  # (hr, n_keys, d)
                return torch.nn.functional.scaled_dot_product_attention(qr, ks[None], vs[None])

            return Part(name, "gather", (lo, hi), [(retrieval, lo)])
        sink_end, window_start = local_key_ranges(n, self.window, self.sinks)
        kv_lo, kv_hi = padded_groups(lo, hi, grp)
        if form == "repeat":  # exactly the local heads, the sliced K/V repeated to each
            first, idx = lo, torch.arange(lo, hi, device=q.device) // grp - kv_lo
        else:  # native GQA, the query heads padded to whole KV groups
            first, idx = kv_lo * grp, None
        ql, kl, vl = q[:, first:hi], k[:, kv_lo:kv_hi], v[:, kv_lo:kv_hi]

        def local():
            ks = torch.cat([kl[:, :, :sink_end], kl[:, :, window_start:]], dim=2)  # (1, g_local, S + W, d)
            vs = torch.cat([vl[:, :, :sink_end], vl[:, :, window_start:]], dim=2)
            if idx is not None:
                ks, vs = ks.index_select(1, idx), vs.index_select(1, idx)
            return sdpa_fn(ql, ks, vs, False)()

        return Part(name, form, (lo, hi), [(local, first)])

    # Decode, FlexAttention: a class's query heads padded to whole KV groups, one block mask for
    # all its heads (every retrieval head keeps the same blocks here, as in purbo's bench).
    def flex_decode_part(self, name, ids):
        lo, hi = self.heads(name)
        kv_lo, kv_hi = padded_groups(lo, hi, self.grp)
        q, k, v = self.q[:, kv_lo * self.grp:kv_hi * self.grp], self.k[:, kv_lo:kv_hi], self.v[:, kv_lo:kv_hi]
        if name == "retrieval":
            bm = selection_block_mask(ids, self.n, self.block, self.keep, self.keep_mod)
        else:
            bm = self.window_mask()
        return Part(name, "padded", (lo, hi), [(flex_fn(self.flex, q, k, v, bm), kv_lo * self.grp)])


def sdpa_backend(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel({"fa2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[name])


def time_parts(parts, reps, long_call, context):
    """Times the parts one after the other as one call, then each alone: (ms, {part: ms})."""
    with context():
        for p in parts:  # compiles (Flex) and warms up; not timed
            p()
        torch.cuda.synchronize()
        ms = time_fn(lambda: [p() for p in parts], reps, long_call)[0]
        each = {p.name: time_fn(p, reps, long_call)[0] for p in parts} if len(parts) > 1 else {parts[0].name: ms}
    return ms, each


def pick_form(make_part, forms, reps, long_call, context):
    """The faster form of a part (first case of a run): (form, ms); raises when none runs."""
    errors, timed = [], []
    for form in forms:
        try:
            part = make_part(form)
            with context():
                part()
                torch.cuda.synchronize()
                ms = time_fn(part, reps, long_call)[0]
            timed.append((ms, form))
            log(f"  {part.name} {form}: {ms:.3f} ms")
        except torch.OutOfMemoryError as e:
            errors.append(f"{form}: out of memory: " + str(e).splitlines()[0])
            torch.cuda.empty_cache()
        except Exception as e:  # an unsupported shape or backend: try the next form
            errors.append(f"{form}: {type(e).__name__}: " + (str(e).splitlines() or [""])[0][:200])
        finally:
            part = None
    if not timed:
        raise RuntimeError("; ".join(errors))
    return min(timed)[1], min(timed)[0]


def error_text(e):
    if isinstance(e, torch.OutOfMemoryError):
        return "failed: out of memory: " + str(e).splitlines()[0]
    return f"failed: {type(e).__name__}: " + (str(e).splitlines() or [""])[0][:300]


def cuda_device():
    """The GPU's name, None without one."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main_bench(a, h, g, d, hr):
    start = time.perf_counter()
    out = open(a.json, "w") if a.json else sys.stdout

    def emit(row):
        out.write(json.dumps(row) + "\n")
        out.flush()

    gpu = cuda_device()
    if gpu is None:
        log("no CUDA device visible to torch")
        return 1
    log(f"GPU {gpu}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
        f"{hr} of {h} heads retrieval, W {a.window}, S {a.sinks}, B {a.block}")
    if not a.no_machine:
        try:
            gemm, copy = machine_refs()
            log(f"bf16 GEMM 8192^3: {gemm:.1f} TFLOP/s; device copy: {copy:.1f} GB/s (read + written)")
            emit({"machine": True, "device": gpu, "torch": torch.__version__, "gemm_bf16_tflops": gemm,
                  "copy_gbps": copy})
        except Exception as e:  # the table then goes without the machine's references
            log("machine references " + error_text(e))
        free_memory()

    fractions = [float(x) for x in a.fractions.split(",")]
    rates = {}  # (backend, mode) -> seconds per unit (prefill: pair; decode: byte)
    picks = {}  # dense: (backend, mode) -> GQA form; composed / gather: part -> form
    broken = {}  # backend -> why it failed for a reason other than memory: later cases skip it

    def base_row(mode, n, backend, fraction=None):
        return {"shape": a.shape, "heads": h, "kv_heads": g, "head_dim": d, "mode": mode, "n": n,
                "window": a.window, "sinks": a.sinks, "retrieval_heads": hr, "block": a.block,
                "fraction": fraction, "backend": backend, "ms": None, "parts": None, "tflops": None,
                "gbps": None, "device": gpu, "skipped": None}

    def budget(backend, mode, units, calls=1):
        """(long_call, why skipped or None) from the rate of the previous case."""
        predicted_call = rates.get((backend, mode), 0.0) * units
        long_call = predicted_call > LONG_CALL_S
        predicted = calls * predicted_call * (1 if long_call else a.repetitions + 1)
        elapsed = time.perf_counter() - start
        if backend in broken:
            return long_call, f"skipped: failed before ({broken[backend]})"
        if predicted > a.max_seconds:
            return long_call, f"skipped: predicted {predicted:.1f} s > budget {a.max_seconds:.0f} s"
        if a.deadline > 0 and elapsed + predicted > a.deadline:
            return long_call, (f"skipped: predicted {predicted:.1f} s would pass the deadline "
                               f"({elapsed:.0f} s of {a.deadline:.0f} s used)")
        return long_call, None

    def finish(row, flops=None, nbytes=None):
        if row["ms"]:
            if flops is not None:
                row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
            if nbytes is not None:
                row["gbps"] = nbytes / (row["ms"] * 1e-3) / 1e9
        kept = f" kept {100 * row['fraction']:g}%" if row["fraction"] is not None else ""
        parts = ""
        if row["parts"]:
            parts = " (" + ", ".join(f"{k} {v:.3f}" for k, v in row["parts"].items()) + ")"
        log(f"{row['backend']} {row['mode']} n={size_label(row['n'])}{kept}: " +
            (row["skipped"] or f"{row['ms']:.3f} ms{parts}"))
        emit(row)

    def dense(runner, mode, n, backend):
        """A dense baseline row through bench_torch_attention's runner."""
        row = base_row(mode, n, "sdpa-" + backend)
        pairs, flops, nbytes = work(mode, n, h, g, d, 0, 0)
        units = pairs if mode == "prefill" else nbytes
        long_call, row["skipped"] = budget(row["backend"], mode, units)
        row["pairs"] = pairs
        if not row["skipped"]:
            try:
                ms, reps, inner, gqa = run_case(runner, backend, picks.get((backend, mode)), a.repetitions, long_call)
                picks.setdefault((backend, mode), gqa)
                rates[(row["backend"], mode)] = ms * 1e-3 / units
                row.update(ms=ms, gqa=gqa, reps=reps, inner=inner)
            except Exception as e:
                row["skipped"] = error_text(e)
        finish(row, flops, nbytes)

    def failed_case(mode, n, e, backends):
        for backend, fraction in backends:
            row = base_row(mode, n, backend, fraction)
            row["skipped"] = error_text(e)
            finish(row)
        free_memory()

    for n in parse_sizes(a.prefill):
        try:
            runner = Runner("prefill", n, h, g, d, 0, 0)
        except Exception as e:  # the tensors of the case do not fit
            failed_case("prefill", n, e, [("sdpa-cudnn", None), ("sdpa-fa2", None), ("composed", None)])
            continue
        for backend in ("cudnn", "fa2"):
            dense(runner, "prefill", n, backend)
        runner.k_rep = runner.v_rep = None
        free_memory()
        row = base_row("prefill", n, "composed")
        pairs = sparse_prefill_pairs(n, hr, h - hr, a.window, a.sinks)
        row["pairs"] = pairs
        long_call, row["skipped"] = budget("composed", "prefill", pairs, calls=2)
        if not row["skipped"]:
            try:
                layer = Layer(runner.q, runner.k, runner.v, hr, compiled_flex(), a.window, a.sinks, a.block)
                context = lambda: sdpa_backend("cudnn")  # noqa: E731 (the retrieval part's SDPA)
                for name in layer.classes():
                    if name not in picks:  # the faster GQA form, from the first case
                        picks[name] = pick_form(lambda form: layer.prefill_part(name, form), ["split", "repeat"],
                                                a.repetitions, long_call, context)[0]
                parts = [layer.prefill_part(name, picks[name]) for name in layer.classes()]
                ms, each = time_parts(parts, a.repetitions, long_call, context)
                rates[("composed", "prefill")] = ms * 1e-3 / pairs
                row.update(ms=ms, parts=each, gqa={p.name: p.form for p in parts})
            except Exception as e:
                row["skipped"] = error_text(e)
                if not isinstance(e, torch.OutOfMemoryError):
                    broken["composed"] = row["skipped"][:160]
        finish(row, flops=4.0 * d * pairs)
        layer = parts = runner = None
        free_memory()

    for n in parse_sizes(a.decode):
        try:
            runner = Runner("decode", n, h, g, d, 0, 0)
        except Exception as e:
            failed_case("decode", n, e, [("sdpa-fa2", None)] +
                        [(b, f) for f in fractions for b in ("gather", "flex-decode")])
            continue
        dense(runner, "decode", n, "fa2")
        runner.k_rep = runner.v_rep = None
        layer = Layer(runner.q, runner.k, runner.v, hr, None, a.window, a.sinks, a.block)
        for f in fractions:
            ids = selected_blocks(n, a.block, f)
            n_ids, kept_keys, local_keys, flops, nbytes = sparse_decode_work(
                n, h, g, d, hr, a.window, a.sinks, a.block, f)
            for backend in ("gather", "flex-decode"):
                row = base_row("decode", n, backend, f)
                row.update(kept_blocks=n_ids, kept_keys=kept_keys, local_keys=local_keys)
                long_call, row["skipped"] = budget(backend, "decode", nbytes)
                if backend == "flex-decode" and a.no_flex_decode:
                    row["skipped"] = "skipped: --no-flex-decode"
                if not row["skipped"]:
                    try:
                        if backend == "gather":
                            context = lambda: sdpa_backend("fa2")  # noqa: E731
                            if "gather-local" not in picks and "local" in layer.classes():
                                picks["gather-local"] = pick_form(lambda form: layer.gather_part("local", ids, form),
                                                                  ["native", "repeat"], a.repetitions, long_call,
                                                                  context)[0]
                            form = picks.get("gather-local", "native")
                            parts = [layer.gather_part(name, ids, form) for name in layer.classes()]
                        else:
                            context = contextlib.nullcontext
                            layer.flex = compiled_flex()
                            parts = [layer.flex_decode_part(name, ids) for name in layer.classes()]
                            row["flex_kernel"] = {p.name: flex_decode_path(*kernel_heads(p, g, h)) for p in parts}
                        row["gqa"] = {p.name: p.form for p in parts}
                        ms, each = time_parts(parts, a.repetitions, long_call, context)
                        rates[(backend, "decode")] = ms * 1e-3 / nbytes
                        row.update(ms=ms, parts=each)
                    except Exception as e:
                        row["skipped"] = error_text(e)
                        if not isinstance(e, torch.OutOfMemoryError):
                            broken[backend] = row["skipped"][:160]
                    parts = None
                finish(row, flops=flops, nbytes=nbytes)
        layer = runner = None
        free_memory()
    log(f"done in {time.perf_counter() - start:.0f} s")
    return 0


def kernel_heads(part, g, h):
    """(query heads, KV heads) of a flex-decode part's call: whole groups of its class."""
    grp = h // g
    kv_lo, kv_hi = padded_groups(part.heads[0], part.heads[1], grp)
    return (kv_hi - kv_lo) * grp, kv_hi - kv_lo


# ---- self-test (CPU) ----

def reference_attention(q, k, v, visible):
    """fp32 attention of q (1, h, n_q, d) over k, v (1, g, n, d) with a (h, n_q, n) bool mask."""
    grp = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(grp, dim=1).float(), v.repeat_interleave(grp, dim=1).float()
    s = (q.float() @ kr.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~visible[None], float("-inf"))
    return torch.softmax(s, dim=-1) @ vr


def visible_mask(h, n_q, n, hr, window, sinks, retrieval_keys=None):
    """(h, n_q, n): the keys each head's queries at positions n - n_q.. see (purbo's rules)."""
    p = torch.arange(n - n_q, n)[:, None]
    kv = torch.arange(n)[None, :]
    causal = kv <= p
    local = causal & ((p - kv < window) | (kv < sinks))
    retrieval = causal if retrieval_keys is None else causal & retrieval_keys[None, :]
    return torch.stack([retrieval if j < hr else local for j in range(h)])


def check_outputs(parts, expected, what):
    """Every class head's output against the reference; returns the worst max error."""
    worst, seen = 0.0, set()
    for part in parts:
        for out, first in part():
            for i in range(out.shape[1]):
                j = first + i
                if part.heads[0] <= j < part.heads[1]:
                    worst = max(worst, (out[0, i].float() - expected[0, j]).abs().max().item())
                    seen.add(j)
    missing = set(range(expected.shape[1])) - seen
    assert not missing, f"{what}: heads {sorted(missing)} have no output"
    return worst


def self_test():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print(f"FAIL {what}", file=sys.stderr)

    # 1. purbo's formulas, values written by its own code (testdata/sparse-bench-reference.cpp).
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "sparse-bench-reference.txt")
    counted = {"S": 0, "R": 0, "P": 0, "W": 0}
    for line in open(path):
        f = line.split()
        counted[f[0]] += 1
        if f[0] == "S":
            nb, frac, count, total, weighted = int(f[1]), float(f[2]), int(f[3]), int(f[4]), int(f[5])
            ids = spread_blocks(nb, llround(frac * nb))
            got = (len(ids), sum(ids), sum((i + 1) * b for i, b in enumerate(ids)))
            want = (count, total, weighted)
            check(got == want, f"spread_blocks({nb}, f={frac}): {got} != {want}")
            check(ids[0] == 0 and ids[-1] == nb - 1 and ids == sorted(set(ids)), f"spread_blocks({nb}, f={frac}) ends")
        elif f[0] == "R":
            r, hh, gg, want_hr, want_kv = float(f[1]), int(f[2]), int(f[3]), int(f[4]), int(f[5])
            got = retrieval_head_count(r, hh)
            check(got == want_hr, f"retrieval heads R={r} h={hh}: {got} != {want_hr}")
            check(kv_heads_with_local(hh, gg, got) == want_kv, f"kv heads with local R={r} h={hh} g={gg}")
        elif f[0] == "P":
            n, w, s, pairs, keys = (int(x) for x in f[1:6])
            check(prefill_pairs(n, w, s) == pairs, f"prefill pairs n={n} W={w} S={s}")
            check(visible_keys(n - 1, w, s) == keys, f"visible keys n={n} W={w} S={s}")
            check(work("prefill", n, 1, 1, 1, w, s)[0] == pairs, f"bench_torch_attention pairs n={n} W={w} S={s}")
        else:
            hh, gg, dd = int(f[1]), int(f[2]), int(f[3])
            r, n, w, s, b, frac = float(f[4]), int(f[5]), int(f[6]), int(f[7]), int(f[8]), float(f[9])
            pf, df, db = float(f[10]), float(f[11]), float(f[12])
            nhr = retrieval_head_count(r, hh)
            got_pf = 4.0 * dd * sparse_prefill_pairs(n, nhr, hh - nhr, w, s)
            _, _, _, got_df, got_db = sparse_decode_work(n, hh, gg, dd, nhr, w, s, b, frac, elem_bytes=4)
            check(math.isclose(got_pf, pf, rel_tol=1e-12), f"prefill flops {hh}/{gg} n={n}: {got_pf} != {pf}")
            check(math.isclose(got_df, df, rel_tol=1e-12), f"decode flops {hh}/{gg} n={n} f={frac}: {got_df} != {df}")
            check(math.isclose(got_db, db, rel_tol=1e-12), f"decode bytes {hh}/{gg} n={n} f={frac}: {got_db} != {db}")
    check(all(counted.values()), f"reference file has every kind of line: {counted}")
    print(f"self-test: purbo's formulas on {sum(counted.values())} reference lines", file=sys.stderr)

    # 2. Group runs cover the heads once and each is GQA-shaped.
    for hh, gg in ((32, 4), (32, 8), (9, 3), (8, 8), (4, 1)):
        grp = hh // gg
        for lo in range(hh):
            for hi in range(lo + 1, hh + 1):
                runs = group_runs(lo, hi, grp)
                heads = [j for a, b, _, _ in runs for j in range(a, b)]
                ok = heads == list(range(lo, hi)) and len(runs) <= 3
                for a, b, ka, kb in runs:
                    ok &= (b - a) % (kb - ka) == 0 and all(j // grp == ka + (j - a) // ((b - a) // (kb - ka))
                                                           for j in range(a, b))
                check(ok, f"group_runs({lo}, {hi}, {grp}) = {runs}")

    # 3. Each call against a dense masked reference: fp32 on the CPU, eager FlexAttention (which
    # reads only mask_mod; the block lists the compiled kernel reads are checked apart).
    from torch.nn.attention.flex_attention import flex_attention

    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
    torch.manual_seed(0)
    tol = 1e-4  # fp32 throughout: only the summation order differs from the reference
    for hh, gg, hr, n, window, sinks, block in ((8, 2, 3, 300, 64, 4, 16), (8, 4, 5, 256, 100, 3, 32),
                                                  (6, 1, 1, 200, 40, 0, 16), (4, 2, 2, 130, 300, 4, 16),
                                                  (4, 2, 4, 96, 32, 4, 16), (4, 4, 0, 96, 32, 4, 16)):
        d = 16
        what = f"{hh}/{gg} hr={hr} n={n} W={window} S={sinks} B={block}"
        q = torch.randn(1, n, hh, d).transpose(1, 2)
        k = torch.randn(1, n, gg, d).transpose(1, 2)
        v = torch.randn(1, n, gg, d).transpose(1, 2)
        layer = Layer(q, k, v, hr, flex_attention, window, sinks, block)
        want = reference_attention(q, k, v, visible_mask(hh, n, n, hr, window, sinks))
        for form in ("split", "repeat"):
            parts = [layer.prefill_part(name, form) for name in layer.classes()]
            err = check_outputs(parts, want, f"composed {form} {what}")
            check(err < tol, f"composed prefill {form} {what}: error {err:.2e}")
        q1 = torch.randn(1, 1, hh, d).transpose(1, 2)
        layer = Layer(q1, k, v, hr, flex_attention, window, sinks, block)
        n_blocks = (n + block - 1) // block
        for frac in (1.0, 0.3, 0.1, 0.001):
            ids = selected_blocks(n, block, frac)
            keys = torch.zeros(n, dtype=torch.bool)
            for b in ids:
                keys[b * block:(b + 1) * block] = True
            want = reference_attention(q1, k, v, visible_mask(hh, 1, n, hr, window, sinks, keys))
            for form in ("native", "repeat"):
                err = check_outputs([layer.gather_part(name, ids, form) for name in layer.classes()], want,
                                    f"gather {what}")
                check(err < tol, f"gather decode {form} {what} f={frac}: error {err:.2e}")
            err = check_outputs([layer.flex_decode_part(name, ids) for name in layer.classes()], want,
                                f"flex-decode {what}")
            check(err < tol, f"flex decode {what} f={frac}: error {err:.2e}")
            dense_blocks = selection_block_mask(ids, n, block, layer.keep, layer.keep_mod).to_dense()[0, 0, 0]
            check(dense_blocks.nonzero().flatten().tolist() == ids and dense_blocks.shape[0] == n_blocks,
                  f"selection block mask {what} f={frac}")
    print("self-test: composed prefill, gather and flex decode against the dense masked reference",
          file=sys.stderr)
    check(flex_decode_path(8, 1) == "decode" and flex_decode_path(5, 1) == "attention", "flex decode path rule")

    # 4. The driver end to end on the CPU: CUDA calls stood in for (a wall-clock timer, no SDPA
    # backend choice, eager FlexAttention), tiny sizes; every row is written, timed or skipped.
    for rows, why in dry_runs():
        check(not why, why)
    print("self-test: the driver on the CPU with CUDA stood in for (rows, parts, budget skips)", file=sys.stderr)
    print(f"self-test: {'FAILED (' + str(len(failures)) + ')' if failures else 'passed'}", file=sys.stderr)
    return 1 if failures else 0


def dry_run(argv):
    """main_bench on the CPU with CUDA stood in for; returns the JSON rows it wrote."""
    import tempfile
    from unittest import mock

    from torch.nn.attention.flex_attention import flex_attention

    class Event:  # torch.cuda.Event on the host clock
        def __init__(self, enable_timing=False):
            self.t = 0.0

        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

        def elapsed_time(self, end):
            return (end.t - self.t) * 1e3

    class CpuRunner(Runner):
        def __init__(self, mode, n, h, g, d, window, sinks):
            with mock.patch.object(torch, "randn", lambda *size, **kw: torch_randn(*size, dtype=torch.float32)):
                super().__init__(mode, n, h, g, d, window, sinks)

    torch_randn = torch.randn
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(torch.cuda, "synchronize", lambda: None), \
            mock.patch.object(torch.cuda, "empty_cache", lambda: None), \
            mock.patch.object(torch.cuda, "Event", Event), \
            mock.patch.object(torch.backends.cudnn, "version", lambda: None), \
            mock.patch("torch.nn.attention.sdpa_kernel", lambda *a, **k: contextlib.nullcontext()), \
            mock.patch.dict(globals(), {"cuda_device": lambda: "cpu (dry run)", "Runner": CpuRunner,
                                        "compiled_flex": lambda: flex_attention,
                                        "machine_refs": lambda: (100.0, 1000.0)}):
        path = os.path.join(tmp, "rows.json")
        a, h, g, d = parse_args(argv + ["--json", path])
        with contextlib.redirect_stderr(io.StringIO()) as progress:
            code = main_bench(a, h, g, d, retrieval_head_count(a.retrieval, h))
        rows = [json.loads(line) for line in open(path)]
    return code, rows, progress.getvalue()


def dry_runs():
    """(rows, what is wrong or "") of a few dry runs."""
    base = ["--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--retrieval", "0.3", "--window", "64",
            "--block", "16", "--fractions", "1,0.1", "-r", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention's advice to compile
        code, rows, progress = dry_run(base + ["--prefill", "128,256", "--decode", "256,512"])
    machine, cases = rows[0], rows[1:]
    want = [("prefill", n, b, None) for n in (128, 256) for b in ("sdpa-cudnn", "sdpa-fa2", "composed")]
    want += [("decode", n, b, f) for n in (256, 512) for b, f in
             [("sdpa-fa2", None)] + [(b, f) for f in (1.0, 0.1) for b in ("gather", "flex-decode")]]
    got = [(r["mode"], r["n"], r["backend"], r["fraction"]) for r in cases]
    problems = []
    if code != 0 or not machine.get("machine") or got != want:
        problems.append(f"dry run: exit {code}, rows {got}\n{progress}")
    for r in cases:
        if r["skipped"] or not r["ms"] or r["retrieval_heads"] != 1:
            problems.append(f"dry run row {r}")
        if r["backend"] in ("composed", "gather", "flex-decode") and set(r["parts"] or ()) != {"retrieval", "local"}:
            problems.append(f"dry run parts {r}")
        if r["backend"] == "flex-decode" and r.get("flex_kernel") != {"retrieval": "decode", "local": "decode"}:
            problems.append(f"dry run flex kernel {r}")
    composed = [r for r in cases if r["backend"] == "composed"]
    if composed and composed[0]["pairs"] != sparse_prefill_pairs(128, 1, 3, 64, 4):
        problems.append(f"dry run pairs {composed[0]}")
    yield rows, "; ".join(problems)

    # A budget no case fits: the first case of each backend runs, the rest are skipped.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, rows, progress = dry_run(base + ["--prefill", "128,256", "--decode", "256", "--max-seconds", "1e-9",
                                     "--no-machine", "--no-flex-decode"])
    skipped = {(r["n"], r["backend"], r["fraction"]): r["skipped"] or "" for r in rows}
    ok = (code == 0 and not any(r.get("machine") for r in rows) and not skipped[(128, "composed", None)]
          and skipped[(256, "composed", None)].startswith("skipped: predicted")
          and skipped[(256, "gather", 0.1)].startswith("skipped: predicted")
          and skipped[(256, "flex-decode", 1.0)] == "skipped: --no-flex-decode")
    yield rows, "" if ok else f"dry run with a tiny budget: {skipped}\n{progress}"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="qwen3-30b-a3b", choices=sorted(SHAPES))
    ap.add_argument("--heads", type=int, default=0)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--head-dim", type=int, default=0)
    ap.add_argument("--prefill", default="8K,32K,128K,512K,1M")
    ap.add_argument("--decode", default="32K,128K,512K,1M")
    ap.add_argument("--retrieval", type=float, default=0.15, help="share of query heads that are retrieval heads")
    ap.add_argument("--window", type=int, default=8192)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--block", type=int, default=64, help="selection block in tokens")
    ap.add_argument("--fractions", default="1,0.2,0.1,0.05,0.02", help="decode: shares of blocks kept")
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--deadline", type=float, default=0.0, help="skip cases that would end after S s (0: none)")
    ap.add_argument("--json", default="", help="write the JSON lines to FILE instead of stdout")
    ap.add_argument("--no-machine", action="store_true", help="skip the GEMM and copy references")
    ap.add_argument("--no-flex-decode", action="store_true", help="skip the FlexAttention decode rows")
    ap.add_argument("--self-test", action="store_true", help="check the formulas and calls on the CPU, then exit")
    a = ap.parse_args(argv)
    h, g, d = SHAPES[a.shape]
    h, g, d = a.heads or h, a.kv_heads or g, a.head_dim or d
    problems = []
    if min(h, g, d) <= 0 or h % g:
        problems.append(f"--heads {h} must be a positive multiple of --kv-heads {g}, --head-dim {d} positive")
    if not 0 < a.retrieval <= 1:
        problems.append(f"--retrieval {a.retrieval} is not in (0, 1]")
    if a.window <= 0 or a.sinks < 0 or a.block <= 0 or a.repetitions <= 0 or a.max_seconds <= 0:
        problems.append("--window, --block, -r and --max-seconds must be positive, --sinks >= 0")
    try:
        fractions = [float(x) for x in a.fractions.split(",")]
        if not all(0 < f <= 1 for f in fractions):
            problems.append(f"--fractions '{a.fractions}': each must be in (0, 1]")
    except ValueError:
        problems.append(f"--fractions '{a.fractions}' is not a list of numbers")
    try:
        parse_sizes(a.prefill), parse_sizes(a.decode)
    except ValueError:
        problems.append(f"--prefill '{a.prefill}' / --decode '{a.decode}': sizes like 32K,1M")
    if problems:
        ap.error("; ".join(problems))
    return a, h, g, d


def main(argv=None):
    a, h, g, d = parse_args(sys.argv[1:] if argv is None else argv)
    if a.self_test:
        return self_test()
    return main_bench(a, h, g, d, retrieval_head_count(a.retrieval, h))


if __name__ == "__main__":
    sys.exit(main())
