// purbo bench --attention: the work counts behind its rates (checked against a brute-force walk
// over the mask) and the program on tiny CPU sizes (JSON fields, rates consistent with the
// times, the time budget, bad flags).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "../../tools/purbo/attention-cost.h"
#include "test-util.h"

namespace purbo {
namespace {

// The mask of AttentionParams, written out per key: j is visible to the query at p when it is
// causal and inside the window or among the sinks.
bool visible(int64_t j, int64_t p, int64_t window, int64_t n_sink) {
    if (j > p) return false;
    return window == 0 || j > p - window || j < n_sink;
}

int64_t brute_pairs(int64_t n, int64_t window, int64_t n_sink) {
    int64_t count = 0;
    for (int64_t p = 0; p < n; ++p) {
        for (int64_t j = 0; j < n; ++j) count += visible(j, p, window, n_sink) ? 1 : 0;
    }
    return count;
}

TEST(AttentionCost, PairsMatchTheMask) {
    for (int64_t n : {1, 2, 7, 64, 300}) {
        for (int64_t window : {0, 1, 5, 64, 299, 300, 1000}) {
            for (int64_t sinks : {0, 1, 4, 70}) {
                SCOPED_TRACE(testing::Message()
                             << "n " << n << " window " << window << " sinks " << sinks);
                EXPECT_EQ(cli::attention_prefill_pairs(n, window, sinks),
                          brute_pairs(n, window, sinks));
                int64_t last_row = 0;
                for (int64_t j = 0; j < n; ++j)
                    last_row += visible(j, n - 1, window, sinks) ? 1 : 0;
                EXPECT_EQ(cli::attention_visible_keys(n - 1, window, sinks), last_row);
            }
        }
    }
    // Causal: n (n + 1) / 2 pairs, also where the brute force is too slow (1M tokens).
    EXPECT_EQ(cli::attention_prefill_pairs(1 << 20, 0, 0), int64_t{1 << 20} * ((1 << 20) + 1) / 2);
}

TEST(AttentionCost, FlopsAndBytes) {
    const cli::AttentionShape s{32, 4, 128};
    const cli::AttentionWork p = cli::attention_prefill_work(s, 1024, 0, 0, 4, 4);
    // q.k and p.v: 2 d multiply-adds each per pair and query head.
    EXPECT_DOUBLE_EQ(p.flops, 4.0 * 128 * 32 * (1024.0 * 1025 / 2));
    const cli::AttentionWork d = cli::attention_decode_work(s, 1024, 256, 4, 2, 2);
    EXPECT_EQ(d.pairs, 256 + 4);
    // K and V rows of the 260 visible keys per KV head, plus q and out of one token.
    EXPECT_DOUBLE_EQ(d.bytes, 2.0 * 260 * 4 * 128 * 2 + 2.0 * 32 * 128 * 2);
}

using test::run_purbo;
using RunResult = test::ProgramResult;

const char* kTiny =
    "bench --attention --device cpu --threads 2 --heads 4 --kv-heads 2 --head-dim 64 -r 2 -o json ";

TEST(BenchAttention, CpuJson) {
    for (const char* mask : {"", "--window 64 --sinks 4"}) {
        SCOPED_TRACE(mask);
        const RunResult r =
            run_purbo(std::string(kTiny) + "--prefill 256 --decode 512 " + mask, false);
        ASSERT_EQ(r.status, 0) << r.output;
        const nlohmann::json j = nlohmann::json::parse(r.output);
        ASSERT_EQ(j.size(), 2u);
        const int64_t window = mask[0] ? 64 : 0, sinks = mask[0] ? 4 : 0;
        const cli::AttentionShape s{4, 2, 64};
        for (const auto& row : j) {
            const bool prefill = row["mode"] == "prefill";
            const int64_t n = row["n"];
            EXPECT_EQ(n, prefill ? 256 : 512);
            EXPECT_EQ(row["shape"], "qwen3-30b-a3b");
            EXPECT_EQ(row["device"], "cpu");
            EXPECT_EQ(row["window"], window);
            EXPECT_EQ(row["sinks"], sinks);
            ASSERT_TRUE(row["skipped"].is_null()) << row.dump();
            const cli::AttentionWork w =
                prefill ? cli::attention_prefill_work(s, n, window, sinks, 4, 4)
                        : cli::attention_decode_work(s, n, window, sinks, 4, 4);
            EXPECT_EQ(row["pairs"], prefill ? brute_pairs(n, window, sinks) : w.pairs);
            const double ms = row["ms"];
            ASSERT_GT(ms, 0);
            // The rates are the counts over the printed time (rounding: the JSON keeps ~17 digits).
            EXPECT_NEAR(double(row["tflops"]) * 1e12 * ms * 1e-3 / w.flops, 1.0, 1e-9);
            EXPECT_NEAR(double(row["gbps"]) * 1e9 * ms * 1e-3 / w.bytes, 1.0, 1e-9);
        }
    }
}

TEST(BenchAttention, BudgetSkipsPredictedCases) {
    // The first case always runs (nothing to predict from); the second, 256x the pairs, cannot
    // fit a budget of a microsecond.
    const RunResult r = run_purbo(
        std::string(kTiny) + "--prefill 256,4K --decode none --max-seconds 0.000001", false);
    ASSERT_EQ(r.status, 0) << r.output;
    const nlohmann::json j = nlohmann::json::parse(r.output);
    ASSERT_EQ(j.size(), 2u);
    EXPECT_TRUE(j[0]["skipped"].is_null());
    EXPECT_EQ(j[1]["n"], 4096);
    EXPECT_TRUE(j[1]["ms"].is_null());
    EXPECT_EQ(std::string(j[1]["skipped"]).rfind("skipped: predicted", 0), 0u) << j[1].dump();
}

TEST(BenchAttention, BadFlags) {
    RunResult r = run_purbo(std::string(kTiny) + "--prefill 12X", true);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("--prefill: '12X'"), std::string::npos) << r.output;
    r = run_purbo(std::string(kTiny) + "--shape gpt2", true);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("--shape: 'gpt2'"), std::string::npos) << r.output;
    r = run_purbo("bench --attention --device cpu --heads 6 --kv-heads 4", true);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("--heads 6"), std::string::npos) << r.output;
    r = run_purbo("bench --attention --device cuda --cold-cache", true);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("--cold-cache with --device cuda"), std::string::npos) << r.output;
}

