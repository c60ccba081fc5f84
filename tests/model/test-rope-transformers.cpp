// RoPE frequency tables against transformers' own ROPE_INIT_FUNCTIONS
// (tests/fixtures/rope/rope-reference.json, written by scripts/gen_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/hf-config.h"
#include "model/model-config.h"
#include "test-util.h"

namespace purbo {
namespace {

// torch computes base ** (2i / d) with a vectorised pow accurate to about 1 ulp, glibc's
// powf rounds correctly; each later float32 step (division, ramp blend) can add half an ulp.
// 4 ulps of float32 (4 * 2^-23 relative) bounds the difference; a wrong formula is off by
// whole percents.
constexpr double kRelTol = 4.0 / (1 << 23);

TEST(RopeTables, MatchTransformers) {
    std::ifstream in(test::fixture_path("rope/rope-reference.json"));
    ASSERT_TRUE(in.good());
    const nlohmann::json cases = nlohmann::json::parse(in);
    ASSERT_GE(cases.size(), 5u);
    for (const auto& c : cases) {
        SCOPED_TRACE(c["name"].get<std::string>());
        nlohmann::json cfg = {{"model_type", "llama"},
                              {"hidden_size", c["head_dim"].get<int>() * 4},
                              {"num_hidden_layers", 1},
                              {"num_attention_heads", 4},
                              {"num_key_value_heads", 4},
                              {"head_dim", c["head_dim"]},
                              {"intermediate_size", 8},
                              {"vocab_size", 16},
                              {"max_position_embeddings", c["max_position_embeddings"]},
                              {"rope_parameters", c["config"]}};
        auto config = hf_config_parse(cfg.dump(), "rope-reference.json");
        ASSERT_TRUE(config.is_ok()) << config.status().to_string();
        const RopeTables t = rope_tables(config->rope);
        const auto& want = c["inv_freq"];
        ASSERT_EQ(t.inv_freq.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
            const double w = want[i].get<double>();
            EXPECT_NEAR(t.inv_freq[i], w, std::fabs(w) * kRelTol) << "pair " << i;
        }
        EXPECT_NEAR(t.attn_factor, c["attention_factor"].get<double>(), 1e-6);
    }
}

}  // namespace
}  // namespace purbo
