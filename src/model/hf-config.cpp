#include "model/hf-config.h"

#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/mapped-file.h"

namespace purbo {

namespace {

using json = nlohmann::json;

std::string excerpt(const json& j) {
    std::string s = j.dump(-1, ' ', true, json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
}

// Reads the fields of one JSON object; `prefix` ("rope_scaling.") qualifies field names in
// messages. A field that is absent or null counts as absent, as transformers treats it.
class FieldReader {
  public:
    FieldReader(const json& obj, const std::string& source, std::string prefix)
        : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

    const json* get(std::string_view key) const {
        const auto it = obj_.find(key);
        return it == obj_.end() || it->is_null() ? nullptr : &*it;
    }
    bool has(std::string_view key) const { return get(key) != nullptr; }
    std::string field(std::string_view key) const { return prefix_ + std::string(key); }

    Status bad(std::string_view key, const json& v, std::string_view why) const {
        return error(StatusCode::kInvalidArgument, "{}: field '{}': value {} {}", source_,
                     field(key), excerpt(v), why);
    }
    Status missing(std::string_view key) const {
        return error(StatusCode::kInvalidArgument, "{}: field '{}' is missing", source_,
                     field(key));
    }

    // Integer >= min_value; integral floats (8192.0) are accepted as JSON writers emit them.
    Status read_int(std::string_view key, int* out, bool required, int64_t min_value) const {
        const json* v = get(key);
        if (v == nullptr) return required ? missing(key) : Status::ok();
        int64_t value = 0;
        if (v->is_number_integer()) {
            if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT_MAX)) {
                return bad(key, *v, "is too large");
            }
            value = v->get<int64_t>();
        } else if (v->is_number_float() && std::isfinite(v->get<double>()) &&
                   std::floor(v->get<double>()) == v->get<double>()) {
            if (std::fabs(v->get<double>()) > INT_MAX) return bad(key, *v, "is too large");
            value = static_cast<int64_t>(v->get<double>());
        } else {
            return bad(key, *v, "is not an integer");
        }
        if (value > INT_MAX) return bad(key, *v, "is too large");
        if (value < min_value) return bad(key, *v, fmt::format("must be at least {}", min_value));
        *out = static_cast<int>(value);
        return Status::ok();
    }

    Status read_double(std::string_view key, double* out, bool required) const {
        const json* v = get(key);
        if (v == nullptr) return required ? missing(key) : Status::ok();
        if (!v->is_number() || !std::isfinite(v->get<double>())) {
            return bad(key, *v, "is not a finite number");
        }
        *out = v->get<double>();
        return Status::ok();
    }

    Status read_positive(std::string_view key, double* out, bool required) const {
        PURBO_TRY(read_double(key, out, required));
        if (has(key) && *out <= 0.0) return bad(key, *get(key), "must be positive");
        return Status::ok();
    }

    Status read_bool(std::string_view key, bool* out) const {
        const json* v = get(key);
        if (v == nullptr) return Status::ok();
        if (!v->is_boolean()) return bad(key, *v, "is not true or false");
        *out = v->get<bool>();
        return Status::ok();
    }

    Status read_string(std::string_view key, std::string* out) const {
        const json* v = get(key);
        if (v == nullptr) return Status::ok();
        if (!v->is_string()) return bad(key, *v, "is not a string");
        *out = v->get<std::string>();
        return Status::ok();
    }

