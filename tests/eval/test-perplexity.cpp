// Perplexity and KL against a reference on the tiny Qwen3 fixture (3 layers x 4 query heads,
// 2 KV heads, d 32, 256 positions; no tokenizer: token ids are fed directly):
//  - perplexity is exp(mean NLL) of the scored tokens, computed here by hand from evaluate_all;
//  - KL(dense || dense) is exactly 0, and an all-local model with a small window is > 0;
//  - a sparse model's statistics and the argument checks.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/perplexity.h"
#include "model/hf-loader.h"
#include "sparse/sparse-policy.h"
#include "test-util.h"

namespace purbo {
namespace {

struct Tiny {
    HfModel model;
    std::vector<TokenSequence> sequences;
};

// Two sequences of pseudo-random tokens (different in each).
Tiny load_tiny(int n_tokens) {
    auto m = hf_model_load(test::fixture_path("hf/qwen3-headdim32"));
    EXPECT_TRUE(m.is_ok()) << m.status().to_string();
    Tiny t{std::move(*m), {}};
    for (int s = 0; s < 2; ++s) {
        TokenSequence seq{fmt::format("seq{}", s), {}};
        for (int i = 0; i < n_tokens; ++i)
            seq.tokens.push_back((i * 7919 + 11 + s * 104729) % t.model.config.n_vocab);
        t.sequences.push_back(std::move(seq));
    }
    return t;
}

std::unique_ptr<Session> make_session(const Tiny& t, const AttentionPolicyFactory& policy = {}) {
    SessionOptions so;
    so.backend = "cpu";
    so.n_threads = 1;  // a model this small gains nothing from more; a loaded machine loses much
    so.n_ctx = 256;
    so.n_batch = 64;
    auto s = Session::create(t.model.config, t.model.weights, so, policy);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return s.is_ok() ? std::move(*s) : nullptr;
}

// An adapter whose heads are all local, window W and 4 sinks: StreamingLLM.
Adapter all_local(const ModelConfig& c, int window) {
    SparseSettings settings;
    settings.window = window;
    settings.n_sink = 4;
    settings.block_size = 32;
    settings.rank = 8;
    Adapter a = adapter_for_model(c, settings);
    return a;
}

TEST(Perplexity, IsExpOfTheMeanNllFromEvaluateAll) {
    const Tiny t = load_tiny(200);
    auto session = make_session(t);
    ASSERT_NE(session, nullptr);
    constexpr int kPrefix = 120;
    // By hand: NLL of token i from the logits after token i - 1 of one evaluate_all pass.
    double nll = 0;
    int64_t n = 0;
    const int64_t n_vocab = t.model.config.n_vocab;
    for (const TokenSequence& seq : t.sequences) {
        std::vector<float> logits;  // (n_tokens, n_vocab)
        session->clear(0);
        ASSERT_TRUE(session->evaluate_all(0, seq.tokens, logits).is_ok());
        for (size_t i = kPrefix; i < seq.tokens.size(); ++i) {
            const float* row = logits.data() + (i - 1) * n_vocab;
            double max = row[0];
            for (int64_t v = 0; v < n_vocab; ++v) max = std::max<double>(max, row[v]);
            double sum = 0;
            for (int64_t v = 0; v < n_vocab; ++v) sum += std::exp(row[v] - max);
            nll += max + std::log(sum) - row[seq.tokens[i]];
            ++n;
        }
    }
    const double expected = std::exp(nll / static_cast<double>(n));

    PerplexityOptions o;
    o.n_prefix = kPrefix;
    auto r = perplexity_evaluate(*session, t.sequences, o);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->n_scored, 2 * (200 - kPrefix));
    EXPECT_FALSE(r->has_kl);
    // Decode steps and one batched pass round differently (f32 sums in another order): the
    // logits agree to about 1e-5 relative, the mean NLL to far better than 1e-4.
    EXPECT_NEAR(r->perplexity(), expected, 1e-4 * expected);
    EXPECT_NEAR(r->perplexity(), std::exp(r->mean_nll()), 1e-12);
    EXPECT_EQ(r->sparsity.decode_tokens, 0);  // dense: no statistics
}

TEST(Perplexity, KlOfDenseFromItselfIsZeroAndOfALocalModelPositive) {
    const Tiny t = load_tiny(200);
    PerplexityOptions o;
    o.n_prefix = 100;
    ReferenceLogProbs reference;
    auto dense = make_session(t);
    ASSERT_NE(dense, nullptr);
    auto first = perplexity_evaluate(*dense, t.sequences, o, nullptr, &reference);
    ASSERT_TRUE(first.is_ok()) << first.status().to_string();
    ASSERT_EQ(reference.sequences.size(), 2u);
    EXPECT_EQ(reference.sequences[0].size(), static_cast<size_t>(100 * t.model.config.n_vocab));

    // The same model again: the same logits bit for bit, so every term is exactly 0.
    auto again = perplexity_evaluate(*dense, t.sequences, o, &reference);
    ASSERT_TRUE(again.is_ok()) << again.status().to_string();
    EXPECT_TRUE(again->has_kl);
    EXPECT_EQ(again->kl_sum, 0.0);
    EXPECT_EQ(again->perplexity(), first->perplexity());

    // Every head local with a window of 16 of 100+ positions: another distribution.
    auto local = make_session(t, sparse_policy_factory(all_local(t.model.config, 16)));
    ASSERT_NE(local, nullptr);
    auto r = perplexity_evaluate(*local, t.sequences, o, &reference);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_GT(r->mean_kl(), 1e-4);
    EXPECT_NE(r->perplexity(), first->perplexity());
    // Statistics of the decode steps: 2 sequences x 99 steps, local heads see 20 keys of 100+.
    EXPECT_EQ(r->sparsity.decode_tokens, 2 * 99);
    EXPECT_GT(r->sparsity.compute_sparsity(), 0.7);
}

TEST(Perplexity, KlDivergenceByHand) {
    // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 log 2 + 0.5 log(2/3).
    const std::vector<float> p = {std::log(0.5f), std::log(0.5f)};
    const std::vector<float> q = {std::log(0.25f), std::log(0.75f)};
    EXPECT_NEAR(kl_divergence(p, q), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-7);
    EXPECT_EQ(kl_divergence(p, p), 0.0);
    // log_softmax: shift-invariant, sums to 1.
    std::vector<float> out(3);
    log_softmax(std::vector<float>{1000.0f, 1001.0f, 1002.0f}, out);
    double sum = 0;
    for (float x : out) sum += std::exp(static_cast<double>(x));
    EXPECT_NEAR(sum, 1.0, 1e-6);
    EXPECT_NEAR(out[2] - out[0], 2.0f, 1e-5);
}

TEST(Perplexity, RejectsBadArguments) {
    const Tiny t = load_tiny(50);
    auto session = make_session(t);
    ASSERT_NE(session, nullptr);
    PerplexityOptions o;
    o.n_prefix = 50;  // nothing left to score
    auto r = perplexity_evaluate(*session, t.sequences, o);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("50 tokens"), std::string::npos) << r.status().message();
    o.n_prefix = 0;
    EXPECT_FALSE(perplexity_evaluate(*session, t.sequences, o).is_ok());

    o.n_prefix = 10;
    std::vector<TokenSequence> bad = t.sequences;
    bad[1].tokens[20] = 100000;
    r = perplexity_evaluate(*session, bad, o);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("token 100000"), std::string::npos) << r.status().message();

    // A reference of other sequences.
    ReferenceLogProbs reference;
    ASSERT_TRUE(
        perplexity_evaluate(*session, std::span(t.sequences).first(1), o, nullptr, &reference)
            .is_ok());
    r = perplexity_evaluate(*session, t.sequences, o, &reference);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("reference of 1 sequences"), std::string::npos)
        << r.status().message();
    EXPECT_FALSE(perplexity_evaluate(*session, t.sequences, o, &reference, &reference).is_ok());
}

}  // namespace
}  // namespace purbo
