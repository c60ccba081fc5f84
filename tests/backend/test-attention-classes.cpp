// The method's attention variants on every backend (method.md sections 2 and 4):
//  - head classes: a call with local and retrieval heads equals, head by head, a call where
//    every head has that head's class;
//  - block selection: every block selected equals dense attention; any selection equals the
//    softmax over exactly the selected keys, computed here by hand;
//  - partial caches: KV heads split over two views give the same output as one view;
//  - ring caches: local heads reading a ring buffer of sinks + window rows equal local heads
//    reading the full cache, through chunked prefill and decode steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/op-checks.h"
#include "core/fp16.h"
#include "test-util.h"

namespace purbo {
namespace {

using test::host_f32;
using test::random_floats;

// fp32 attention vs fp32 attention or a double reference: reductions of a few hundred terms.
// The cuda backend's tensor-core kernels and cuDNN round q and the probabilities (and, with an
// f32 cache, k and v) to bf16: about 1e-5 nmse.
double tolerance(const std::string& param) { return param.starts_with("cuda") ? 1e-4 : 1e-10; }

// Each backend, and "<name>_bf16" for each that keeps bf16 caches (the keys and values of every
// problem are then bf16 numbers, so that cpu-ref, which keeps f32 caches, sees the same values).
std::vector<std::string> backends() {
    std::vector<std::string> names = backend_available();
    for (const std::string& name : backend_available()) {
        auto be = backend_create(name);
        if (!be.is_ok()) continue;
        const std::vector<DType> types = (*be)->kv_cache_dtypes();
        if (std::find(types.begin(), types.end(), DType::kBF16) != types.end()) names.push_back(name + "_bf16");
    }
    return names;
}

float bf16_round(float x) { return bf16_to_f32(f32_to_bf16(x)); }

struct Env {
    std::unique_ptr<Backend> be;
    DType cache_type = DType::kF32;
    // A KV cache tensor (f32 or the env's cache type) holding the host values.
    Tensor cache(const Tensor& host) {
        if (cache_type == DType::kF32) return upload(host);
        const auto& s = host.shape;
        Tensor t = be->alloc(cache_type, {s[0], s[1], s[2], s[3]}, host.name);
        EXPECT_TRUE(be->from_host(host, t).is_ok());
        return t;
    }
    Tensor cache_zeros(std::initializer_list<int64_t> shape) { return be->alloc(cache_type, shape); }
    Tensor upload(const Tensor& host) {
        Tensor t = host.dtype == DType::kI32 ? be->alloc(DType::kI32, {host.numel()}, host.name)
                                              : be->alloc(DType::kF32, {host.numel()}, host.name);
        t.ndim = host.ndim;
        t.shape = host.shape;
        EXPECT_TRUE(be->from_host(host, t).is_ok());
        return t;
    }
    std::vector<float> download(const Tensor& t) {
        Tensor host = tensor_cpu(DType::kF32, std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)));
        EXPECT_TRUE(be->to_host(t, host).is_ok());
        return {host.f32(), host.f32() + host.numel()};
    }
    Tensor zeros(std::initializer_list<int64_t> shape) { return be->alloc(DType::kF32, shape); }
};

Env make_env(const std::string& param) {
    const bool bf16 = param.ends_with("_bf16");
    auto be = backend_create(bf16 ? param.substr(0, param.size() - 5) : param);
    EXPECT_TRUE(be.is_ok());
    return Env{std::move(*be), bf16 ? DType::kBF16 : DType::kF32};
}

// Rows of head `head` in an (n, h, d) output.
std::vector<float> head_rows(const std::vector<float>& out, int64_t n, int64_t h, int64_t d, int64_t head) {
    std::vector<float> rows;
    for (int64_t i = 0; i < n; ++i)
        rows.insert(rows.end(), out.begin() + (i * h + head) * d, out.begin() + (i * h + head + 1) * d);
    return rows;
}

struct Problem {
    int64_t n, h, g, d, c;
    std::vector<int32_t> seq, pos;
    Tensor q, k, v;  // host: q (n, h, d); cache (1, g, c, d)
};