  private:
    const json& obj_;
    const std::string& source_;
    std::string prefix_;
};

struct ArchDefaults {
    Arch arch;
    int max_position_embeddings;  // transformers' config class defaults
};

std::optional<ArchDefaults> arch_from_model_type(std::string_view model_type) {
    if (model_type == "llama") return ArchDefaults{Arch::kLlama, 2048};
    if (model_type == "mistral") return ArchDefaults{Arch::kMistral, 4096 * 32};
    if (model_type == "qwen2") return ArchDefaults{Arch::kQwen2, 32768};
    if (model_type == "qwen3") return ArchDefaults{Arch::kQwen3, 32768};
    return std::nullopt;
}

std::optional<std::string_view> model_type_from_architecture(std::string_view architecture) {
    if (architecture == "LlamaForCausalLM") return "llama";
    if (architecture == "MistralForCausalLM") return "mistral";
    if (architecture == "Qwen2ForCausalLM") return "qwen2";
    if (architecture == "Qwen3ForCausalLM") return "qwen3";
    return std::nullopt;
}

Status read_arch(const FieldReader& top, const json& root, const std::string& source,
                 ArchDefaults* out) {
    std::string model_type;
    PURBO_TRY(top.read_string("model_type", &model_type));
    if (model_type.empty()) {
        const json* archs = top.get("architectures");
        if (archs == nullptr) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field 'model_type' is missing and so is 'architectures'", source);
        }
        if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
            return top.bad("architectures", *archs, "is not a list of class names");
        }
        const std::string name = (*archs)[0].get<std::string>();
        const auto mapped = model_type_from_architecture(name);
        if (!mapped) {
            return error(StatusCode::kUnsupported,
                         "{}: field 'architectures': '{}' is not supported (Llama, Mistral, Qwen2, "
                         "Qwen3 are)",
                         source, name);
        }
        model_type = std::string(*mapped);
    }
    const auto defaults = arch_from_model_type(model_type);
    if (!defaults) {
        return error(
            StatusCode::kUnsupported,
            "{}: field 'model_type': '{}' is not supported (llama, mistral, qwen2, qwen3 are)",
            source, model_type);
    }
    *out = *defaults;
    return Status::ok();
}

