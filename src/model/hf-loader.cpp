#include "model/hf-loader.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/fp16.h"
#include "core/log.h"
#include "model/hf-config.h"

namespace purbo {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string shape_string(std::span<const int64_t> shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
    return s + ")";
}

// Where each tensor lives: the file that holds it.
using TensorIndex = std::map<std::string, std::shared_ptr<SafetensorsFile>, std::less<>>;

Status load_index(const std::string& dir, const std::string& index_path, HfModel* model,
                  TensorIndex* index) {
    PURBO_ASSIGN_OR_RETURN(std::string text, read_text_file(index_path));
    const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded() || !root.is_object()) {
        return error(StatusCode::kParseError, "{}: not a JSON object", index_path);
    }
    const auto map_it = root.find("weight_map");
    if (map_it == root.end() || !map_it->is_object()) {
        return error(StatusCode::kParseError, "{}: field 'weight_map' missing or not an object",
                     index_path);
    }
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;  // each shard parsed once
    for (const auto& [name, shard_value] : map_it->items()) {
        if (!shard_value.is_string()) {
            return error(StatusCode::kParseError, "{}: field 'weight_map.{}' is not a file name",
                         index_path, name);
        }
        const std::string shard = shard_value.get<std::string>();
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." ||
            shard == "..") {
            return error(StatusCode::kParseError,
                         "{}: field 'weight_map.{}': '{}' is not a file name in the folder",
                         index_path, name, shard);
        }
        auto it = shards.find(shard);
        if (it == shards.end()) {
            PURBO_ASSIGN_OR_RETURN(auto file,
                                   SafetensorsFile::open((fs::path(dir) / shard).string()));
            model->files.push_back(file);
            it = shards.emplace(shard, file).first;
        }
        if (!it->second->contains(name)) {
            return error(StatusCode::kNotFound, "{}: tensor '{}' is mapped to {} which lacks it",
                         index_path, name, it->second->source());
        }
        (*index)[name] = it->second;
    }
    return Status::ok();
}

class WeightReader {
  public:
    WeightReader(const TensorIndex& index, std::string dir) : index_(index), dir_(std::move(dir)) {}

    bool has(const std::string& name) const { return index_.count(name) != 0; }

    // A view of `name` checked against `expected` (outermost first).
    Result<Tensor> get(const std::string& name, std::initializer_list<int64_t> expected) {
        const auto it = index_.find(name);
        if (it == index_.end()) {
            return error(StatusCode::kNotFound, "{}: tensor '{}' is missing", dir_, name);
        }
        used_.insert(name);
        PURBO_ASSIGN_OR_RETURN(Tensor t, it->second->tensor(name));
        const std::vector<int64_t> want(expected);
        bool same = static_cast<size_t>(t.ndim) == want.size();
        for (size_t i = 0; same && i < want.size(); ++i) same = t.shape[i] == want[i];
        if (!same) {
            return error(
                StatusCode::kInvalidArgument,
                "{}: tensor '{}' has shape {} but the config needs {}", it->second->source(), name,
                shape_string(std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim))),
                shape_string(want));
        }
        if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
            return error(StatusCode::kUnsupported, "{}: tensor '{}': dtype {} is not a float type",
                         it->second->source(), name, dtype_name(t.dtype));
        }
        return t;
    }

    // Small vectors (norms, biases) become owned f32 tensors.
    Result<Tensor> get_f32(const std::string& name, std::initializer_list<int64_t> expected) {
        PURBO_ASSIGN_OR_RETURN(Tensor t, get(name, expected));
        // f32 is copied too: the copy is aligned and outlives nothing it should not.
        Tensor out =
            tensor_cpu(DType::kF32,
                       std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)), name);
        const int64_t n = t.numel();
        float* dst = out.f32();
        const uint8_t* src = static_cast<const uint8_t*>(t.data);
        for (int64_t i = 0; i < n; ++i) {
            if (t.dtype == DType::kF32) {
                std::memcpy(&dst[i], src + 4 * i, 4);
            } else {
                uint16_t h;
                std::memcpy(&h, src + 2 * i, 2);
                dst[i] = t.dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
            }
        }
        return out;
    }

    void log_unused() const {
        for (const auto& [name, file] : index_) {
            if (used_.count(name) == 0) {
                PURBO_LOG_DEBUG("{}: ignoring tensor '{}' not used by the model", file->source(),
                                name);
            }
        }
    }

  private:
    const TensorIndex& index_;
    std::string dir_;
    std::set<std::string> used_;
};

