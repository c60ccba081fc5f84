// The stage-1 loss: the f32 fast path against the double oracle, the oracle's gradient against
// finite differences, and the loss's zero.
#include <cmath>
#include <random>

#include "test-util.h"
#include "train/indexer-loss.h"

namespace purbo {
namespace {

// Queries and keys of one head, contiguous (n, d).
struct Head {
    int d = 0;
    std::vector<float> q_pre, q_post, k_pre, k_post;
    std::vector<int32_t> positions;

    HeadInputs inputs() const {
        const int64_t nq = static_cast<int64_t>(positions.size());
        const int64_t n = static_cast<int64_t>(k_pre.size()) / d;
        return {{q_pre.data(), nq, d, d},
                {q_post.data(), nq, d, d},
                {k_pre.data(), n, d, d},
                {k_post.data(), n, d, d},
                positions};
    }
};

// n tokens, all positions queried; values uniform in [-amplitude, amplitude].
Head random_head(std::mt19937& rng, int n, int d, float amplitude) {
    Head h;
    h.d = d;
    h.q_pre = test::random_floats(rng, int64_t{n} * d, amplitude);
    h.q_post = test::random_floats(rng, int64_t{n} * d, amplitude);
    h.k_pre = test::random_floats(rng, int64_t{n} * d, amplitude);
    h.k_post = test::random_floats(rng, int64_t{n} * d, amplitude);
    for (int i = 0; i < n; ++i) h.positions.push_back(i);
    return h;
}

std::vector<double> to_double(const std::vector<float>& v) {
    return {v.begin(), v.end()};
}

double max_abs(std::span<const double> v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

// max |a - b| / max |b|
double relative_max_error(const std::vector<float>& a, const std::vector<double>& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m / max_abs(b);
}

TEST(IndexerLoss, FastMatchesReference) {
    std::mt19937 rng(11);
    const int n = 300, d = 64, r = 8;
    // Amplitude 2: teacher logits have std ~1.3 and a max of ~5 over a row, like a real head's;
    // the student's (weights 0.1) have std ~2.5: a loss of a few nats.
    const Head h = random_head(rng, n, d, 2.0f);
    const std::vector<float> wq = test::random_floats(rng, r * d, 0.1f),
                             wk = test::random_floats(rng, r * d, 0.1f);
    IndexerLossOptions opt;
    opt.metric_stride = 3;
    auto ref = indexer_loss_ref(h.inputs(), to_double(wq), to_double(wk), r, opt);
    ASSERT_TRUE(ref.is_ok()) << ref.status().message();
    EXPECT_EQ(ref->n_queries, n - 1);
    for (int chunk : {1, 64, 1000}) {  // one row per block, ragged blocks, one block
        opt.query_chunk = chunk;
        auto fast = indexer_loss(h.inputs(), wq, wk, r, opt);
        ASSERT_TRUE(fast.is_ok()) << fast.status().message();
        EXPECT_EQ(fast->n_queries, n - 1);
        // Tolerances. Inputs are exact in both paths; the fast one rounds in f32 (u = 6e-8).
        // A logit is a dot product of d = 64 terms: error ~sqrt(d) u |t| ~ 5e-7 |t| (|t| <= 5),
        // exp/log add a few ulps, the row sums are in double. A row's KL moves by at most
        // ~2 max|dlogit| ~ 5e-6 absolute, and the errors are unbiased, so over 300 rows the
        // mean moves ~1e-7 absolute: 1e-6 of a loss of a few nats is a bound (measured 1e-9).
        // Gradients add two sgemm levels over nk <= 300 terms of both signs (S - T), each
        // rounding ~sqrt(nk) u ~ 1e-6 of the largest entry, on top of the probabilities'
        // ~1e-6: 1e-5 of the largest entry (measured 6e-7).
        EXPECT_NEAR(fast->loss, ref->loss, 1e-6 * ref->loss) << "chunk " << chunk;
        EXPECT_LT(relative_max_error(fast->dwq, ref->dwq), 1e-5) << "chunk " << chunk;
        EXPECT_LT(relative_max_error(fast->dwk, ref->dwk), 1e-5) << "chunk " << chunk;
        // Recall on the same sampled queries. Top-p sets can differ where two probabilities
        // are within rounding of each other at the boundary; random data has no such ties at
        // 1e-6, so the means agree to rounding.
        EXPECT_EQ(fast->metrics.n_recall, ref->metrics.n_recall);
        EXPECT_EQ(fast->metrics.n_recall, (n - 1 + 2) / 3);
        EXPECT_NEAR(fast->metrics.mass_recall(), ref->metrics.mass_recall(), 1e-6);
        EXPECT_NEAR(fast->metrics.set_recall(), ref->metrics.set_recall(), 1e-6);
    }
    EXPECT_GT(ref->loss, 0.5);
}

// The GPU path (cuda) against the same oracle, with the CPU path's tolerances (see above): its
// products are f32 cuBLAS GEMMs, its row sums double. 1300 queries make two blocks of the
// device's 1024-row chunks, so the accumulation over blocks is covered.
TEST(IndexerLoss, DeviceMatchesReference) {
    auto device = indexer_loss_device_cuda();
    if (!device.is_ok()) GTEST_SKIP() << device.status().message();
    std::mt19937 rng(12);
    for (const int n : {300, 1300}) {
        const int d = 64, r = 8;
        const Head h = random_head(rng, n, d, 2.0f);
        const std::vector<float> wq = test::random_floats(rng, r * d, 0.1f),
                                 wk = test::random_floats(rng, r * d, 0.1f);
        IndexerLossOptions opt;
        opt.metric_stride = 7;
        auto ref = indexer_loss_ref(h.inputs(), to_double(wq), to_double(wk), r, opt);
        ASSERT_TRUE(ref.is_ok()) << ref.status().message();
        auto dev = (*device)->run(h.inputs(), wq, wk, r, opt);
        ASSERT_TRUE(dev.is_ok()) << dev.status().message();
        EXPECT_EQ(dev->n_queries, n - 1);
        EXPECT_NEAR(dev->loss, ref->loss, 1e-6 * ref->loss) << "n " << n;
        EXPECT_LT(relative_max_error(dev->dwq, ref->dwq), 1e-5) << "n " << n;
        EXPECT_LT(relative_max_error(dev->dwk, ref->dwk), 1e-5) << "n " << n;
        EXPECT_EQ(dev->metrics.n_recall, ref->metrics.n_recall);
        EXPECT_EQ(dev->metrics.n_recall, (n - 1 + 6) / 7);
        EXPECT_NEAR(dev->metrics.mass_recall(), ref->metrics.mass_recall(), 1e-6);
        EXPECT_NEAR(dev->metrics.set_recall(), ref->metrics.set_recall(), 1e-6);
        // Deterministic: a second run gives the same bits.
        auto again = (*device)->run(h.inputs(), wq, wk, r, opt);
        ASSERT_TRUE(again.is_ok());
        EXPECT_EQ(again->loss, dev->loss);
        EXPECT_EQ(again->dwq, dev->dwq);
    }
    // Queries from a later position only, and the errors of the shared checks.
    const Head h = random_head(rng, 40, 8, 1.0f);
    const std::vector<float> w = test::random_floats(rng, 2 * 8, 0.5f);
    IndexerLossOptions opt;
    opt.min_position = 30;
    auto late = (*device)->run(h.inputs(), w, w, 2, opt);
    ASSERT_TRUE(late.is_ok()) << late.status().message();
    auto late_ref = indexer_loss_ref(h.inputs(), to_double(w), to_double(w), 2, opt);
    ASSERT_TRUE(late_ref.is_ok());
    EXPECT_EQ(late->n_queries, 10);
    EXPECT_NEAR(late->loss, late_ref->loss, 1e-6 * late_ref->loss);
    EXPECT_FALSE((*device)->run(h.inputs(), w, w, 3, opt).is_ok());
}

// L(w) of the oracle as a function of one weight entry.
double loss_at(const Head& h, std::vector<double> wq, std::vector<double> wk, int r,
               const IndexerLossOptions& opt, bool of_wq, size_t index, double delta) {
    (of_wq ? wq : wk)[index] += delta;
    auto res = indexer_loss_ref(h.inputs(), wq, wk, r, opt);
    EXPECT_TRUE(res.is_ok());
    return res->loss;
}

TEST(IndexerLoss, ReferenceGradientMatchesFiniteDifferences) {
    std::mt19937 rng(12);
    const int n = 12, d = 8, r = 3;
    Head h = random_head(rng, n, d, 1.5f);
    const std::vector<double> wq = to_double(test::random_floats(rng, r * d, 0.8f));
    const std::vector<double> wk = to_double(test::random_floats(rng, r * d, 0.8f));
    for (int variant = 0; variant < 2; ++variant) {
        IndexerLossOptions opt;
        if (variant == 1) {
            // A subset of query rows (as a record with selected positions gives), and the first
            // used position later than 1.
            Head sub = h;
            sub.positions = {1, 4, 5, 8, 11};
            sub.q_pre.clear();
            sub.q_post.clear();
            for (int32_t p : sub.positions) {
                sub.q_pre.insert(sub.q_pre.end(), h.q_pre.begin() + p * d,
                                 h.q_pre.begin() + (p + 1) * d);
                sub.q_post.insert(sub.q_post.end(), h.q_post.begin() + p * d,
                                  h.q_post.begin() + (p + 1) * d);
            }
            h = sub;
            opt.min_position = 3;
        }
        auto ref = indexer_loss_ref(h.inputs(), wq, wk, r, opt);
        ASSERT_TRUE(ref.is_ok()) << ref.status().message();
        EXPECT_EQ(ref->n_queries, variant == 0 ? n - 1 : 4);
        // Central differences: truncation h^2 |L'''| / 6 ~ 1e-10 and cancellation
        // eps |L| / h ~ 1e-11 at h = 1e-5, against gradients of ~1e-2..1e-1: ~1e-8 relative.
        // 1e-6 of the largest gradient entry leaves a margin of ~100.
        constexpr double kStep = 1e-5;
        for (bool of_wq : {true, false}) {
            const std::vector<double>& grad = of_wq ? ref->dwq : ref->dwk;
            for (size_t i = 0; i < grad.size(); ++i) {
                const double fd = (loss_at(h, wq, wk, r, opt, of_wq, i, kStep) -
                                   loss_at(h, wq, wk, r, opt, of_wq, i, -kStep)) /
                                  (2 * kStep);
                EXPECT_NEAR(grad[i], fd, 1e-6 * max_abs(grad))
                    << (of_wq ? "wq" : "wk") << "[" << i << "] variant " << variant;
            }
        }
    }
}

TEST(IndexerLoss, ZeroExactlyWhenTheStudentIsTheTeacher) {
    std::mt19937 rng(13);
    const int n = 80, d = 16;
    Head h = random_head(rng, n, d, 2.0f);
    h.q_post = h.q_pre;
    h.k_post = h.k_pre;
    // r = d, Wq = Wk = sqrt(scale) I: student logits (Wq q) . (Wk k) = scale q . k.
    const double root_scale = std::sqrt(1.0 / std::sqrt(static_cast<double>(d)));
    std::vector<double> w(static_cast<size_t>(d * d), 0.0);
    for (int i = 0; i < d; ++i) w[static_cast<size_t>(i * d + i)] = root_scale;
    const std::vector<float> w32(w.begin(), w.end());
    IndexerLossOptions opt;
    opt.metric_stride = 1;
    opt.query_chunk = 32;
    auto ref = indexer_loss_ref(h.inputs(), w, w, d, opt);
    auto fast = indexer_loss(h.inputs(), w32, w32, d, opt);
    ASSERT_TRUE(ref.is_ok() && fast.is_ok());
    // Double: only rounding of the two identical computations (scale q.k vs sqrt(scale)^2 q.k).
    EXPECT_NEAR(ref->loss, 0.0, 1e-12);
    EXPECT_LT(max_abs(ref->dwq), 1e-12);
    // f32: logits differ by ~d u |q||k| scale ~ 1e-6, so KL ~ (1e-6)^2 and probabilities ~1e-6.
    EXPECT_NEAR(fast->loss, 0.0, 1e-6);
    for (float g : fast->dwq) EXPECT_LT(std::abs(g), 1e-5);
    EXPECT_DOUBLE_EQ(ref->metrics.mass_recall(), 1.0);
    EXPECT_DOUBLE_EQ(fast->metrics.set_recall(), 1.0);

    // Any other student is worse.
    std::vector<double> off = w;
    off[1] = 0.3;
    auto worse = indexer_loss_ref(h.inputs(), off, w, d, opt);
    ASSERT_TRUE(worse.is_ok());
    EXPECT_GT(worse->loss, 1e-4);
    EXPECT_GT(max_abs(worse->dwq), 1e-4);
}

TEST(IndexerLoss, QuerySelectionAndErrors) {
    std::mt19937 rng(14);
    const int n = 20, d = 8, r = 2;
    Head h = random_head(rng, n, d, 1.0f);
    const std::vector<float> w = test::random_floats(rng, r * d, 0.5f);
    IndexerLossOptions opt;
    opt.min_position = 15;
    auto late = indexer_loss(h.inputs(), w, w, r, opt);
    ASSERT_TRUE(late.is_ok());
    EXPECT_EQ(late->n_queries, 5);
    opt.min_position = 20;
    auto none = indexer_loss(h.inputs(), w, w, r, opt);
    ASSERT_TRUE(none.is_ok());
    EXPECT_EQ(none->n_queries, 0);
    EXPECT_EQ(none->loss, 0.0);

    opt.min_position = 1;
    EXPECT_FALSE(indexer_loss(h.inputs(), w, w, r + 1, opt).is_ok());
    Head unsorted = h;
    std::swap(unsorted.positions[3], unsorted.positions[4]);
    auto bad = indexer_loss(unsorted.inputs(), w, w, r, opt);
    ASSERT_FALSE(bad.is_ok());
    EXPECT_NE(bad.status().message().find("ascend"), std::string::npos);
    opt.query_chunk = 0;
    EXPECT_FALSE(indexer_loss(h.inputs(), w, w, r, opt).is_ok());
}

}  // namespace
}  // namespace purbo
