// CUDA-specific cases beyond the shared op harness (test-backend-ops.cpp): long-context decode
// through the split-KV path, windows with sinks at long context, several sequences in one
// batch, prefill chunks, the bf16 weight conversion, i32 copies, aliasing and the errors of
// the device boundary. Every case compares with cpu-ref; every case skips where no CUDA device
// is visible.
//
// Letters: n tokens, k inputs, m outputs, h query heads, g KV heads, d head dim,
// c cache capacity, s sequence slots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "core/fp16.h"
#include "core/quants.h"
#include "test-util.h"

namespace purbo {
namespace {

using test::host_f32;
using test::random_floats;

constexpr double kEps = std::numeric_limits<float>::epsilon();

// As in test-backend-ops.cpp: a length-L f32 reduction against cpu-ref's double has
// nmse <= (lambda L eps)^2 with lambda = 4 (Higham & Mary's probabilistic bound plus margin).
double tol_f32_reduction(int64_t length) {
    const double v = 4.0 * static_cast<double>(length) * kEps;
    return v * v;
}

bool cuda_available() {
    const auto names = backend_available();
    return std::find(names.begin(), names.end(), "cuda") != names.end();
}

#define SKIP_WITHOUT_CUDA() \
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device visible: the cuda backend is not available"

std::unique_ptr<Backend> make(const std::string& name) {
    auto b = backend_create(name);
    PURBO_ASSERT(b.is_ok(), "{}", b.status().to_string());
    return std::move(b).value();
}

Tensor upload(Backend& b, const Tensor& host) {
    const auto& s = host.shape;
    Tensor t;
    switch (host.ndim) {
        case 1: t = b.alloc(DType::kF32, {s[0]}, host.name); break;
        case 2: t = b.alloc(DType::kF32, {s[0], s[1]}, host.name); break;
        case 3: t = b.alloc(DType::kF32, {s[0], s[1], s[2]}, host.name); break;
        default: t = b.alloc(DType::kF32, {s[0], s[1], s[2], s[3]}, host.name); break;
    }
    EXPECT_TRUE(b.from_host(host, t).is_ok());
    return t;
}

std::vector<float> download(Backend& b, const Tensor& t) {
    Tensor host = tensor_cpu(DType::kF32, std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)));
    const Status st = b.to_host(t, host);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    return std::vector<float>(host.f32(), host.f32() + host.numel());
}

// One attention call on cpu-ref and on cuda with the same random cache and queries.
struct AttentionSetup {
    int64_t h, g, d, c, s;
    std::vector<int32_t> seq, pos;
    AttentionParams params;
};

// Which kernel the batch takes (cuda-ops.cpp's dispatch: a chunk of >= 64 consecutive
// positions of one sequence with d 64 or 128 goes to the tensor-core kernel).
enum class AttentionPath { kFp32, kTensorCore };

// A copy with every element rounded to bf16 and back (nearest even).
Tensor bf16_rounded(const Tensor& t) {
    Tensor r = tensor_cpu(DType::kF32,
                          std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)));
    for (int64_t i = 0; i < t.numel(); ++i) r.f32()[i] = bf16_to_f32(f32_to_bf16(t.f32()[i]));
    return r;
}

// A device cache of `type` holding the host values (which a bf16 cache must represent exactly).
Tensor upload_cache(Backend& b, const Tensor& host, DType type) {
    const auto& s = host.shape;
    Tensor t = b.alloc(type, {s[0], s[1], s[2], s[3]}, host.name);
    EXPECT_TRUE(b.from_host(host, t).is_ok());
    return t;
}

