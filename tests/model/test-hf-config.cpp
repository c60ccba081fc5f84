#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>
#include <sstream>
#include <string>

#include "model/hf-config.h"
#include "model/model-config.h"
#include "test-util.h"

namespace purbo {
namespace {

using json = nlohmann::json;

// HuggingFaceTB/SmolLM2-135M-Instruct config.json (abridged to the fields that matter).
const char* kSmolLM2 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
  "initializer_range": 0.041666666666666664, "intermediate_size": 1536,
  "is_llama_config": true, "max_position_embeddings": 8192, "model_type": "llama",
  "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
  "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_interleaved": false,
  "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true,
  "vocab_size": 49152})";

// meta-llama/Llama-3.2-1B config.json (abridged).
const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "head_dim": 64,
  "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256})";

// Qwen/Qwen2.5-0.5B-Instruct config.json (abridged).
const char* kQwen25 = R"({
  "architectures": ["Qwen2ForCausalLM"], "hidden_act": "silu", "hidden_size": 896,
  "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
  "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
  "sliding_window": 32768, "tie_word_embeddings": true, "use_sliding_window": false,
  "vocab_size": 151936})";

// Qwen/Qwen3-0.6B config.json (abridged): head_dim is explicit and != hidden / heads.
const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "head_dim": 128,
  "hidden_act": "silu", "hidden_size": 1024, "intermediate_size": 3072,
  "max_position_embeddings": 40960, "model_type": "qwen3", "num_attention_heads": 16,
  "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
  "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "use_sliding_window": false, "vocab_size": 151936})";

// mistralai/Mistral-7B-v0.1 config.json (abridged).
const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "hidden_act": "silu", "hidden_size": 4096,
  "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
  "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096,
  "tie_word_embeddings": false, "vocab_size": 32000})";

ModelConfig parse_ok(const std::string& text) {
    auto cfg = hf_config_parse(text, "config.json");
    EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
    return cfg.is_ok() ? cfg.value() : ModelConfig{};
}

// `base` with `patch` merged in (RFC 7386: null removes a key).
std::string patched(const char* base, const std::string& patch) {
    json j = json::parse(base);
    j.merge_patch(json::parse(patch));
    return j.dump();
}

TEST(HfConfig, SmolLM2IsLlama) {
    const ModelConfig c = parse_ok(kSmolLM2);
    EXPECT_EQ(c.arch, Arch::kLlama);
    EXPECT_EQ(c.n_embd, 576);
    EXPECT_EQ(c.n_layer, 30);
    EXPECT_EQ(c.n_head, 9);
    EXPECT_EQ(c.n_head_kv, 3);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.n_ff, 1536);
    EXPECT_EQ(c.n_vocab, 49152);
    EXPECT_EQ(c.n_ctx_train, 8192);
    EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
    EXPECT_EQ(c.rope.theta, 100000.0f);
    EXPECT_EQ(c.rope.rotary_dim, 64);
    EXPECT_EQ(c.rope.scaling, RopeScaling::kNone);
    EXPECT_TRUE(c.tied_embeddings);
    EXPECT_FALSE(c.attn_qkv_bias);
    EXPECT_FALSE(c.attn_o_bias);
    EXPECT_FALSE(c.attn_qk_norm);
    EXPECT_EQ(c.sliding_window, 0);
}

TEST(HfConfig, Llama3RopeScaling) {
    const ModelConfig c = parse_ok(kLlama32);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.rope.scaling, RopeScaling::kLlama3);
    EXPECT_EQ(c.rope.factor, 32.0f);
    EXPECT_EQ(c.rope.low_freq_factor, 1.0f);
    EXPECT_EQ(c.rope.high_freq_factor, 4.0f);
    EXPECT_EQ(c.rope.original_max_position, 8192);
    EXPECT_EQ(c.rope.theta, 500000.0f);
}

TEST(HfConfig, LinearWithOldTypeKey) {
    const ModelConfig c =
        parse_ok(patched(kSmolLM2, R"({"rope_scaling": {"type": "linear", "factor": 2}})"));
    EXPECT_EQ(c.rope.scaling, RopeScaling::kLinear);
    EXPECT_EQ(c.rope.factor, 2.0f);
}

