#!/usr/bin/env python3
"""Reference data from Hugging Face transformers, for purbo's model tests.

Runs where torch + transformers are installed (an H100/H200 machine was used; a CPU works
too, only slower). Writes into an output folder (default tests/fixtures):

  hf/<name>/            tiny random-weight checkpoints (config.json + safetensors), one per
                        family and variant, and reference.safetensors with, for fixed token
                        ids, the logits and the residual stream after every layer, in fp32
  hf/<name>/reference.json   the token ids and what the tensors are
  rope/rope-reference.json   inv_freq and attention factor for rope scaling variants
  smollm2/              (only with --gguf) the default model loaded by transformers from
                        its GGUF: greedy continuations of fixed prompts, prompt ids and
                        last-position logits; token ids of a varied text set

Usage: python3 scripts/gen_fixtures.py [--out DIR] [--gguf path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import argparse
import json
import os
import shutil
import zlib

import torch
import transformers
from safetensors.torch import save_file

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# Texts for tokenizer references: scripts, digits, whitespace runs, emoji, code.
TOKENIZER_TEXTS = [
    "",
    " ",
    "Hello world",
    "Hello, world! How are you today?",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nmany\r\nCRLF",
    "numbers 1234567890 and 3.14159, -42, 1e-5, 2026-11-28",
    "a 100000-token context costs 12.5 GB",
    "caf\u00e9 vs cafe\u0301 (composed vs decomposed)",
    "Stra\u00dfe \u00fcber \u00c5ngstr\u00f6m na\u00efve r\u00e9sum\u00e9",
    "\u4f60\u597d\uff0c\u4e16\u754c\u3002\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "emoji \U0001F600\U0001F680 family \U0001F468\u200d\U0001F469\u200d\U0001F467 flag \U0001F1EB\U0001F1F7",
    "def f(x):\n    return x ** 2  # square\n\nprint(f(3))",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say you've done it, we'd've",
    "URL: https://example.com/path?q=1&r=two#frag",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
    "!!!???...,,,;;;:::---___===+++",
    "UPPER lower MiXeD CamelCase snake_case kebab-case",
]


def tiny_configs():
    """One tiny config per family/variant; 2-3 layers, hidden 64, vocab 320."""
    common = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5)
    L = transformers
    out = {}
    out["llama-llama3rope-tied"] = (L.LlamaConfig(**common, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}), "bfloat16", None)
    out["llama-linear-oldspelling"] = (L.LlamaConfig(**common, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}), "float32", None)
    out["llama-yarn"] = (L.LlamaConfig(**common, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 32}), "float32", None)
    out["mistral"] = (L.MistralConfig(**common, head_dim=16, sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), "float32", None)
    out["qwen2-sharded"] = (L.Qwen2Config(**common, tie_word_embeddings=False, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), "float16", "60KB")
    q3 = dict(common)
    out["qwen3-headdim32"] = (L.Qwen3Config(**q3, head_dim=32, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}), "bfloat16", None)
    return out


def to_old_rope_spelling(config_path):
    """Rewrites rope_parameters into the pre-transformers-5 spelling (rope_scaling + rope_theta)."""
    with open(config_path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp.pop("rope_theta")
    rp["type"] = rp.pop("rope_type")
    cfg["rope_scaling"] = rp
    with open(config_path, "w") as f:
        json.dump(cfg, f, indent=2)


def residual_hooks(model):
    """Captures the residual stream after each decoder layer and after the final norm."""
    captured = {}

    def make(name):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            captured[name] = out.detach().float().cpu()[0].contiguous()
        return hook

    for i, layer in enumerate(model.model.layers):
        layer.register_forward_hook(make(f"layer.{i}"))
    model.model.norm.register_forward_hook(make("final_norm"))
    model.model.embed_tokens.register_forward_hook(make("embedding"))
    return captured


def gen_tiny(out_dir):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    for name, (config, dtype, shard) in tiny_configs().items():
        path = os.path.join(out_dir, "hf", name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        torch.manual_seed(zlib.crc32(name.encode()) % 1000)  # stable across runs, unlike hash()
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        # Random init scaled up so that every layer matters (default init is tiny).
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if p.dim() == 1:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1] ** 0.5))
                if pname.endswith("bias"):
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
        model = model.to(getattr(torch, dtype))
        kwargs = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(path, safe_serialization=True, **kwargs)
        if name.endswith("oldspelling"):
            to_old_rope_spelling(os.path.join(path, "config.json"))
        # Reference computed in fp32 from the stored (possibly bf16/f16) weights.
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(DEVICE).eval()
        captured = residual_hooks(model)
        ids = torch.randint(0, config.vocab_size, (1, 40), generator=g)
        with torch.no_grad():
            logits = model(ids.to(DEVICE)).logits.float().cpu()[0].contiguous()
        tensors = {"logits": logits, **captured}
        save_file(tensors, os.path.join(path, "reference.safetensors"))
        with open(os.path.join(path, "reference.json"), "w") as f:
            json.dump({"input_ids": ids[0].tolist(), "dtype_on_disk": dtype,
                       "transformers": transformers.__version__, "torch": torch.__version__,
                       "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                       "tensors": "logits (n, vocab); embedding, layer.i (n, hidden) residual after "
                                  "layer i; final_norm (n, hidden); all fp32"}, f, indent=1)
        print(f"{name}: {sum(os.path.getsize(os.path.join(path, x)) for x in os.listdir(path))} bytes")


def gen_rope(out_dir):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cases = [
        ("default", transformers.LlamaConfig(head_dim=64, rope_parameters={"rope_type": "default", "rope_theta": 100000.0})),
        ("linear", transformers.LlamaConfig(head_dim=128, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0})),
        ("llama3", transformers.LlamaConfig(head_dim=128, max_position_embeddings=131072, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
        ("yarn", transformers.Qwen3Config(head_dim=128, max_position_embeddings=131072, rope_parameters={
            "rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 32768})),
        ("yarn-beta", transformers.LlamaConfig(head_dim=64, max_position_embeddings=65536, rope_parameters={
            "rope_type": "yarn", "rope_theta": 10000.0, "factor": 16.0, "original_max_position_embeddings": 4096,
            "beta_fast": 16.0, "beta_slow": 2.0})),
    ]
    out = []
    for name, cfg in cases:
        rtype = cfg.rope_parameters["rope_type"]
        if rtype == "default" and "default" not in ROPE_INIT_FUNCTIONS:
            from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
            inv, attn = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
        else:
            inv, attn = ROPE_INIT_FUNCTIONS[rtype](cfg, "cpu")
        out.append({"name": name, "config": cfg.rope_parameters, "head_dim": cfg.head_dim,
                    "max_position_embeddings": cfg.max_position_embeddings,
                    "inv_freq": [float(x) for x in inv.float().tolist()], "attention_factor": float(attn)})
    os.makedirs(os.path.join(out_dir, "rope"), exist_ok=True)
    with open(os.path.join(out_dir, "rope", "rope-reference.json"), "w") as f:
        json.dump(out, f, indent=1)


def gen_smollm2(out_dir, gguf_path):
    folder, fname = os.path.split(os.path.abspath(gguf_path))
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    model = model.to(DEVICE).eval()
    dst = os.path.join(out_dir, "smollm2")
    os.makedirs(dst, exist_ok=True)
    prompts = [
        "The capital of France is",
        "def fibonacci(n):\n",
        "Once upon a time, in a small village by the sea,",
        tok.apply_chat_template([{"role": "user", "content": "What is the tallest mountain in the world?"}],
                                tokenize=False, add_generation_prompt=True),
    ]
    results, logits = [], {}
    for i, prompt in enumerate(prompts):
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(DEVICE)
        with torch.no_grad():
            # An explicit mask: without it generate() treats every pad-id token in the prompt
            # (here <|im_end|>, which doubles as eos/pad) as padding and masks it out.
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32,
                                 do_sample=False, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=tok.eos_token_id)
        gen = out.sequences[0, ids.shape[1]:].tolist()
        logits[f"prompt{i}.logits"] = out.logits[0][0].float().cpu().contiguous()
        step_margin = []
        for step_logits in out.logits:
            top2 = torch.topk(step_logits[0].float(), 2).values
            step_margin.append(float(top2[0] - top2[1]))
        results.append({"prompt": prompt, "prompt_ids": ids[0].tolist(), "generated_ids": gen,
                        "generated_text": tok.decode(gen), "top2_margin_per_step": step_margin})
    save_file(logits, os.path.join(dst, "greedy-logits.safetensors"))
    with open(os.path.join(dst, "greedy.json"), "w") as f:
        json.dump({"model": fname, "transformers": transformers.__version__, "torch": torch.__version__,
                   "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                   "dtype": "float32 (dequantised by transformers from the GGUF)",
                   "logits": "greedy-logits.safetensors: promptN.logits = logits after the last prompt token",
                   "cases": results}, f, indent=1)
    ids = [tok(t, add_special_tokens=False).input_ids for t in TOKENIZER_TEXTS]
    os.makedirs(os.path.join(out_dir, "tokenizer"), exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer", "smollm2-gguf-transformers.json"), "w") as f:
        json.dump({"source": "transformers tokenizer converted from the GGUF metadata",
                   "texts": TOKENIZER_TEXTS, "ids": ids}, f, indent=1, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args()
    if not args.skip_tiny:
        gen_tiny(args.out)
        gen_rope(args.out)
    if args.gguf:
        gen_smollm2(args.out, args.gguf)


if __name__ == "__main__":
    main()