// cache_type bf16: the keys and values are bf16 numbers (rounded on the host), stored in a bf16
// cache on the device and in an f32 one for cpu-ref, so both attend to the same values; d 64
// and 128 then take a tensor-core kernel whatever the batch (the decode kernel).
void check_attention_matches(const AttentionSetup& a, uint32_t seed,
                             AttentionPath path = AttentionPath::kFp32, DType cache_type = DType::kF32) {
    std::mt19937 rng(seed);
    const int64_t n = static_cast<int64_t>(a.seq.size());
    Tensor kc = host_f32({a.s, a.g, a.c, a.d}, random_floats(rng, a.s * a.g * a.c * a.d));
    Tensor vc = host_f32({a.s, a.g, a.c, a.d}, random_floats(rng, a.s * a.g * a.c * a.d));
    if (cache_type == DType::kBF16) {
        kc = bf16_rounded(kc);
        vc = bf16_rounded(vc);
        if (a.d == 64 || a.d == 128) path = AttentionPath::kTensorCore;
    }
    // Amplitude 3: q.k / sqrt(d) spreads over a few units, a peaked softmax (as the harness).
    const Tensor q = host_f32({n, a.h, a.d}, random_floats(rng, n * a.h * a.d, 3.0f));
    const TokenPlacement place{a.seq, a.pos};

    auto ref = make("cpu-ref");
    Tensor expected = tensor_cpu(DType::kF32, {n, a.h, a.d});
    ASSERT_TRUE(ref->attention(q, {kc, vc}, place, a.params, expected).is_ok());

    auto cuda = make("cuda");
    Tensor out = cuda->alloc(DType::kF32, {n, a.h, a.d}, "out");
    const Status st = cuda->attention(
        upload(*cuda, q), {upload_cache(*cuda, kc, cache_type), upload_cache(*cuda, vc, cache_type)}, place,
        a.params, out);
    ASSERT_TRUE(st.is_ok()) << st.to_string();
    const std::vector<float> actual = download(*cuda, out);
    const std::span<const float> want(expected.f32(), static_cast<size_t>(expected.numel()));
    for (float v : actual) ASSERT_TRUE(std::isfinite(v));
    // Scores are length-d dot products, the output a length-(visible keys) weighted sum, split
    // or not: the same bound as the harness's attention cases.
    const double fp32_nmse = tol_f32_reduction(a.d) + tol_f32_reduction(a.c);
    double max_nmse = fp32_nmse;
    if (path == AttentionPath::kTensorCore) {
        // As test-backend-ops.cpp's tol_cuda_attention: q, k, v and p rounded to bf16 (unit
        // roundoff u = 2^-8). The q, k, v part measured on this data (cpu-ref on rounded
        // copies), p's part u^2 / 3 (independent relative errors of the weights on zero-mean
        // values); x2 for the device's other draw of q's rounding (it rounds q after scaling)
        // and the spread of the estimates; plus the fp32 bound.
        Tensor rounded_out = tensor_cpu(DType::kF32, {n, a.h, a.d});
        ASSERT_TRUE(ref->attention(bf16_rounded(q), {bf16_rounded(kc), bf16_rounded(vc)}, place,
                                   a.params, rounded_out)
                        .is_ok());
        const double qkv =
            test::nmse({rounded_out.f32(), static_cast<size_t>(rounded_out.numel())}, want);
        constexpr double kU = 1.0 / 256.0;
        max_nmse = 2.0 * (qkv + kU * kU / 3.0) + fp32_nmse;
    }
    const double error = test::nmse(actual, want);
    EXPECT_LE(error, max_nmse);
    if (std::getenv("PURBO_PRINT_NMSE") != nullptr)
        std::fprintf(stderr, "attention n %lld h %lld d %lld: nmse %.3g tol %.3g\n",
                     static_cast<long long>(n), static_cast<long long>(a.h),
                     static_cast<long long>(a.d), error, max_nmse);
}

// A prefill chunk: n consecutive tokens of sequence slot `slot` starting at position `first`.
void set_chunk(AttentionSetup& a, int32_t slot, int32_t first, int n) {
    a.seq.assign(static_cast<size_t>(n), slot);
    a.pos.resize(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) a.pos[static_cast<size_t>(i)] = first + i;
}

TEST(Cuda, DecodeAt8KKeysUsesSplitsAndMatchesReference) {
    SKIP_WITHOUT_CUDA();
    // One sequence, one query at the last position: 8192 visible keys over split CTAs.
    for (int64_t d : {64, 128}) {
        SCOPED_TRACE(d);
        AttentionSetup a{d == 64 ? 9 : 32, d == 64 ? 3 : 8, d, 8192, 1, {0}, {8191}, {}};
        a.params.scale = 1.0f / std::sqrt(static_cast<float>(d));
        check_attention_matches(a, 11);
    }
}

TEST(Cuda, DecodeWithWindowAndSinksAtLongContext) {
    SKIP_WITHOUT_CUDA();
    // Keys [0, 4) and (p - 1024, p]: the tiles in between are skipped, the sinks are not.
    AttentionSetup a{9, 3, 64, 8192, 1, {0}, {8000}, {}};
    a.params = AttentionParams{0.125f, 1024, 4};
    check_attention_matches(a, 12);
    // A window that does not start on a tile boundary and sinks that do not fill a tile.
    a.pos = {5001};
    a.params = AttentionParams{0.125f, 77, 5};
    check_attention_matches(a, 13);
}

