// Top-p sets and recall on hand-made distributions.
#include "test-util.h"
#include "train/indexer-metrics.h"

namespace purbo {
namespace {

std::vector<int32_t> set_of(std::vector<float> probs, float p) {
    std::vector<int32_t> s;
    top_p_set(probs, p, s);
    return s;
}

TEST(TopPSet, SmallestPrefixReachingP) {
    EXPECT_EQ(set_of({0.1f, 0.6f, 0.3f}, 0.9f), (std::vector<int32_t>{1, 2}));
    EXPECT_EQ(set_of({0.1f, 0.6f, 0.3f}, 0.5f), (std::vector<int32_t>{1}));
    EXPECT_EQ(set_of({0.1f, 0.6f, 0.3f}, 0.95f), (std::vector<int32_t>{1, 2, 0}));
    // Ties: lower index first.
    EXPECT_EQ(set_of({0.25f, 0.25f, 0.25f, 0.25f}, 0.5f), (std::vector<int32_t>{0, 1}));
    // Mass exactly p stops there (0.5 + 0.25 + 0.125 + 0.125 are exact in binary).
    EXPECT_EQ(set_of({0.125f, 0.5f, 0.25f, 0.125f}, 0.75f), (std::vector<int32_t>{1, 2}));
    // A total below p (rounding) keeps every token with mass, none without.
    EXPECT_EQ(set_of({0.4f, 0.0f, 0.4f}, 0.9f), (std::vector<int32_t>{0, 2}));
    EXPECT_TRUE(set_of({}, 0.9f).empty());
}

TEST(TopPRecall, HandMadeCases) {
    TopPScratch scratch;
    // Teacher set {0, 1} (0.5 + 0.4); student set {1, 2} (0.7 + 0.25).
    const std::vector<float> teacher = {0.5f, 0.4f, 0.05f, 0.05f};
    const std::vector<float> student = {0.01f, 0.7f, 0.25f, 0.04f};
    const TopPRecall r = top_p_recall(teacher, student, 0.9f, scratch);
    EXPECT_EQ(r.teacher_size, 2);
    EXPECT_EQ(r.student_size, 2);
    EXPECT_NEAR(r.mass_recall, 0.4 / 0.9, 1e-7);
    EXPECT_DOUBLE_EQ(r.set_recall, 0.5);
    EXPECT_NEAR(r.teacher_mass, 0.45, 1e-7);

    // The same distribution: full recall, and the kept teacher mass is the set's own.
    const TopPRecall same = top_p_recall(teacher, teacher, 0.9f, scratch);
    EXPECT_DOUBLE_EQ(same.mass_recall, 1.0);
    EXPECT_DOUBLE_EQ(same.set_recall, 1.0);
    EXPECT_NEAR(same.teacher_mass, 0.9, 1e-7);

    // A uniform student keeps almost everything: recall 1, at the price of a large set.
    const std::vector<float> uniform(4, 0.25f);
    const TopPRecall wide = top_p_recall(teacher, uniform, 0.9f, scratch);
    EXPECT_DOUBLE_EQ(wide.mass_recall, 1.0);
    EXPECT_EQ(wide.student_size, 4);

    // Disjoint sets: nothing covered.
    const std::vector<float> left = {0.95f, 0.05f, 0.0f}, right = {0.0f, 0.05f, 0.95f};
    const TopPRecall miss = top_p_recall(left, right, 0.9f, scratch);
    EXPECT_DOUBLE_EQ(miss.mass_recall, 0.0);
    EXPECT_DOUBLE_EQ(miss.set_recall, 0.0);
}

TEST(IndexerMetrics, MeansAndMerge) {
    IndexerMetrics a, b;
    a.kl_sum = 3.0;
    a.n_kl = 3;
    a.add_recall({1.0, 1.0, 0.9, 2, 4});
    b.kl_sum = 1.0;
    b.n_kl = 1;
    b.add_recall({0.5, 0.0, 0.3, 2, 2});
    a.merge(b);
    EXPECT_DOUBLE_EQ(a.kl(), 1.0);
    EXPECT_DOUBLE_EQ(a.mass_recall(), 0.75);
    EXPECT_DOUBLE_EQ(a.set_recall(), 0.5);
    EXPECT_DOUBLE_EQ(a.teacher_mass(), 0.6);
    EXPECT_DOUBLE_EQ(a.set_size_ratio(), 1.5);
    EXPECT_EQ(IndexerMetrics{}.kl(), 0.0);
}

}  // namespace
}  // namespace purbo
