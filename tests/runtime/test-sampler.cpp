// Sampling: exact rules (greedy, truncation sets, determinism) and statistical tests of the
// drawn frequencies against the distribution each rule defines.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "runtime/sampler.h"

namespace purbo {
namespace {

constexpr int kDraws = 20000;

std::vector<double> frequencies(Sampler& s, const std::vector<float>& logits) {
    std::vector<double> f(logits.size(), 0.0);
    for (int i = 0; i < kDraws; ++i) f[static_cast<size_t>(s.sample(logits))] += 1.0 / kDraws;
    return f;
}

// Each frequency within 5 standard deviations of a binomial(kDraws, p): a false alarm has
// probability < 1e-6 per token, a wrong rule (probabilities off by >= 0.05) is 14 sd away.
void expect_distribution(const std::vector<double>& freq, const std::vector<double>& p) {
    ASSERT_EQ(freq.size(), p.size());
    for (size_t i = 0; i < p.size(); ++i) {
        const double sd = std::sqrt(p[i] * (1 - p[i]) / kDraws);
        EXPECT_NEAR(freq[i], p[i], 5 * sd + 1e-12) << "token " << i;
    }
}

std::vector<float> log_probs(const std::vector<double>& p) {
    std::vector<float> l;
    for (double x : p) l.push_back(static_cast<float>(std::log(x)));
    return l;
}

SamplerParams plain(float temperature, uint64_t seed = 1) {
    SamplerParams p;
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
    EXPECT_EQ(sample_greedy(std::vector<float>{1, 3, 3, 2}), 1);
    Sampler s(plain(0.0f));
    EXPECT_EQ(s.sample(std::vector<float>{-1, 5, 2}), 1);
    SamplerParams k1 = plain(1.5f);
    k1.top_k = 1;  // top-k 1 is greedy whatever the temperature
    Sampler t(k1);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(t.sample(std::vector<float>{0.1f, 0.3f, 0.2f}), 1);
}

TEST(Sampler, FollowsTheSoftmaxAtTemperatureOne) {
    Sampler s(plain(1.0f));
    expect_distribution(frequencies(s, log_probs({0.5, 0.3, 0.2})), {0.5, 0.3, 0.2});
}

TEST(Sampler, TemperatureSharpens) {
    // T = 0.5 squares the probabilities: 0.25, 0.09, 0.04 normalised.
    Sampler s(plain(0.5f));
    const double z = 0.25 + 0.09 + 0.04;
    expect_distribution(frequencies(s, log_probs({0.5, 0.3, 0.2})), {0.25 / z, 0.09 / z, 0.04 / z});
}

TEST(Sampler, TopKTopPAndMinPTruncate) {
    SamplerParams k = plain(1.0f);
    k.top_k = 2;
    Sampler sk(k);
    expect_distribution(frequencies(sk, log_probs({0.5, 0.3, 0.2})), {0.625, 0.375, 0.0});

    SamplerParams p = plain(1.0f);
    p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.8: the two most likely tokens
    Sampler sp(p);
    expect_distribution(frequencies(sp, log_probs({0.5, 0.3, 0.2})), {0.625, 0.375, 0.0});

    SamplerParams m = plain(1.0f);
    m.min_p = 0.5f;  // keeps p >= 0.25: tokens 0 and 1
    Sampler sm(m);
    expect_distribution(frequencies(sm, log_probs({0.5, 0.3, 0.2})), {0.625, 0.375, 0.0});
}

TEST(Sampler, NeverPicksMinusInfinityOrNan) {
    Sampler s(plain(1.0f));
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> logits = {-inf, 0.0f, std::nanf(""), 0.0f};
    for (int i = 0; i < 2000; ++i) {
        const int32_t t = s.sample(logits);
        EXPECT_TRUE(t == 1 || t == 3) << t;
    }
}

TEST(Sampler, SameSeedSameSequence) {
    const std::vector<float> logits = log_probs({0.2, 0.2, 0.2, 0.2, 0.2});
    Sampler a(plain(1.0f, 42)), b(plain(1.0f, 42)), c(plain(1.0f, 43));
    std::vector<int32_t> sa, sb, sc;
    for (int i = 0; i < 64; ++i) {
        sa.push_back(a.sample(logits));
        sb.push_back(b.sample(logits));
        sc.push_back(c.sample(logits));
    }
    EXPECT_EQ(sa, sb);
    EXPECT_NE(sa, sc);  // 5^-64 chance of a false failure
}

}  // namespace
}  // namespace purbo