TEST(HfConfig, Qwen2HasQkvBias) {
    const ModelConfig c = parse_ok(kQwen25);
    EXPECT_EQ(c.arch, Arch::kQwen2);
    EXPECT_TRUE(c.attn_qkv_bias);
    EXPECT_FALSE(c.attn_o_bias);
    EXPECT_EQ(c.head_dim, 64);
    EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
    EXPECT_EQ(c.rope.theta, 1000000.0f);
}

TEST(HfConfig, Qwen3ExplicitHeadDimAndQkNorm) {
    const ModelConfig c = parse_ok(kQwen3);
    EXPECT_EQ(c.arch, Arch::kQwen3);
    EXPECT_EQ(c.head_dim, 128);
    EXPECT_EQ(c.rope.rotary_dim, 128);
    EXPECT_TRUE(c.attn_qk_norm);
    EXPECT_FALSE(c.attn_qkv_bias);
    // head_dim: null falls back to hidden / heads.
    EXPECT_EQ(parse_ok(patched(kQwen3, R"({"head_dim": null})")).head_dim, 64);
}

TEST(HfConfig, MistralSlidingWindow) {
    const ModelConfig c = parse_ok(kMistral);
    EXPECT_EQ(c.arch, Arch::kMistral);
    EXPECT_EQ(c.sliding_window, 4096);
    EXPECT_FALSE(c.tied_embeddings);
    EXPECT_EQ(parse_ok(patched(kMistral, R"({"sliding_window": null})")).sliding_window, 0);
}

TEST(HfConfig, DefaultsWhenOptionalFieldsAreAbsent) {
    const ModelConfig c = parse_ok(R"({"model_type": "qwen2", "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
        "vocab_size": 100})");
    EXPECT_EQ(c.n_head_kv, 4);
    EXPECT_EQ(c.n_ctx_train, 32768);  // Qwen2Config default
    EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
    EXPECT_EQ(c.rope.theta, 10000.0f);
    EXPECT_FALSE(c.tied_embeddings);
}

TEST(HfConfig, ArchitecturesFallbackWithoutModelType) {
    const ModelConfig c = parse_ok(patched(kQwen3, R"({"model_type": null})"));
    EXPECT_EQ(c.arch, Arch::kQwen3);
}

TEST(HfConfig, YarnAndBothSpellingsAgree) {
    const std::string old_spelling = patched(kQwen3, R"({"rope_scaling": {"rope_type": "yarn",
        "factor": 4.0, "original_max_position_embeddings": 32768}})");
    const std::string new_spelling = patched(kQwen3, R"({"rope_theta": null, "rope_parameters":
        {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
         "original_max_position_embeddings": 32768}})");
    const ModelConfig a = parse_ok(old_spelling);
    const ModelConfig b = parse_ok(new_spelling);
    EXPECT_EQ(a.rope.scaling, RopeScaling::kYarn);
    for (const ModelConfig* c : {&a, &b}) {
        EXPECT_EQ(c->rope.scaling, RopeScaling::kYarn);
        EXPECT_EQ(c->rope.theta, 1000000.0f);
        EXPECT_EQ(c->rope.factor, 4.0f);
        EXPECT_EQ(c->rope.original_max_position, 32768);
        EXPECT_EQ(c->rope.beta_fast, 32.0f);
        EXPECT_EQ(c->rope.beta_slow, 1.0f);
        EXPECT_TRUE(c->rope.truncate);
    }
    // Without original_max_position_embeddings YaRN uses max_position_embeddings.
    const ModelConfig d = parse_ok(patched(kQwen3, R"({"rope_scaling": {"rope_type": "yarn",
        "factor": 2.0, "beta_fast": 16, "truncate": false, "attention_factor": 1.5}})"));
    EXPECT_EQ(d.rope.original_max_position, 40960);
    EXPECT_EQ(d.rope.beta_fast, 16.0f);
    EXPECT_FALSE(d.rope.truncate);
    EXPECT_EQ(d.rope.attention_factor, 1.5f);
    // Without factor, YaRN takes max_position_embeddings / original (transformers 5).
    const ModelConfig f = parse_ok(patched(kQwen3, R"({"rope_scaling": {"rope_type": "yarn",
        "original_max_position_embeddings": 10240}})"));
    EXPECT_EQ(f.rope.factor, 4.0f);  // 40960 / 10240
    // rope_parameters with rope_type default.
    const ModelConfig e = parse_ok(patched(kSmolLM2, R"({"rope_theta": null, "rope_parameters":
        {"rope_type": "default", "rope_theta": 100000.0}})"));
    EXPECT_EQ(e.rope.scaling, RopeScaling::kNone);
    EXPECT_EQ(e.rope.theta, 100000.0f);
}