TEST(Cuda, RepeatedDecodePlansGiveTheSameOutputsAsFreshCalls) {
    SKIP_WITHOUT_CUDA();
    // One backend runs decode calls whose plans repeat, change and come back (the device copy
    // of an unchanged plan is reused); each output must equal, bit for bit, the same call on a
    // fresh backend (the kernels are deterministic).
    const int64_t h = 16, g = 2, d = 128, c = 8192;
    std::mt19937 rng(21);
    const Tensor kc = bf16_rounded(host_f32({1, g, c, d}, random_floats(rng, g * c * d)));
    const Tensor vc = bf16_rounded(host_f32({1, g, c, d}, random_floats(rng, g * c * d)));
    const Tensor q1 = host_f32({1, h, d}, random_floats(rng, h * d, 3.0f));
    const Tensor q2 = host_f32({1, h, d}, random_floats(rng, h * d, 3.0f));
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(d));
    const std::vector<int32_t> seq = {0};
    auto run = [&](Backend& be, const KvCacheView& cache, const Tensor& q, int32_t pos) {
        Tensor out = be.alloc(DType::kF32, {1, h, d}, "out");
        const std::vector<int32_t> positions = {pos};
        const Status st = be.attention(upload(be, q), cache, {seq, positions}, params, out);
        EXPECT_TRUE(st.is_ok()) << st.to_string();
        return download(be, out);
    };
    auto shared = make("cuda");
    const KvCacheView shared_cache{upload_cache(*shared, kc, DType::kBF16),
                                   upload_cache(*shared, vc, DType::kBF16)};
    const std::vector<std::pair<const Tensor*, int32_t>> calls = {
        {&q1, 8000}, {&q2, 8000}, {&q1, 3000}, {&q2, 8000}, {&q2, 8000}};
    for (const auto& [q, pos] : calls) {
        SCOPED_TRACE(pos);
        const std::vector<float> got = run(*shared, shared_cache, *q, pos);
        auto fresh = make("cuda");
        const std::vector<float> want =
            run(*fresh,
                {upload_cache(*fresh, kc, DType::kBF16), upload_cache(*fresh, vc, DType::kBF16)},
                *q, pos);
        ASSERT_EQ(got.size(), want.size());
        EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * sizeof(float)));
    }
}

TEST(Cuda, DecodeRightAfterKvStoreSeesTheNewKey) {
    SKIP_WITHOUT_CUDA();
    // Decode steps at long context that each store a new key and value at position p with
    // kv_store right before attention at p (same plan every step: nothing is copied between
    // the two kernels, and the decode kernel may start on older keys before kv_store
    // completes). Each output must equal, bit for bit, attention over the cache uploaded whole.
    const int64_t h = 16, g = 2, d = 128, c = 8192, p = 8000;
    std::mt19937 rng(22);
    Tensor kc = bf16_rounded(host_f32({1, g, c, d}, random_floats(rng, g * c * d)));
    Tensor vc = bf16_rounded(host_f32({1, g, c, d}, random_floats(rng, g * c * d)));
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(d));
    const std::vector<int32_t> seq = {0}, pos = {static_cast<int32_t>(p)};
    auto streamed = make("cuda");
    const KvCacheView streamed_cache{upload_cache(*streamed, kc, DType::kBF16),
                                     upload_cache(*streamed, vc, DType::kBF16)};
    for (int step = 0; step < 4; ++step) {
        SCOPED_TRACE(step);
        const Tensor k_new = bf16_rounded(host_f32({1, g, d}, random_floats(rng, g * d)));
        const Tensor v_new = bf16_rounded(host_f32({1, g, d}, random_floats(rng, g * d)));
        const Tensor q = host_f32({1, h, d}, random_floats(rng, h * d, 3.0f));
        const Tensor q_dev = upload(*streamed, q), k_dev = upload(*streamed, k_new),
                     v_dev = upload(*streamed, v_new);
        Tensor got = streamed->alloc(DType::kF32, {1, h, d}, "out");
        ASSERT_TRUE(streamed->kv_store(k_dev, v_dev, {seq, pos}, streamed_cache).is_ok());
        ASSERT_TRUE(streamed->attention(q_dev, streamed_cache, {seq, pos}, params, got).is_ok());
        const std::vector<float> actual = download(*streamed, got);

        for (int64_t kv = 0; kv < g; ++kv) {
            std::copy_n(k_new.f32() + kv * d, d, kc.f32() + (kv * c + p) * d);
            std::copy_n(v_new.f32() + kv * d, d, vc.f32() + (kv * c + p) * d);
        }
        auto whole = make("cuda");
        Tensor want = whole->alloc(DType::kF32, {1, h, d}, "out");
        ASSERT_TRUE(whole
                        ->attention(upload(*whole, q),
                                    {upload_cache(*whole, kc, DType::kBF16),
                                     upload_cache(*whole, vc, DType::kBF16)},
                                    {seq, pos}, params, want)
                        .is_ok());
        const std::vector<float> expected = download(*whole, want);
        ASSERT_EQ(actual.size(), expected.size());
        EXPECT_EQ(0, std::memcmp(actual.data(), expected.data(), actual.size() * sizeof(float)));
    }
}

