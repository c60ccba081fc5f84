// Retrieval head selection on hand-made scores: the global ranking with its tie rule, the
// budget, and the KV-group mode (whole groups, best query head first, bounded overshoot).
#include "sparse/head-selection.h"
#include "test-util.h"

namespace purbo {
namespace {

// 2 layers x 4 query heads over 2 KV heads (heads 0, 1 -> KV 0; 2, 3 -> KV 1).
const std::vector<float> kScores = {
    0.10f, 0.90f, 0.20f, 0.20f,  // layer 0
    0.30f, 0.05f, 0.50f, 0.40f,  // layer 1
};

std::vector<HeadId> heads(std::initializer_list<std::pair<int, int>> list) {
    std::vector<HeadId> out;
    for (auto [l, h] : list) out.push_back({l, h});
    return out;
}

TEST(HeadSelection, RankingBreaksTiesByLayerThenHead) {
    const std::vector<float> tied = {0.5f, 0.7f, 0.5f, 0.5f};  // 2 layers x 2 heads
    EXPECT_EQ(rank_heads(tied, 2, 2), heads({{0, 1}, {0, 0}, {1, 0}, {1, 1}}));
}

TEST(HeadSelection, QueryHeadModeTakesTheTopHeads) {
    // Budget round(0.4 * 8) = 3: 0.90 (0,1), 0.50 (1,2), 0.40 (1,3); listed ascending.
    auto s = select_retrieval_heads(kScores, 2, 4, 2, 0.4, HeadSelectionMode::kQueryHeads);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    EXPECT_EQ(s->budget, 3);
    EXPECT_EQ(s->retrieval, heads({{0, 1}, {1, 2}, {1, 3}}));
    EXPECT_EQ(s->n_kv_heads, 4);
    EXPECT_EQ(s->n_local_kv_heads, 2);  // (0, KV 1) and (1, KV 0)
    // Budget 4: 0.30 (1,0) goes fourth.
    auto four = select_retrieval_heads(kScores, 2, 4, 2, 0.5, HeadSelectionMode::kQueryHeads);
    ASSERT_TRUE(four.is_ok());
    EXPECT_EQ(four->retrieval, heads({{0, 1}, {1, 0}, {1, 2}, {1, 3}}));
    EXPECT_EQ(four->n_local_kv_heads, 1);
    auto five = select_retrieval_heads(kScores, 2, 4, 2, 0.625, HeadSelectionMode::kQueryHeads);
    ASSERT_TRUE(five.is_ok());
    // 0.20 (0,2) and (0,3) tie: the lower head goes first.
    EXPECT_EQ(five->retrieval, heads({{0, 1}, {0, 2}, {1, 0}, {1, 2}, {1, 3}}));
    auto none = select_retrieval_heads(kScores, 2, 4, 2, 0.0, HeadSelectionMode::kQueryHeads);
    ASSERT_TRUE(none.is_ok());
    EXPECT_TRUE(none->retrieval.empty());
    EXPECT_EQ(none->n_local_kv_heads, 4);
}

TEST(HeadSelection, KvGroupModeTakesWholeGroupsByTheirBestHead) {
    // Groups: (0, KV 0) max 0.90 sum 1.00; (0, KV 1) max 0.20 sum 0.40;
    //         (1, KV 0) max 0.30 sum 0.35; (1, KV 1) max 0.50 sum 0.90.
    // Budget 3: (0, KV 0) gives 2 heads, (1, KV 1) gives 4 >= 3: overshoot by 1 (< group 2).
    auto s = select_retrieval_heads(kScores, 2, 4, 2, 0.4, HeadSelectionMode::kKvGroups);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    EXPECT_EQ(s->retrieval, heads({{0, 0}, {0, 1}, {1, 2}, {1, 3}}));
    EXPECT_EQ(s->n_local_kv_heads, 2);
    // Budget 2 is met exactly by the best group.
    auto two = select_retrieval_heads(kScores, 2, 4, 2, 0.25, HeadSelectionMode::kKvGroups);
    ASSERT_TRUE(two.is_ok());
    EXPECT_EQ(two->retrieval, heads({{0, 0}, {0, 1}}));
    EXPECT_EQ(two->n_local_kv_heads, 3);
    // Budget 5: the third group is (1, KV 0), max 0.30, although (0, KV 1) has the larger
    // sum (0.40 > 0.35): the max decides.
    auto five = select_retrieval_heads(kScores, 2, 4, 2, 0.625, HeadSelectionMode::kKvGroups);
    ASSERT_TRUE(five.is_ok());
    EXPECT_EQ(five->retrieval, heads({{0, 0}, {0, 1}, {1, 0}, {1, 1}, {1, 2}, {1, 3}}));
    EXPECT_EQ(five->n_local_kv_heads, 1);
    // The same budget in query-head mode leaves no KV head local.
    auto q5 = select_retrieval_heads(kScores, 2, 4, 2, 0.625, HeadSelectionMode::kQueryHeads);
    ASSERT_TRUE(q5.is_ok());
    EXPECT_EQ(q5->n_local_kv_heads, 0);
}

TEST(HeadSelection, KvGroupTiesGoToTheLargerSumThenTheLowerGroup) {
    // 1 layer x 6 heads over 3 KV heads; every group's best head scores 0.8.
    const std::vector<float> s = {0.8f, 0.0f, 0.1f, 0.8f, 0.8f, 0.1f};
    auto one = select_retrieval_heads(s, 1, 6, 3, 2.0 / 6, HeadSelectionMode::kKvGroups);
    ASSERT_TRUE(one.is_ok());
    EXPECT_EQ(one->retrieval, heads({{0, 2}, {0, 3}}))
        << "KV 1 (sum 0.9) beats KV 0 (0.8) and KV 2 (0.9, later)";
    auto two = select_retrieval_heads(s, 1, 6, 3, 3.0 / 6, HeadSelectionMode::kKvGroups);
    ASSERT_TRUE(two.is_ok());
    EXPECT_EQ(two->retrieval, heads({{0, 2}, {0, 3}, {0, 4}, {0, 5}}));
}

TEST(HeadSelection, Errors) {
    EXPECT_FALSE(
        select_retrieval_heads(kScores, 2, 4, 2, 1.5, HeadSelectionMode::kQueryHeads).is_ok());
    EXPECT_FALSE(
        select_retrieval_heads(kScores, 2, 4, 3, 0.1, HeadSelectionMode::kQueryHeads).is_ok());
    EXPECT_FALSE(
        select_retrieval_heads(kScores, 3, 4, 2, 0.1, HeadSelectionMode::kQueryHeads).is_ok());
    std::vector<float> nan = kScores;
    nan[3] = std::nanf("");
    auto r = select_retrieval_heads(nan, 2, 4, 2, 0.1, HeadSelectionMode::kKvGroups);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.status().message().find("layer 0 head 3"), std::string::npos)
        << r.status().message();
}

}  // namespace
}  // namespace purbo
