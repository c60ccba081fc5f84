// A model from a GGUF file: llama.cpp's metadata keys and tensor names mapped onto
// ModelConfig and ModelWeights.
#include <cmath>
#include <cstring>

#include "model/gguf.h"
#include "model/model.h"

namespace purbo {
namespace {

Result<Arch> arch_from_gguf(const GgufFile& f, const std::string& name) {
    if (name == "llama") return Arch::kLlama;
    if (name == "mistral") return Arch::kMistral;
    if (name == "qwen2") return Arch::kQwen2;
    if (name == "qwen3") return Arch::kQwen3;
    return error(StatusCode::kUnsupported,
                 "{}: general.architecture = '{}' is not supported (llama, mistral, qwen2, qwen3)", f.source_name(),
                 name);
}

// Integer key that must exist and be positive.
Result<int> get_positive(const GgufFile& f, const std::string& key) {
    PURBO_ASSIGN_OR_RETURN(int64_t v, f.get_int(key));
    if (v <= 0 || v > (int64_t{1} << 30)) {
        return error(StatusCode::kParseError, "{}: {} = {} is out of range", f.source_name(), key, v);
    }
    return static_cast<int>(v);
}

Result<ModelConfig> config_from_gguf(const GgufFile& f) {
    ModelConfig c;
    PURBO_ASSIGN_OR_RETURN(std::string arch, f.get_string("general.architecture"));
    PURBO_ASSIGN_OR_RETURN(c.arch, arch_from_gguf(f, arch));
    if (auto name = f.get_string("general.name"); name.is_ok()) c.name = *name;
    const std::string p = arch + ".";
    PURBO_ASSIGN_OR_RETURN(c.n_layer, get_positive(f, p + "block_count"));
    PURBO_ASSIGN_OR_RETURN(c.n_embd, get_positive(f, p + "embedding_length"));
    PURBO_ASSIGN_OR_RETURN(c.n_ff, get_positive(f, p + "feed_forward_length"));
    PURBO_ASSIGN_OR_RETURN(c.n_head, get_positive(f, p + "attention.head_count"));
    c.n_head_kv = c.n_head;
    if (f.find(p + "attention.head_count_kv") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(c.n_head_kv, get_positive(f, p + "attention.head_count_kv"));
    }
    c.head_dim = c.n_embd / c.n_head;
    if (f.find(p + "attention.key_length") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(c.head_dim, get_positive(f, p + "attention.key_length"));
    }
    c.n_ctx_train = 4096;
    if (f.find(p + "context_length") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(c.n_ctx_train, get_positive(f, p + "context_length"));
    }
    PURBO_ASSIGN_OR_RETURN(double eps, f.get_float(p + "attention.layer_norm_rms_epsilon"));
    c.rms_eps = static_cast<float>(eps);
    c.rope.theta = 10000.0f;
    if (f.find(p + "rope.freq_base") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(double base, f.get_float(p + "rope.freq_base"));
        c.rope.theta = static_cast<float>(base);
    }
    c.rope.rotary_dim = c.head_dim;
    if (f.find(p + "rope.dimension_count") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(c.rope.rotary_dim, get_positive(f, p + "rope.dimension_count"));
    }
    if (auto type = f.get_string(p + "rope.scaling.type"); type.is_ok() && *type != "none") {
        if (*type == "linear") {
            c.rope.scaling = RopeScaling::kLinear;
        } else if (*type == "yarn") {
            c.rope.scaling = RopeScaling::kYarn;
        } else {
            return error(StatusCode::kUnsupported, "{}: {}rope.scaling.type = '{}' is not supported", f.source_name(), p,
                         *type);
        }
        PURBO_ASSIGN_OR_RETURN(double factor, f.get_float(p + "rope.scaling.factor"));
        c.rope.factor = static_cast<float>(factor);
        if (f.find(p + "rope.scaling.original_context_length") != nullptr) {
            PURBO_ASSIGN_OR_RETURN(c.rope.original_max_position, get_positive(f, p + "rope.scaling.original_context_length"));
        }
    }
    if (f.find_tensor("rope_freqs.weight") != nullptr) {
        // Llama-3.1-style scaling, stored by llama.cpp's converter as per-pair divisors.
        PURBO_ASSIGN_OR_RETURN(Tensor factors, f.tensor("rope_freqs.weight"));
        if (factors.dtype != DType::kF32 || factors.numel() != c.rope.rotary_dim / 2) {
            return error(StatusCode::kParseError, "{}: tensor rope_freqs.weight is {}, expected ({}) f32",
                         f.source_name(), factors.describe(), c.rope.rotary_dim / 2);
        }
        c.rope.freq_factors.assign(factors.f32(), factors.f32() + factors.numel());
        for (float x : c.rope.freq_factors) {
            if (!(x > 0.0f) || !std::isfinite(x)) {
                return error(StatusCode::kParseError, "{}: tensor rope_freqs.weight holds {}, not a positive factor",
                             f.source_name(), x);
            }
        }
    }
    c.attn_qkv_bias = c.arch == Arch::kQwen2;
    c.attn_qk_norm = c.arch == Arch::kQwen3;
    c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
    const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
    if (embd == nullptr) return error(StatusCode::kParseError, "{}: tensor token_embd.weight is missing", f.source_name());
    c.n_vocab = static_cast<int>(embd->shape[0]);
    PURBO_TRY(c.validate(f.source_name()));
    return c;
}

// llama.cpp's converter reorders the rows of the Llama q and k projections so that its RoPE
// can rotate adjacent pairs; Hugging Face rotates halves. Undo it so that one RoPE serves
// every format: GGUF row h*d + 2i + j holds HF row h*d + j*(d/2) + i (j in {0, 1}).
// Rows are moved whole, so quantised blocks (which never cross a row) stay intact.
Tensor unpermute_rows(const Tensor& w, int n_heads) {
    Tensor out = tensor_cpu(w.dtype, std::span<const int64_t>(w.shape.data(), static_cast<size_t>(w.ndim)), w.name);
    const int64_t rows = w.n_rows();
    const int64_t d = rows / n_heads;
    const size_t row_bytes = w.row_bytes();
    for (int64_t h = 0; h < n_heads; ++h) {
        for (int64_t i = 0; i < d / 2; ++i) {
            for (int64_t j = 0; j < 2; ++j) {
                const int64_t src = h * d + 2 * i + j;
                const int64_t dst = h * d + j * (d / 2) + i;
                std::memcpy(out.row_ptr(dst), w.row_ptr(src), row_bytes);
            }
        }
    }
    return out;
}

Status expect_shape(const GgufFile& f, const Tensor& t, std::initializer_list<int64_t> shape) {
    bool ok = t.ndim == static_cast<int>(shape.size());
    size_t i = 0;
    for (int64_t d : shape) ok = ok && t.shape[i++] == d;
    if (!ok) {
        std::string want = "(";
        for (int64_t d : shape) want += (want.size() > 1 ? ", " : "") + std::to_string(d);
        return error(StatusCode::kParseError, "{}: tensor '{}' has shape {}, expected {})", f.source_name(), t.name,
                     t.describe(), want);
    }
    return Status::ok();
}

Result<Tensor> get_tensor(const GgufFile& f, const std::string& name, std::initializer_list<int64_t> shape) {
    PURBO_ASSIGN_OR_RETURN(Tensor t, f.tensor(name));
    t.name = name;
    if (shape.size() == 1 && t.ndim == 2 && t.shape[0] == 1) t = t.reshaped({t.shape[1]});
    PURBO_TRY(expect_shape(f, t, shape));
    return t;
}

Result<ModelWeights> weights_from_gguf(const GgufFile& f, const ModelConfig& c) {
    ModelWeights w;
    const int64_t e = c.n_embd, q = int64_t{c.n_head} * c.head_dim, kv = int64_t{c.n_head_kv} * c.head_dim, ff = c.n_ff;
    PURBO_ASSIGN_OR_RETURN(w.tok_embd, get_tensor(f, "token_embd.weight", {c.n_vocab, e}));
    PURBO_ASSIGN_OR_RETURN(w.out_norm, get_tensor(f, "output_norm.weight", {e}));
    if (c.tied_embeddings) {
        w.lm_head = w.tok_embd;
    } else {
        PURBO_ASSIGN_OR_RETURN(w.lm_head, get_tensor(f, "output.weight", {c.n_vocab, e}));
    }
    const bool permuted = c.arch == Arch::kLlama || c.arch == Arch::kMistral;
    w.layers.resize(static_cast<size_t>(c.n_layer));
    for (int il = 0; il < c.n_layer; ++il) {
        LayerWeights& l = w.layers[static_cast<size_t>(il)];
        const std::string p = "blk." + std::to_string(il) + ".";
        PURBO_ASSIGN_OR_RETURN(l.attn_norm, get_tensor(f, p + "attn_norm.weight", {e}));
        PURBO_ASSIGN_OR_RETURN(l.wq, get_tensor(f, p + "attn_q.weight", {q, e}));
        PURBO_ASSIGN_OR_RETURN(l.wk, get_tensor(f, p + "attn_k.weight", {kv, e}));
        PURBO_ASSIGN_OR_RETURN(l.wv, get_tensor(f, p + "attn_v.weight", {kv, e}));
        PURBO_ASSIGN_OR_RETURN(l.wo, get_tensor(f, p + "attn_output.weight", {e, q}));
        if (permuted) {
            l.wq = unpermute_rows(l.wq, c.n_head);
            l.wk = unpermute_rows(l.wk, c.n_head_kv);
        }
        if (c.attn_qkv_bias) {
            PURBO_ASSIGN_OR_RETURN(l.bq, get_tensor(f, p + "attn_q.bias", {q}));
            PURBO_ASSIGN_OR_RETURN(l.bk, get_tensor(f, p + "attn_k.bias", {kv}));
            PURBO_ASSIGN_OR_RETURN(l.bv, get_tensor(f, p + "attn_v.bias", {kv}));
        }
        if (c.attn_qk_norm) {
            PURBO_ASSIGN_OR_RETURN(l.q_norm, get_tensor(f, p + "attn_q_norm.weight", {c.head_dim}));
            PURBO_ASSIGN_OR_RETURN(l.k_norm, get_tensor(f, p + "attn_k_norm.weight", {c.head_dim}));
        }
        PURBO_ASSIGN_OR_RETURN(l.ffn_norm, get_tensor(f, p + "ffn_norm.weight", {e}));
        PURBO_ASSIGN_OR_RETURN(l.w_gate, get_tensor(f, p + "ffn_gate.weight", {ff, e}));
        PURBO_ASSIGN_OR_RETURN(l.w_up, get_tensor(f, p + "ffn_up.weight", {ff, e}));
        PURBO_ASSIGN_OR_RETURN(l.w_down, get_tensor(f, p + "ffn_down.weight", {e, ff}));
    }
    // Norms and biases are read as f32 by every backend.
    Status bad = Status::ok();
    weights_for_each(w, [&](Tensor& t) {
        if (t.ndim == 1 && t.dtype != DType::kF32 && bad.is_ok()) {
            bad = error(StatusCode::kUnsupported, "{}: tensor '{}' is {}, expected f32 for a norm or bias",
                        f.source_name(), t.name, dtype_name(t.dtype));
        }
    });
    PURBO_TRY(bad);
    return w;
}

}  // namespace

Result<TokenizerVocab> tokenizer_vocab_from_gguf(const GgufFile& f) {
    TokenizerVocab v;
    v.source = f.source_name();
    PURBO_ASSIGN_OR_RETURN(v.model, f.get_string("tokenizer.ggml.model"));
    if (auto pre = f.get_string("tokenizer.ggml.pre"); pre.is_ok()) v.pre = *pre; else v.pre = "default";
    PURBO_ASSIGN_OR_RETURN(v.tokens, f.get_string_array("tokenizer.ggml.tokens"));
    if (f.find("tokenizer.ggml.token_type") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(std::vector<int64_t> types, f.get_int_array("tokenizer.ggml.token_type"));
        v.token_types.assign(types.begin(), types.end());
    }
    if (f.find("tokenizer.ggml.merges") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(v.merges, f.get_string_array("tokenizer.ggml.merges"));
    }
    auto id = [&](const char* key, int32_t& out) -> Status {
        if (f.find(key) == nullptr) return Status::ok();
        PURBO_ASSIGN_OR_RETURN(int64_t x, f.get_int(key));
        if (x < 0 || x >= static_cast<int64_t>(v.tokens.size())) {
            return error(StatusCode::kParseError, "{}: {} = {} is outside the vocabulary of {} tokens", f.source_name(),
                         key, x, v.tokens.size());
        }
        out = static_cast<int32_t>(x);
        return Status::ok();
    };
    PURBO_TRY(id("tokenizer.ggml.bos_token_id", v.bos_id));
    PURBO_TRY(id("tokenizer.ggml.eos_token_id", v.eos_id));
    PURBO_TRY(id("tokenizer.ggml.eot_token_id", v.eot_id));
    PURBO_TRY(id("tokenizer.ggml.padding_token_id", v.pad_id));
    PURBO_TRY(id("tokenizer.ggml.unknown_token_id", v.unk_id));
    if (auto b = f.get_bool("tokenizer.ggml.add_bos_token"); b.is_ok()) v.add_bos = *b;
    if (auto b = f.get_bool("tokenizer.ggml.add_eos_token"); b.is_ok()) v.add_eos = *b;
    return v;
}

Result<Model> model_from_gguf(const GgufFile& f) {
    Model m;
    m.path = f.source_name();
    m.format = "gguf";
    PURBO_ASSIGN_OR_RETURN(m.config, config_from_gguf(f));
    PURBO_ASSIGN_OR_RETURN(m.weights, weights_from_gguf(f, m.config));
    PURBO_ASSIGN_OR_RETURN(TokenizerVocab vocab, tokenizer_vocab_from_gguf(f));
    PURBO_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_vocab(vocab));
    m.tokenizer = std::make_shared<Tokenizer>(std::move(tok));
    if (auto t = f.get_string("tokenizer.chat_template"); t.is_ok()) m.chat_template_text = *t;
    m.facts.emplace_back("format", "GGUF v" + std::to_string(f.version()));
    m.facts.emplace_back("tensors", std::to_string(f.tensors().size()));
    m.facts.emplace_back("tokenizer model", vocab.model + " (pre: " + vocab.pre + ")");
    return m;
}

}  // namespace purbo