// RoPE: theta, partial rotary factor and scaling from `rope_parameters` (transformers 5) or
// `rope_scaling` + top-level `rope_theta` (transformers 4).
Status read_rope(const FieldReader& top, const json& root, const std::string& source,
                 ModelConfig* cfg) {
    RopeConfig& rope = cfg->rope;
    double theta = 10000.0;
    double partial_rotary_factor = 1.0;
    PURBO_TRY(top.read_positive("rope_theta", &theta, false));
    PURBO_TRY(top.read_positive("partial_rotary_factor", &partial_rotary_factor, false));

    const char* key = top.has("rope_parameters") ? "rope_parameters"
                      : top.has("rope_scaling")  ? "rope_scaling"
                                                 : nullptr;
    std::string rope_type = "default";
    if (key != nullptr) {
        const json& obj = *top.get(key);
        if (!obj.is_object()) return top.bad(key, obj, "is not an object");
        const FieldReader r(obj, source, std::string(key) + ".");
        const char* type_key = r.has("rope_type") ? "rope_type" : "type";
        if (r.has(type_key)) {
            PURBO_TRY(r.read_string(type_key, &rope_type));
        } else if (std::string_view(key) == "rope_scaling") {
            return r.missing("rope_type");
        } else {
            // transformers 5 nests one parameter set per layer type for mixed-attention models.
            for (const auto& [name, value] : obj.items()) {
                if (value.is_object()) {
                    return error(StatusCode::kUnsupported,
                                 "{}: field '{}.{}': per-layer-type RoPE parameters are not "
                                 "supported",
                                 source, key, name);
                }
            }
        }
        PURBO_TRY(r.read_positive("rope_theta", &theta, false));
        PURBO_TRY(r.read_positive("partial_rotary_factor", &partial_rotary_factor, false));

        double factor = 1.0;
        if (rope_type == "default") {
            rope.scaling = RopeScaling::kNone;
        } else if (rope_type == "linear") {
            rope.scaling = RopeScaling::kLinear;
            PURBO_TRY(r.read_positive("factor", &factor, true));
        } else if (rope_type == "llama3") {
            rope.scaling = RopeScaling::kLlama3;
            double low = 0, high = 0;
            PURBO_TRY(r.read_positive("factor", &factor, true));
            PURBO_TRY(r.read_positive("low_freq_factor", &low, true));
            PURBO_TRY(r.read_positive("high_freq_factor", &high, true));
            if (high <= low) {
                return r.bad("high_freq_factor", *r.get("high_freq_factor"),
                             fmt::format("must exceed low_freq_factor {}", low));
            }
            PURBO_TRY(r.read_int("original_max_position_embeddings", &rope.original_max_position,
                                 true, 1));
            rope.low_freq_factor = static_cast<float>(low);
            rope.high_freq_factor = static_cast<float>(high);
        } else if (rope_type == "yarn") {
            rope.scaling = RopeScaling::kYarn;
            // transformers falls back to max_position_embeddings when this is absent.
            rope.original_max_position = cfg->n_ctx_train;
            PURBO_TRY(r.read_int("original_max_position_embeddings", &rope.original_max_position,
                                 false, 1));
            // transformers 5: without `factor`, the ratio of the context lengths (DeepSeek-V3).
            // (Some 4.x releases used that ratio even when `factor` was given; 5.x does not.)
            const bool has_original = r.has("original_max_position_embeddings");
            PURBO_TRY(r.read_positive("factor", &factor, !has_original));
            if (!r.has("factor")) {
                factor = static_cast<double>(cfg->n_ctx_train) / rope.original_max_position;
            }
            double beta_fast = 32.0, beta_slow = 1.0, attention_factor = 0.0;
            double mscale = 0.0, mscale_all_dim = 0.0;
            // transformers reads these with `or`, so 0 also means "use the default".
            PURBO_TRY(r.read_double("beta_fast", &beta_fast, false));
            PURBO_TRY(r.read_double("beta_slow", &beta_slow, false));
            if (beta_fast == 0.0) beta_fast = 32.0;
            if (beta_slow == 0.0) beta_slow = 1.0;
            if (beta_fast < 0.0) return r.bad("beta_fast", *r.get("beta_fast"), "must be positive");
            if (beta_slow < 0.0) return r.bad("beta_slow", *r.get("beta_slow"), "must be positive");
            PURBO_TRY(r.read_positive("attention_factor", &attention_factor, false));
            PURBO_TRY(r.read_double("mscale", &mscale, false));
            PURBO_TRY(r.read_double("mscale_all_dim", &mscale_all_dim, false));
            PURBO_TRY(r.read_bool("truncate", &rope.truncate));
            rope.beta_fast = static_cast<float>(beta_fast);
            rope.beta_slow = static_cast<float>(beta_slow);
            rope.attention_factor = static_cast<float>(attention_factor);
            rope.mscale = static_cast<float>(mscale);
            rope.mscale_all_dim = static_cast<float>(mscale_all_dim);
        } else {
            return error(StatusCode::kUnsupported,
                         "{}: field '{}.{}': RoPE type '{}' is not supported (default, linear, "
                         "llama3, yarn are)",
                         source, key, type_key, rope_type);
        }
        rope.factor = static_cast<float>(factor);
    }
    rope.theta = static_cast<float>(theta);
    if (partial_rotary_factor > 1.0) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field 'partial_rotary_factor': value {} must be in (0, 1]", source,
                     partial_rotary_factor);
    }
    // As transformers: dim = int(head_dim * partial_rotary_factor).
    rope.rotary_dim = static_cast<int>(cfg->head_dim * partial_rotary_factor);
    if (rope.rotary_dim <= 0 || rope.rotary_dim % 2 != 0) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field 'partial_rotary_factor': value {} gives {} rotary dimensions of "
                     "head_dim {}; a positive even number is needed",
                     source, partial_rotary_factor, rope.rotary_dim, cfg->head_dim);
    }
    return Status::ok();
}