TEST(HfConfig, PartialRotaryFactor) {
    const ModelConfig c = parse_ok(patched(kSmolLM2, R"({"partial_rotary_factor": 0.5})"));
    EXPECT_EQ(c.rope.rotary_dim, 32);
}

TEST(HfConfig, AttentionBiasSetsQkvAndOBias) {
    const ModelConfig c = parse_ok(patched(kSmolLM2, R"({"attention_bias": true})"));
    EXPECT_TRUE(c.attn_qkv_bias);
    EXPECT_TRUE(c.attn_o_bias);
}

struct BadCase {
    std::string patch;  // merged into kSmolLM2 (or a whole text when it is not an object)
    StatusCode code;
    std::vector<std::string> parts;  // each must appear in the message
};

TEST(HfConfig, BadValuesNameFieldAndValue) {
    const std::vector<BadCase> cases = {
        {R"({"model_type": "gpt2"})", StatusCode::kUnsupported, {"model_type", "gpt2"}},
        {R"({"model_type": null, "architectures": ["GPT2LMHeadModel"]})",
         StatusCode::kUnsupported,
         {"architectures", "GPT2LMHeadModel"}},
        {R"({"model_type": null, "architectures": null})",
         StatusCode::kInvalidArgument,
         {"model_type"}},
        {R"({"model_type": 3})", StatusCode::kInvalidArgument, {"model_type", "3"}},
        {R"({"hidden_size": -576})", StatusCode::kInvalidArgument, {"hidden_size", "-576"}},
        {R"({"hidden_size": 0})", StatusCode::kInvalidArgument, {"hidden_size", "0"}},
        {R"({"hidden_size": "576"})", StatusCode::kInvalidArgument, {"hidden_size", "\"576\""}},
        {R"({"hidden_size": 576.5})", StatusCode::kInvalidArgument, {"hidden_size", "576.5"}},
        {R"({"hidden_size": 99999999999})",
         StatusCode::kInvalidArgument,
         {"hidden_size", "99999999999"}},
        {R"({"hidden_size": null})", StatusCode::kInvalidArgument, {"hidden_size", "missing"}},
        {R"({"num_hidden_layers": -1})", StatusCode::kInvalidArgument, {"num_hidden_layers", "-1"}},
        {R"({"num_attention_heads": 0})",
         StatusCode::kInvalidArgument,
         {"num_attention_heads", "0"}},
        {R"({"num_attention_heads": 7})",
         StatusCode::kInvalidArgument,
         {"num_key_value_heads", "3", "7"}},
        {R"({"num_attention_heads": 10, "num_key_value_heads": 5})",
         StatusCode::kInvalidArgument,
         {"num_attention_heads", "10", "576"}},
        {R"({"head_dim": 63})", StatusCode::kInvalidArgument, {"head_dim", "63"}},
        {R"({"head_dim": true})", StatusCode::kInvalidArgument, {"head_dim", "true"}},
        {R"({"intermediate_size": 0})", StatusCode::kInvalidArgument, {"intermediate_size", "0"}},
        {R"({"vocab_size": -5})", StatusCode::kInvalidArgument, {"vocab_size", "-5"}},
        {R"({"max_position_embeddings": 0})",
         StatusCode::kInvalidArgument,
         {"max_position_embeddings", "0"}},
        {R"({"rms_norm_eps": 0})", StatusCode::kInvalidArgument, {"rms_norm_eps", "0"}},
        {R"({"rms_norm_eps": "tiny"})", StatusCode::kInvalidArgument, {"rms_norm_eps", "tiny"}},
        {R"({"rope_theta": -10000})", StatusCode::kInvalidArgument, {"rope_theta", "-10000"}},
        {R"({"tie_word_embeddings": 1})",
         StatusCode::kInvalidArgument,
         {"tie_word_embeddings", "1"}},
        {R"({"hidden_act": "gelu"})", StatusCode::kUnsupported, {"hidden_act", "gelu"}},
        {R"({"mlp_bias": true})", StatusCode::kUnsupported, {"mlp_bias"}},
        {R"({"partial_rotary_factor": 1.5})",
         StatusCode::kInvalidArgument,
         {"partial_rotary_factor", "1.5"}},
        {R"({"partial_rotary_factor": 0.01})",
         StatusCode::kInvalidArgument,
         {"partial_rotary_factor", "0.01"}},
        {R"({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})",
         StatusCode::kUnsupported,
         {"rope_scaling.rope_type", "dynamic"}},
        {R"({"rope_scaling": {"type": "su"}})",
         StatusCode::kUnsupported,
         {"rope_scaling.type", "su"}},
        {R"({"rope_scaling": {"factor": 2.0}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.rope_type", "missing"}},
        {R"({"rope_scaling": "linear"})", StatusCode::kInvalidArgument, {"rope_scaling", "linear"}},
        {R"({"rope_scaling": {"rope_type": "linear"}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.factor", "missing"}},
        {R"({"rope_scaling": {"rope_type": "linear", "factor": -2}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.factor", "-2"}},
        {R"({"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
             "high_freq_factor": 4}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.original_max_position_embeddings"}},
        {R"({"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4,
             "high_freq_factor": 1, "original_max_position_embeddings": 8192}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.high_freq_factor", "1"}},
        {R"({"rope_scaling": {"rope_type": "yarn"}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.factor", "missing"}},
        {R"({"rope_scaling": {"rope_type": "yarn", "factor": 4, "truncate": "yes"}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.truncate", "yes"}},
        {R"({"rope_scaling": {"rope_type": "yarn", "factor": 4,
             "original_max_position_embeddings": -1}})",
         StatusCode::kInvalidArgument,
         {"rope_scaling.original_max_position_embeddings", "-1"}},
        {R"({"rope_parameters": {"rope_type": "yarn", "rope_theta": 0, "factor": 4}})",
         StatusCode::kInvalidArgument,
         {"rope_parameters.rope_theta", "0"}},
        {R"({"rope_parameters": {"rope_type": "longrope"}})",
         StatusCode::kUnsupported,
         {"rope_parameters.rope_type", "longrope"}},
        {R"({"rope_parameters": {"full_attention": {"rope_type": "default"}}})",
         StatusCode::kUnsupported,
         {"rope_parameters.full_attention"}},
    };
    for (const BadCase& c : cases) {
        SCOPED_TRACE(c.patch);
        auto r = hf_config_parse(patched(kSmolLM2, c.patch), "dir/config.json");
        ASSERT_FALSE(r.is_ok());
        const Status& s = r.status();
        EXPECT_EQ(s.code(), c.code) << s.to_string();
        EXPECT_NE(s.message().find("dir/config.json"), std::string::npos) << s.message();
        for (const std::string& p : c.parts) {
            EXPECT_NE(s.message().find(p), std::string::npos)
                << "'" << p << "' not in " << s.message();
        }
    }
}