// The table's shape column names what was timed: the heads, KV heads and head dim where flags
// change the preset's (the JSON rows keep the preset's name next to the three numbers).
TEST(BenchAttention, MarkdownNamesTheShapeItTimes) {
    RunResult r = run_purbo(
        "bench --attention --device cpu --threads 2 --heads 4 --kv-heads 2 --head-dim 64 -r 1 "
        "--prefill 256 --decode none",
        false);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("| 4/2/64 | cpu | prefill | 256 |"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("qwen3-30b-a3b"), std::string::npos) << r.output;
    r = run_purbo(
        "bench --attention --device cpu --threads 2 --heads 8 --kv-heads 2 --head-dim 64 "
        "--retrieval 0.25 "
        "--window 128 -r 1 --prefill none --decode 2048 --fractions 0.1",
        false);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("| 8/2/64 | cpu | decode-sparse | 2K |"), std::string::npos)
        << r.output;
}

// --cold-cache: every row says so and is timed (the eviction between calls is not part of the
// time, which no test can see; the flag's effect on the times is in bench/RESULTS.md).
TEST(BenchAttention, ColdCacheRowsSayCold) {
    const RunResult r =
        run_purbo(std::string(kTiny) + "--prefill 256 --decode 512 --cold-cache", false);
    ASSERT_EQ(r.status, 0) << r.output;
    const nlohmann::json j = nlohmann::json::parse(r.output);
    ASSERT_EQ(j.size(), 2u);
    for (const auto& row : j) {
        EXPECT_EQ(row["cold_cache"], true) << row.dump();
        ASSERT_TRUE(row["skipped"].is_null()) << row.dump();
        EXPECT_GT(double(row["ms"]), 0);
        EXPECT_LE(int(row["inner"]), 8);  // cold calls are few per sample
    }
}

}  // namespace
}  // namespace purbo