// n queries of one sequence at consecutive positions from `first` (the prefill path; default
// the last n positions of a cache of c tokens), or n = 1 (decode).
// cache_type bf16: the keys and values are rounded to bf16 numbers.
Problem make_problem(int64_t n, int64_t h, int64_t g, int64_t d, int64_t c, uint32_t seed,
                     DType cache_type = DType::kF32, int64_t first = -1) {
    const bool bf16 = cache_type == DType::kBF16;
    std::mt19937 rng(seed);
    Problem p{n, h, g, d, c, {}, {}, {}, {}, {}};
    if (first < 0) first = c - n;
    for (int64_t i = 0; i < n; ++i) {
        p.seq.push_back(0);
        p.pos.push_back(static_cast<int32_t>(first + i));
    }
    p.q = host_f32({n, h, d}, random_floats(rng, n * h * d, 3.0f));
    p.k = host_f32({1, g, c, d}, random_floats(rng, g * c * d));
    p.v = host_f32({1, g, c, d}, random_floats(rng, g * c * d));
    if (bf16) {
        for (Tensor* t : {&p.k, &p.v}) {
            for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] = bf16_round(t->f32()[i]);
        }
    }
    return p;
}

std::vector<float> run_attention(Env& env, const Problem& p, const AttentionParams& params) {
    KvCacheView cache{env.cache(p.k), env.cache(p.v)};
    Tensor out = env.zeros({p.n, p.h, p.d});
    const Status st = env.be->attention(env.upload(p.q), cache, {p.seq, p.pos}, params, out);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    return env.download(out);
}

class AttentionClasses : public ::testing::TestWithParam<std::string> {};

TEST_P(AttentionClasses, MixedHeadClassesEqualUniformCalls) {
    Env env = make_env(GetParam());
    for (int64_t n : {1, 5, 70}) {
        const Problem p = make_problem(n, 9, 3, 64, 400, static_cast<uint32_t>(n), env.cache_type);
        // Heads 1, 3, 4 retrieval (KV groups 0 and 1 mixed), the rest local.
        const std::vector<uint8_t> local = {1, 0, 1, 0, 0, 1, 1, 1, 1};
        AttentionParams mixed{0.125f, 48, 4, local, nullptr};
        const std::vector<float> out = run_attention(env, p, mixed);
        const std::vector<float> all_local = run_attention(env, p, AttentionParams{0.125f, 48, 4});
        const std::vector<float> all_dense = run_attention(env, p, AttentionParams{0.125f, 0, 0});
        // The uniform calls themselves against the oracle.
        Env ref = make_env("cpu-ref");
        EXPECT_LE(test::nmse(all_local, run_attention(ref, p, AttentionParams{0.125f, 48, 4})), tolerance(GetParam()));
        EXPECT_LE(test::nmse(all_dense, run_attention(ref, p, AttentionParams{0.125f, 0, 0})), tolerance(GetParam()));
        for (int64_t hd = 0; hd < p.h; ++hd) {
            SCOPED_TRACE(fmt::format("n {} head {}", n, hd));
            const auto& expected = local[static_cast<size_t>(hd)] ? all_local : all_dense;
            EXPECT_LE(test::nmse(head_rows(out, n, p.h, p.d, hd), head_rows(expected, n, p.h, p.d, hd)),
                      tolerance(GetParam()));
        }
        // local_heads all zero with a window: every head dense.
        const std::vector<uint8_t> none(9, 0);
        EXPECT_LE(test::nmse(run_attention(env, p, AttentionParams{0.125f, 48, 4, none, nullptr}), all_dense),
                  tolerance(GetParam()));
    }
}

// Selection tensors on the host: blocks (n, hr, max_blocks), counts (n, hr).
struct HostSelection {
    Tensor blocks, counts;
    std::vector<int32_t> head_row;
};