Status load_weights(const ModelConfig& c, const std::string& dir, WeightReader& r,
                    ModelWeights* w) {
    const int64_t e = c.n_embd, v = c.n_vocab, f = c.n_ff, hd = c.head_dim;
    const int64_t q = int64_t{c.n_head} * hd, kv = int64_t{c.n_head_kv} * hd;
    PURBO_ASSIGN_OR_RETURN(w->tok_embd, r.get("model.embed_tokens.weight", {v, e}));
    w->layers.resize(static_cast<size_t>(c.n_layer));
    for (int il = 0; il < c.n_layer; ++il) {
        LayerWeights& l = w->layers[static_cast<size_t>(il)];
        const std::string p = fmt::format("model.layers.{}.", il);
        PURBO_ASSIGN_OR_RETURN(l.attn_norm, r.get_f32(p + "input_layernorm.weight", {e}));
        PURBO_ASSIGN_OR_RETURN(l.wq, r.get(p + "self_attn.q_proj.weight", {q, e}));
        PURBO_ASSIGN_OR_RETURN(l.wk, r.get(p + "self_attn.k_proj.weight", {kv, e}));
        PURBO_ASSIGN_OR_RETURN(l.wv, r.get(p + "self_attn.v_proj.weight", {kv, e}));
        PURBO_ASSIGN_OR_RETURN(l.wo, r.get(p + "self_attn.o_proj.weight", {e, q}));
        if (c.attn_qkv_bias) {
            PURBO_ASSIGN_OR_RETURN(l.bq, r.get_f32(p + "self_attn.q_proj.bias", {q}));
            PURBO_ASSIGN_OR_RETURN(l.bk, r.get_f32(p + "self_attn.k_proj.bias", {kv}));
            PURBO_ASSIGN_OR_RETURN(l.bv, r.get_f32(p + "self_attn.v_proj.bias", {kv}));
        }
        if (c.attn_o_bias) {
            // The forward pass has no o_proj bias; an all-zero one changes nothing.
            PURBO_ASSIGN_OR_RETURN(Tensor bo, r.get_f32(p + "self_attn.o_proj.bias", {e}));
            for (int64_t i = 0; i < e; ++i) {
                if (bo.f32()[i] != 0.0f) {
                    return error(
                        StatusCode::kUnsupported,
                        "{}: tensor '{}self_attn.o_proj.bias' has non-zero value {} at {}; "
                        "an o_proj bias is not supported",
                        dir, p, bo.f32()[i], i);
                }
            }
        }
        if (c.attn_qk_norm) {
            PURBO_ASSIGN_OR_RETURN(l.q_norm, r.get_f32(p + "self_attn.q_norm.weight", {hd}));
            PURBO_ASSIGN_OR_RETURN(l.k_norm, r.get_f32(p + "self_attn.k_norm.weight", {hd}));
        }
        PURBO_ASSIGN_OR_RETURN(l.ffn_norm, r.get_f32(p + "post_attention_layernorm.weight", {e}));
        PURBO_ASSIGN_OR_RETURN(l.w_gate, r.get(p + "mlp.gate_proj.weight", {f, e}));
        PURBO_ASSIGN_OR_RETURN(l.w_up, r.get(p + "mlp.up_proj.weight", {f, e}));
        PURBO_ASSIGN_OR_RETURN(l.w_down, r.get(p + "mlp.down_proj.weight", {e, f}));
    }
    PURBO_ASSIGN_OR_RETURN(w->out_norm, r.get_f32("model.norm.weight", {e}));
    if (c.tied_embeddings) {
        // Tied checkpoints usually omit lm_head.weight; when present it equals the embedding.
        w->lm_head = w->tok_embd;
        if (r.has("lm_head.weight")) PURBO_TRY(r.get("lm_head.weight", {v, e}).status());
    } else {
        PURBO_ASSIGN_OR_RETURN(w->lm_head, r.get("lm_head.weight", {v, e}));
    }
    return Status::ok();
}

std::string existing(const fs::path& path) {
    std::error_code ec;
    return fs::is_regular_file(path, ec) ? path.string() : std::string();
}

}  // namespace

Result<HfModel> hf_model_load(const std::string& dir) {
    HfModel model;
    try {
        const fs::path root(dir);
        PURBO_ASSIGN_OR_RETURN(model.config, hf_config_load((root / "config.json").string()));

        TensorIndex index;
        const std::string single = existing(root / "model.safetensors");
        const std::string sharded = existing(root / "model.safetensors.index.json");
        if (!single.empty()) {
            PURBO_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(single));
            model.files.push_back(file);
            for (const SafetensorsEntry& entry : file->entries()) index[entry.name] = file;
        } else if (!sharded.empty()) {
            PURBO_TRY(load_index(dir, sharded, &model, &index));
        } else {
            return error(StatusCode::kNotFound,
                         "{}: neither model.safetensors nor model.safetensors.index.json found",
                         dir);
        }

        WeightReader reader(index, dir);
        PURBO_TRY(load_weights(model.config, dir, reader, &model.weights));
        reader.log_unused();

        model.tokenizer_json_path = existing(root / "tokenizer.json");
        model.tokenizer_config_path = existing(root / "tokenizer_config.json");
        model.chat_template_path = existing(root / "chat_template.jinja");
    } catch (const std::exception& e) {
        // std::filesystem and allocation failures; nothing else throws here.
        return error(StatusCode::kIoError, "{}: {}", dir, e.what());
    }
    return model;
}

}  // namespace purbo
