// select_blocks on hand-computed cases: block masses chosen so that the kept set is known
// (the reference must be right), run on every available backend since none of them sits near
// a tie of masses or of the stopping test; and every argument check of check_select_blocks,
// which must name the bad value, on every backend. Random shapes against cpu-ref are in
// test-backend-ops.cpp.
//
// Letters: n tokens, hr retrieval heads, r index dim, c cache capacity, s sequence slots,
// B block size.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <ostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "test-util.h"

namespace purbo {
namespace {

using test::host_f32;

// One hand-computed call: inputs, parameters and the kept blocks of each (token, head) row.
struct HandCase {
    std::string name;  // gtest-safe
    int64_t s = 1, hr = 1, c = 0, r = 1;
    std::vector<float> iq;          // (n, hr, r)
    std::vector<float> keys;        // (s, hr, c, r)
    std::vector<int32_t> seq, pos;  // (n,)
    BlockSelectParams params;
    int64_t max_blocks = 0;
    std::vector<std::vector<int32_t>> expected;  // (n * hr) rows: kept block ids, ascending
};

// r = 1 keys whose scores under iq = 1 and scale = 1 are log(weight): a key's share of the
// index distribution is its weight over the sum of the weights.
std::vector<float> log_weights(std::initializer_list<double> weights) {
    std::vector<float> keys;
    for (double w : weights) keys.push_back(static_cast<float>(std::log(w)));
    return keys;
}

HandCase single_row(std::string name, int block_size, std::vector<float> keys, int32_t pos,
                    float top_p, std::vector<int32_t> expected) {
    HandCase hc;
    hc.name = std::move(name);
    hc.c = static_cast<int64_t>(keys.size());
    hc.iq = {1.0f};
    hc.keys = std::move(keys);
    hc.seq = {0};
    hc.pos = {pos};
    hc.params = {block_size, top_p, 1.0f};
    hc.max_blocks = (hc.c + block_size - 1) / block_size + 1;  // a spare entry, which reads -1
    hc.expected = {std::move(expected)};
    return hc;
}

// Keys for positions at the edges of blocks of 4 (see hand_cases).
std::vector<float> edges_keys() {
    return {5, 5, 5, 5, 0, 5, 5, 5};
}

std::vector<HandCase> hand_cases() {
    std::vector<HandCase> cases;
    // B = 2, pos 8: blocks of mass 0.05, 0.30, 0.10, 0.35 and 0.20, the last (the block of pos,
    // partial: key 9 is in the future and would outweigh everything if it were counted).
    // Always kept: blocks 0 and 4, mass 0.25. Top-p applies to the other 0.75: block 3 holds
    // 0.467 of it, 3 and 1 0.867, all three 1.
    std::vector<float> five =
        log_weights({0.025, 0.025, 0.15, 0.15, 0.05, 0.05, 0.175, 0.175, 0.20});
    five.push_back(50.0f);
    cases.push_back(
        single_row("small_p_keeps_the_heaviest_other_block", 2, five, 8, 0.2f, {0, 3, 4}));
    cases.push_back(single_row("one_block_needed", 2, five, 8, 0.4f, {0, 3, 4}));
    cases.push_back(single_row("p_of_the_rest_not_of_the_whole", 2, five, 8, 0.5f, {0, 1, 3, 4}));
    cases.push_back(single_row("two_blocks_needed", 2, five, 8, 0.8f, {0, 1, 3, 4}));
    cases.push_back(single_row("every_block_needed", 2, five, 8, 0.95f, {0, 1, 2, 3, 4}));
    cases.push_back(single_row("top_p_1_keeps_every_block", 2, five, 8, 1.0f, {0, 1, 2, 3, 4}));

    // B = 2, pos 9: blocks 1, 2, 3 tie at 0.2 (identical keys), block 0 0.1, block 4 0.3.
    // Always kept 0.4; each tied block holds a third of the rest; ties go lower id first.
    const std::vector<float> ties =
        log_weights({0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15});
    cases.push_back(single_row("tie_first_of_three", 2, ties, 9, 0.3f, {0, 1, 4}));
    cases.push_back(single_row("tie_first_two_of_three", 2, ties, 9, 0.6f, {0, 1, 2, 4}));
    cases.push_back(single_row("tie_all_three", 2, ties, 9, 0.9f, {0, 1, 2, 3, 4}));

    // A budget of K blocks (max_blocks), the always-kept ones included. With top_p = 1 the
    // top-K by mass: of `five`, 3 (0.35) then 1 (0.30) then 2 (0.10).
    auto budget = [](HandCase hc, int k) {
        hc.params.max_blocks = k;
        return hc;
    };
    cases.push_back(budget(single_row("top_k_2_keeps_the_always_kept", 2, five, 8, 1.0f, {0, 4}), 2));
    cases.push_back(budget(single_row("top_k_3", 2, five, 8, 1.0f, {0, 3, 4}), 3));
    cases.push_back(budget(single_row("top_k_4", 2, five, 8, 1.0f, {0, 1, 3, 4}), 4));
    cases.push_back(budget(single_row("top_k_every_block", 2, five, 8, 1.0f, {0, 1, 2, 3, 4}), 5));
    cases.push_back(budget(single_row("top_k_above_the_blocks", 2, five, 8, 1.0f, {0, 1, 2, 3, 4}), 9));
    // K = 1 cannot drop the block of pos or the sinks' block.
    cases.push_back(budget(single_row("top_k_1_keeps_both_always_kept", 2, five, 8, 1.0f, {0, 4}), 1));
    cases.push_back(budget(single_row("top_k_1_in_block_0", 4, edges_keys(), 2, 1.0f, {0}), 1));
    // Both rules: whichever stops first. p 0.4 needs 0 + 4 + 3 (3 blocks < K 4); p 0.95 would
    // need every block, K 4 stops at 0 + 4 + 3 + 1.
    cases.push_back(budget(single_row("top_p_stops_before_k", 2, five, 8, 0.4f, {0, 3, 4}), 4));
    cases.push_back(budget(single_row("k_stops_before_top_p", 2, five, 8, 0.95f, {0, 1, 3, 4}), 4));
    // Ties at the budget's boundary go to the lower id, as for top_p.
    cases.push_back(budget(single_row("top_k_tie_first_of_three", 2, ties, 9, 1.0f, {0, 1, 4}), 3));
    cases.push_back(budget(single_row("top_k_tie_first_two_of_three", 2, ties, 9, 1.0f, {0, 1, 2, 4}), 4));

    // Block 1's keys score -1000: a mass of exactly 0 in double. Only top_p = 1 keeps it.
    const std::vector<float> massless = {0, 0, -1000, -1000, 0, 0};
    cases.push_back(single_row("top_p_1_keeps_a_massless_block", 2, massless, 5, 1.0f, {0, 1, 2}));
    cases.push_back(single_row("massless_block_dropped", 2, massless, 5, 0.999f, {0, 2}));

    // Positions at the edges of blocks (B = 4): inside block 0, its last key, the first key of
    // block 1 (a block of one key, kept although its key weighs e^-5 of the others).
    const std::vector<float> edges = edges_keys();
    cases.push_back(single_row("pos_inside_block_0", 4, edges, 2, 0.5f, {0}));
    cases.push_back(single_row("pos_at_the_end_of_block_0", 4, edges, 3, 0.5f, {0}));
    cases.push_back(single_row("pos_at_a_block_boundary", 4, edges, 4, 0.01f, {0, 1}));
    cases.push_back(single_row("block_larger_than_the_cache", 16, edges, 7, 0.5f, {0}));

    // B = 1, keys of weight 1, 4, 1, 1 (blocks 0 and 3 always kept): with scale 1 block 1 holds
    // 0.8 of the rest, enough for p 0.75; with scale 0.5 the weights are 1, 2, 1, 1 and it
    // holds 0.667, so block 2 is needed too.
    const std::vector<float> scaled = log_weights({1, 4, 1, 1});
    cases.push_back(single_row("scale_1", 1, scaled, 3, 0.75f, {0, 1, 3}));
    HandCase half = single_row("scale_half", 1, scaled, 3, 0.75f, {0, 1, 2, 3});
    half.params.scale = 0.5f;
    cases.push_back(half);

    // Sinks that take most of the index mass (block 0: 0.9; blocks 1, 2: 0.03, 0.05; the block
    // of pos 0.02) still leave the selection the context's heaviest blocks: p applies to the
    // 0.08 outside the always-kept blocks (block 2 holds 0.625 of it).
    const std::vector<float> sinks = log_weights({0.45, 0.45, 0.01, 0.02, 0.03, 0.02, 0.01, 0.01});
    cases.push_back(
        single_row("heavy_sinks_keep_the_heaviest_block", 2, sinks, 7, 0.5f, {0, 2, 3}));
    cases.push_back(single_row("heavy_sinks_keep_both_blocks", 2, sinks, 7, 0.9f, {0, 1, 2, 3}));

    // Tokens, heads and sequences index the right keys: s = 2, hr = 2, r = 2, c = 8, B = 2.
    // Keys score 0 except the two keys of one heavy block per (sequence, head), which score 5;
    // sequence 0's key 7 scores 50 and lies in the future of its token (pos 6).
    HandCase grid;
    grid.name = "tokens_heads_and_sequences";
    grid.s = 2;
    grid.hr = 2;
    grid.c = 8;
    grid.r = 2;
    grid.iq = {1, -1, 1, -1, 1, -1, 1, -1};    // q = (1, -1) for every token and head
    grid.keys.assign(2 * 2 * 8 * 2, 0.5f);     // (0.5, 0.5) scores 0
    const int heavy[2][2] = {{1, 2}, {2, 1}};  // [seq][head]
    for (int s = 0; s < 2; ++s) {
        for (int j = 0; j < 2; ++j) {
            for (int t = 2 * heavy[s][j]; t < 2 * heavy[s][j] + 2; ++t) {
                grid.keys[static_cast<size_t>(((s * 2 + j) * 8 + t) * 2 + 0)] = 3.0f;
                grid.keys[static_cast<size_t>(((s * 2 + j) * 8 + t) * 2 + 1)] = -2.0f;
            }
            if (s == 0) {
                grid.keys[static_cast<size_t>(((s * 2 + j) * 8 + 7) * 2 + 0)] = 30.0f;
                grid.keys[static_cast<size_t>(((s * 2 + j) * 8 + 7) * 2 + 1)] = -20.0f;
            }
        }
    }
    grid.seq = {1, 0};
    grid.pos = {7, 6};
    grid.params = {2, 0.5f, 1.0f};
    grid.max_blocks = 4;
    grid.expected = {{0, 2, 3}, {0, 1, 3}, {0, 1, 3}, {0, 2, 3}};
    cases.push_back(grid);
    return cases;
}

// A host tensor copied onto the backend (f32 or i32, up to 4 dims).
Tensor to_backend(Backend& backend, const Tensor& host) {
    const auto& d = host.shape;
    Tensor t;
    switch (host.ndim) {
        case 1:
            t = backend.alloc(host.dtype, {d[0]}, host.name);
            break;
        case 2:
            t = backend.alloc(host.dtype, {d[0], d[1]}, host.name);
            break;
        case 3:
            t = backend.alloc(host.dtype, {d[0], d[1], d[2]}, host.name);
            break;
        default:
            t = backend.alloc(host.dtype, {d[0], d[1], d[2], d[3]}, host.name);
            break;
    }
    EXPECT_TRUE(backend.from_host(host, t).is_ok());
    return t;
}

// gtest prints a failing case's parameter: its name, not its bytes.
void PrintTo(const HandCase& hc, std::ostream* os) {
    *os << hc.name;
}

class HandComputed : public ::testing::TestWithParam<HandCase> {};

TEST_P(HandComputed, KeepsTheExpectedBlocks) {
    const HandCase& hc = GetParam();
    const int64_t n = static_cast<int64_t>(hc.seq.size());
    constexpr int32_t kPoison = 12345;  // every entry must be written, past the count with -1
    for (const std::string& name : backend_available()) {
        SCOPED_TRACE("backend " + name);
        auto created = backend_create(name);
        ASSERT_TRUE(created.is_ok()) << created.status().to_string();
        Backend& backend = **created;
        Tensor blocks_host = tensor_cpu(DType::kI32, {n, hc.hr, hc.max_blocks}, "blocks");
        Tensor counts_host = tensor_cpu(DType::kI32, {n, hc.hr}, "counts");
        std::fill(blocks_host.ptr<int32_t>(), blocks_host.ptr<int32_t>() + blocks_host.numel(),
                  kPoison);
        std::fill(counts_host.ptr<int32_t>(), counts_host.ptr<int32_t>() + counts_host.numel(),
                  kPoison);
        Tensor blocks = to_backend(backend, blocks_host), counts = to_backend(backend, counts_host);
        const Status st =
            backend.select_blocks(to_backend(backend, host_f32({n, hc.hr, hc.r}, hc.iq)),
                                  to_backend(backend, host_f32({hc.s, hc.hr, hc.c, hc.r}, hc.keys)),
                                  {hc.seq, hc.pos}, hc.params, blocks, counts);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        ASSERT_TRUE(backend.to_host(blocks, blocks_host).is_ok());
        ASSERT_TRUE(backend.to_host(counts, counts_host).is_ok());
        for (int64_t row = 0; row < n * hc.hr; ++row) {
            SCOPED_TRACE(fmt::format("token {} head {}", row / hc.hr, row % hc.hr));
            const std::vector<int32_t>& want = hc.expected[static_cast<size_t>(row)];
            const int32_t* got = blocks_host.ptr<int32_t>() + row * hc.max_blocks;
            ASSERT_EQ(counts_host.ptr<int32_t>()[row], static_cast<int32_t>(want.size()));
            for (int64_t k = 0; k < hc.max_blocks; ++k) {
                const int32_t expected =
                    k < static_cast<int64_t>(want.size()) ? want[static_cast<size_t>(k)] : -1;
                EXPECT_EQ(got[k], expected) << "entry " << k;
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(select_blocks, HandComputed, ::testing::ValuesIn(hand_cases()),
                         [](const ::testing::TestParamInfo<HandCase>& info) {
                             return info.param.name;
                         });

// ---- argument checks -------------------------------------------------------------------------

// A valid call, to spoil one argument of: iq (1, 2, 4), index_keys (1, 2, 8, 4), B = 4 (c holds
// 2 blocks), blocks (1, 2, 2), counts (1, 2), token 0 of sequence 0 at position 7.
struct SelectCall {
    Tensor iq = tensor_cpu(DType::kF32, {1, 2, 4}, "iq");
    Tensor index_keys = tensor_cpu(DType::kF32, {1, 2, 8, 4}, "index_keys");
    std::vector<int32_t> seq = {0}, pos = {7};
    BlockSelectParams params{4, 0.9f, 1.0f};
    Tensor blocks = tensor_cpu(DType::kI32, {1, 2, 2}, "blocks");
    Tensor counts = tensor_cpu(DType::kI32, {1, 2}, "counts");

    Status run(Backend& backend) const {
        return backend.select_blocks(iq, index_keys, {seq, pos}, params, blocks, counts);
    }
};

struct BadCase {
    std::string name;  // gtest-safe
    std::function<void(SelectCall&)> spoil;
    std::vector<std::string> expected;  // in the message: the bad value and whose it is
};

std::vector<BadCase> bad_cases() {
    return {
        {"iq_without_data", [](SelectCall& c) { c.iq = Tensor{}; }, {"iq", "has no data"}},
        {"iq_not_f32",
         [](SelectCall& c) {
             c.iq = tensor_cpu(DType::kI32, {1, 2, 4}, "iq");
         },
         {"'iq' (1, 2, 4) i32", "must be f32"}},
        {"iq_of_2_dims",
         [](SelectCall& c) {
             c.iq = tensor_cpu(DType::kF32, {2, 4}, "iq");
         },
         {"'iq' (2, 4)", "must have 3 dims"}},
        {"index_keys_of_3_dims",
         [](SelectCall& c) {
             c.index_keys = tensor_cpu(DType::kF32, {2, 8, 4}, "index_keys");
         },
         {"'index_keys' (2, 8, 4)", "must have 4 dims"}},
        {"index_keys_of_f16",  // no backend keeps caches (nor index keys) in f16
         [](SelectCall& c) {
             c.index_keys = tensor_cpu(DType::kF16, {1, 2, 8, 4}, "index_keys");
         },
         {"'index_keys'", "keeps index keys in"}},
        {"index_keys_of_other_heads",
         [](SelectCall& c) {
             c.index_keys = tensor_cpu(DType::kF32, {1, 3, 8, 4}, "index_keys");
         },
         {"(1, 3, 8, 4)", "(1, 2, 4)", "disagree"}},
        {"index_keys_of_other_dim",
         [](SelectCall& c) {
             c.index_keys = tensor_cpu(DType::kF32, {1, 2, 8, 5}, "index_keys");
         },
         {"(1, 2, 8, 5)", "disagree"}},
        {"block_size_0", [](SelectCall& c) { c.params.block_size = 0; }, {"block size 0"}},
        {"block_size_negative", [](SelectCall& c) { c.params.block_size = -3; }, {"block size -3"}},
        {"top_p_0", [](SelectCall& c) { c.params.top_p = 0.0f; }, {"top_p 0 "}},
        {"top_p_above_1", [](SelectCall& c) { c.params.top_p = 1.5f; }, {"top_p 1.5"}},
        {"top_p_nan", [](SelectCall& c) { c.params.top_p = std::nanf(""); }, {"top_p nan"}},
        {"scale_infinite", [](SelectCall& c) { c.params.scale = INFINITY; }, {"scale inf"}},
        {"max_blocks_negative", [](SelectCall& c) { c.params.max_blocks = -1; }, {"max_blocks -1"}},
        {"blocks_not_i32",
         [](SelectCall& c) {
             c.blocks = tensor_cpu(DType::kF32, {1, 2, 2}, "blocks");
         },
         {"'blocks' (1, 2, 2) f32", "must be i32"}},
        {"blocks_too_few",
         [](SelectCall& c) {
             c.blocks = tensor_cpu(DType::kI32, {1, 2, 1}, "blocks");
         },
         {"'blocks' (1, 2, 1)", ">= 2"}},
        {"blocks_below_the_budget",  // 8 blocks, a budget of 4: 4 entries a row at least
         [](SelectCall& c) {
             c.index_keys = tensor_cpu(DType::kF32, {1, 2, 32, 4}, "index_keys");
             c.params.max_blocks = 4;
             c.blocks = tensor_cpu(DType::kI32, {1, 2, 3}, "blocks");
         },
         {"'blocks' (1, 2, 3)", ">= 4"}},
        {"blocks_of_other_tokens",
         [](SelectCall& c) {
             c.blocks = tensor_cpu(DType::kI32, {2, 2, 2}, "blocks");
         },
         {"'blocks' (2, 2, 2)", "(1, 2, >= 2)"}},
        {"counts_not_i32",
         [](SelectCall& c) {
             c.counts = tensor_cpu(DType::kF32, {1, 2}, "counts");
         },
         {"'counts' (1, 2) f32", "must be i32"}},
        {"counts_of_other_heads",
         [](SelectCall& c) {
             c.counts = tensor_cpu(DType::kI32, {1, 3}, "counts");
         },
         {"'counts' (1, 3)", "(1, 2)"}},
        {"seq_outside_the_slots", [](SelectCall& c) { c.seq = {1}; }, {"seq 1", "1 slots"}},
        {"seq_negative", [](SelectCall& c) { c.seq = {-1}; }, {"seq -1"}},
        {"pos_past_the_capacity", [](SelectCall& c) { c.pos = {8}; }, {"pos 8", "capacity 8"}},
        {"pos_negative", [](SelectCall& c) { c.pos = {-2}; }, {"pos -2"}},
        {"placement_of_other_tokens",
         [](SelectCall& c) {
             c.seq = {0, 0};
             c.pos = {7, 7};
         },
         {"2 seq and 2 pos entries for 1 tokens"}},
    };
}

void PrintTo(const BadCase& bad, std::ostream* os) {
    *os << bad.name;
}

class BadArguments : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadArguments, ErrorNamesTheBadValue) {
    const BadCase& bad = GetParam();
    for (const std::string& name : backend_available()) {
        SCOPED_TRACE("backend " + name);
        auto created = backend_create(name);
        ASSERT_TRUE(created.is_ok()) << created.status().to_string();
        Backend& backend = **created;
        SelectCall call;
        // Host tensors are the CPU backends' own; every backend validates before anything else.
        if (backend.kind() != BackendKind::kCuda) {
            const Status valid = call.run(backend);
            ASSERT_TRUE(valid.is_ok()) << "the unspoiled call fails: " << valid.to_string();
        }
        bad.spoil(call);
        const Status st = call.run(backend);
        EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
        for (const std::string& part : bad.expected)
            EXPECT_NE(st.message().find(part), std::string::npos)
                << "'" << part << "' not in: " << st.message();
    }
}

INSTANTIATE_TEST_SUITE_P(select_blocks, BadArguments, ::testing::ValuesIn(bad_cases()),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                             return info.param.name;
                         });

// The cpu backend spreads the block masses of a few decode rows over its threads in slices;
// the same rows in a batch of many take one row per thread. Both must keep the same blocks,
// whatever the key type, the budget or the thread count.
TEST(CpuSelect, FewRowsSplitIntoSlicesKeepWhatManyRowsKeep) {
    std::mt19937 rng(5);
    constexpr int64_t hr = 3, r = 16, c = 20000, block = 64, many = 12;
    const std::vector<float> keys = test::random_floats(rng, hr * c * r);
    const std::vector<float> iq = test::random_floats(rng, many * hr * r, 2.0f);
    std::vector<int32_t> seq(many, 0), pos;
    for (int64_t i = 0; i < many; ++i) pos.push_back(static_cast<int32_t>(c - 1 - 1500 * i));
    const int64_t max_blocks = (c + block - 1) / block;
    for (DType key_type : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
        for (int max_kept : {0, 40}) {
            for (int threads : {1, 2, 3}) {
                SCOPED_TRACE(fmt::format("keys {}, budget {}, {} threads", dtype_name(key_type),
                                         max_kept, threads));
                BackendOptions options;
                options.n_threads = threads;
                auto created = backend_create("cpu", options);
                ASSERT_TRUE(created.is_ok());
                Backend& backend = **created;
                Tensor index_keys = backend.alloc(key_type, {1, hr, c, r});
                ASSERT_TRUE(
                    backend.from_host(test::host_f32({1, hr, c, r}, keys), index_keys).is_ok());
                BlockSelectParams params{static_cast<int>(block), 0.9f, 0.25f, max_kept};
                auto select = [&](int64_t n) {
                    Tensor blocks = tensor_cpu(DType::kI32, {n, hr, max_blocks}),
                           counts = tensor_cpu(DType::kI32, {n, hr});
                    const std::vector<float> q(iq.begin(), iq.begin() + n * hr * r);
                    const Status st =
                        backend.select_blocks(test::host_f32({n, hr, r}, q), index_keys,
                                              {std::span(seq).first(static_cast<size_t>(n)),
                                               std::span(pos).first(static_cast<size_t>(n))},
                                              params, blocks, counts);
                    EXPECT_TRUE(st.is_ok()) << st.to_string();
                    return std::vector<int32_t>(blocks.ptr<int32_t>(),
                                                blocks.ptr<int32_t>() + hr * max_blocks);
                };
                const std::vector<int32_t> alone = select(1), in_batch = select(many);
                ASSERT_EQ(alone, in_batch);
                EXPECT_GT(std::count(alone.begin(), alone.end(), -1), 0)
                    << "the selection must drop blocks";
            }
        }
    }
}

}  // namespace
}  // namespace purbo