// Random selections for the heads in `selected` (each token keeps its own block, block 0 and
// a random share of the others), or every block when `all`. shared: one list per query group
// (the tokens whose positions lie in one span of `group` positions, 0: one block, share their
// first token's list, which holds every block up to the group's last position), as a
// per-query-block selection makes them. drop_own: tokens of odd blocks (groups ending in an
// odd block) leave out their own last block (a selection that top-p never makes, but
// attention must take).
HostSelection random_selection(const Problem& p, const std::vector<int64_t>& selected, int block,
                               bool all, uint32_t seed, bool shared = false, bool drop_own = false,
                               int group = 0) {
    if (group == 0) group = block;
    std::mt19937 rng(seed);
    const int64_t hr = static_cast<int64_t>(selected.size()), max_blocks = (p.c + block - 1) / block;
    HostSelection s;
    s.blocks = tensor_cpu(DType::kI32, {p.n, hr, max_blocks});
    s.counts = tensor_cpu(DType::kI32, {p.n, hr});
    s.head_row.assign(static_cast<size_t>(p.h), -1);
    for (int64_t j = 0; j < hr; ++j) s.head_row[static_cast<size_t>(selected[static_cast<size_t>(j)])] = static_cast<int32_t>(j);
    std::bernoulli_distribution keep(0.3);
    auto pos = [&](int64_t i) { return int64_t{p.pos[static_cast<size_t>(i)]}; };
    for (int64_t i = 0; i < p.n; ++i) {
        if (shared && i > 0 && pos(i - 1) / group == pos(i) / group) {
            std::copy_n(s.blocks.ptr<int32_t>() + (i - 1) * hr * max_blocks, hr * max_blocks,
                        s.blocks.ptr<int32_t>() + i * hr * max_blocks);
            std::copy_n(s.counts.ptr<int32_t>() + (i - 1) * hr, hr,
                        s.counts.ptr<int32_t>() + i * hr);
            continue;
        }
        // The list's own blocks: i's, or shared, those of i's query group's positions.
        int64_t end = i;
        while (shared && end + 1 < p.n && pos(end + 1) / group == pos(i) / group) ++end;
        const int64_t own = pos(i) / block, last = pos(end) / block;
        for (int64_t j = 0; j < hr; ++j) {
            int32_t* ids = s.blocks.ptr<int32_t>() + (i * hr + j) * max_blocks;
            int32_t count = 0;
            for (int64_t b = 0; b <= last; ++b) {
                const bool kept_own = b >= own && !(b == last && drop_own && last % 2 == 1);
                if (all || b == 0 || kept_own || (b < own && keep(rng)))
                    ids[count++] = static_cast<int32_t>(b);
            }
            for (int64_t b = count; b < max_blocks; ++b) ids[b] = -1;
            s.counts.ptr<int32_t>()[i * hr + j] = count;
        }
    }
    return s;
}

// Softmax attention of one (token, head) over the keys of the selected blocks, in double.
std::vector<double> attention_by_hand(const Problem& p, int64_t i, int64_t hd, float scale,
                                      std::span<const int32_t> blocks, int block) {
    const int64_t kv = hd / (p.h / p.g), pos = p.pos[static_cast<size_t>(i)];
    std::vector<double> scores, acc(static_cast<size_t>(p.d), 0.0);
    std::vector<int64_t> keys;
    for (int32_t b : blocks) {
        for (int64_t j = int64_t{b} * block; j < (b + 1) * int64_t{block} && j <= pos; ++j) keys.push_back(j);
    }
    double max_s = -1e300;
    for (int64_t j : keys) {
        double dot = 0;
        for (int64_t e = 0; e < p.d; ++e)
            dot += double{p.q.f32()[(i * p.h + hd) * p.d + e]} * p.k.f32()[(kv * p.c + j) * p.d + e];
        scores.push_back(dot * scale);
        max_s = std::max(max_s, scores.back());
    }
    double sum = 0;
    for (size_t t = 0; t < keys.size(); ++t) {
        const double w = std::exp(scores[t] - max_s);
        sum += w;
        for (int64_t e = 0; e < p.d; ++e) acc[static_cast<size_t>(e)] += w * p.v.f32()[(kv * p.c + keys[t]) * p.d + e];
    }
    for (double& a : acc) a /= sum;
    return acc;
}

