#!/usr/bin/env python3
"""GGUF versions of tiny Hugging Face checkpoints, written the way llama.cpp's converter does.

For tests/model/test-model-gguf.cpp: each tests/fixtures/hf/<name> checkpoint (with its
transformers reference) is written to tests/fixtures/gguf-models/<name>.gguf with llama.cpp's
metadata keys and tensor names, the Llama q/k row permutation, Llama-3 RoPE scaling as the
rope_freqs.weight divisors, and a byte-level tokenizer (256 byte tokens + <|endoftext|>), so
that the logits of the GGUF route can be compared with the same transformers reference.

Usage: python3 scripts/gen_gguf_model_fixtures.py   (numpy, gguf)
"""
import json
import os

import gguf
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
HF = os.path.join(ROOT, "tests", "fixtures", "hf")
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf-models")


def bytes_to_unicode():
    """GPT-2's byte -> printable character table of byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def read_safetensors(path):
    """name -> numpy array; BF16 stays as its raw uint16 bits (numpy has no bfloat16)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        x = np.frombuffer(data[begin:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = x
    return out


def load_weights(folder):
    weights = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors") and f != "reference.safetensors":
            weights.update(read_safetensors(os.path.join(folder, f)))
    return weights


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf reorders Llama q/k rows for its adjacent-pair RoPE."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_factors(rp, head_dim):
    """Per-pair divisors of the frequencies (as llama.cpp stores Llama-3 scaling)."""
    base = rp["rope_theta"]
    inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], \
        rp["original_max_position_embeddings"]
    lo_wavelen, hi_wavelen = old / lo, old / hi
    out = []
    for f in inv:
        wavelen = 2 * np.pi / f
        if wavelen < hi_wavelen:
            out.append(1.0)
        elif wavelen > lo_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def convert(name, arch):
    folder = os.path.join(HF, name)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = load_weights(folder)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    rp = cfg.get("rope_parameters") or {}
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".gguf")
    wr = gguf.GGUFWriter(path, arch)
    wr.add_name(name)
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    wr.add_key_length(head_dim)
    wr.add_value_length(head_dim)
    wr.add_rope_dimension_count(head_dim)
    wr.add_rope_freq_base(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    table = bytes_to_unicode()
    tokens = [table[b] for b in range(256)] + ["<|endoftext|>"]
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("default")
    wr.add_token_list(tokens)
    wr.add_token_types([1] * 256 + [3])
    wr.add_token_merges([])
    wr.add_eos_token_id(256)
    wr.add_bos_token_id(256)
    wr.add_add_bos_token(False)

    def t(hf_name, gguf_name, transform=None):
        x = w[hf_name]
        if transform is not None:
            x = transform(x)
        if x.ndim == 1:  # norms and biases are f32 in llama.cpp's files
            x = (x.astype(np.uint32) << 16).view(np.float32) if x.dtype == np.uint16 else x.astype(np.float32)
        if x.dtype == np.uint16:  # bf16 bits, stored as they are
            wr.add_tensor(gguf_name, np.ascontiguousarray(x), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            wr.add_tensor(gguf_name, np.ascontiguousarray(x))

    t("model.embed_tokens.weight", "token_embd.weight")
    t("model.norm.weight", "output_norm.weight")
    if not cfg.get("tie_word_embeddings", False):
        t("lm_head.weight", "output.weight")
    if rp.get("rope_type") == "llama3":
        wr.add_tensor("rope_freqs.weight", llama3_factors(rp, head_dim))
    for i in range(cfg["num_hidden_layers"]):
        p, q = f"model.layers.{i}.", f"blk.{i}."
        perm_q = (lambda x: permute(x, n_head)) if arch == "llama" else None
        perm_k = (lambda x: permute(x, n_kv)) if arch == "llama" else None
        t(p + "input_layernorm.weight", q + "attn_norm.weight")
        t(p + "self_attn.q_proj.weight", q + "attn_q.weight", perm_q)
        t(p + "self_attn.k_proj.weight", q + "attn_k.weight", perm_k)
        t(p + "self_attn.v_proj.weight", q + "attn_v.weight")
        t(p + "self_attn.o_proj.weight", q + "attn_output.weight")
        if arch == "qwen2":
            for n in "qkv":
                t(p + f"self_attn.{n}_proj.bias", q + f"attn_{n}.bias")
        if arch == "qwen3":
            t(p + "self_attn.q_norm.weight", q + "attn_q_norm.weight")
            t(p + "self_attn.k_norm.weight", q + "attn_k_norm.weight")
        t(p + "post_attention_layernorm.weight", q + "ffn_norm.weight")
        t(p + "mlp.gate_proj.weight", q + "ffn_gate.weight")
        t(p + "mlp.up_proj.weight", q + "ffn_up.weight")
        t(p + "mlp.down_proj.weight", q + "ffn_down.weight")
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    print(path, os.path.getsize(path))


if __name__ == "__main__":
    convert("llama-llama3rope-tied", "llama")
    convert("qwen2-sharded", "qwen2")
    convert("qwen3-headdim32", "qwen3")