Status parse_config(const json& root, const std::string& source, ModelConfig* cfg) {
    if (!root.is_object()) {
        return error(StatusCode::kParseError, "{}: top level is {}, not a JSON object", source,
                     excerpt(root));
    }
    const FieldReader top(root, source, "");
    ArchDefaults arch{};
    PURBO_TRY(read_arch(top, root, source, &arch));
    cfg->arch = arch.arch;
    cfg->name = arch_name(arch.arch);
    if (const json* n = top.get("_name_or_path");
        n != nullptr && n->is_string() && !n->get<std::string>().empty()) {
        cfg->name = n->get<std::string>();
    }

    std::string hidden_act = "silu";
    PURBO_TRY(top.read_string("hidden_act", &hidden_act));
    if (hidden_act != "silu") {
        return error(StatusCode::kUnsupported,
                     "{}: field 'hidden_act': '{}' is not supported (silu is)", source, hidden_act);
    }

    PURBO_TRY(top.read_int("hidden_size", &cfg->n_embd, true, 1));
    PURBO_TRY(top.read_int("num_hidden_layers", &cfg->n_layer, true, 1));
    PURBO_TRY(top.read_int("num_attention_heads", &cfg->n_head, true, 1));
    cfg->n_head_kv = cfg->n_head;
    PURBO_TRY(top.read_int("num_key_value_heads", &cfg->n_head_kv, false, 1));
    if (cfg->n_head % cfg->n_head_kv != 0) {
        return top.bad("num_key_value_heads", *top.get("num_key_value_heads"),
                       fmt::format("does not divide num_attention_heads {}", cfg->n_head));
    }
    if (top.has("head_dim")) {
        PURBO_TRY(top.read_int("head_dim", &cfg->head_dim, true, 1));
    } else {
        if (cfg->n_embd % cfg->n_head != 0) {
            return top.bad("num_attention_heads", *top.get("num_attention_heads"),
                           fmt::format("does not divide hidden_size {} (and head_dim is not set)",
                                       cfg->n_embd));
        }
        cfg->head_dim = cfg->n_embd / cfg->n_head;
    }
    if (cfg->head_dim % 2 != 0) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field 'head_dim': value {} must be even for rotary embeddings", source,
                     cfg->head_dim);
    }
    PURBO_TRY(top.read_int("intermediate_size", &cfg->n_ff, true, 1));
    PURBO_TRY(top.read_int("vocab_size", &cfg->n_vocab, true, 1));
    cfg->n_ctx_train = arch.max_position_embeddings;
    PURBO_TRY(top.read_int("max_position_embeddings", &cfg->n_ctx_train, false, 1));

    double rms_eps = 1e-6;  // the default of all four transformers config classes
    PURBO_TRY(top.read_positive("rms_norm_eps", &rms_eps, false));
    cfg->rms_eps = static_cast<float>(rms_eps);

    cfg->tied_embeddings = false;  // LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config default
    PURBO_TRY(top.read_bool("tie_word_embeddings", &cfg->tied_embeddings));

    bool attention_bias = false;
    PURBO_TRY(top.read_bool("attention_bias", &attention_bias));
    bool mlp_bias = false;
    PURBO_TRY(top.read_bool("mlp_bias", &mlp_bias));
    if (mlp_bias) {
        return error(StatusCode::kUnsupported, "{}: field 'mlp_bias': true is not supported",
                     source);
    }
    switch (cfg->arch) {
        case Arch::kQwen2:  // q/k/v always carry a bias; o_proj never does
            cfg->attn_qkv_bias = true;
            break;
        case Arch::kLlama:
        case Arch::kQwen3:  // attention_bias adds a bias to q, k, v and o
            cfg->attn_qkv_bias = attention_bias;
            cfg->attn_o_bias = attention_bias;
            break;
        case Arch::kMistral:
            break;
    }
    cfg->attn_qk_norm = cfg->arch == Arch::kQwen3;

    // Mistral applies its window whenever it is set; Qwen only with use_sliding_window.
    bool use_sliding_window = cfg->arch == Arch::kMistral;
    PURBO_TRY(top.read_bool("use_sliding_window", &use_sliding_window));
    if (use_sliding_window) {
        PURBO_TRY(top.read_int("sliding_window", &cfg->sliding_window, false, 0));
    }

    PURBO_TRY(read_rope(top, root, source, cfg));
    return cfg->validate(source);
}

}  // namespace

Result<ModelConfig> hf_config_parse(std::string_view json_text, const std::string& source) {
    const json root = json::parse(json_text.begin(), json_text.end(), nullptr,
                                  /*allow_exceptions=*/false);
    if (root.is_discarded()) {
        return error(StatusCode::kParseError, "{}: not valid JSON", source);
    }
    ModelConfig cfg;
    try {
        PURBO_TRY(parse_config(root, source, &cfg));
    } catch (const std::exception& e) {
        // The reader checks types before every get<>(); this is a backstop for the boundary.
        return error(StatusCode::kParseError, "{}: {}", source, e.what());
    }
    return cfg;
}

Result<ModelConfig> hf_config_load(const std::string& path) {
    PURBO_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
    return hf_config_parse(text, path);
}

}  // namespace purbo