TEST_P(AttentionClasses, BlockSelection) {
    Env env = make_env(GetParam());
    const int block = 32;
    for (int64_t n : {1, 3, 66}) {
        const Problem p = make_problem(n, 8, 2, 64, 300, static_cast<uint32_t>(100 + n), env.cache_type);
        const std::vector<int64_t> selected = {1, 2, 6};  // retrieval heads with a selection
        std::vector<uint8_t> local(8, 1);
        for (int64_t hd : selected) local[static_cast<size_t>(hd)] = 0;
        local[7] = 0;  // a retrieval head without a selection: dense
        for (bool all : {true, false}) {
            SCOPED_TRACE(fmt::format("n {} all blocks {}", n, all));
            const HostSelection hs = random_selection(p, selected, block, all, static_cast<uint32_t>(n));
            BlockSelection sel{block, hs.head_row, env.upload(hs.blocks), env.upload(hs.counts)};
            const std::vector<float> out = run_attention(env, p, AttentionParams{0.125f, 40, 4, local, &sel});
            const std::vector<float> dense = run_attention(env, p, AttentionParams{0.125f, 0, 0});
            const std::vector<float> windowed = run_attention(env, p, AttentionParams{0.125f, 40, 4});
            EXPECT_LE(test::nmse(head_rows(out, n, 8, 64, 7), head_rows(dense, n, 8, 64, 7)), tolerance(GetParam()));
            EXPECT_LE(test::nmse(head_rows(out, n, 8, 64, 0), head_rows(windowed, n, 8, 64, 0)),
                      tolerance(GetParam()));
            for (size_t j = 0; j < selected.size(); ++j) {
                const int64_t hd = selected[j];
                if (all) {
                    EXPECT_LE(test::nmse(head_rows(out, n, 8, 64, hd), head_rows(dense, n, 8, 64, hd)),
                              tolerance(GetParam()));
                }
                std::vector<float> expected;
                for (int64_t i = 0; i < n; ++i) {
                    const int32_t count = hs.counts.ptr<int32_t>()[i * 3 + static_cast<int64_t>(j)];
                    const int32_t* ids = hs.blocks.ptr<int32_t>() + (i * 3 + static_cast<int64_t>(j)) * hs.blocks.dim(2);
                    for (double v : attention_by_hand(p, i, hd, 0.125f, {ids, static_cast<size_t>(count)}, block))
                        expected.push_back(static_cast<float>(v));
                }
                EXPECT_LE(test::nmse(head_rows(out, n, 8, 64, hd), expected), tolerance(GetParam())) << "head " << hd;
            }
        }
    }
}

