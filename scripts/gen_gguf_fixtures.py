#!/usr/bin/env python3
"""Writes the small GGUF and block-quantisation fixtures under tests/fixtures/gguf/ with gguf-py.

  small.gguf           every metadata value type, arrays, one tensor of each readable type
  small-expected.json  its metadata and every tensor's values as gguf-py dequantises them
  quants.json          per format: input floats (where gguf-py can quantise), the block bytes
                       and gguf-py's dequantised floats; K-quant blocks are random bytes with
                       sane f16 scales, since gguf-py has no K-quant quantiser

Usage: python scripts/gen_gguf_fixtures.py   (deterministic: fixed seeds)
"""
import json
import pathlib

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V
from gguf.quants import quantize, dequantize

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gguf"

QUANTISABLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16]
K_QUANTS = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# Byte offsets of the f16 scale fields in each K-quant block (block_q*_K in ggml-common.h).
K_SCALE_OFFSETS = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}


def floats(a):
    """float32 values as JSON numbers (a double holds every float32 exactly)."""
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def quant_input(rng, n_blocks):
    """Random rows plus blocks that exercise edge cases: all zero, constant, negative extreme."""
    x = rng.standard_normal((n_blocks, 32)).astype(np.float32)
    x[1] = 0.0
    x[2] = 0.75
    x[3, 5] = -9.0
    return x.reshape(-1)


def random_k_blocks(rng, qtype, n_blocks):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in K_SCALE_OFFSETS[qtype]:
        # Scales in [2^-10, 2^-4): finite, normal, typical of real weights.
        d = (rng.uniform(1.0, 64.0, size=n_blocks) / 1024.0).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(n_blocks, 2)
    return raw


def write_quants_json(rng):
    out = {}
    for qtype in QUANTISABLE:
        x = quant_input(rng, 4)
        q = quantize(x.reshape(1, -1), qtype)
        out[qtype.name.lower()] = {
            "input": floats(x),
            "blocks_hex": q.tobytes().hex(),
            "dequant": floats(dequantize(q, qtype)),
        }
    for qtype in K_QUANTS:
        raw = random_k_blocks(rng, qtype, 2)
        out[qtype.name.lower()] = {
            "blocks_hex": raw.tobytes().hex(),
            "dequant": floats(dequantize(raw.reshape(1, -1), qtype)),
        }
    (OUT / "quants.json").write_text(json.dumps(out, indent=0) + "\n")


METADATA = [
    # (key, value, value type, array element type)
    ("test.u8", 200, V.UINT8, None),
    ("test.i8", -100, V.INT8, None),
    ("test.u16", 60000, V.UINT16, None),
    ("test.i16", -30000, V.INT16, None),
    ("test.u32", 4000000000, V.UINT32, None),
    ("test.i32", -2000000000, V.INT32, None),
    ("test.f32", 3.140625, V.FLOAT32, None),
    ("test.bool", True, V.BOOL, None),
    ("test.string", "h\u00e9llo w\u00f6rld", V.STRING, None),
    ("test.u64", 2**63 + 5, V.UINT64, None),
    ("test.u64_small", 123, V.UINT64, None),
    ("test.i64", -(2**62), V.INT64, None),
    ("test.f64", 2.718281828459045, V.FLOAT64, None),
    ("test.array.i32", [1, -2, 3], V.ARRAY, V.INT32),
    ("test.array.f32", [0.5, -1.25], V.ARRAY, V.FLOAT32),
    ("test.array.string", ["a", "", "\u00fc", "<|endoftext|>"], V.ARRAY, V.STRING),
    ("test.array.u8", [1, 2, 255], V.ARRAY, V.UINT8),
    ("test.array.bool", [True, False], V.ARRAY, V.BOOL),
    ("test.array.u64", [0, 2**64 - 1], V.ARRAY, V.UINT64),
    ("test.array.f64", [1e300, -2.5], V.ARRAY, V.FLOAT64),
]

TYPE_NAMES = {V.UINT8: "u8", V.INT8: "i8", V.UINT16: "u16", V.INT16: "i16", V.UINT32: "u32",
              V.INT32: "i32", V.FLOAT32: "f32", V.BOOL: "bool", V.STRING: "string",
              V.ARRAY: "array", V.UINT64: "u64", V.INT64: "i64", V.FLOAT64: "f64"}


def write_small_gguf(rng):
    path = OUT / "small.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    meta_json = {"general.architecture": {"type": "string", "value": "llama"},
                 "general.alignment": {"type": "u32", "value": 64}}
    for key, value, vtype, sub in METADATA:
        w.add_key_value(key, value, vtype, sub_type=sub)
        entry = {"type": TYPE_NAMES[vtype], "value": value}
        if sub is not None:
            entry["array_type"] = TYPE_NAMES[sub]
        meta_json[key] = entry

    tensors = []

    def add(name, data, qtype, shape):
        """shape outermost first; data: float32 values for plain types or raw block bytes."""
        if qtype == T.F32:
            w.add_tensor(name, data.astype(np.float32).reshape(shape))
            deq = data
        elif qtype == T.F16:
            w.add_tensor(name, data.astype(np.float16).reshape(shape))
            deq = data.astype(np.float16).astype(np.float32)
        elif qtype == T.I32:
            w.add_tensor(name, data.astype(np.int32).reshape(shape))
            deq = None
        else:
            w.add_tensor(name, data, raw_dtype=qtype)  # data: (rows, row bytes) uint8
            deq = dequantize(data, qtype)
        entry = {"name": name, "ggml_type": int(qtype), "shape": list(shape)}
        if deq is None:
            entry["ints"] = [int(v) for v in data.ravel()]
        else:
            entry["dequant"] = floats(deq)
        tensors.append(entry)

    add("plain.f32", rng.standard_normal(15).astype(np.float32), T.F32, (3, 5))
    add("plain.f16", rng.standard_normal(16).astype(np.float32), T.F16, (2, 8))
    add("plain.i32", np.array([1, -7, 2**31 - 1, -(2**31)], dtype=np.int32), T.I32, (4,))
    add("plain.f32_4d", rng.standard_normal(24).astype(np.float32), T.F32, (2, 1, 3, 4))
    for qtype in QUANTISABLE:
        x = rng.standard_normal((3, 64)).astype(np.float32)
        add(f"quant.{qtype.name.lower()}", quantize(x, qtype), qtype, (3, 64))
    for qtype in K_QUANTS:
        raw = random_k_blocks(rng, qtype, 2)
        add(f"quant.{qtype.name.lower()}", raw.reshape(2, -1), qtype, (2, 256))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    def jsonable(v):
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            return v
        return [jsonable(x) for x in v]

    for entry in meta_json.values():
        entry["value"] = jsonable(entry["value"])
    # u64 values above 2^53 do not survive a JSON double: store integers as strings.
    for entry in meta_json.values():
        t = entry.get("array_type", entry["type"])
        if t in ("u64", "i64"):
            v = entry["value"]
            entry["value"] = [str(x) for x in v] if isinstance(v, list) else str(v)
    doc = {"version": 3, "alignment": 64, "metadata": meta_json, "tensors": tensors}
    (OUT / "small-expected.json").write_text(json.dumps(doc, indent=0) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write_quants_json(np.random.default_rng(1234))
    write_small_gguf(np.random.default_rng(5678))
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(OUT.parent.parent.parent)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