TEST(Cuda, SeveralSequencesDecodeTogether) {
    SKIP_WITHOUT_CUDA();
    // Four sequences at very different lengths in one decode batch (one token each).
    AttentionSetup a{32, 8, 128, 4096, 4, {0, 1, 2, 3}, {100, 4095, 3000, 0}, {}};
    a.params.scale = 1.0f / std::sqrt(128.0f);
    check_attention_matches(a, 14);
    a.params.window = 256;
    a.params.n_sink = 4;
    check_attention_matches(a, 15);
}

TEST(Cuda, PrefillChunkAndMixedBatch) {
    SKIP_WITHOUT_CUDA();
    // A 64-token chunk of one sequence continuing at position 2000 (blocks of 5 tokens for
    // 3 query heads per KV head), then the same with two sequences interleaved.
    AttentionSetup a{9, 3, 64, 2112, 2, {}, {}, {}};
    for (int i = 0; i < 64; ++i) {
        a.seq.push_back(0);
        a.pos.push_back(2000 + i);
    }
    a.params.scale = 0.125f;
    check_attention_matches(a, 16, AttentionPath::kTensorCore);  // one full 64-row block
    a.seq.clear();
    a.pos.clear();
    for (int i = 0; i < 64; ++i) {
        a.seq.push_back(i % 2);
        a.pos.push_back(i % 2 == 0 ? 1000 + i / 2 : 2047 + i / 2);
    }
    a.params = AttentionParams{0.125f, 100, 3};
    check_attention_matches(a, 17);
}

TEST(Cuda, TensorCorePrefillCausal) {
    SKIP_WITHOUT_CUDA();
    // A whole 256-token prompt from position 0 (4 query blocks, diagonal tiles aligned).
    for (int64_t d : {64, 128}) {
        SCOPED_TRACE(d);
        AttentionSetup a{d == 64 ? 9 : 32, d == 64 ? 3 : 4, d, 256, 1, {}, {}, {}};
        a.params.scale = 1.0f / std::sqrt(static_cast<float>(d));
        set_chunk(a, 0, 0, 256);
        check_attention_matches(a, 21, AttentionPath::kTensorCore);
    }
    // A ragged chunk (200 = 3 x 64 + 8 rows) continuing at position 1000 of slot 1, the keys
    // of positions 0 .. 999 already in the cache; the diagonal cuts key tiles off-boundary.
    for (int64_t d : {64, 128}) {
        SCOPED_TRACE(d);
        AttentionSetup a{d == 64 ? 9 : 8, d == 64 ? 3 : 2, d, 1200, 2, {}, {}, {}};
        a.params.scale = 1.0f / std::sqrt(static_cast<float>(d));
        set_chunk(a, 1, 1000, 200);
        check_attention_matches(a, 22, AttentionPath::kTensorCore);
    }
    // The smallest chunk that takes the path (64 tokens) at an odd start, g = h (no grouping).
    AttentionSetup a{4, 4, 64, 300, 1, {}, {}, {}};
    a.params.scale = 0.125f;
    set_chunk(a, 0, 173, 64);
    check_attention_matches(a, 23, AttentionPath::kTensorCore);
}

TEST(Cuda, TensorCorePrefillWindowAndSinks) {
    SKIP_WITHOUT_CUDA();
    // A 300-token chunk at positions 900 .. 1199: tiles between the sinks and the window are
    // skipped, the window's first tile is masked per element.
    struct Mask {
        int window, n_sink;
    };
    const Mask masks[] = {
        {100, 5},    // window + sinks inside the first tile
        {256, 0},    // window only
        {1, 0},      // only the key itself
        {64, 70},    // sinks spanning two tiles
        {40, 1100},  // sinks reaching into the chunk: they overlap every row's window
    };
    for (int64_t d : {64, 128}) {
        for (const Mask& m : masks) {
            SCOPED_TRACE(::testing::Message()
                         << "d " << d << " window " << m.window << " sinks " << m.n_sink);
            AttentionSetup a{d == 64 ? 9 : 8, d == 64 ? 3 : 2, d, 1200, 1, {}, {}, {}};
            a.params = AttentionParams{1.0f / std::sqrt(static_cast<float>(d)), m.window, m.n_sink};
            set_chunk(a, 0, 900, 300);
            check_attention_matches(a, 24, AttentionPath::kTensorCore);
        }
    }
}