// One list per query group (block-sparse prefill): cuda attends with a group's tokens as one
// tile of its tensor-core kernel, whose tiles then start at positions that are multiples of
// 64 (the chunks here start at 800 = 12.5 x 64 and at 896 = 14 x 64). Blocks of 64 and 128
// keys, d 64 and 128, beside local heads and a dense retrieval head.
TEST_P(AttentionClasses, BlockSelectionSharedByQueryGroups) {
    Env env = make_env(GetParam());
    const int64_t h = 8;
    for (int64_t d : {64, 128}) {
        for (int block : {64, 128}) {
            for (int64_t n : {200, 128}) {
                const int64_t c = n == 200 ? 1000 : 1024;
                const Problem p = make_problem(n, h, 2, d, c, static_cast<uint32_t>(d + block + n),
                                               env.cache_type);
                const std::vector<int64_t> selected = {1, 2, 6};
                std::vector<uint8_t> local(static_cast<size_t>(h), 1);
                for (int64_t hd : selected) local[static_cast<size_t>(hd)] = 0;
                local[7] = 0;  // a retrieval head without a selection: dense
                for (bool all : {true, false}) {
                    SCOPED_TRACE(fmt::format("d {} block {} n {} all blocks {}", d, block, n, all));
                    const HostSelection hs = random_selection(
                        p, selected, block, all, static_cast<uint32_t>(n + block), true);
                    BlockSelection sel{block, hs.head_row, env.upload(hs.blocks),
                                       env.upload(hs.counts), true};
                    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
                    const std::vector<float> out =
                        run_attention(env, p, AttentionParams{scale, 40, 4, local, &sel});
                    const std::vector<float> dense =
                        run_attention(env, p, AttentionParams{scale, 0, 0});
                    const std::vector<float> windowed =
                        run_attention(env, p, AttentionParams{scale, 40, 4});
                    EXPECT_LE(test::nmse(head_rows(out, n, h, d, 7), head_rows(dense, n, h, d, 7)),
                              tolerance(GetParam()));
                    EXPECT_LE(
                        test::nmse(head_rows(out, n, h, d, 0), head_rows(windowed, n, h, d, 0)),
                        tolerance(GetParam()));
                    for (size_t j = 0; j < selected.size(); ++j) {
                        const int64_t hd = selected[j];
                        std::vector<float> expected;
                        for (int64_t i = 0; i < n; ++i) {
                            const int64_t row = i * 3 + static_cast<int64_t>(j);
                            const int32_t count = hs.counts.ptr<int32_t>()[row];
                            const int32_t* ids = hs.blocks.ptr<int32_t>() + row * hs.blocks.dim(2);
                            for (double v : attention_by_hand(
                                     p, i, hd, scale, {ids, static_cast<size_t>(count)}, block))
                                expected.push_back(static_cast<float>(v));
                        }
                        EXPECT_LE(test::nmse(head_rows(out, n, h, d, hd), expected),
                                  tolerance(GetParam()))
                            << "head " << hd;
                        if (all) {
                            EXPECT_LE(test::nmse(head_rows(out, n, h, d, hd),
                                                 head_rows(dense, n, h, d, hd)),
                                      tolerance(GetParam()));
                        }
                    }
                }
            }
        }
    }
}

// One list per query group, chunks starting at a multiple of the group (cuda: the selected
// heads through cuDNN's paged attention, each group's blocks its pages, where cuDNN is built
// in): whole and partial last groups, one chunk of one group, groups of one, two and four
// blocks, and lists without their own last block (cuda: back to the tensor-core kernel, which
// must give the same).
TEST_P(AttentionClasses, BlockSelectionSharedByAlignedQueryGroups) {
    Env env = make_env(GetParam());
    const int64_t h = 8, g = 2;
    const std::vector<int64_t> selected = {1, 2, 6};
    std::vector<uint8_t> local(static_cast<size_t>(h), 1);
    for (int64_t hd : selected) local[static_cast<size_t>(hd)] = 0;
    struct Case {
        int64_t d;
        int block;
        int64_t n, first;
        int group = 0;  // tokens per query group (0: the block)
    };
    for (const Case& t :
         {Case{128, 64, 200, 640}, Case{64, 64, 64, 960}, Case{128, 128, 300, 512},
          Case{64, 128, 130, 0}, Case{128, 64, 300, 512, 128}, Case{64, 64, 100, 768, 256}}) {
        const int64_t c = 1024;
        const Problem p = make_problem(
            t.n, h, g, t.d, c, static_cast<uint32_t>(t.d + t.block + t.n), env.cache_type, t.first);
        const float scale = 1.0f / std::sqrt(static_cast<float>(t.d));
        for (bool drop_own : {false, true}) {
            SCOPED_TRACE(
                fmt::format("d {} block {} group {} n {} from {} lists without their own block {}",
                            t.d, t.block, t.group, t.n, t.first, drop_own));
            const HostSelection hs =
                random_selection(p, selected, t.block, false, static_cast<uint32_t>(t.n + t.first),
                                 true, drop_own, t.group);
            BlockSelection sel{t.block, hs.head_row, env.upload(hs.blocks), env.upload(hs.counts),
                               true,    t.group};
            const std::vector<float> out =
                run_attention(env, p, AttentionParams{scale, 40, 4, local, &sel});
            const std::vector<float> windowed =
                run_attention(env, p, AttentionParams{scale, 40, 4});
            EXPECT_LE(
                test::nmse(head_rows(out, t.n, h, t.d, 0), head_rows(windowed, t.n, h, t.d, 0)),
                tolerance(GetParam()));
            for (size_t j = 0; j < selected.size(); ++j) {
                const int64_t hd = selected[j];
                std::vector<float> expected;
                for (int64_t i = 0; i < t.n; ++i) {
                    const int64_t row = i * 3 + static_cast<int64_t>(j);
                    const int32_t count = hs.counts.ptr<int32_t>()[row];
                    const int32_t* ids = hs.blocks.ptr<int32_t>() + row * hs.blocks.dim(2);
                    for (double v : attention_by_hand(p, i, hd, scale,
                                                      {ids, static_cast<size_t>(count)}, t.block))
                        expected.push_back(static_cast<float>(v));
                }
                EXPECT_LE(test::nmse(head_rows(out, t.n, h, t.d, hd), expected),
                          tolerance(GetParam()))
                    << "head " << hd;
            }
        }
    }
}

