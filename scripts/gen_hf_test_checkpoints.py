#!/usr/bin/env python3
"""Writes small Hugging Face style fixtures for tests/model (numpy + safetensors, no torch).

tests/fixtures/hf/reference.safetensors   a few tensors of each dtype, written by the reference
                                          `safetensors` package, to check our reader against it
tests/fixtures/hf/tiny-qwen3-sharded/     a 2-layer Qwen3 (bf16) split over two shards with a
                                          model.safetensors.index.json, tokenizer stand-ins
tests/fixtures/hf/rope-reference.json     inv_freq per RoPE type, computed here in float32
                                          following transformers' modeling_rope_utils.py step
                                          by step (an independent twin of our C++ code)
Run from the repository root: python3 scripts/gen_hf_test_checkpoints.py
"""
import json
import math
import os

import numpy as np
from safetensors.numpy import save_file

OUT = os.path.join("tests", "fixtures", "hf")
F32 = np.float32


def bf16(x):
    """float32 array -> bfloat16 bits (uint16), round to nearest even."""
    bits = np.asarray(x, dtype=F32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return bits.astype(np.uint16)


def write_reference():
    tensors = {
        "w": np.arange(6, dtype=F32).reshape(2, 3),
        "h": np.array([1.5, -2.0], dtype=np.float16),
        "ids": np.array([1, 2, 3], dtype=np.int64),
    }
    save_file(tensors, os.path.join(OUT, "reference.safetensors"), metadata={"note": "reference"})
    # numpy has no bfloat16: patch the header of a one-tensor u16 file to say BF16.
    path = os.path.join(OUT, "reference.safetensors")
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    end = len(data)
    header["bf"] = {"dtype": "BF16", "shape": [2], "data_offsets": [end, end + 4]}
    data += bf16([3.0, 0.5]).tobytes()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    open(path, "wb").write(len(text).to_bytes(8, "little") + text + data)


def write_tiny_qwen3():
    d = os.path.join(OUT, "tiny-qwen3-sharded")
    os.makedirs(d, exist_ok=True)
    e, n_layer, n_head, n_kv, hd, f, v = 16, 2, 2, 1, 8, 24, 32
    cfg = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": e,
        "num_hidden_layers": n_layer, "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "head_dim": hd, "intermediate_size": f, "vocab_size": v, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
        "attention_bias": False, "hidden_act": "silu", "torch_dtype": "bfloat16",
        "use_sliding_window": False, "sliding_window": None, "rope_scaling": None,
    }
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    rng = np.random.default_rng(0)

    def w(*shape):
        return bf16(rng.standard_normal(shape).astype(F32) * 0.1)

    shards = [{}, {}]
    shards[0]["model.embed_tokens.weight"] = w(v, e)
    for il in range(n_layer):
        s = shards[il]
        p = f"model.layers.{il}."
        s[p + "input_layernorm.weight"] = bf16(np.full(e, 1.0 + il, dtype=F32))
        s[p + "post_attention_layernorm.weight"] = bf16(np.full(e, 0.5, dtype=F32))
        s[p + "self_attn.q_proj.weight"] = w(n_head * hd, e)
        s[p + "self_attn.k_proj.weight"] = w(n_kv * hd, e)
        s[p + "self_attn.v_proj.weight"] = w(n_kv * hd, e)
        s[p + "self_attn.o_proj.weight"] = w(e, n_head * hd)
        s[p + "self_attn.q_norm.weight"] = bf16(np.linspace(0.5, 1.0, hd, dtype=F32))
        s[p + "self_attn.k_norm.weight"] = bf16(np.linspace(1.0, 2.0, hd, dtype=F32))
        s[p + "mlp.gate_proj.weight"] = w(f, e)
        s[p + "mlp.up_proj.weight"] = w(f, e)
        s[p + "mlp.down_proj.weight"] = w(e, f)
    shards[1]["model.norm.weight"] = bf16(np.full(e, 2.0, dtype=F32))
    weight_map = {}
    for i, s in enumerate(shards):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        # Stored as U16 by numpy; the header is rewritten to BF16 below.
        save_file(s, os.path.join(d, name), metadata={"format": "pt"})
        path = os.path.join(d, name)
        raw = open(path, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
        for k, entry in header.items():
            if k != "__metadata__":
                entry["dtype"] = "BF16"
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        open(path, "wb").write(len(text).to_bytes(8, "little") + text + raw[8 + n :])
        weight_map.update({k: name for k in s})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    json.dump(index, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
    open(os.path.join(d, "tokenizer.json"), "w").write("{}\n")
    open(os.path.join(d, "tokenizer_config.json"), "w").write("{}\n")


# ---- RoPE, float32, one numpy op per torch op of modeling_rope_utils.py -------------------
def powf(base, exponent):
    """float32 base ** float32 exponent, correctly rounded (as glibc's powf; numpy's vectorised
    float32 power is off by 1 ulp in ~20% of cases, torch's Sleef powf by up to 1 ulp)."""
    return np.array([F32(float(F32(base)) ** float(x)) for x in exponent], dtype=F32)


def default_inv_freq(base, dim):
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(F32) / F32(dim)
    # torch: scalar / tensor == reciprocal(tensor) * scalar
    return F32(1.0) / powf(base, exponent)


def llama3(base, dim, factor, low, high, old_ctx):
    inv = default_inv_freq(base, dim)
    lw, hw = F32(old_ctx / low), F32(old_ctx / high)
    wavelen = (F32(1.0) / inv) * F32(2 * math.pi)
    scaled = np.where(wavelen > lw, inv / F32(factor), inv)
    smooth = ((F32(1.0) / wavelen) * F32(old_ctx) - F32(low)) / F32(high - low)
    smoothed = ((F32(1.0) - smooth) * scaled) / F32(factor) + smooth * scaled
    medium = ~(wavelen < hw) & ~(wavelen > lw)
    return np.where(medium, smoothed, scaled).astype(F32)


def yarn(base, dim, factor, orig, beta_fast=32, beta_slow=1, truncate=True):
    def corr(n_rot):
        return (dim * math.log(orig / (n_rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr(beta_fast), corr(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos = powf(base, np.arange(0, dim, 2).astype(F32) / F32(dim))
    extra = F32(1.0) / pos
    inter = F32(1.0) / (F32(factor) * pos)
    ramp = np.clip((np.arange(dim // 2, dtype=F32) - F32(low)) / F32(high - low), 0, 1)
    ef = F32(1.0) - ramp
    inv = inter * (F32(1.0) - ef) + extra * ef
    attn = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return inv.astype(F32), attn


def write_rope_reference():
    cases = []

    def add(name, rope, inv, attn=1.0):
        cases.append({"name": name, "rope": rope, "inv_freq": [float(x) for x in inv],
                      "attn_factor": attn})

    add("default_64_1e4", {"theta": 10000.0, "rotary_dim": 64, "type": "default"},
        default_inv_freq(10000.0, 64))
    add("default_128_5e5", {"theta": 500000.0, "rotary_dim": 128, "type": "default"},
        default_inv_freq(500000.0, 128))
    add("linear_64_f4", {"theta": 10000.0, "rotary_dim": 64, "type": "linear", "factor": 4.0},
        default_inv_freq(10000.0, 64) / F32(4.0))
    add("llama3_128", {"theta": 500000.0, "rotary_dim": 128, "type": "llama3", "factor": 8.0,
                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position": 8192},
        llama3(500000.0, 128, 8.0, 1.0, 4.0, 8192))
    inv, attn = yarn(1000000.0, 128, 4.0, 32768)
    add("yarn_128_f4", {"theta": 1000000.0, "rotary_dim": 128, "type": "yarn", "factor": 4.0,
                        "original_max_position": 32768}, inv, attn)
    inv, attn = yarn(10000.0, 64, 2.0, 4096, truncate=False)
    add("yarn_64_f2_notrunc", {"theta": 10000.0, "rotary_dim": 64, "type": "yarn", "factor": 2.0,
                               "original_max_position": 4096, "truncate": False}, inv, attn)
    json.dump({"source": "scripts/gen_hf_test_checkpoints.py (numpy float32 twin)",
               "cases": cases}, open(os.path.join(OUT, "rope-reference.json"), "w"), indent=1)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write_reference()
    write_tiny_qwen3()
    write_rope_reference()
