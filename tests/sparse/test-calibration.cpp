// Needle calibration: the per-head score on hand-made queries and keys (a hand-computed value,
// the GQA mapping, causality, a copying head ~1 and a local head ~0), the layout of a needle
// sequence, and whole calibrations of a tiny checkpoint and of the default model.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/timer.h"
#include "model/hf-loader.h"
#include "model/model.h"
#include "sparse/calibration.h"
#include "sparse/corpus.h"
#include "test-util.h"

namespace purbo {
namespace {

// Hand-made case, d = 2 (scale 1/sqrt(2)), 4 query heads over 2 KV heads (heads 0, 1 read KV
// head 0; heads 2, 3 read KV head 1), keys 0..3, span [1, 2). A query (c * sqrt(2), 0) gives
// the logits c * k[j][0]:
//   KV head 0: k[.][0] = 0, ln 2, ln 3, 50   KV head 1: k[.][0] = ln 3, 0, 0, 50
// Key 3 is in the future of both queries (t = 2 and t = 1): its huge logit must count nothing.
TEST(NeedleScores, HandComputedValuesAndGqaMapping) {
    const float r2 = std::sqrt(2.0f), ln2 = std::log(2.0f), ln3 = std::log(3.0f);
    // k (N = 4, n_head_kv = 2, d = 2)
    const Tensor k = test::host_f32({4, 2, 2}, {0, 0, ln3, 0,  //
                                                ln2, 0, 0, 0,  //
                                                ln3, 0, 0, 0,  //
                                                50, 0, 50, 0});
    // q (nq = 2, n_head = 4, d = 2); c = 1, 2, 1, 0 for heads 0..3, both rows.
    const std::vector<float> row = {r2, 0, 2 * r2, 0, r2, 0, 0, 0};
    std::vector<float> qv = row;
    qv.insert(qv.end(), row.begin(), row.end());
    const Tensor q = test::host_f32({2, 4, 2}, qv);
    const std::vector<int32_t> positions = {2, 1};
    auto s = needle_head_scores(q, positions, k, 1, 2);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    ASSERT_EQ(s->size(), 4u);
    // Head 0, c = 1: t = 2: e^(0, ln2, ln3) = 1, 2, 3 -> 2/6; t = 1: 1, 2 -> 2/3.
    // Tolerance: the inputs are f32 (ln 2, ln 3, sqrt 2 rounded to 24 bits, relative 6e-8),
    // which moves logits of size ~1 by ~1e-7 and the masses by as much; the double
    // arithmetic adds nothing visible.
    constexpr double kTol = 1e-6;
    EXPECT_NEAR((*s)[0], (2.0 / 6 + 2.0 / 3) / 2, kTol);
    // Head 1, c = 2: t = 2: 1, 4, 9 -> 4/14; t = 1: 1, 4 -> 4/5. (Read through KV head 1 by
    // a wrong mapping it would be 9, 1, 1 -> 1/11 and 9, 1 -> 1/10.)
    EXPECT_NEAR((*s)[1], (4.0 / 14 + 4.0 / 5) / 2, kTol);
    // Head 2, c = 1 on KV head 1: t = 2: 3, 1, 1 -> 1/5; t = 1: 3, 1 -> 1/4.
    EXPECT_NEAR((*s)[2], (1.0 / 5 + 1.0 / 4) / 2, kTol);
    // Head 3, c = 0: uniform over t + 1 keys: 1/3 and 1/2.
    EXPECT_NEAR((*s)[3], (1.0 / 3 + 1.0 / 2) / 2, kTol);
}

// A copying head (its queries match the earlier needle's keys) scores ~1; a local head (its
// queries match the last few keys) scores ~0; scores hold on huge logits (no overflow).
TEST(NeedleScores, CopyingHeadNearOneLocalHeadNearZero) {
    constexpr int N = 64, d = 8, kSpanBegin = 10, kSpanEnd = 14, kLateBegin = 50, L = 4;
    // k (N, 2, d): KV head 0 marks the span on dim 0; KV head 1 marks every key on dim 1 by
    // its position, so a query can prefer the most recent keys.
    std::vector<float> kv(static_cast<size_t>(N * 2 * d), 0.0f);
    for (int j = 0; j < N; ++j) {
        if (j >= kSpanBegin && j < kSpanEnd) kv[static_cast<size_t>((j * 2 + 0) * d + 0)] = 1.0f;
        kv[static_cast<size_t>((j * 2 + 1) * d + 1)] = static_cast<float>(j) / N;
    }
    const Tensor k = test::host_f32({N, 2, d}, kv);
    std::vector<float> qv(static_cast<size_t>(L * 2 * d), 0.0f);  // (L, n_head = 2, d)
    std::vector<int32_t> positions;
    for (int i = 0; i < L; ++i) {
        positions.push_back(kLateBegin + i);
        qv[static_cast<size_t>((i * 2 + 0) * d + 0)] = 200.0f;   // head 0 -> KV head 0
        qv[static_cast<size_t>((i * 2 + 1) * d + 1)] = 2000.0f;  // head 1 -> KV head 1
    }
    const Tensor q = test::host_f32({L, 2, d}, qv);
    auto s = needle_head_scores(q, positions, k, kSpanBegin, kSpanEnd);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    EXPECT_GT((*s)[0], 0.999);
    EXPECT_LT((*s)[1], 1e-6);
    EXPECT_GE((*s)[1], 0.0);
}

TEST(NeedleScores, RejectsBadShapesAndSpans) {
    const Tensor q = test::host_f32({1, 3, 2}, std::vector<float>(6, 0.0f));
    const Tensor k = test::host_f32({4, 2, 2}, std::vector<float>(16, 0.0f));
    const std::vector<int32_t> pos = {3};
    EXPECT_FALSE(needle_head_scores(q, pos, k, 0, 1).is_ok()) << "3 heads over 2 KV heads";
    const Tensor q2 = test::host_f32({1, 2, 2}, std::vector<float>(4, 0.0f));
    EXPECT_TRUE(needle_head_scores(q2, pos, k, 0, 1).is_ok());
    EXPECT_FALSE(needle_head_scores(q2, pos, k, 2, 2).is_ok()) << "empty span";
    EXPECT_FALSE(needle_head_scores(q2, pos, k, 0, 5).is_ok()) << "span past the keys";
    const std::vector<int32_t> bad = {4};
    EXPECT_FALSE(needle_head_scores(q2, bad, k, 0, 1).is_ok()) << "query past the keys";
}

TEST(NeedleSequence, LayoutAndLineBreaks) {
    std::vector<int32_t> doc(100);
    std::iota(doc.begin(), doc.end(), 1000);
    const std::vector<int32_t> needle = {1, 2, 3};
    NeedlePlacement p;
    auto seq = needle_sequence(doc, needle, 40, 0.1, 0.9, {}, &p);
    ASSERT_TRUE(seq.is_ok()) << seq.status().message();
    ASSERT_EQ(seq->size(), 40u);
    EXPECT_EQ(p.early_begin, 4);  // round(0.1 * 40)
    EXPECT_EQ(p.late_begin, 36);  // round(0.9 * 40)
    EXPECT_EQ(p.needle_len, 3);
    const std::vector<int32_t> expect_start = {1000, 1001, 1002, 1003, 1, 2, 3, 1004};
    EXPECT_TRUE(std::equal(expect_start.begin(), expect_start.end(), seq->begin()));
    EXPECT_EQ((*seq)[35], 1000 + 32);  // 33 document tokens precede the later needle
    EXPECT_EQ((*seq)[36], 1);
    EXPECT_EQ((*seq)[39], 1000 + 33);  // the document resumes where it paused, then crops

    // The later needle always ends inside the sequence, even at depth 1.
    auto end = needle_sequence(doc, needle, 40, 0.1, 1.0, {}, &p);
    ASSERT_TRUE(end.is_ok());
    EXPECT_EQ(p.late_begin, 37);

    // Line breaks: token 1002 (document offset 2) and 1030 are "newlines"; a 100-token
    // sequence searches 2 tokens either way. Early needle wanted at 4 -> after offset 2, i.e.
    // at 3 (distance 1 beats 5). Late needle: none within reach -> stays.
    std::vector<int32_t> long_doc(200);
    std::iota(long_doc.begin(), long_doc.end(), 1000);
    const std::vector<int32_t> breaks = {1002, 1030};
    auto snapped = needle_sequence(long_doc, needle, 100, 0.04, 0.9, breaks, &p);
    ASSERT_TRUE(snapped.is_ok());
    EXPECT_EQ(p.early_begin, 3);
    EXPECT_EQ((*snapped)[2], 1002);
    EXPECT_EQ((*snapped)[3], 1);
    EXPECT_EQ(p.late_begin, 90);

    EXPECT_FALSE(needle_sequence(std::span(doc).first(33), needle, 40, 0.1, 0.9, {}, &p).is_ok())
        << "too short: 34 document tokens needed";
    EXPECT_FALSE(needle_sequence(doc, needle, 40, 0.9, 0.1, {}, &p).is_ok());
    EXPECT_FALSE(needle_sequence(doc, {}, 40, 0.1, 0.9, {}, &p).is_ok());
}

TEST(NeedleSequence, DepthPairs) {
    const auto one = needle_depths(1);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_DOUBLE_EQ(one[0].first, 0.15);
    EXPECT_DOUBLE_EQ(one[0].second, 0.875);
    const auto three = needle_depths(3);
    ASSERT_EQ(three.size(), 3u);
    EXPECT_DOUBLE_EQ(three[0].first, 0.10);
    EXPECT_DOUBLE_EQ(three[0].second, 0.95);
    EXPECT_DOUBLE_EQ(three[2].first, 0.20);
    EXPECT_DOUBLE_EQ(three[2].second, 0.80);
}

std::vector<int32_t> pseudo_text(int n, int vocab, int seed) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
        t[static_cast<size_t>(i)] = 3 + (i * 7919 + seed * 104729) % (vocab - 3);
    return t;
}

// The whole calibration on a tiny checkpoint fed token ids.
TEST(Calibration, TinyCheckpointShapesRangesAndDeterminism) {
    auto m = hf_model_load(test::fixture_path("hf/qwen3-headdim32"));
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    SessionOptions so;
    so.n_ctx = 128;
    so.n_batch = 32;
    auto session = Session::create(m->config, m->weights, so);
    ASSERT_TRUE(session.is_ok()) << session.status().message();
    const std::vector<CalibrationDocument> docs = {{"one", pseudo_text(120, m->config.n_vocab, 1)},
                                                   {"two", pseudo_text(120, m->config.n_vocab, 2)}};
    const std::vector<int32_t> needle = {5, 17, 42, 99, 7, 250};
    CalibrationOptions o;
    o.n_tokens = 96;
    o.n_depths = 2;
    int progress_calls = 0;
    o.on_progress = [&](const CalibrationProgress& p) {
        ++progress_calls;
        EXPECT_EQ(p.placement.needle_len, 6);
        EXPECT_LT(p.placement.early_begin + 6, p.placement.late_begin);
    };
    auto a = calibrate_heads(**session, docs, needle, o);
    ASSERT_TRUE(a.is_ok()) << a.status().message();
    EXPECT_EQ(progress_calls, 4);
    EXPECT_EQ(a->n_layer, 3);
    EXPECT_EQ(a->n_head, 4);
    ASSERT_EQ(a->scores.size(), 12u);
    EXPECT_EQ(a->n_documents, 2);
    EXPECT_EQ(a->n_depths, 2);
    // Runs end with the later needle: at 80% depth after 77 + 6 tokens; at 95% (91) it would
    // end past the sequence, so it moves back to end at 96.
    EXPECT_EQ(a->tokens_processed, 2 * (96 + 83));
    EXPECT_EQ(a->document_names, (std::vector<std::string>{"one", "two"}));
    EXPECT_NE(a->info().find("2 documents (one, two) x 2 depths, 96 tokens each, needle 6 tokens"),
              std::string::npos)
        << a->info();
    for (double s : a->scores) {
        EXPECT_GE(s, 0.0);
        EXPECT_LE(s, 1.0);
    }
    // Random weights still attend somewhere: not every score is 0.
    EXPECT_GT(*std::max_element(a->scores.begin(), a->scores.end()), 1e-4);
    auto b = calibrate_heads(**session, docs, needle, o);
    ASSERT_TRUE(b.is_ok());
    EXPECT_EQ(a->scores, b->scores) << "same inputs, same scores, bit for bit";

    o.n_tokens = 200;
    EXPECT_FALSE(calibrate_heads(**session, docs, needle, o).is_ok()) << "longer than n_ctx";
    o.n_tokens = 128;
    const std::vector<CalibrationDocument> short_docs = {
        {"short", pseudo_text(100, m->config.n_vocab, 3)}};
    auto short_doc = calibrate_heads(**session, short_docs, needle, o);
    ASSERT_FALSE(short_doc.is_ok()) << "116 document tokens needed";
    EXPECT_NE(short_doc.status().message().find("'short'"), std::string::npos)
        << short_doc.status().message();
}

// The default model on two licence texts at 1024 tokens: a few heads retrieve, most do not.
TEST(Calibration, DefaultModelHasClearRetrievalHeads) {
    PURBO_REQUIRE_DEFAULT_MODEL(path);
    CorpusOptions co;
    co.calibration_only = true;
    co.min_documents = 2;
    auto texts = corpus_documents(co);
    if (!texts.is_ok())
        GTEST_SKIP() << "no licence texts on this machine: " << texts.status().message();
    auto m = model_load(path);
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    const Tokenizer& tok = *m->tokenizer;
    constexpr int kTokens = 1024;
    const auto tokenized = corpus_tokenize(tok, *texts);
    const auto separator = corpus_separator(tok);
    std::vector<CalibrationDocument> docs;
    for (size_t i = 0; i < 2; ++i) {
        auto s = corpus_document_sequence(tokenized, i, separator, kTokens);
        ASSERT_TRUE(s.is_ok()) << s.status().message();
        docs.push_back({s->name, s->tokens});
    }
    const std::vector<int32_t> needle = tok.encode(kCalibrationNeedle, false, false);
    EXPECT_GE(needle.size(), 24u);
    EXPECT_LE(needle.size(), 64u);
    SessionOptions so;
    so.n_ctx = kTokens;
    auto session = Session::create(m->config, m->weights, so);
    ASSERT_TRUE(session.is_ok()) << session.status().message();
    CalibrationOptions o;
    o.n_tokens = kTokens;
    o.n_depths = 1;
    o.on_progress = [](const CalibrationProgress& p) {
        std::printf("document %d: %.1f s (forward and record %.1f s)\n", p.document, p.seconds,
                    p.record_seconds);
    };
    const double t0 = time_now_ms();
    auto r = calibrate_heads(**session, docs, needle, o);
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    const double seconds = (time_now_ms() - t0) / 1e3;
    std::vector<double> sorted = r->scores;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (double s : sorted) {
        ASSERT_GE(s, 0.0);
        ASSERT_LE(s, 1.0);
    }
    const size_t n_top =
        static_cast<size_t>(std::lround(0.15 * static_cast<double>(sorted.size())));
    const double top_mean =
        std::accumulate(sorted.begin(), sorted.begin() + static_cast<ptrdiff_t>(n_top), 0.0) /
        n_top;
    const double median = sorted[sorted.size() / 2];
    std::printf("calibration of %zu heads: %.1f s, best %.3f, top-15%% mean %.4f, median %.5f\n",
                sorted.size(), seconds, sorted[0], top_mean, median);
    EXPECT_GT(top_mean, 5.0 * median);
    // Some head retrieves in earnest: most of its attention lands on the earlier needle.
    EXPECT_GT(sorted[0], 0.3);
    EXPECT_LT(seconds, 60.0) << "2 cores should calibrate 2 x 1K tokens well within a minute";
}

}  // namespace
}  // namespace purbo