// Every head a retrieval head with a selection, in a prefill chunk: no head is left for the
// dense prefill paths (cuDNN, the tensor-core kernel), all go through the selection.
TEST_P(AttentionClasses, BlockSelectionOfEveryHead) {
    Env env = make_env(GetParam());
    const int block = 64;
    const int64_t n = 70, h = 8;
    const Problem p = make_problem(n, h, 2, 64, 300, 31, env.cache_type);
    std::vector<int64_t> selected(static_cast<size_t>(h));
    std::iota(selected.begin(), selected.end(), 0);
    const HostSelection hs = random_selection(p, selected, block, false, 31);
    BlockSelection sel{block, hs.head_row, env.upload(hs.blocks), env.upload(hs.counts)};
    const std::vector<uint8_t> local(static_cast<size_t>(h), 0);
    const std::vector<float> out =
        run_attention(env, p, AttentionParams{0.125f, 40, 4, local, &sel});
    for (int64_t hd = 0; hd < h; ++hd) {
        std::vector<float> expected;
        for (int64_t i = 0; i < n; ++i) {
            const int32_t count = hs.counts.ptr<int32_t>()[i * h + hd];
            const int32_t* ids = hs.blocks.ptr<int32_t>() + (i * h + hd) * hs.blocks.dim(2);
            for (double v :
                 attention_by_hand(p, i, hd, 0.125f, {ids, static_cast<size_t>(count)}, block))
                expected.push_back(static_cast<float>(v));
        }
        EXPECT_LE(test::nmse(head_rows(out, n, h, 64, hd), expected), tolerance(GetParam()))
            << "head " << hd;
    }
}

TEST_P(AttentionClasses, PartialViewsEqualOneView) {
    Env env = make_env(GetParam());
    for (int64_t n : {1, 65}) {
        const Problem p = make_problem(n, 12, 4, 64, 200, static_cast<uint32_t>(7 + n), env.cache_type);
        const std::vector<float> whole = run_attention(env, p, AttentionParams{0.125f, 0, 0});
        // KV heads {0, 2} in one view, {1, 3} in the other: each writes only its query heads.
        Tensor out = env.zeros({n, 12, 64});
        for (const std::vector<int32_t>& heads : {std::vector<int32_t>{0, 2}, std::vector<int32_t>{1, 3}}) {
            Tensor k = tensor_cpu(DType::kF32, {1, 2, 200, 64}), v = tensor_cpu(DType::kF32, {1, 2, 200, 64});
            for (size_t s = 0; s < 2; ++s) {
                std::copy_n(p.k.f32() + heads[s] * 200 * 64, 200 * 64, k.f32() + static_cast<int64_t>(s) * 200 * 64);
                std::copy_n(p.v.f32() + heads[s] * 200 * 64, 200 * 64, v.f32() + static_cast<int64_t>(s) * 200 * 64);
            }
            KvCacheView view{env.cache(k), env.cache(v), heads, 4};
            const Status st = env.be->attention(env.upload(p.q), view, {p.seq, p.pos}, AttentionParams{0.125f, 0, 0}, out);
            ASSERT_TRUE(st.is_ok()) << st.to_string();
        }
        EXPECT_LE(test::nmse(env.download(out), whole), tolerance(GetParam()));
    }
}

