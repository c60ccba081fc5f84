#!/usr/bin/env python3
"""One attention layer in PyTorch, bf16, on the shapes and sizes of `purbo bench --attention`.

Backends: scaled_dot_product_attention restricted to FlashAttention-2 (SDPBackend.FLASH_ATTENTION)
and to cuDNN (SDPBackend.CUDNN_ATTENTION), causal for prefill; decode is one query over n keys
(is_causal=False). With --window, FlexAttention (torch.compile'd) with a sliding-window + sinks
block mask instead. Grouped-query attention is run both natively (enable_gqa=True) and with K/V
repeated to every query head (repeat_interleave, done before timing); the first case of each
backend and mode keeps the faster of the two for the rest (the "gqa" field says which).

Also measures the machine's references: bf16 GEMM rate (8192^3 torch.matmul) and device copy
bandwidth (bytes read + written by a 2 GiB tensor copy).

Prints progress to stderr and JSON lines to stdout (one "machine" line, then one per case and
backend), then a markdown table on stderr; --json FILE writes the JSON lines there instead.

usage: bench_torch_attention.py [--shape qwen3-30b-a3b|llama3-8b] [--heads H --kv-heads G
       --head-dim D] [--prefill 8K,32K,...] [--decode 32K,...] [--window W --sinks S] [-r N]
       [--max-seconds S] [--deadline S] [--json FILE]
"""
import argparse
import contextlib
import json
import math
import statistics
import sys
import time

import torch

SHAPES = {"qwen3-30b-a3b": (32, 4, 128), "llama3-8b": (32, 8, 128)}
LONG_CALL_S = 2.0  # longer calls run once; one-time costs (a cuDNN graph per shape) stay in the time
MIN_SAMPLE_MS = 20.0  # short calls repeat within a sample to reach this
ELEM_BYTES = 2  # bf16


def log(msg):
    print(f"bench-torch: {msg}", file=sys.stderr, flush=True)


def parse_sizes(text):
    if text in ("", "none"):
        return []
    out = []
    for item in text.split(","):
        mult = {"k": 1024, "m": 1024 * 1024}.get(item[-1:].lower(), 1)
        out.append(int(item[:-1] if mult > 1 else item) * mult)
    return out


def size_label(n):
    if n % (1 << 20) == 0:
        return f"{n >> 20}M"
    return f"{n >> 10}K" if n % 1024 == 0 else str(n)


# Visible (query, key) pairs and bytes: the rules of tools/purbo/attention-cost.h.
def visible_keys(p, window, sinks):
    if window <= 0:
        return p + 1
    in_window = min(window, p + 1)
    return in_window + min(sinks, p + 1 - in_window)


def sum_of_min(t_max, cap):
    if t_max <= 0:
        return 0
    m = min(t_max, cap)
    return m * (m + 1) // 2 + (t_max - m) * cap


def work(mode, n, h, g, d, window, sinks):
    if mode == "prefill":
        pairs = n * (n + 1) // 2 if window <= 0 else sum_of_min(n, window) + sum_of_min(n - window, sinks)
        nbytes = 2 * n * g * d * ELEM_BYTES + 2 * n * h * d * ELEM_BYTES
    else:
        pairs = visible_keys(n - 1, window, sinks)
        nbytes = 2 * pairs * g * d * ELEM_BYTES + 2 * h * d * ELEM_BYTES
    return pairs, 4.0 * d * h * pairs, float(nbytes)


def time_fn(fn, reps, long_call):
    """Median ms per call; (ms, reps, inner)."""
    if long_call:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3, 1, 1
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    warm_ms = (time.perf_counter() - t0) * 1e3
    inner = int(min(1000, max(1, math.ceil(MIN_SAMPLE_MS / max(warm_ms, 1e-3)))))
    samples = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / inner)
    return statistics.median(samples), reps, inner


def machine_refs():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms, _, _ = time_fn(lambda: torch.matmul(a, b), 10, False)
    gemm_tflops = 2.0 * 8192**3 / (ms * 1e-3) / 1e12
    del a, b
    x = torch.empty(1 << 30, device="cuda", dtype=torch.int16)  # 2 GiB
    y = torch.empty_like(x)
    ms, _, _ = time_fn(lambda: y.copy_(x), 10, False)
    copy_gbps = 2.0 * x.numel() * 2 / (ms * 1e-3) / 1e9  # read + written
    del x, y
    torch.cuda.empty_cache()
    return gemm_tflops, copy_gbps


