// record_attention: the recorded queries and keys are the model's own, whatever the
// micro-batch size, and the pre- and post-RoPE records are related by RoPE.
#include <cmath>
#include <numeric>

#include "model/hf-loader.h"
#include "sparse/attention-record.h"
#include "test-util.h"

namespace purbo {
namespace {

std::unique_ptr<Session> make_session(const HfModel& m, int n_batch) {
    SessionOptions so;
    so.backend = "cpu";
    so.n_ctx = 128;
    so.n_batch = n_batch;
    auto s = Session::create(m.config, m.weights, so);
    EXPECT_TRUE(s.is_ok()) << s.status().message();
    return s.is_ok() ? std::move(*s) : nullptr;
}

std::vector<int32_t> some_tokens(int n, int vocab) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = (i * 7919 + 13) % vocab;
    return t;
}

std::span<const float> span_of(const Tensor& t) { return {t.f32(), static_cast<size_t>(t.numel())}; }

TEST(AttentionRecord, SameRecordForAnyMicroBatch) {
    auto m = hf_model_load(test::fixture_path("hf/qwen3-headdim32"));
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    const auto tokens = some_tokens(40, m->config.n_vocab);
    auto whole = make_session(*m, 64);
    auto chunked = make_session(*m, 7);
    auto a = record_attention(*whole, tokens);
    auto b = record_attention(*chunked, tokens);
    ASSERT_TRUE(a.is_ok()) << a.status().message();
    ASSERT_TRUE(b.is_ok()) << b.status().message();
    ASSERT_EQ(a->q_post.size(), static_cast<size_t>(m->config.n_layer));
    for (int il = 0; il < m->config.n_layer; ++il) {
        const size_t l = static_cast<size_t>(il);
        EXPECT_EQ(a->q_pre[l].dim(0), 40);
        EXPECT_EQ(a->k_post[l].dim(1), m->config.n_head_kv);
        EXPECT_LT(test::nmse(span_of(b->q_pre[l]), span_of(a->q_pre[l])), 1e-10);
        EXPECT_LT(test::nmse(span_of(b->k_pre[l]), span_of(a->k_pre[l])), 1e-10);
        EXPECT_LT(test::nmse(span_of(b->q_post[l]), span_of(a->q_post[l])), 1e-10);
        EXPECT_LT(test::nmse(span_of(b->k_post[l]), span_of(a->k_post[l])), 1e-10);
        // Position 0 does not rotate; a later one does.
        const int64_t row = m->config.n_head_kv * m->config.head_dim;
        for (int64_t e = 0; e < row; ++e) EXPECT_FLOAT_EQ(a->k_pre[l].f32()[e], a->k_post[l].f32()[e]);
        double moved = 0;
        for (int64_t e = 0; e < row; ++e)
            moved += std::abs(a->k_pre[l].f32()[5 * row + e] - a->k_post[l].f32()[5 * row + e]);
        EXPECT_GT(moved, 1e-3);
    }
}

TEST(AttentionRecord, SelectedQueryRowsAndErrors) {
    auto m = hf_model_load(test::fixture_path("hf/llama-yarn"));
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    const auto tokens = some_tokens(30, m->config.n_vocab);
    auto s = make_session(*m, 8);
    auto all = record_attention(*s, tokens);
    ASSERT_TRUE(all.is_ok());
    RecordOptions opt;
    opt.query_positions = {3, 17, 29};
    opt.k_pre = false;
    auto some = record_attention(*s, tokens, opt);
    ASSERT_TRUE(some.is_ok()) << some.status().message();
    EXPECT_TRUE(some->k_pre[0].empty());
    const int64_t row = m->config.n_head * m->config.head_dim;
    for (size_t i = 0; i < 3; ++i) {
        const int64_t p = opt.query_positions[i];
        for (int64_t e = 0; e < row; ++e)
            ASSERT_EQ(some->q_post[1].f32()[static_cast<int64_t>(i) * row + e], all->q_post[1].f32()[p * row + e]);
    }
    opt.query_positions = {5, 5};
    EXPECT_FALSE(record_attention(*s, tokens, opt).is_ok());
    opt.query_positions = {30};
    auto out_of_range = record_attention(*s, tokens, opt);
    ASSERT_FALSE(out_of_range.is_ok());
    EXPECT_NE(out_of_range.status().message().find("30"), std::string::npos);
}

}  // namespace
}  // namespace purbo