TEST(HfConfig, NotJsonOrNotObject) {
    for (const char* text : {"", "{", "[1]", "\"x\"", "{\"hidden_size\": }"}) {
        auto r = hf_config_parse(text, "c.json");
        ASSERT_FALSE(r.is_ok()) << text;
        EXPECT_EQ(r.status().code(), StatusCode::kParseError) << text;
        EXPECT_NE(r.status().message().find("c.json"), std::string::npos);
    }
    auto missing = hf_config_load("/nonexistent/config.json");
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(HfConfig, ValidateCatchesInconsistentConfigs) {
    ModelConfig c = parse_ok(kSmolLM2);
    EXPECT_TRUE(c.validate("x").is_ok());
    ModelConfig bad = c;
    bad.n_head_kv = 4;
    EXPECT_NE(bad.validate("x").message().find("n_head_kv"), std::string::npos);
    bad = c;
    bad.rope.rotary_dim = 66;
    EXPECT_NE(bad.validate("x").message().find("rotary_dim"), std::string::npos);
    bad = c;
    bad.rms_eps = NAN;
    EXPECT_FALSE(bad.validate("x").is_ok());
}

// ---- RoPE tables -------------------------------------------------------------------------

RopeConfig rope_of(float theta, int dim) {
    RopeConfig r;
    r.theta = theta;
    r.rotary_dim = dim;
    return r;
}

// float32 rounding of pow and the reciprocal: within a few float ulps of the exact value.
constexpr double kFloatRel = 4.0 * 1.2e-7;

TEST(RopeTables, DefaultMatchesClosedForm) {
    const RopeTables t = rope_tables(rope_of(10000.0f, 64));
    ASSERT_EQ(t.inv_freq.size(), 32u);
    EXPECT_EQ(t.inv_freq[0], 1.0f);
    EXPECT_EQ(t.attn_factor, 1.0f);
    for (int i = 0; i < 32; ++i) {
        const double exact = std::pow(10000.0, -2.0 * i / 64.0);
        EXPECT_NEAR(t.inv_freq[static_cast<size_t>(i)], exact, exact * kFloatRel) << i;
    }
    // i = 16 -> 10000^(-1/2) = 0.01
    EXPECT_NEAR(t.inv_freq[16], 0.01, 0.01 * kFloatRel);
}

TEST(RopeTables, LinearIsDefaultOverFactor) {
    RopeConfig r = rope_of(10000.0f, 64);
    const RopeTables base = rope_tables(r);
    r.scaling = RopeScaling::kLinear;
    r.factor = 4.0f;
    const RopeTables t = rope_tables(r);
    for (size_t i = 0; i < base.inv_freq.size(); ++i) {
        EXPECT_EQ(t.inv_freq[i], base.inv_freq[i] / 4.0f) << i;  // one float division, exact
    }
}

TEST(RopeTables, Llama3KeepsHighDividesLowBlendsMiddle) {
    RopeConfig r = rope_of(500000.0f, 128);
    const RopeTables base = rope_tables(r);
    r.scaling = RopeScaling::kLlama3;
    r.factor = 8.0f;
    r.low_freq_factor = 1.0f;
    r.high_freq_factor = 4.0f;
    r.original_max_position = 8192;
    const RopeTables t = rope_tables(r);
    int n_high = 0, n_low = 0, n_mid = 0;
    for (size_t i = 0; i < base.inv_freq.size(); ++i) {
        const double wavelen = 2.0 * std::numbers::pi / base.inv_freq[i];
        if (wavelen < 8192.0 / 4.0) {  // high frequency: unchanged
            EXPECT_EQ(t.inv_freq[i], base.inv_freq[i]) << i;
            ++n_high;
        } else if (wavelen > 8192.0 / 1.0) {  // low frequency: divided by factor
            EXPECT_EQ(t.inv_freq[i], base.inv_freq[i] / 8.0f) << i;
            ++n_low;
        } else {  // blend: (1 - s) f / factor + s f with s = (8192 / wavelen - 1) / 3
            const double s = (8192.0 / wavelen - 1.0) / 3.0;
            const double want = (1.0 - s) * base.inv_freq[i] / 8.0 + s * base.inv_freq[i];
            EXPECT_NEAR(t.inv_freq[i], want, want * kFloatRel) << i;
            EXPECT_LT(t.inv_freq[i], base.inv_freq[i]);
            EXPECT_GT(t.inv_freq[i], base.inv_freq[i] / 8.0f);
            ++n_mid;
        }
    }
    EXPECT_GT(n_high, 0);
    EXPECT_GT(n_low, 0);
    EXPECT_GT(n_mid, 0);
    EXPECT_EQ(t.attn_factor, 1.0f);
}

TEST(RopeTables, YarnFactorOneIsDefault) {
    RopeConfig r = rope_of(10000.0f, 64);
    const RopeTables base = rope_tables(r);
    r.scaling = RopeScaling::kYarn;
    r.factor = 1.0f;
    r.original_max_position = 4096;
    const RopeTables t = rope_tables(r);
    EXPECT_EQ(t.attn_factor, 1.0f);  // get_mscale(1) = 1
    for (size_t i = 0; i < base.inv_freq.size(); ++i) {
        // a * (1 - w) + a * w: two float roundings at most.
        EXPECT_NEAR(t.inv_freq[i], base.inv_freq[i], base.inv_freq[i] * 2.5e-7) << i;
    }
}

TEST(RopeTables, YarnRampBetweenCorrectionBounds) {
    RopeConfig r = rope_of(10000.0f, 64);
    const RopeTables base = rope_tables(r);
    r.scaling = RopeScaling::kYarn;
    r.factor = 4.0f;
    r.original_max_position = 4096;
    const RopeTables t = rope_tables(r);
    EXPECT_FLOAT_EQ(t.attn_factor, static_cast<float>(0.1 * std::log(4.0) + 1.0));
    // Correction bounds by hand: d(n) = 64 ln(4096 / (2 pi n)) / (2 ln 10000);
    // d(32) = 10.47 -> floor 10, d(1) = 22.5 -> ceil 23.
    const double low =
        std::floor(64 * std::log(4096 / (2 * std::numbers::pi * 32)) / (2 * std::log(10000.0)));
    const double high =
        std::ceil(64 * std::log(4096 / (2 * std::numbers::pi * 1)) / (2 * std::log(10000.0)));
    ASSERT_EQ(low, 10.0);
    ASSERT_EQ(high, 23.0);
    for (size_t i = 0; i < t.inv_freq.size(); ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double want = base.inv_freq[i] * (1.0 - ramp) + base.inv_freq[i] / 4.0 * ramp;
        EXPECT_NEAR(t.inv_freq[i], want, want * kFloatRel) << i;
    }
    EXPECT_NEAR(t.inv_freq[0], base.inv_freq[0], base.inv_freq[0] * 2.5e-7);  // pure extrapolation

    r.attention_factor = 0.0f;
    r.mscale = 1.0f;
    r.mscale_all_dim = 2.0f;  // DeepSeek: get_mscale(4, 1) / get_mscale(4, 2)
    EXPECT_FLOAT_EQ(rope_tables(r).attn_factor,
                    static_cast<float>((0.1 * std::log(4.0) + 1) / (0.2 * std::log(4.0) + 1)));
    r.attention_factor = 0.75f;
    EXPECT_EQ(rope_tables(r).attn_factor, 0.75f);
}

// Compares with the numpy float32 twin of transformers' code (scripts/gen_hf_test_checkpoints.py).
TEST(RopeTables, MatchesFloat32Twin) {
    const std::string path = test::fixture_path("hf/rope-reference.json");
    std::ifstream in(path);
    if (!in) GTEST_SKIP() << "fixture missing: " << path;
    std::stringstream ss;
    ss << in.rdbuf();
    const json ref = json::parse(ss.str());
    for (const json& c : ref.at("cases")) {
        SCOPED_TRACE(c.at("name").get<std::string>());
        const json& p = c.at("rope");
        RopeConfig r = rope_of(p.at("theta").get<float>(), p.at("rotary_dim").get<int>());
        const std::string type = p.at("type");
        r.scaling = type == "linear"   ? RopeScaling::kLinear
                    : type == "llama3" ? RopeScaling::kLlama3
                    : type == "yarn"   ? RopeScaling::kYarn
                                       : RopeScaling::kNone;
        r.factor = p.value("factor", 1.0f);
        r.low_freq_factor = p.value("low_freq_factor", 1.0f);
        r.high_freq_factor = p.value("high_freq_factor", 4.0f);
        r.original_max_position = p.value("original_max_position", 0);
        r.truncate = p.value("truncate", true);
        const RopeTables t = rope_tables(r);
        const auto want = c.at("inv_freq").get<std::vector<float>>();
        ASSERT_EQ(t.inv_freq.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            // The twin uses a correctly rounded powf, as glibc's is, and the same float32
            // steps, so the tables agree bit for bit.
            EXPECT_EQ(t.inv_freq[i], want[i]) << i;
        }
        EXPECT_FLOAT_EQ(t.attn_factor, c.at("attn_factor").get<float>());
    }
}

}  // namespace
}  // namespace purbo
