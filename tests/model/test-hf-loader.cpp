#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "model/hf-loader.h"
#include "model/safetensors.h"
#include "test-util.h"

namespace purbo {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Letters: e = hidden, q = heads * head_dim, kv = kv heads * head_dim, f = ffn, v = vocab.
struct TinyModel {
    json config = {{"model_type", "llama"},    {"hidden_size", 16},
                   {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                   {"num_key_value_heads", 2}, {"intermediate_size", 24},
                   {"vocab_size", 32},         {"tie_word_embeddings", false}};
    DType dtype = DType::kF32;  // of every tensor written
    std::map<std::string, Tensor> tensors;

    // Every tensor the config asks for, filled with a value derived from its name and index.
    void fill() {
        const int64_t e = config["hidden_size"], nl = config["num_hidden_layers"];
        const int64_t nh = config["num_attention_heads"], nkv = config["num_key_value_heads"];
        const int64_t hd = config.contains("head_dim") ? config["head_dim"].get<int64_t>() : e / nh;
        const int64_t f = config["intermediate_size"], v = config["vocab_size"];
        const std::string type = config["model_type"];
        const bool qkv_bias = type == "qwen2" || config.value("attention_bias", false);
        add("model.embed_tokens.weight", {v, e});
        for (int64_t il = 0; il < nl; ++il) {
            const std::string p = "model.layers." + std::to_string(il) + ".";
            add(p + "input_layernorm.weight", {e});
            add(p + "post_attention_layernorm.weight", {e});
            add(p + "self_attn.q_proj.weight", {nh * hd, e});
            add(p + "self_attn.k_proj.weight", {nkv * hd, e});
            add(p + "self_attn.v_proj.weight", {nkv * hd, e});
            add(p + "self_attn.o_proj.weight", {e, nh * hd});
            if (qkv_bias) {
                add(p + "self_attn.q_proj.bias", {nh * hd});
                add(p + "self_attn.k_proj.bias", {nkv * hd});
                add(p + "self_attn.v_proj.bias", {nkv * hd});
            }
            if (config.value("attention_bias", false)) {
                add(p + "self_attn.o_proj.bias", {e}, /*zero=*/true);
            }
            if (type == "qwen3") {
                add(p + "self_attn.q_norm.weight", {hd});
                add(p + "self_attn.k_norm.weight", {hd});
            }
            add(p + "mlp.gate_proj.weight", {f, e});
            add(p + "mlp.up_proj.weight", {f, e});
            add(p + "mlp.down_proj.weight", {e, f});
        }
        add("model.norm.weight", {e});
        if (!config.value("tie_word_embeddings", false)) add("lm_head.weight", {v, e});
    }

    // Element i of tensor `name` holds value_of(name, i), exactly representable in bf16/f16.
    static float value_of(const std::string& name, int64_t i) {
        return static_cast<float>(std::hash<std::string>{}(name) % 7) * 0.25f +
               static_cast<float>(i % 5) * 0.125f - 0.5f;
    }

    void add(const std::string& name, std::initializer_list<int64_t> shape, bool zero = false) {
        Tensor t = tensor_cpu(dtype, shape);
        for (int64_t i = 0; i < t.numel(); ++i) {
            const float x = zero ? 0.0f : value_of(name, i);
            if (dtype == DType::kF32)
                t.f32()[i] = x;
            else if (dtype == DType::kF16)
                t.ptr<uint16_t>()[i] = f32_to_f16(x);
            else
                t.ptr<uint16_t>()[i] = f32_to_bf16(x);
        }
        tensors[name] = t;
    }

    // Writes config.json and the weights, in `n_shards` files with an index when > 1.
    std::string write(const std::string& test_name, int n_shards = 1) const {
        const std::string dir = test::temp_dir(test_name);
        std::ofstream(dir + "/config.json") << config.dump(2);
        std::vector<std::vector<std::pair<std::string, Tensor>>> shards(
            static_cast<size_t>(n_shards));
        size_t i = 0;
        for (const auto& [name, t] : tensors) shards[i++ % shards.size()].emplace_back(name, t);
        if (n_shards == 1) {
            EXPECT_TRUE(safetensors_write(dir + "/model.safetensors", shards[0]).is_ok());
            return dir;
        }
        json index = {{"metadata", json::object()}, {"weight_map", json::object()}};
        for (size_t s = 0; s < shards.size(); ++s) {
            const std::string file = "model-" + std::to_string(s + 1) + ".safetensors";
            EXPECT_TRUE(safetensors_write(dir + "/" + file, shards[s]).is_ok());
            for (const auto& [name, t] : shards[s]) index["weight_map"][name] = file;
        }
        std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2);
        return dir;
    }
};

void expect_error(const Status& s, StatusCode code, std::initializer_list<std::string> parts) {
    ASSERT_FALSE(s.is_ok());
    EXPECT_EQ(s.code(), code) << s.to_string();
    for (const std::string& p : parts) {
        EXPECT_NE(s.message().find(p), std::string::npos)
            << "'" << p << "' not in: " << s.message();
    }
}

TEST(HfLoader, LlamaSingleFileF32) {
    TinyModel m;
    m.fill();
    m.add("model.rotary_emb.inv_freq", {2});  // extra tensors are ignored
    const std::string dir = m.write("hf_llama");
    auto model = hf_model_load(dir);
    ASSERT_TRUE(model.is_ok()) << model.status().to_string();
    const ModelWeights& w = model->weights;
    EXPECT_EQ(model->config.arch, Arch::kLlama);
    EXPECT_EQ(model->files.size(), 1u);
    ASSERT_EQ(w.layers.size(), 2u);
    EXPECT_EQ(w.layers[1].wk.dim(0), 8);
    EXPECT_EQ(w.layers[1].wk.dim(1), 16);
    EXPECT_EQ(w.layers[0].w_down.dim(0), 16);
    EXPECT_EQ(w.layers[0].w_down.dim(1), 24);
    EXPECT_TRUE(w.layers[0].bq.empty());
    EXPECT_TRUE(w.layers[0].q_norm.empty());
    EXPECT_NE(w.lm_head.data, w.tok_embd.data);
    EXPECT_EQ(w.lm_head.f32()[3], TinyModel::value_of("lm_head.weight", 3));
    EXPECT_EQ(w.layers[1].wo.f32()[7],
              TinyModel::value_of("model.layers.1.self_attn.o_proj.weight", 7));
    EXPECT_EQ(w.out_norm.f32()[2], TinyModel::value_of("model.norm.weight", 2));
    EXPECT_TRUE(model->tokenizer_json_path.empty());
    EXPECT_TRUE(model->chat_template_path.empty());
}

TEST(HfLoader, Qwen2F16BiasesBecomeF32AndMatricesStayF16) {
    TinyModel m;
    m.config["model_type"] = "qwen2";
    m.config["tie_word_embeddings"] = true;
    m.dtype = DType::kF16;
    m.fill();
    auto model = hf_model_load(m.write("hf_qwen2", 3));
    ASSERT_TRUE(model.is_ok()) << model.status().to_string();
    const LayerWeights& l = model->weights.layers[1];
    EXPECT_EQ(model->files.size(), 3u);
    ASSERT_EQ(l.bk.dtype, DType::kF32);
    EXPECT_EQ(l.bk.dim(0), 8);
    for (int i = 0; i < 8; ++i) {
        EXPECT_EQ(l.bk.f32()[i], TinyModel::value_of("model.layers.1.self_attn.k_proj.bias", i));
    }
    EXPECT_EQ(l.attn_norm.dtype, DType::kF32);
    EXPECT_EQ(l.wq.dtype, DType::kF16);
    // Tied: lm_head is the embedding tensor itself.
    EXPECT_EQ(model->weights.lm_head.data, model->weights.tok_embd.data);
}

TEST(HfLoader, ShardedQwen3FixtureFromPython) {
    // Written by scripts/gen_hf_test_checkpoints.py (bf16, two shards, index, tied).
    const std::string dir = test::fixture_path("hf/tiny-qwen3-sharded");
    if (!fs::exists(dir)) GTEST_SKIP() << "fixture missing: " << dir;
    auto model = hf_model_load(dir);
    ASSERT_TRUE(model.is_ok()) << model.status().to_string();
    EXPECT_EQ(model->config.arch, Arch::kQwen3);
    EXPECT_EQ(model->config.head_dim, 8);
    EXPECT_EQ(model->files.size(), 2u);
    const LayerWeights& l = model->weights.layers[1];
    ASSERT_EQ(l.q_norm.dtype, DType::kF32);
    // np.linspace(0.5, 1.0, 8) rounded to bf16: the ends are exact.
    EXPECT_EQ(l.q_norm.f32()[0], 0.5f);
    EXPECT_EQ(l.q_norm.f32()[7], 1.0f);
    EXPECT_EQ(l.k_norm.f32()[7], 2.0f);
    EXPECT_EQ(l.attn_norm.f32()[0], 2.0f);  // 1 + layer index
    EXPECT_EQ(model->weights.out_norm.f32()[15], 2.0f);
    EXPECT_EQ(l.wq.dtype, DType::kBF16);
    EXPECT_EQ(l.wq.dim(0), 16);
    EXPECT_EQ(model->weights.lm_head.data, model->weights.tok_embd.data);
    EXPECT_FALSE(model->tokenizer_json_path.empty());
    EXPECT_FALSE(model->tokenizer_config_path.empty());
}

TEST(HfLoader, TiedWithLmHeadPresent) {
    TinyModel m;
    m.config["tie_word_embeddings"] = true;
    m.fill();
    m.add("lm_head.weight", {32, 16});
    auto model = hf_model_load(m.write("hf_tied_present"));
    ASSERT_TRUE(model.is_ok()) << model.status().to_string();
    EXPECT_EQ(model->weights.lm_head.data, model->weights.tok_embd.data);
}

TEST(HfLoader, MissingTensorsAreNamed) {
    for (const std::string name :
         {"model.layers.1.mlp.up_proj.weight", "lm_head.weight", "model.norm.weight"}) {
        TinyModel m;
        m.fill();
        m.tensors.erase(name);
        auto model = hf_model_load(m.write("hf_missing"));
        expect_error(model.status(), StatusCode::kNotFound, {"'" + name + "'"});
    }
    TinyModel q;
    q.config["model_type"] = "qwen3";
    q.fill();
    q.tensors.erase("model.layers.0.self_attn.k_norm.weight");
    expect_error(hf_model_load(q.write("hf_missing_qk")).status(), StatusCode::kNotFound,
                 {"model.layers.0.self_attn.k_norm.weight"});
}

TEST(HfLoader, ShapeMismatchNamesFileTensorAndShapes) {
    TinyModel m;
    m.fill();
    m.add("model.layers.0.self_attn.k_proj.weight", {16, 16});
    const std::string dir = m.write("hf_shape");
    expect_error(
        hf_model_load(dir).status(), StatusCode::kInvalidArgument,
        {"model.safetensors", "'model.layers.0.self_attn.k_proj.weight'", "(16, 16)", "(8, 16)"});
    TinyModel n;
    n.fill();
    n.add("model.norm.weight", {16, 1});
    expect_error(hf_model_load(n.write("hf_shape_norm")).status(), StatusCode::kInvalidArgument,
                 {"'model.norm.weight'", "(16, 1)", "(16)"});
}

TEST(HfLoader, NonFloatWeightIsRejected) {
    TinyModel m;
    m.fill();
    m.tensors["model.layers.0.mlp.up_proj.weight"] = tensor_cpu(DType::kI32, {24, 16});
    expect_error(hf_model_load(m.write("hf_i32")).status(), StatusCode::kUnsupported,
                 {"'model.layers.0.mlp.up_proj.weight'", "i32"});
}

TEST(HfLoader, OutputBiasMustBeZero) {
    TinyModel m;
    m.config["attention_bias"] = true;
    m.fill();
    auto ok = hf_model_load(m.write("hf_obias_zero"));
    ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
    EXPECT_FALSE(ok->weights.layers[0].bq.empty());
    m.add("model.layers.1.self_attn.o_proj.bias", {16});
    expect_error(hf_model_load(m.write("hf_obias")).status(), StatusCode::kUnsupported,
                 {"model.layers.1.self_attn.o_proj.bias"});
}

TEST(HfLoader, FolderProblems) {
    expect_error(hf_model_load("/nonexistent/model").status(), StatusCode::kNotFound,
                 {"/nonexistent/model/config.json"});
    TinyModel m;
    m.fill();
    const std::string dir = m.write("hf_no_weights");
    fs::remove(dir + "/model.safetensors");
    expect_error(hf_model_load(dir).status(), StatusCode::kNotFound,
                 {"model.safetensors.index.json"});
    // A bad config is reported before any weight is read.
    std::ofstream(dir + "/config.json") << R"({"model_type": "bert"})";
    expect_error(hf_model_load(dir).status(), StatusCode::kUnsupported, {"model_type", "bert"});
}

TEST(HfLoader, BadIndexes) {
    TinyModel m;
    m.fill();
    const std::string dir = m.write("hf_bad_index", 2);
    const std::string index_path = dir + "/model.safetensors.index.json";
    std::ifstream in(index_path);
    const json index = json::parse(in);
    auto with_index = [&](const json& j) {
        std::ofstream(index_path) << j.dump();
        return hf_model_load(dir).status();
    };
    json missing_shard = index;
    missing_shard["weight_map"]["model.norm.weight"] = "model-9.safetensors";
    expect_error(with_index(missing_shard), StatusCode::kNotFound, {"model-9.safetensors"});
    json wrong_shard = index;
    const std::string other = index["weight_map"]["model.norm.weight"] == "model-1.safetensors"
                                  ? "model-2.safetensors"
                                  : "model-1.safetensors";
    wrong_shard["weight_map"]["model.norm.weight"] = other;
    expect_error(with_index(wrong_shard), StatusCode::kNotFound, {"'model.norm.weight'", other});
    json escaping = index;
    escaping["weight_map"]["model.norm.weight"] = "../x.safetensors";
    expect_error(with_index(escaping), StatusCode::kParseError, {"../x.safetensors"});
    expect_error(with_index(json{{"weight_map", 3}}), StatusCode::kParseError, {"weight_map"});
    std::ofstream(index_path) << "{not json";
    expect_error(hf_model_load(dir).status(), StatusCode::kParseError,
                 {"model.safetensors.index.json"});
    EXPECT_TRUE(with_index(index).is_ok());
}

}  // namespace
}  // namespace purbo