// The decode kernel (bf16 cache, tensor cores, cp.async pipeline) on the shapes above: long
// contexts over many splits, windows with sinks, several sequences, mixed batches, and the
// prefill kernel reading bf16 tiles.
TEST(Cuda, Bf16CacheMatchesReference) {
    SKIP_WITHOUT_CUDA();
    constexpr DType kBf16 = DType::kBF16;
    for (int64_t d : {64, 128}) {
        SCOPED_TRACE(d);
        AttentionSetup a{d == 64 ? 9 : 32, d == 64 ? 3 : 8, d, 8192, 1, {0}, {8191}, {}};
        a.params.scale = 1.0f / std::sqrt(static_cast<float>(d));
        check_attention_matches(a, 31, AttentionPath::kTensorCore, kBf16);
        a.pos = {5001};  // a last tile cut mid-way
        check_attention_matches(a, 32, AttentionPath::kTensorCore, kBf16);
    }
    {
        AttentionSetup a{9, 3, 64, 8192, 1, {0}, {8000}, {}};
        a.params = AttentionParams{0.125f, 1024, 4};
        check_attention_matches(a, 33, AttentionPath::kTensorCore, kBf16);
        a.pos = {5001};
        a.params = AttentionParams{0.125f, 77, 5};
        check_attention_matches(a, 34, AttentionPath::kTensorCore, kBf16);
    }
    {
        AttentionSetup a{32, 8, 128, 4096, 4, {0, 1, 2, 3}, {100, 4095, 3000, 0}, {}};
        a.params.scale = 1.0f / std::sqrt(128.0f);
        check_attention_matches(a, 35, AttentionPath::kTensorCore, kBf16);
        a.params.window = 256;
        a.params.n_sink = 4;
        check_attention_matches(a, 36, AttentionPath::kTensorCore, kBf16);
    }
    {
        // Two sequences interleaved (blocks of 5 tokens x 3 heads), then a prefill chunk.
        AttentionSetup a{9, 3, 64, 2112, 2, {}, {}, {}};
        for (int i = 0; i < 64; ++i) {
            a.seq.push_back(i % 2);
            a.pos.push_back(i % 2 == 0 ? 1000 + i / 2 : 2047 + i / 2);
        }
        a.params = AttentionParams{0.125f, 100, 3};
        check_attention_matches(a, 37, AttentionPath::kTensorCore, kBf16);
        set_chunk(a, 1, 900, 200);
        a.params = AttentionParams{0.125f, 0, 0};
        check_attention_matches(a, 38, AttentionPath::kTensorCore, kBf16);
        a.params = AttentionParams{0.125f, 64, 70};
        check_attention_matches(a, 39, AttentionPath::kTensorCore, kBf16);
        a.params = AttentionParams{0.125f, 256, 0};  // a window alone: cuDNN where built in
        check_attention_matches(a, 40, AttentionPath::kTensorCore, kBf16);
    }
    {
        // A long chunk at the start of a sequence and one continuing it, d 128 with GQA 4.
        AttentionSetup a{8, 2, 128, 3000, 1, {}, {}, {}};
        a.params.scale = 1.0f / std::sqrt(128.0f);
        set_chunk(a, 0, 0, 2048);
        check_attention_matches(a, 41, AttentionPath::kTensorCore, kBf16);
        set_chunk(a, 0, 2048, 900);
        check_attention_matches(a, 42, AttentionPath::kTensorCore, kBf16);
    }
}

// PURBO_NO_CUDNN keeps prefill chunks on purbo's own tensor-core kernel (reading bf16
// tiles), the path every machine without cuDNN takes.
TEST(Cuda, Bf16CachePrefillOnOwnKernel) {
    SKIP_WITHOUT_CUDA();
    ::setenv("PURBO_NO_CUDNN", "1", 1);
    for (int64_t d : {64, 128}) {
        SCOPED_TRACE(d);
        AttentionSetup a{d == 64 ? 9 : 8, d == 64 ? 3 : 2, d, 1200, 2, {}, {}, {}};
        a.params.scale = 1.0f / std::sqrt(static_cast<float>(d));
        set_chunk(a, 1, 1000, 200);
        check_attention_matches(a, 43, AttentionPath::kTensorCore, DType::kBF16);
        a.params.window = 100;
        check_attention_matches(a, 44, AttentionPath::kTensorCore, DType::kBF16);
    }
    ::unsetenv("PURBO_NO_CUDNN");
}