class Runner:
    """Builds the tensors of one case and returns a call for (backend, gqa), or raises."""

    def __init__(self, mode, n, h, g, d, window, sinks):
        self.mode, self.n, self.h, self.g, self.d = mode, n, h, g, d
        self.window, self.sinks = window, sinks
        n_q = n if mode == "prefill" else 1
        # (1, tokens, heads, d) in memory, as a model produces them; (1, heads, tokens, d) views.
        self.q = torch.randn(1, n_q, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        self.k = torch.randn(1, n, g, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        self.v = torch.randn(1, n, g, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        self.k_rep = self.v_rep = None
        self.block_mask = None

    def repeated(self):
        if self.k_rep is None:
            r = self.h // self.g
            self.k_rep = self.k.repeat_interleave(r, dim=1)
            self.v_rep = self.v.repeat_interleave(r, dim=1)
        return self.k_rep, self.v_rep

    def call(self, backend, gqa):
        """(fn, context): fn runs the op once; time it inside the context (the SDPA backend)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        native = gqa == "native"
        k, v = (self.k, self.v) if native else self.repeated()
        causal = self.mode == "prefill"
        if backend == "flex":
            return self.flex_call(k, v, native), contextlib.nullcontext()
        kind = SDPBackend.FLASH_ATTENTION if backend == "fa2" else SDPBackend.CUDNN_ATTENTION
        sdpa, q = torch.nn.functional.scaled_dot_product_attention, self.q
        return (lambda: sdpa(q, k, v, is_causal=causal, enable_gqa=native)), sdpa_kernel(kind)

    def flex_call(self, k, v, native):
        from torch.nn.attention.flex_attention import create_block_mask

        window, sinks = self.window, self.sinks
        offset = 0 if self.mode == "prefill" else self.n - 1  # the decode query sits at n - 1

        def mask_mod(b, h, q_idx, kv_idx):
            p = q_idx + offset
            return (kv_idx <= p) & ((p - kv_idx < window) | (kv_idx < sinks))

        if self.block_mask is None:
            t0 = time.perf_counter()
            size = dict(B=None, H=None, Q_LEN=self.q.shape[2], KV_LEN=self.n, device="cuda")
            try:  # compiled: builds the block mask without materialising the (q, kv) grid
                self.block_mask = create_block_mask(mask_mod, **size, _compile=True)
            except TypeError:  # a torch without the _compile argument
                self.block_mask = create_block_mask(mask_mod, **size)
            log(f"  flex block mask in {time.perf_counter() - t0:.1f} s")
        flex = compiled_flex()
        q, bm = self.q, self.block_mask
        return lambda: flex(q, k, v, block_mask=bm, enable_gqa=native)


_flex = None


def compiled_flex():
    global _flex
    if _flex is None:
        from torch.nn.attention.flex_attention import flex_attention

        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        _flex = torch.compile(flex_attention, dynamic=False)
    return _flex


def run_case(runner, backend, gqa_choice, reps, long_call):
    """Returns (ms, reps, inner, gqa); tries both GQA forms when gqa_choice is None."""
    results = []
    for gqa in [gqa_choice] if gqa_choice else ["native", "repeat"]:
        try:
            fn, context = runner.call(backend, gqa)
            with context:
                if backend == "flex":
                    t0 = time.perf_counter()
                    fn()  # compiles for this shape; not part of the time
                    torch.cuda.synchronize()
                    log(f"  flex compile + first call ({gqa}) in {time.perf_counter() - t0:.1f} s")
                ms, r, inner = time_fn(fn, reps, long_call)
            results.append((ms, r, inner, gqa))
            log(f"  {backend} gqa={gqa}: {ms:.3f} ms")
        except torch.OutOfMemoryError as e:
            results.append(("out of memory: " + str(e).splitlines()[0], gqa))
            torch.cuda.empty_cache()
        except Exception as e:  # an unsupported shape or backend: report it, go on
            results.append((f"{type(e).__name__}: " + (str(e).splitlines() or [""])[0][:200], gqa))
    timed = [x for x in results if len(x) == 4]
    if timed:
        return min(timed, key=lambda x: x[0])
    raise RuntimeError("; ".join(f"{g}: {m}" for m, g in results))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="qwen3-30b-a3b", choices=sorted(SHAPES))
    ap.add_argument("--heads", type=int, default=0)
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--head-dim", type=int, default=0)
    ap.add_argument("--prefill", default="8K,32K,128K,512K,1M")
    ap.add_argument("--decode", default="32K,128K,512K,1M")
    ap.add_argument("--window", type=int, default=0)
    ap.add_argument("--sinks", type=int, default=0)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--deadline", type=float, default=0.0, help="skip cases that would end after S s (0: none)")
    ap.add_argument("--json", default="", help="write the JSON lines to FILE instead of stdout")
    ap.add_argument("--no-machine", action="store_true", help="skip the GEMM and copy references")
    a = ap.parse_args()
    start = time.perf_counter()
    h, g, d = SHAPES[a.shape]
    h, g, d = a.heads or h, a.kv_heads or g, a.head_dim or d
    out = open(a.json, "w") if a.json else sys.stdout

    def emit(row):
        out.write(json.dumps(row) + "\n")
        out.flush()

    if not torch.cuda.is_available():
        log("no CUDA device visible to torch")
        return 1
    gpu = torch.cuda.get_device_name(0)
    log(f"GPU {gpu}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    if not a.no_machine:
        gemm, copy = machine_refs()
        log(f"bf16 GEMM 8192^3: {gemm:.1f} TFLOP/s; device copy: {copy:.1f} GB/s (read + written)")
        emit({"machine": True, "device": gpu, "torch": torch.__version__, "gemm_bf16_tflops": gemm,
              "copy_gbps": copy})

    backends = ["flex"] if a.window > 0 else ["fa2", "cudnn"]
    cases = [("prefill", n) for n in parse_sizes(a.prefill)] + [("decode", n) for n in parse_sizes(a.decode)]
    rates = {}  # (backend, mode) -> seconds per pair (prefill) or per byte (decode)
    gqa_pick = {}  # (backend, mode) -> the faster GQA form, from the first case
    rows = []
    for mode, n in cases:
        pairs, flops, nbytes = work(mode, n, h, g, d, a.window, a.sinks)
        units = pairs if mode == "prefill" else nbytes
        runner = None
        for backend in backends:
            row = {"shape": a.shape, "heads": h, "kv_heads": g, "head_dim": d, "mode": mode, "n": n,
                   "window": a.window, "sinks": a.sinks, "ms": None, "tflops": None, "gbps": None,
                   "device": gpu, "backend": backend, "gqa": None, "pairs": pairs, "skipped": None}
            rate = rates.get((backend, mode), 0.0)
            predicted_call = rate * units
            long_call = predicted_call > LONG_CALL_S
            predicted = predicted_call * (1 if long_call else a.repetitions + 1)
            elapsed = time.perf_counter() - start
            if predicted > a.max_seconds:
                row["skipped"] = f"skipped: predicted {predicted:.1f} s > budget {a.max_seconds:.0f} s"
            elif a.deadline > 0 and elapsed + predicted > a.deadline:
                row["skipped"] = f"skipped: predicted {predicted:.1f} s would pass the deadline ({elapsed:.0f} s of {a.deadline:.0f} s used)"
            else:
                log(f"{backend} {mode} n={size_label(n)}" + (f", predicted {predicted:.2f} s" if rate else ""))
                try:
                    if runner is None:
                        runner = Runner(mode, n, h, g, d, a.window, a.sinks)
                    ms, reps, inner, gqa = run_case(runner, backend, gqa_pick.get((backend, mode)),
                                                    a.repetitions, long_call)
                    gqa_pick.setdefault((backend, mode), gqa)
                    rates[(backend, mode)] = ms * 1e-3 / units
                    row.update(ms=ms, tflops=flops / (ms * 1e-3) / 1e12, gbps=nbytes / (ms * 1e-3) / 1e9, gqa=gqa,
                               reps=reps, inner=inner)
                except torch.OutOfMemoryError as e:
                    row["skipped"] = "failed: out of memory: " + str(e).splitlines()[0]
                except Exception as e:
                    row["skipped"] = f"failed: {type(e).__name__}: " + (str(e).splitlines() or [""])[0][:300]
            log(f"{backend} {mode} n={size_label(n)}: " +
                (row["skipped"] or f"{row['ms']:.3f} ms, {row['tflops']:.1f} TFLOP/s, {row['gbps']:.1f} GB/s"))
            emit(row)
            rows.append(row)
        del runner
        torch.cuda.empty_cache()

    print("\n| backend | mode | n | window | sinks | gqa | ms | TFLOP/s | GB/s |", file=sys.stderr)
    print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |", file=sys.stderr)
    for r in rows:
        cells = r["skipped"] + " | - | -" if r["skipped"] else f"{r['ms']:.3f} | {r['tflops']:.1f} | {r['gbps']:.1f}"
        print(f"| {r['backend']} | {r['mode']} | {size_label(r['n'])} | {r['window']} | {r['sinks']} | "
              f"{r['gqa'] or '-'} | {cells} |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