namespace purbo {
namespace {

// The sparse layer on the CPU (8 heads, 2 retrieval, window 128, blocks of 64) with `flags`,
// as JSON rows.
nlohmann::json run_sparse_layer(const std::string& flags) {
    const auto r = test::run_purbo(
        "bench --attention --device cpu --heads 8 --kv-heads 2 --head-dim 64 --retrieval 0.25 --window 128 "
        "--sinks 4 --block 64 -r 1 -o json " + flags,
        false);
    EXPECT_EQ(r.status, 0) << r.output;
    return r.status == 0 ? nlohmann::json::parse(r.output) : nlohmann::json::array();
}

// A timed row of a selection mode: both parts measured, and they add up to the total.
void expect_select_plus_attention(const nlohmann::json& row) {
    SCOPED_TRACE(row.dump());
    ASSERT_TRUE(row["skipped"].is_null());
    const double ms = row["ms"], sel = row["select_ms"], att = row["attention_ms"];
    EXPECT_GT(sel, 0);
    EXPECT_GT(att, 0);
    EXPECT_NEAR(ms, sel + att, 1e-9);
}

// One row per prefill size, then per decode size the dense row and one row per fraction, with
// select + attention = total and the ratio to dense.
TEST(BenchAttention, SparseLayerJson) {
    const auto j = run_sparse_layer("--prefill 512 --decode 2048 --fractions 1,0.1");
    ASSERT_EQ(j.size(), 4u);
    EXPECT_EQ(j[0]["mode"], "prefill-sparse");
    EXPECT_EQ(j[0]["retrieval_heads"], 2);
    EXPECT_EQ(j[1]["mode"], "decode");
    for (size_t i : {2, 3}) {
        expect_select_plus_attention(j[i]);
        EXPECT_EQ(j[i]["dense_ms"], j[1]["ms"]);
    }
    EXPECT_EQ(j[3]["fraction"], 0.1);
    // The timed selection runs over index keys whose mass sits in the kept blocks: it keeps
    // about that share (3 of 32 blocks here), where random keys would make it keep most.
    const double select_kept = j[3]["select_kept"];
    EXPECT_GE(select_kept, 0.05);
    EXPECT_LE(select_kept, 0.2);
}

// Block-sparse prefill: after each prefill row, one row per fraction with its selection and
// attention times, and less work where fewer blocks are kept (K = 2 of 8 blocks against all 8).
TEST(BenchAttention, BlockSparsePrefillJson) {
    const auto j = run_sparse_layer("--prefill 512 --decode none --fractions 1,0.25 --block-sparse-prefill");
    ASSERT_EQ(j.size(), 3u);
    EXPECT_EQ(j[0]["mode"], "prefill-sparse");
    double work[2] = {0, 0};  // TFLOP/s x ms of the two block-sparse rows
    for (size_t i : {1, 2}) {
        EXPECT_EQ(j[i]["mode"], "prefill-block-sparse");
        EXPECT_EQ(j[i]["select"], "block");  // one selection per query block, the default
        expect_select_plus_attention(j[i]);
        work[i - 1] = static_cast<double>(j[i]["tflops"]) * static_cast<double>(j[i]["ms"]);
    }
    EXPECT_EQ(j[1]["fraction"], 1.0);
    EXPECT_EQ(j[2]["fraction"], 0.25);
    // The local heads' work is the same in both rows; the retrieval heads' is smaller at K = 2.
    EXPECT_LT(work[1], work[0]);
    // One indexer query for every token: the same rows, timed.
    const auto shared = run_sparse_layer(
        "--prefill 512 --decode none --fractions 0.25 --block-sparse-prefill --shared-index-query");
    ASSERT_EQ(shared.size(), 2u);
    expect_select_plus_attention(shared[1]);
    // One selection per token: the same rows, named so.
    const auto per_token = run_sparse_layer(
        "--prefill 512 --decode none --fractions 0.25 --block-sparse-prefill --prefill-select "
        "token");
    ASSERT_EQ(per_token.size(), 2u);
    EXPECT_EQ(per_token[1]["select"], "token");
    expect_select_plus_attention(per_token[1]);
    const auto sampled = run_sparse_layer(
        "--prefill 512 --decode none --fractions 0.25 --block-sparse-prefill --prefill-samples 8");
    ASSERT_EQ(sampled.size(), 2u);
    EXPECT_EQ(sampled[1]["samples"], 8);
    EXPECT_EQ(sampled[1]["query_block"], 64);
    expect_select_plus_attention(sampled[1]);
    // Query groups of two blocks: the same rows, named so.
    const auto groups = run_sparse_layer(
        "--prefill 512 --decode none --fractions 0.25 --block-sparse-prefill --prefill-samples 8 "
        "--prefill-query-block 128");
    ASSERT_EQ(groups.size(), 2u);
    EXPECT_EQ(groups[1]["query_block"], 128);
    expect_select_plus_attention(groups[1]);
}

// f8 index keys: the decode rows name them and the timed selection still keeps about the
// planted share.
TEST(BenchAttention, SparseLayerWithF8IndexKeys) {
    const auto j = run_sparse_layer("--prefill none --decode 2048 --fractions 0.1 --index-keys f8");
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j[1]["index_keys"], "f8_e4m3");
    EXPECT_EQ(j[1]["cache"], "f32");
    expect_select_plus_attention(j[1]);
    const double select_kept = j[1]["select_kept"];
    EXPECT_GT(select_kept, 0.05);
    EXPECT_LT(select_kept, 0.3);
}

TEST(BenchAttention, SparseLayerColdCache) {
    const auto j = run_sparse_layer("--prefill none --decode 2048 --fractions 0.1 --cold-cache");
    ASSERT_EQ(j.size(), 2u);
    for (const auto& row : j) EXPECT_EQ(row["cold_cache"], true) << row.dump();
    expect_select_plus_attention(j[1]);
}

TEST(BenchAttention, SparseLayerBadFlags) {
    for (const char* args :
         {"--retrieval 0.2 --window 0", "--retrieval 1.5 --window 64",
          "--retrieval 0.2 --window 64 --fractions 0,1", "--retrieval 0.2 --window 64 --block 0",
          "--window 64 --block-sparse-prefill", "--retrieval 0.2 --window 64 --shared-index-query",
          "--retrieval 0.2 --window 64 --block-sparse-prefill --prefill-select row",
          "--retrieval 0.2 --window 64 --block-sparse-prefill --prefill-select token "
          "--prefill-samples 8",
          "--retrieval 0.2 --window 64 --index-keys q4_0",
          "--retrieval 0.2 --window 64 --block-sparse-prefill --prefill-query-block 96",
          "--retrieval 0.2 --window 64 --block-sparse-prefill --prefill-select token "
          "--prefill-query-block 128",
          "--retrieval 0.2 --window 64 --block-sparse-prefill --select-memory 0"}) {
        const auto r = test::run_purbo(std::string("bench --attention --device cpu ") + args);
        EXPECT_EQ(r.status, 1) << args << ": " << r.output;
    }
}

}  // namespace
}  // namespace purbo