TEST(Cuda, PrepareWeightRoundsMatricesToBf16AndKeepsVectorsF32) {
    SKIP_WITHOUT_CUDA();
    auto cuda = make("cuda");
    std::mt19937 rng(3);
    // A q8_0 matrix: on the device, every element is bf16(dequantize_row(...)).
    const int64_t rows = 5, k = 64;
    Tensor w = tensor_cpu(DType::kQ8_0, {rows, k}, "w");
    const std::vector<float> values = random_floats(rng, rows * k);
    for (int64_t r = 0; r < rows; ++r) quantize_row_q8_0(values.data() + r * k, w.row_ptr(r), k);
    auto dev = cuda->prepare_weight(w);
    ASSERT_TRUE(dev.is_ok()) << dev.status().to_string();
    EXPECT_EQ(dev->dtype, DType::kBF16);
    EXPECT_EQ(dev->device, Device::kCuda);
    const std::vector<float> got = download(*cuda, *dev);
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(DType::kQ8_0, w.row_ptr(r), row.data(), k);
        for (int64_t i = 0; i < k; ++i)
            ASSERT_EQ(got[static_cast<size_t>(r * k + i)], bf16_to_f32(f32_to_bf16(row[static_cast<size_t>(i)])));
    }
    // A norm weight: f32, bit for bit.
    const Tensor norm = host_f32({7}, random_floats(rng, 7));
    auto dev_norm = cuda->prepare_weight(norm);
    ASSERT_TRUE(dev_norm.is_ok());
    EXPECT_EQ(dev_norm->dtype, DType::kF32);
    const std::vector<float> got_norm = download(*cuda, *dev_norm);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(got_norm[static_cast<size_t>(i)], norm.f32()[i]);
}

TEST(Cuda, F32WeightsTakeTheF32Path) {
    SKIP_WITHOUT_CUDA();
    // A matrix uploaded as f32 (alloc + from_host) multiplies without bf16 rounding: the f32
    // reduction bound alone.
    auto cuda = make("cuda");
    auto ref = make("cpu-ref");
    std::mt19937 rng(4);
    const int64_t n = 3, k = 96, m = 40;
    const Tensor x = host_f32({n, k}, random_floats(rng, n * k));
    const Tensor w = host_f32({m, k}, random_floats(rng, m * k));
    Tensor expected = tensor_cpu(DType::kF32, {n, m});
    ASSERT_TRUE(ref->matmul(x, w, expected).is_ok());
    Tensor out = cuda->alloc(DType::kF32, {n, m});
    ASSERT_TRUE(cuda->matmul(upload(*cuda, x), upload(*cuda, w), out).is_ok());
    const std::vector<float> actual = download(*cuda, out);
    EXPECT_LE(test::nmse(actual, {expected.f32(), static_cast<size_t>(n * m)}), tol_f32_reduction(k));
}

