// The GGUF route of the model loader (metadata keys, tensor names, the Llama q/k row
// permutation, Llama-3 RoPE divisors, Qwen2 biases, Qwen3 q/k norms) against transformers:
// tiny checkpoints converted to GGUF by scripts/gen_gguf_model_fixtures.py the way llama.cpp's
// converter does, run through our loader, compared with the transformers logits of the
// original checkpoint (tests/fixtures/hf/<name>/reference.safetensors).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "model/hf-loader.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "runtime/session.h"
#include "test-util.h"

namespace purbo {
namespace {

// Same computation as test-model-hf-reference.cpp (fp32 on both sides, weights stored
// exactly: bf16/f16/f32 in both files), so the same bound: NMSE < 1e-9.
constexpr double kMaxNmse = 1e-9;

class GgufModel : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufModel, MatchesTheHuggingFaceCheckpointAndTransformers) {
    const std::string name = GetParam();
    auto model = model_load(test::fixture_path("gguf-models/" + name + ".gguf"));
    ASSERT_TRUE(model.is_ok()) << model.status().to_string();
    auto hf = hf_model_load(test::fixture_path("hf/" + name));
    ASSERT_TRUE(hf.is_ok()) << hf.status().to_string();

    // The configuration read from GGUF keys equals the one from config.json.
    const ModelConfig& g = model->config;
    const ModelConfig& h = hf->config;
    EXPECT_EQ(g.arch, h.arch);
    EXPECT_EQ(g.n_layer, h.n_layer);
    EXPECT_EQ(g.n_embd, h.n_embd);
    EXPECT_EQ(g.n_head, h.n_head);
    EXPECT_EQ(g.n_head_kv, h.n_head_kv);
    EXPECT_EQ(g.head_dim, h.head_dim);
    EXPECT_EQ(g.n_ff, h.n_ff);
    EXPECT_EQ(g.n_vocab, h.n_vocab);
    EXPECT_EQ(g.attn_qkv_bias, h.attn_qkv_bias);
    EXPECT_EQ(g.attn_qk_norm, h.attn_qk_norm);
    EXPECT_EQ(g.tied_embeddings, h.tied_embeddings);
    EXPECT_FLOAT_EQ(g.rms_eps, h.rms_eps);
    const RopeTables rg = rope_tables(g.rope), rh = rope_tables(h.rope);
    ASSERT_EQ(rg.inv_freq.size(), rh.inv_freq.size());
    for (size_t i = 0; i < rg.inv_freq.size(); ++i) {
        // Divisors stored in f32 vs transformers' formula: a few ulps apart.
        EXPECT_NEAR(rg.inv_freq[i], rh.inv_freq[i], 4e-7 * rh.inv_freq[i]) << "pair " << i;
    }

    std::ifstream in(test::fixture_path("hf/" + name + "/reference.json"));
    const auto ids = nlohmann::json::parse(in)["input_ids"].get<std::vector<int32_t>>();
    auto ref = SafetensorsFile::open(test::fixture_path("hf/" + name + "/reference.safetensors"));
    ASSERT_TRUE(ref.is_ok());
    auto want = (*ref)->tensor("logits");
    ASSERT_TRUE(want.is_ok());

    SessionOptions so;
    so.backend = "cpu";
    so.n_ctx = 64;
    auto session = Session::create(model->config, model->weights, so);
    ASSERT_TRUE(session.is_ok()) << session.status().to_string();
    std::vector<float> logits;
    ASSERT_TRUE((*session)->evaluate_all(0, ids, logits).is_ok());
    EXPECT_LT(test::nmse(logits, {want->f32(), static_cast<size_t>(want->numel())}), kMaxNmse);
}

INSTANTIATE_TEST_SUITE_P(Families, GgufModel,
                         ::testing::Values("llama-llama3rope-tied", "qwen2-sharded", "qwen3-headdim32"),
                         [](const auto& info) {
                             std::string s = info.param;
                             for (char& c : s) if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                             return s;
                         });

}  // namespace
}  // namespace purbo
