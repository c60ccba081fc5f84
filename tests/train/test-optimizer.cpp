// AdamW against a hand computation, the learning-rate schedule at its key steps, and global
// gradient-norm clipping.
#include <cmath>
#include <numbers>

#include "test-util.h"
#include "train/adamw.h"
#include "train/grad-clip.h"
#include "train/schedule.h"

namespace purbo {
namespace {

// PyTorch's AdamW step in double, one parameter.
struct HandAdamW {
    double p, m = 0, v = 0;
    void step(double g, int t, double lr, double wd) {
        p *= 1.0 - lr * wd;
        m = 0.9 * m + 0.1 * g;
        v = 0.999 * v + 0.001 * g * g;
        const double m_hat = m / (1.0 - std::pow(0.9, t)), v_hat = v / (1.0 - std::pow(0.999, t));
        p -= lr * m_hat / (std::sqrt(v_hat) + 1e-8);
    }
};

TEST(AdamW, MatchesHandComputation) {
    std::vector<float> params = {1.0f, -2.0f, 0.5f};
    std::vector<HandAdamW> hand = {{1.0}, {-2.0}, {0.5}};
    const std::vector<std::vector<float>> grads = {
        {0.5f, 0.1f, 0.0f}, {-0.2f, 0.3f, 1e-3f}, {0.05f, -4.0f, 0.0f}};
    AdamWMoments moments;
    const AdamWOptions opt;  // 0.9, 0.999, 1e-8, weight decay 0.01
    for (int t = 1; t <= 3; ++t) {
        const float lr = 1e-3f * static_cast<float>(t);
        adamw_update(params, grads[static_cast<size_t>(t - 1)], moments, t, lr, opt);
        for (size_t i = 0; i < params.size(); ++i) {
            hand[i].step(grads[static_cast<size_t>(t - 1)][i], t, static_cast<double>(lr), 0.01);
            // f32 state: a few ulps of |p| (~1e-7 relative) per step.
            EXPECT_NEAR(params[i], hand[i].p, 1e-6 * std::abs(hand[i].p))
                << "step " << t << " param " << i;
        }
    }
    // Step 1 moves every parameter with a non-zero gradient by ~lr (Adam's normalised step)
    // besides the decay; a zero gradient only decays.
    std::vector<float> p = {1.0f, 1.0f};
    AdamWMoments fresh;
    adamw_update(p, std::vector<float>{0.7f, 0.0f}, fresh, 1, 0.1f, opt);
    EXPECT_NEAR(p[0], 1.0 * (1 - 0.1 * 0.01) - 0.1, 1e-6);
    EXPECT_FLOAT_EQ(p[1], 1.0f * (1 - 0.1f * 0.01f));
}

TEST(LrSchedule, WarmupThenCosine) {
    const LrSchedule s{1e-3f, 100, 600, 0.0f};
    EXPECT_FLOAT_EQ(s.at(0), 1e-5f);
    EXPECT_FLOAT_EQ(s.at(49), 0.5e-3f);
    EXPECT_FLOAT_EQ(s.at(99), 1e-3f);
    EXPECT_FLOAT_EQ(s.at(100), 1e-3f);
    EXPECT_FLOAT_EQ(s.at(350), 0.5e-3f);
    EXPECT_NEAR(s.at(599), 1e-3 * 0.5 * (1 + std::cos(std::numbers::pi * 499 / 500)), 1e-12);
    EXPECT_LT(s.at(599), 1e-7f);
    EXPECT_FLOAT_EQ(s.at(600), 0.0f);
    EXPECT_FLOAT_EQ(s.at(10000), 0.0f);  // past the end: stays at the floor
    for (int i = 101; i < 600; ++i) EXPECT_LE(s.at(i), s.at(i - 1));

    const LrSchedule floor{1e-3f, 100, 600, 0.1f};
    EXPECT_FLOAT_EQ(floor.at(350), 0.55e-3f);
    EXPECT_FLOAT_EQ(floor.at(600), 1e-4f);
    const LrSchedule no_warmup{2e-3f, 0, 10, 0.0f};
    EXPECT_FLOAT_EQ(no_warmup.at(0), 2e-3f);
    const LrSchedule all_warmup{1e-3f, 10, 10, 0.0f};
    EXPECT_FLOAT_EQ(all_warmup.at(9), 1e-3f);
    EXPECT_FLOAT_EQ(all_warmup.at(20), 1e-3f);
}

TEST(GradClip, GlobalNormOverAllTensors) {
    std::vector<float> a = {3.0f, 4.0f}, b = {12.0f};
    std::vector<std::span<float>> grads = {a, b};
    EXPECT_DOUBLE_EQ(grad_global_norm(grads), 13.0);
    EXPECT_DOUBLE_EQ(grad_clip_global_norm(grads, 1.0), 13.0);
    const float c = static_cast<float>(1.0 / (13.0 + 1e-6));
    EXPECT_FLOAT_EQ(a[0], 3.0f * c);
    EXPECT_FLOAT_EQ(a[1], 4.0f * c);
    EXPECT_FLOAT_EQ(b[0], 12.0f * c);
    EXPECT_NEAR(grad_global_norm(grads), 1.0, 1e-6);
    // Under the limit (or clipping off): untouched.
    std::vector<float> small = {0.3f, 0.4f};
    std::vector<std::span<float>> one = {small};
    EXPECT_NEAR(grad_clip_global_norm(one, 1.0), 0.5, 1e-7);
    EXPECT_FLOAT_EQ(small[0], 0.3f);
    std::vector<float> big = {30.0f, 40.0f};
    std::vector<std::span<float>> off = {big};
    EXPECT_NEAR(grad_clip_global_norm(off, 0.0), 50.0, 1e-9);
    EXPECT_FLOAT_EQ(big[1], 40.0f);
}

}  // namespace
}  // namespace purbo