TEST(Cuda, MatmulOnOddlyAlignedViewsAndRepeatedShapes) {
    SKIP_WITHOUT_CUDA();
    // Row views at odd offsets (as the q/k/v parts of a fused projection): a bf16 weight starting
    // 3 rows of k = 161 in (2-byte aligned), x one row in (4-byte aligned), out a column offset
    // of 1 (4-byte aligned). Each shape and alignment gets its own cuBLASLt plan; the second
    // call of a shape reuses it. Values are bf16 numbers, so cpu-ref on the same values bounds
    // the error by the f32 reduction alone.
    auto cuda = make("cuda");
    auto ref = make("cpu-ref");
    std::mt19937 rng(5);
    const int64_t n = 2, k = 161, m = 67;
    std::vector<float> wv = random_floats(rng, (m + 3) * k), xv = random_floats(rng, (n + 1) * k);
    for (float& v : wv) v = bf16_to_f32(f32_to_bf16(v));
    for (float& v : xv) v = bf16_to_f32(f32_to_bf16(v));
    const Tensor w_all = host_f32({m + 3, k}, wv), x_all = host_f32({n + 1, k}, xv);
    auto w_dev = cuda->prepare_weight(w_all);
    ASSERT_TRUE(w_dev.is_ok()) << w_dev.status().to_string();
    const Tensor w_view = w_dev->rows(3, m + 3), x_view = upload(*cuda, x_all).rows(1, n + 1);
    Tensor expected = tensor_cpu(DType::kF32, {n, m});
    ASSERT_TRUE(ref->matmul(x_all.rows(1, n + 1), w_all.rows(3, m + 3), expected).is_ok());
    const std::span<const float> want(expected.f32(), static_cast<size_t>(n * m));
    Tensor out_all = cuda->alloc(DType::kF32, {n * m + 1});
    const Tensor out = out_all.reshaped({n * m + 1, 1}).rows(1, n * m + 1).reshaped({n, m});
    for (int call = 0; call < 2; ++call) {
        SCOPED_TRACE(fmt::format("call {}", call));
        ASSERT_TRUE(cuda->matmul(x_view, w_view, out).is_ok());
        const std::vector<float> got = download(*cuda, out);
        EXPECT_LE(test::nmse(got, want), tol_f32_reduction(k));
    }
    // The aligned whole tensors: another plan, the same products.
    Tensor out2 = cuda->alloc(DType::kF32, {n + 1, m + 3});
    ASSERT_TRUE(cuda->matmul(upload(*cuda, x_all), *w_dev, out2).is_ok());
    const std::vector<float> got2 = download(*cuda, out2);
    Tensor expected2 = tensor_cpu(DType::kF32, {n + 1, m + 3});
    ASSERT_TRUE(ref->matmul(x_all, w_all, expected2).is_ok());
    EXPECT_LE(test::nmse(got2, {expected2.f32(), got2.size()}), tol_f32_reduction(k));
}

// Up to kGemvMaxTokens tokens (decode) take the GEMV kernel, which multiplies the bf16 weights
// with x in f32: against cpu-ref on the same bf16 weights and the unrounded x, only the f32
// reduction's error is left (the GEMM path would add x's bf16 rounding, nmse ~1e-5, 100x the
// bound). The LM head's shape included; a weight view at an odd row (16-byte aligned: k = 576
// bf16 is 1152 bytes) too.
TEST(Cuda, DecodeMatmulKeepsActivationsInF32) {
    SKIP_WITHOUT_CUDA();
    auto cuda = make("cuda");
    auto ref = make("cpu-ref");
    std::mt19937 rng(8);
    for (const auto& [n, k, m] : {std::tuple<int64_t, int64_t, int64_t>{1, 576, 1728}, {2, 1536, 576},
                                  {3, 576, 131}, {4, 64, 9}, {1, 576, 49152}}) {
        SCOPED_TRACE(fmt::format("n {} k {} m {}", n, k, m));
        std::vector<float> wv = random_floats(rng, (m + 1) * k);
        for (float& v : wv) v = bf16_to_f32(f32_to_bf16(v));
        const Tensor w_all = host_f32({m + 1, k}, wv), x = host_f32({n, k}, random_floats(rng, n * k));
        auto w_dev = cuda->prepare_weight(w_all);
        ASSERT_TRUE(w_dev.is_ok()) << w_dev.status().to_string();
        Tensor expected = tensor_cpu(DType::kF32, {n, m});
        ASSERT_TRUE(ref->matmul(x, w_all.rows(1, m + 1), expected).is_ok());
        Tensor out = cuda->alloc(DType::kF32, {n, m});
        ASSERT_TRUE(cuda->matmul(upload(*cuda, x), w_dev->rows(1, m + 1), out).is_ok());
        const std::vector<float> got = download(*cuda, out);
        EXPECT_LE(test::nmse(got, {expected.f32(), got.size()}), tol_f32_reduction(k));
    }
}

TEST(Cuda, OutputsMayAliasInputs) {
    SKIP_WITHOUT_CUDA();
    auto cuda = make("cuda");
    auto ref = make("cpu-ref");
    std::mt19937 rng(5);
    const Tensor x = host_f32({3, 576}, random_floats(rng, 3 * 576, 3.0f));
    const Tensor w = host_f32({576}, random_floats(rng, 576));
    Tensor expected = tensor_cpu(DType::kF32, {3, 576});
    ASSERT_TRUE(ref->rms_norm(x, w, 1e-5f, expected).is_ok());
    Tensor xd = upload(*cuda, x);
    ASSERT_TRUE(cuda->rms_norm(xd, upload(*cuda, w), 1e-5f, xd).is_ok());  // in place
    EXPECT_LE(test::nmse(download(*cuda, xd), {expected.f32(), 3 * 576}), tol_f32_reduction(576));
    Tensor yd = upload(*cuda, x);
    ASSERT_TRUE(cuda->add(yd, yd, yd).is_ok());  // y = y + y, exact
    const std::vector<float> doubled = download(*cuda, yd);
    for (size_t i = 0; i < doubled.size(); ++i) ASSERT_EQ(doubled[i], 2.0f * x.f32()[i]);
}