// Tokens stream in (a prefill in chunks, then decode steps); each step stores its keys with
// kv_store into a full cache and into a ring of sinks + window + chunk rows, then runs local
// attention on both.
TEST_P(AttentionClasses, RingCacheEqualsFullCache) {
    Env env = make_env(GetParam());
    const int64_t h = 6, g = 2, d = 64, total = 300, window = 50, sinks = 4, chunk = 64;
    const int64_t ring_rows = sinks + window + chunk;
    std::mt19937 rng(5);
    KvCacheView full{env.cache_zeros({1, g, total, d}), env.cache_zeros({1, g, total, d})};
    KvCacheView ring{env.cache_zeros({1, g, ring_rows, d}), env.cache_zeros({1, g, ring_rows, d}), {}, 0,
                     static_cast<int>(sinks)};
    const AttentionParams params{0.125f, static_cast<int>(window), static_cast<int>(sinks)};
    int64_t done = 0;
    while (done < total) {
        const int64_t n = done < 200 ? std::min(chunk, 200 - done) : 1;
        std::vector<int32_t> seq(static_cast<size_t>(n), 0), pos(static_cast<size_t>(n));
        std::iota(pos.begin(), pos.end(), static_cast<int32_t>(done));
        const Tensor k = env.upload(host_f32({n, g, d}, random_floats(rng, n * g * d)));
        const Tensor v = env.upload(host_f32({n, g, d}, random_floats(rng, n * g * d)));
        const Tensor q = env.upload(host_f32({n, h, d}, random_floats(rng, n * h * d, 3.0f)));
        ASSERT_TRUE(env.be->kv_store(k, v, {seq, pos}, full).is_ok());
        const Status stored = env.be->kv_store(k, v, {seq, pos}, ring);
        ASSERT_TRUE(stored.is_ok()) << stored.to_string();
        Tensor out_full = env.zeros({n, h, d}), out_ring = env.zeros({n, h, d});
        ASSERT_TRUE(env.be->attention(q, full, {seq, pos}, params, out_full).is_ok());
        const Status st = env.be->attention(q, ring, {seq, pos}, params, out_ring);
        ASSERT_TRUE(st.is_ok()) << st.to_string();
        EXPECT_LE(test::nmse(env.download(out_ring), env.download(out_full)), tolerance(GetParam()))
            << "positions " << done << ".." << done + n - 1;
        done += n;
    }
}

TEST_P(AttentionClasses, RingRejectsWhatItCannotHold) {
    Env env = make_env(GetParam());
    const Problem p = make_problem(40, 4, 2, 64, 64, 3, env.cache_type);
    KvCacheView ring{env.cache_zeros({1, 2, 64, 64}), env.cache_zeros({1, 2, 64, 64}), {}, 0, 4};
    Tensor out = env.zeros({40, 4, 64});
    const Tensor q = env.upload(p.q);
    // A window of 30 for a batch spanning 40 positions needs 70 window rows; the ring has 60.
    const Status too_small = env.be->attention(q, ring, {p.seq, p.pos}, AttentionParams{0.125f, 30, 4}, out);
    EXPECT_EQ(too_small.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(too_small.message().find("ring"), std::string::npos) << too_small.message();
    // Dense heads cannot read a ring.
    EXPECT_EQ(env.be->attention(q, ring, {p.seq, p.pos}, AttentionParams{0.125f, 0, 0}, out).code(),
              StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Backends, AttentionClasses, ::testing::ValuesIn(backends()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             std::string s = info.param;
                             for (char& ch : s) ch = ch == '-' ? '_' : ch;
                             return s;
                         });

}  // namespace
}  // namespace purbo