TEST(Cuda, HostTensorsAndUnsupportedHeadDimsAreStatuses) {
    SKIP_WITHOUT_CUDA();
    auto cuda = make("cuda");
    // Well-shaped host tensors: rejected at the device boundary, not dereferenced.
    Tensor a = tensor_cpu(DType::kF32, {2, 8}), b = tensor_cpu(DType::kF32, {2, 8});
    EXPECT_EQ(cuda->add(a, b, a).code(), StatusCode::kInvalidArgument);
    Tensor w = tensor_cpu(DType::kF32, {4, 8}), out = cuda->alloc(DType::kF32, {2, 4});
    Tensor xd = cuda->alloc(DType::kF32, {2, 8});
    EXPECT_EQ(cuda->matmul(xd, w, out).code(), StatusCode::kInvalidArgument);
    // A device matrix of a dtype the GEMM does not take.
    Tensor w_f16 = cuda->alloc(DType::kF16, {4, 8});
    EXPECT_EQ(cuda->matmul(xd, w_f16, out).code(), StatusCode::kUnsupported);
    // Head dim 96 is valid input but has no kernel.
    Tensor q = cuda->alloc(DType::kF32, {1, 2, 96}), o = cuda->alloc(DType::kF32, {1, 2, 96});
    Tensor kc = cuda->alloc(DType::kF32, {1, 1, 4, 96}), vc = cuda->alloc(DType::kF32, {1, 1, 4, 96});
    const int32_t seq[] = {0}, pos[] = {0};
    EXPECT_EQ(cuda->attention(q, {kc, vc}, {seq, pos}, {}, o).code(), StatusCode::kUnsupported);
    // Copies check shapes.
    Tensor host = tensor_cpu(DType::kF32, {3, 8});
    EXPECT_EQ(cuda->to_host(xd, host).code(), StatusCode::kInvalidArgument);
}

TEST(Cuda, Bf16DeviceTensorsRoundTripThroughF32) {
    SKIP_WITHOUT_CUDA();
    auto cuda = make("cuda");
    std::mt19937 rng(6);
    const Tensor x = host_f32({4, 33}, random_floats(rng, 4 * 33, 100.0f));
    Tensor dev = cuda->alloc(DType::kBF16, {4, 33});
    ASSERT_TRUE(cuda->from_host(x, dev).is_ok());
    const std::vector<float> back = download(*cuda, dev);
    for (size_t i = 0; i < back.size(); ++i) ASSERT_EQ(back[i], bf16_to_f32(f32_to_bf16(x.f32()[i])));
}

// i32 tensors (block selections and their counts) copy as they are, both ways.
TEST(Cuda, I32DeviceTensorsRoundTrip) {
    SKIP_WITHOUT_CUDA();
    auto cuda = make("cuda");
    Tensor host = tensor_cpu(DType::kI32, {3, 5});
    for (int i = 0; i < 15; ++i) host.ptr<int32_t>()[i] = i * 1000003 - 7;
    Tensor dev = cuda->alloc(DType::kI32, {3, 5});
    ASSERT_TRUE(cuda->from_host(host, dev).is_ok());
    Tensor back = tensor_cpu(DType::kI32, {3, 5});
    ASSERT_TRUE(cuda->to_host(dev, back).is_ok());
    for (int i = 0; i < 15; ++i) EXPECT_EQ(back.ptr<int32_t>()[i], host.ptr<int32_t>()[i]);
    // An i32 device tensor does not convert to or from f32.
    EXPECT_FALSE(cuda->to_host(dev, tensor_cpu(DType::kF32, {3, 5})).is_ok());
}

TEST(Cuda, NotListedWithoutADevice) {
    // Where no device is visible, "cuda" must not be listed (tests skip instead of failing),
    // and creating it says why.
    if (cuda_available()) {
        EXPECT_TRUE(backend_create("cuda").is_ok());
    } else {
        auto b = backend_create("cuda");
        EXPECT_FALSE(b.is_ok());
    }
}

}  // namespace
}  // namespace purbo
