// One harness for every op on every backend: each case builds random inputs, runs the op on
// cpu-ref (the oracle) and on every other backend in backend_available(), and compares.
//  - Outputs are poisoned with NaN before a run (an element the op forgets to write fails)
//    and followed by a guard region of sentinel values (a write past the end fails).
//  - Dense results are compared by normalised mean squared error (nmse) against a tolerance
//    derived below; copies are compared exactly; block selections as sets, with boundary
//    near-ties counted (select_blocks section).
// Then: hand-computed cases for cpu-ref itself (the oracle must be right), the cpu backend's
// two matmul paths on every n, its SIMD dot products against their scalar bodies, and errors.
//
// Letters: n tokens, k inputs, m outputs, h query heads, g KV heads, d head dim,
// c cache capacity, s sequence slots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <numbers>
#include <optional>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu-backend.h"
#include "backend/cpu/packed-weights.h"
#include "backend/cpu/vec-dot-f32.h"
#include "backend/cpu/vec-dot.h"
#include "backend/cpu/vec-exp.h"
#include "core/fp16.h"
#include "core/fp8.h"
#include "core/quants.h"
#include "test-util.h"

namespace purbo {
namespace {

using test::host_f32;
using test::random_floats;

// ---- tolerances ----------------------------------------------------------------------------

constexpr double kEps = std::numeric_limits<float>::epsilon();  // 2^-23, f32 unit roundoff x 2

// A length-L reduction in f32, compared with cpu-ref's double: the probabilistic bound of
// Higham & Mary (2019) gives a relative error of about lambda sqrt(L) eps of sum |terms|; for
// zero-mean random terms sum |terms| ~ sqrt(L) |sum|, so nmse <= (lambda L eps)^2. lambda = 4
// covers reordering by BLAS blocking, FMA contraction and the tails of the distribution.
// Still 3 orders of magnitude below the q8 activation error, so a path that quantises by
// mistake fails it.
double tol_f32_reduction(int64_t length) {
    const double lambda_l_eps = 4.0 * static_cast<double>(length) * kEps;
    return lambda_l_eps * lambda_l_eps;
}

// Elementwise ops computed in f32 against cpu-ref's double (libm expf vs exp, one division):
// at most a few ulps per element; nmse <= (4 eps)^2.
constexpr double kTolElementwise = 16.0 * kEps * kEps;

// ---- tolerances of the cuda backend (bf16 matrices) ------------------------------------------
//
// cuda stores every matrix from prepare_weight in bf16 (8 significant bits, round to nearest
// even: relative error < 2^-8 per element) and rounds x to bf16 before its GEMM.

// A copy of a bf16-rounded table: every element within 2^-8 relative, so nmse < 2^-16.
constexpr double kTolBf16Copy = 1.0 / 65536.0;

// Round to bf16 and back, as the cuda backend's prepare_weight and x cast do (nearest even).
double bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// The exact nmse that rounding x and w to bf16 causes in x @ w^T: computed from the data in
// double, not estimated (about 2 (2^-8)^2 / 3 ~ 1e-5 for random data: two roundings, each with
// relative variance u^2 / 3).
double bf16_rounding_nmse(const std::vector<float>& x, const std::vector<float>& w_f32, int64_t n, int64_t k,
                          int64_t m, const std::vector<float>& reference) {
    std::vector<double> xb(x.size()), wb(w_f32.size());
    for (size_t i = 0; i < x.size(); ++i) xb[i] = bf16_round(x[i]);
    for (size_t i = 0; i < w_f32.size(); ++i) wb[i] = bf16_round(w_f32[i]);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < m; ++j) {
            double rounded = 0, exact = 0;
            for (int64_t l = 0; l < k; ++l) {
                const size_t xi = static_cast<size_t>(i * k + l), wi = static_cast<size_t>(j * k + l);
                rounded += xb[xi] * wb[wi];
                exact += static_cast<double>(x[xi]) * w_f32[wi];
            }
            err += (rounded - exact) * (rounded - exact);
            const double r = reference[static_cast<size_t>(i * m + j)];
            ref += r * r;
        }
    }
    return err / ref;
}

// cuda's matmul against cpu-ref: the bf16 rounding above (exact) plus the fp32 accumulation of
// bf16 products (exact in fp32) on tensor cores, which truncate rather than round inside their
// additions (Fasi et al. 2021, "Numerical behavior of NVIDIA tensor cores"): one ulp instead of
// half an ulp, so twice tol_f32_reduction's lambda, i.e. 4x its nmse. The two errors add as
// norms: sqrt(nmse) <= sqrt(rounding) + sqrt(accumulation).
double tol_cuda_matmul(double rounding_nmse, int64_t k) {
    const double total = std::sqrt(rounding_nmse) + std::sqrt(4.0 * tol_f32_reduction(k));
    return total * total;
}

// cuda's tensor-core attention (prefill chunks: n >= 64 consecutive positions of one sequence,
// d 64 or 128) rounds q (pre-scaled), k, v and the softmax weights p to bf16, unit roundoff
// u = 2^-8 (relative error variance <= u^2 / 3 per operand), and accumulates in fp32:
//  - q, k, v: the nmse their rounding causes is measured from the data (cpu-ref run again on
//    bf16-rounded copies); the device rounds q after scaling, another draw of the same size.
//  - p: out = sum_j p_j (1 + e_j) v_j / l with independent e_j has, for zero-mean values, an
//    nmse of E[e^2] <= u^2 / 3 (about 5e-6).
// Independent errors add in nmse; x2 covers q's other draw and the spread of both estimates
// over a few thousand output rows. Plus the fp32 reductions' own bound. A wrong fragment
// layout or mask gives an nmse of order 1, five orders above this (about 1e-5 here).
double tol_cuda_attention(double qkv_rounding_nmse, double fp32_nmse) {
    constexpr double kU = 1.0 / 256.0;
    return 2.0 * (qkv_rounding_nmse + kU * kU / 3.0) + fp32_nmse;
}

// ---- guarded buffers -----------------------------------------------------------------------

constexpr int64_t kGuardElements = 64;
constexpr uint32_t kSentinelBits = 0x7fa5a5a5u;  // a NaN payload no op computes

float sentinel() {
    float f;
    std::memcpy(&f, &kSentinelBits, 4);
    return f;
}

// An f32 output on a backend: a buffer of numel + kGuardElements elements, the prefix poisoned
// with NaN, the rest sentinel; `view` is the prefix with the requested shape.
struct GuardedOutput {
    Tensor buffer;
    Tensor view;
    int64_t numel = 0;

    GuardedOutput(Backend& backend, std::initializer_list<int64_t> shape) {
        numel = 1;
        for (int64_t d : shape) numel *= d;
        buffer = backend.alloc(DType::kF32, {numel + kGuardElements}, "guarded");
        Tensor host = tensor_cpu(DType::kF32, {numel + kGuardElements});
        for (int64_t i = 0; i < numel; ++i) host.f32()[i] = std::numeric_limits<float>::quiet_NaN();
        for (int64_t i = numel; i < numel + kGuardElements; ++i) host.f32()[i] = sentinel();
        EXPECT_TRUE(backend.from_host(host, buffer).is_ok());
        view = buffer;
        view.ndim = static_cast<int>(shape.size());
        view.shape = {};
        size_t i = 0;
        for (int64_t d : shape) view.shape[i++] = d;
        view.name = "out";
    }

    // The output values; records a failure if the guard region was touched.
    std::vector<float> read(Backend& backend) const {
        Tensor host = tensor_cpu(DType::kF32, {numel + kGuardElements});
        EXPECT_TRUE(backend.to_host(buffer, host).is_ok());
        for (int64_t i = numel; i < numel + kGuardElements; ++i) {
            uint32_t bits;
            std::memcpy(&bits, host.f32() + i, 4);
            EXPECT_EQ(bits, kSentinelBits) << "write past the end of the output at element " << i;
        }
        return std::vector<float>(host.f32(), host.f32() + numel);
    }
};

// The same for an i32 output: the prefix poisoned with a value no op writes (far outside any
// index range), the guard region with another.
constexpr int32_t kPoisonI32 = 0x7fa5a5a5;
constexpr int32_t kSentinelI32 = 0x5a5a5a5a;

struct GuardedI32 {
    Tensor buffer;
    Tensor view;
    int64_t numel = 0;

    GuardedI32(Backend& backend, std::initializer_list<int64_t> shape) {
        numel = 1;
        for (int64_t d : shape) numel *= d;
        buffer = backend.alloc(DType::kI32, {numel + kGuardElements}, "guarded");
        Tensor host = tensor_cpu(DType::kI32, {numel + kGuardElements});
        std::fill(host.ptr<int32_t>(), host.ptr<int32_t>() + numel, kPoisonI32);
        std::fill(host.ptr<int32_t>() + numel, host.ptr<int32_t>() + numel + kGuardElements,
                  kSentinelI32);
        EXPECT_TRUE(backend.from_host(host, buffer).is_ok());
        view = buffer;
        view.ndim = static_cast<int>(shape.size());
        view.shape = {};
        size_t i = 0;
        for (int64_t d : shape) view.shape[i++] = d;
        view.name = "out";
    }

    // The output values; records a failure if the guard region was touched.
    std::vector<int32_t> read(Backend& backend) const {
        Tensor host = tensor_cpu(DType::kI32, {numel + kGuardElements});
        EXPECT_TRUE(backend.to_host(buffer, host).is_ok());
        const int32_t* v = host.ptr<int32_t>();
        for (int64_t i = numel; i < numel + kGuardElements; ++i)
            EXPECT_EQ(v[i], kSentinelI32) << "write past the end of the output at element " << i;
        return std::vector<int32_t>(v, v + numel);
    }
};

// ---- random inputs -------------------------------------------------------------------------

// Writes an f16 of value v at byte offset `at` of a block.
void put_f16(uint8_t* block, size_t at, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(block + at, &h, 2);
}

// A (rows, k) weight of `dtype` from random values. f32/f16/bf16 convert the values, q4_0,
// q4_1 and q8_0 go through the reference quantisers; the other block types are random bytes
// with their f16 scales overwritten by small positive values (every bit pattern of the
// integer parts is a valid encoding).
Tensor random_weight(std::mt19937& rng, DType dtype, int64_t rows, int64_t k) {
    Tensor w = tensor_cpu(dtype, {rows, k}, fmt::format("w_{}", dtype_name(dtype)));
    const std::vector<float> values = random_floats(rng, rows * k);
    for (int64_t r = 0; r < rows; ++r) {
        const float* src = values.data() + r * k;
        uint8_t* dst = w.row_ptr(r);
        switch (dtype) {
            case DType::kF32:
                std::memcpy(dst, src, static_cast<size_t>(k) * 4);
                continue;
            case DType::kF16:
                for (int64_t i = 0; i < k; ++i)
                    reinterpret_cast<uint16_t*>(dst)[i] = f32_to_f16(src[i]);
                continue;
            case DType::kBF16:
                for (int64_t i = 0; i < k; ++i)
                    reinterpret_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
                continue;
            case DType::kQ4_0:
                quantize_row_q4_0(src, dst, k);
                continue;
            case DType::kQ4_1:
                quantize_row_q4_1(src, dst, k);
                continue;
            case DType::kQ8_0:
                quantize_row_q8_0(src, dst, k);
                continue;
            default:
                break;
        }
        std::uniform_int_distribution<int> byte(0, 255);
        for (size_t i = 0; i < w.row_bytes(); ++i) dst[i] = static_cast<uint8_t>(byte(rng));
        std::uniform_real_distribution<float> scale(0.002f, 0.02f);
        const DTypeTraits& t = dtype_traits(dtype);
        for (int64_t b = 0; b < k / t.block_size; ++b) {
            uint8_t* block = dst + static_cast<size_t>(b) * t.block_bytes;
            switch (dtype) {
                case DType::kQ5_0:
                    put_f16(block, offsetof(BlockQ5_0, d), scale(rng));
                    break;
                case DType::kQ5_1:
                    put_f16(block, offsetof(BlockQ5_1, d), scale(rng));
                    put_f16(block, offsetof(BlockQ5_1, m), -scale(rng) * 16);
                    break;
                case DType::kQ2_K:
                    put_f16(block, offsetof(BlockQ2_K, d), scale(rng));
                    put_f16(block, offsetof(BlockQ2_K, dmin), scale(rng));
                    break;
                case DType::kQ3_K:
                    put_f16(block, offsetof(BlockQ3_K, d), scale(rng));
                    break;
                case DType::kQ4_K:
                    put_f16(block, offsetof(BlockQ4_K, d), scale(rng));
                    put_f16(block, offsetof(BlockQ4_K, dmin), scale(rng));
                    break;
                case DType::kQ5_K:
                    put_f16(block, offsetof(BlockQ5_K, d), scale(rng));
                    put_f16(block, offsetof(BlockQ5_K, dmin), scale(rng));
                    break;
                case DType::kQ6_K:
                    put_f16(block, offsetof(BlockQ6_K, d), scale(rng));
                    break;
                default:
                    PURBO_ASSERT(false, "no random weights for {}", dtype_name(dtype));
            }
        }
    }
    return w;
}

// Backend::alloc takes a literal shape list; spell it out per rank.
Tensor alloc_like(Backend& backend, const Tensor& host) {
    const auto& s = host.shape;
    switch (host.ndim) {
        case 1:
            return backend.alloc(host.dtype, {s[0]}, host.name);
        case 2:
            return backend.alloc(host.dtype, {s[0], s[1]}, host.name);
        case 3:
            return backend.alloc(host.dtype, {s[0], s[1], s[2]}, host.name);
        default:
            return backend.alloc(host.dtype, {s[0], s[1], s[2], s[3]}, host.name);
    }
}

// An f32 activation copied onto the backend.
Tensor upload(Backend& backend, const Tensor& host) {
    Tensor t = alloc_like(backend, host);
    EXPECT_TRUE(backend.from_host(host, t).is_ok());
    return t;
}

std::vector<float> download(Backend& backend, const Tensor& t) {
    Tensor host = tensor_cpu(DType::kF32,
                             std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)));
    EXPECT_TRUE(backend.to_host(t, host).is_ok());
    return std::vector<float>(host.f32(), host.f32() + host.numel());
}

// ---- the case table --------------------------------------------------------------------------

// A case's inputs, built once; run() executes the op on one backend and returns its output.
struct PreparedCase {
    std::function<std::vector<float>(Backend&)> run;
    double max_nmse = 0;           // 0: the output must equal cpu-ref's exactly
    std::vector<float> reference;  // cpu-ref's output when prepare() already needed it
    // A backend whose weights have another precision (cuda: bf16) gets its own bound, computed
    // from the case's data and cpu-ref's output only when that backend runs; nullopt or unset:
    // max_nmse.
    std::function<std::optional<double>(const std::string& backend, const std::vector<float>& expected)>
        backend_max_nmse;
    // Outputs that are a selection rather than values (select_blocks): judges one backend's
    // output against cpu-ref's in place of a tolerance; called for cpu-ref's own output too
    // (with itself as `expected`) so that the oracle's invariants are checked as well.
    std::function<void(const std::string& backend, const std::vector<float>& expected,
                       const std::vector<float>& actual)>
        compare;
};

struct OpCase {
    std::string name;  // gtest-safe: letters, digits, underscores
    std::function<PreparedCase()> prepare;
};

std::string safe_name(std::string s) {
    for (char& ch : s) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    return s;
}

// Weight dtypes the cpu backend quantises activations for (q8_0 / q8_1) in its GEMV path.
bool activation_quantised(DType dtype) {
    return dtype == DType::kQ4_0 || dtype == DType::kQ4_1 || dtype == DType::kQ8_0;
}

// Expected nmse of x @ w^T when x is rounded to q8 blocks: each element gets an error uniform
// in +-step/2 with step = max|x_block| / 127, variance step^2 / 12, independent across
// elements, so E[err(out_ij)^2] = sum_l w_jl^2 var_il. Normalised by sum out_ij^2 (cpu-ref).
double predicted_q8_nmse(const std::vector<float>& x, const std::vector<float>& w_f32, int64_t n,
                         int64_t k, int64_t m, const std::vector<float>& reference) {
    std::vector<double> var(x.size());  // (n, k)
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t b = 0; b < k / 32; ++b) {
            float amax = 0;
            for (int l = 0; l < 32; ++l)
                amax = std::max(amax, std::fabs(x[static_cast<size_t>(i * k + b * 32 + l)]));
            const double step = amax / 127.0;
            for (int l = 0; l < 32; ++l)
                var[static_cast<size_t>(i * k + b * 32 + l)] = step * step / 12.0;
        }
    }
    double err = 0, ref = 0;
    for (int64_t j = 0; j < m; ++j) {
        for (int64_t i = 0; i < n; ++i) {
            double e = 0;
            for (int64_t l = 0; l < k; ++l) {
                const double wv = w_f32[static_cast<size_t>(j * k + l)];
                e += wv * wv * var[static_cast<size_t>(i * k + l)];
            }
            err += e;
            ref += static_cast<double>(reference[static_cast<size_t>(i * m + j)]) *
                   reference[static_cast<size_t>(i * m + j)];
        }
    }
    return err / ref;
}

std::unique_ptr<Backend> make_backend(const std::string& name) {
    auto backend = backend_create(name);
    PURBO_ASSERT(backend.is_ok(), "{}", backend.status().to_string());
    return std::move(backend).value();
}

Backend& reference_backend() {
    static std::unique_ptr<Backend> ref = make_backend("cpu-ref");
    return *ref;
}

OpCase matmul_case(DType dtype, int64_t n, int64_t k, int64_t m) {
    return {safe_name(fmt::format("matmul_{}_n{}_k{}_m{}", dtype_name(dtype), n, k, m)), [=] {
                std::mt19937 rng(
                    static_cast<uint32_t>(n * 7919 + k * 31 + m + static_cast<int>(dtype)));
                auto x = std::make_shared<Tensor>(
                    host_f32({n, k}, random_floats(rng, n * k)));                    // (n, k)
                auto w = std::make_shared<Tensor>(random_weight(rng, dtype, m, k));  // (m, k)
                PreparedCase c;
                c.run = [=](Backend& backend) {
                    auto wb = backend.prepare_weight(*w);
                    EXPECT_TRUE(wb.is_ok()) << wb.status().to_string();
                    if (!wb.is_ok()) return std::vector<float>();
                    Tensor xb = upload(backend, *x);
                    GuardedOutput out(backend, {n, m});
                    const Status st = backend.matmul(xb, *wb, out.view);
                    EXPECT_TRUE(st.is_ok()) << st.to_string();
                    return out.read(backend);
                };
                c.max_nmse = tol_f32_reduction(k);
                if (activation_quantised(dtype)) {
                    // The GEMV path's q8 rounding of x dominates; x3 covers the f16 rounding of the
                    // q8 scales (2^-11 relative) and q8_1's f16 sum term (~1% of the budget:
                    // relative 2^-11 on a term of the size of the output's sqrt(32) blocks).
                    std::vector<float> w_f32(static_cast<size_t>(m * k));
                    for (int64_t j = 0; j < m; ++j)
                        dequantize_row(dtype, w->row_ptr(j), w_f32.data() + j * k, k);
                    const std::vector<float> xs(x->f32(), x->f32() + n * k);
                    c.reference = c.run(reference_backend());
                    c.max_nmse += 3.0 * predicted_q8_nmse(xs, w_f32, n, k, m, c.reference);
                }
                c.backend_max_nmse = [=](const std::string& backend,
                                         const std::vector<float>& expected) -> std::optional<double> {
                    if (backend != "cuda") return std::nullopt;
                    std::vector<float> w_f32(static_cast<size_t>(m * k));
                    for (int64_t j = 0; j < m; ++j) dequantize_row(dtype, w->row_ptr(j), w_f32.data() + j * k, k);
                    const std::vector<float> xs(x->f32(), x->f32() + n * k);
                    return tol_cuda_matmul(bf16_rounding_nmse(xs, w_f32, n, k, m, expected), k);
                };
                return c;
            }};
}

OpCase embedding_case(DType dtype, int64_t v, int64_t k, int64_t n) {
    return {safe_name(fmt::format("embedding_{}_v{}_k{}_n{}", dtype_name(dtype), v, k, n)), [=] {
                std::mt19937 rng(static_cast<uint32_t>(v + k + n));
                auto table = std::make_shared<Tensor>(random_weight(rng, dtype, v, k));  // (v, k)
                std::vector<int32_t> ids = {0, static_cast<int32_t>(v - 1)};
                std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(v - 1));
                while (static_cast<int64_t>(ids.size()) < n) ids.push_back(id(rng));
                ids.resize(static_cast<size_t>(n));
                PreparedCase c;
                c.run = [=](Backend& backend) {
                    auto tb = backend.prepare_weight(*table);
                    EXPECT_TRUE(tb.is_ok());
                    if (!tb.is_ok()) return std::vector<float>();
                    GuardedOutput out(backend, {n, k});
                    EXPECT_TRUE(backend.embedding(*tb, ids, out.view).is_ok());
                    return out.read(backend);
                };
                c.max_nmse = 0;  // a copy through dequantize_row: exact
                c.backend_max_nmse = [](const std::string& backend, const std::vector<float>&) {
                    return backend == "cuda" ? std::optional<double>(kTolBf16Copy) : std::nullopt;
                };
                return c;
            }};
}

OpCase rms_norm_case(std::initializer_list<int64_t> shape) {
    const std::vector<int64_t> dims(shape);
    return {safe_name(fmt::format("rms_norm_{}", fmt::join(dims, "x"))), [=] {
                std::mt19937 rng(static_cast<uint32_t>(dims.size() * 100 + dims.back()));
                int64_t numel = 1;
                for (int64_t d : dims) numel *= d;
                const int64_t k = dims.back();
                auto x = std::make_shared<Tensor>(
                    tensor_cpu(DType::kF32, std::span<const int64_t>(dims)));
                const auto xs = random_floats(rng, numel, 3.0f);
                std::memcpy(x->data, xs.data(), xs.size() * 4);
                auto w = std::make_shared<Tensor>(host_f32({k}, random_floats(rng, k)));  // (k,)
                PreparedCase c;
                c.run = [=](Backend& backend) {
                    Tensor xb = upload(backend, *x);
                    Tensor wb = upload(backend, *w);
                    GuardedOutput out(backend, {numel});
                    Tensor view = out.view;
                    view.ndim = x->ndim;
                    view.shape = x->shape;
                    EXPECT_TRUE(backend.rms_norm(xb, wb, 1e-5f, view).is_ok());
                    return out.read(backend);
                };
                c.max_nmse = tol_f32_reduction(k);  // the sum of squares; the rest is elementwise
                return c;
            }};
}

// Rotary frequencies as Llama defines them: base^(-2i / rotary_dim).
std::vector<float> llama_inv_freq(int rotary_dim, double base) {
    std::vector<float> f(static_cast<size_t>(rotary_dim / 2));
    for (int i = 0; i < rotary_dim / 2; ++i)
        f[static_cast<size_t>(i)] = static_cast<float>(std::pow(base, -2.0 * i / rotary_dim));
    return f;
}

OpCase rope_case(int64_t n, int64_t heads, int64_t d, int rotary_dim, float attn_factor) {
    return {
        safe_name(fmt::format("rope_n{}_h{}_d{}_rot{}_af{}", n, heads, d, rotary_dim, attn_factor)),
        [=] {
            std::mt19937 rng(static_cast<uint32_t>(n * heads + d + rotary_dim));
            auto x = std::make_shared<Tensor>(
                host_f32({n, heads, d}, random_floats(rng, n * heads * d)));
            std::vector<int32_t> pos(static_cast<size_t>(n));
            std::uniform_int_distribution<int32_t> p(0, 8191);
            for (auto& v : pos) v = p(rng);
            pos[0] = 0;
            auto inv_freq =
                std::make_shared<std::vector<float>>(llama_inv_freq(rotary_dim, 10000.0));
            PreparedCase c;
            c.run = [=](Backend& backend) {
                Tensor xb = upload(backend, *x);
                RopeParams params{*inv_freq, rotary_dim, attn_factor};
                EXPECT_TRUE(backend.rope(xb, pos, params).is_ok());
                return download(backend, xb);
            };
            c.max_nmse =
                kTolElementwise;  // same f32 angle and libm cos/sin; rounding of 2 products
            return c;
        }};
}

// Tokens of several sequences in one batch: token i goes to seq[i] at pos[i].
struct Batch {
    std::vector<int32_t> seq;
    std::vector<int32_t> pos;
};

// n tokens over n_seq sequences, each sequence's tokens consecutive and ending at `last_pos`
// minus a per-sequence offset, so sequences see different context lengths.
Batch make_batch(int64_t n, int n_seq, int32_t last_pos) {
    Batch b;
    for (int64_t i = 0; i < n; ++i) {
        const int s = static_cast<int>(i % n_seq);
        const int64_t index_in_seq = i / n_seq, count_in_seq = (n - s + n_seq - 1) / n_seq;
        b.seq.push_back(s);
        const int64_t shift = std::min<int64_t>(37 * s, last_pos + 1 - count_in_seq);  // stays >= 0
        b.pos.push_back(static_cast<int32_t>(last_pos - shift - (count_in_seq - 1 - index_in_seq)));
    }
    return b;
}

// A cache of `cache_type` on the backend when it keeps that type (the values must already be
// representable in it), else an f32 cache of the same values: every backend then computes on
// identical keys and values. f8 e4m3 is for index keys only (index_key_dtypes).
Tensor upload_cache(Backend& backend, const Tensor& host, DType cache_type) {
    const std::vector<DType> types = backend.index_key_dtypes();
    if (cache_type == DType::kF32 || std::find(types.begin(), types.end(), cache_type) == types.end())
        return upload(backend, host);
    const auto& s = host.shape;
    Tensor t = backend.alloc(cache_type, {s[0], s[1], s[2], s[3]}, host.name);
    EXPECT_TRUE(backend.from_host(host, t).is_ok());
    return t;
}

// v as a cache of `cache_type` holds it: rounded to bf16 or f8 e4m3 (nearest even), f32 as is.
float cache_round(float v, DType cache_type) {
    if (cache_type == DType::kBF16) return static_cast<float>(bf16_round(v));
    if (cache_type == DType::kF8E4M3) return f8e4m3_to_f32(f32_to_f8e4m3(v));
    return v;
}

// "" for an f32 cache, else "_<what>_<type>" for the case name.
std::string cache_suffix(std::string_view what, DType cache_type) {
    return cache_type == DType::kF32 ? "" : fmt::format("_{}_{}", what, dtype_name(cache_type));
}

// Random cache contents, representable in `cache_type`.
Tensor random_cache(std::mt19937& rng, int64_t s, int64_t g, int64_t c, int64_t d, DType cache_type) {
    Tensor t = host_f32({s, g, c, d}, random_floats(rng, s * g * c * d));
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = cache_round(t.f32()[i], cache_type);
    return t;
}

// from_start: one sequence's tokens at positions 0 .. n - 1 (a prompt's first chunk) rather
// than ending at the cache's last row.
OpCase attention_case(int64_t n, int64_t h, int64_t g, int64_t d, int64_t c, int n_seq, int window,
                      int n_sink, DType cache_type = DType::kF32, bool from_start = false) {
    return {
        safe_name(fmt::format("attention_n{}_h{}_g{}_d{}_c{}_s{}_w{}_sink{}{}{}", n, h, g, d, c,
                              n_seq, window, n_sink, cache_suffix("cache", cache_type),
                              from_start ? "_from0" : "")),
        [=] {
            std::mt19937 rng(static_cast<uint32_t>(n * 131 + h * 17 + c + window + n_sink));
            const int64_t s = n_seq;
            // Random cache contents stand for keys and values of earlier tokens; the batch's
            // own keys are at its positions already (the op's precondition).
            auto k_cache = std::make_shared<Tensor>(random_cache(rng, s, g, c, d, cache_type));
            auto v_cache = std::make_shared<Tensor>(random_cache(rng, s, g, c, d, cache_type));
            // Amplitude 3 so that q.k / sqrt(d) spreads over a few units: a peaked softmax.
            auto q =
                std::make_shared<Tensor>(host_f32({n, h, d}, random_floats(rng, n * h * d, 3.0f)));
            const Batch batch =
                make_batch(n, n_seq, static_cast<int32_t>(from_start ? (n - 1) / n_seq : c - 1));
            AttentionParams params{1.0f / std::sqrt(static_cast<float>(d)), window, n_sink};
            PreparedCase pc;
            pc.run = [=](Backend& backend) {
                KvCacheView cache{upload_cache(backend, *k_cache, cache_type),
                                  upload_cache(backend, *v_cache, cache_type)};
                Tensor qb = upload(backend, *q);
                GuardedOutput out(backend, {n, h, d});
                const Status st =
                    backend.attention(qb, cache, {batch.seq, batch.pos}, params, out.view);
                EXPECT_TRUE(st.is_ok()) << st.to_string();
                return out.read(backend);
            };
            // Scores are length-d dot products, the output a length-c weighted sum.
            pc.max_nmse = tol_f32_reduction(d) + tol_f32_reduction(c);
            const double fp32_nmse = pc.max_nmse;
            pc.backend_max_nmse = [=](const std::string& backend,
                                      const std::vector<float>& expected) -> std::optional<double> {
                // The cases cuda-ops.cpp sends to a tensor-core kernel: prefill chunks (make_batch
                // gives one sequence consecutive positions), and with a bf16 cache every case
                // of d 64 or 128 (the decode kernel). The others keep the fp32 bound.
                const bool tc_head_dim = d == 64 || d == 128;
                const bool tensor_core =
                    tc_head_dim && ((n_seq == 1 && n >= 64) || cache_type == DType::kBF16);
                if (backend != "cuda" || !tensor_core) return std::nullopt;
                auto rounded = [](const Tensor& t) {
                    Tensor r = tensor_cpu(
                        DType::kF32,
                        std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)));
                    for (int64_t i = 0; i < t.numel(); ++i)
                        r.f32()[i] = static_cast<float>(bf16_round(t.f32()[i]));
                    return r;
                };
                Tensor out = tensor_cpu(DType::kF32, {n, h, d});
                const Status st = reference_backend().attention(
                    rounded(*q), {rounded(*k_cache), rounded(*v_cache)}, {batch.seq, batch.pos},
                    params, out);
                EXPECT_TRUE(st.is_ok()) << st.to_string();
                const double qkv =
                    test::nmse({out.f32(), static_cast<size_t>(out.numel())}, expected);
                return tol_cuda_attention(qkv, fp32_nmse);
            };
            return pc;
        }};
}

// With a bf16 cache the stored values are bf16 numbers already, so that the copy is exact
// (the rounding itself: CudaKvStore.RoundsToNearestEven).
OpCase kv_store_case(int64_t n, int64_t g, int64_t d, int64_t c, int n_seq, DType cache_type = DType::kF32) {
    return {
        safe_name(fmt::format("kv_store_n{}_g{}_d{}_c{}_s{}{}", n, g, d, c, n_seq,
                              cache_suffix("cache", cache_type))),
        [=] {
            std::mt19937 rng(static_cast<uint32_t>(n + g + d + c));
            const int64_t s = n_seq;
            auto k_cache = std::make_shared<Tensor>(random_cache(rng, s, g, c, d, cache_type));
            auto k = std::make_shared<Tensor>(random_cache(rng, 1, n, g, d, cache_type).reshaped({n, g, d}));
            auto v = std::make_shared<Tensor>(random_cache(rng, 1, n, g, d, cache_type).reshaped({n, g, d}));
            const Batch batch = make_batch(n, n_seq, static_cast<int32_t>(c - 1));
            PreparedCase pc;
            pc.run = [=](Backend& backend) {
                // Both caches start from the same contents; everything not stored must survive.
                KvCacheView cache{upload_cache(backend, *k_cache, cache_type),
                                  upload_cache(backend, *k_cache, cache_type)};
                const Status st = backend.kv_store(upload(backend, *k), upload(backend, *v),
                                                   {batch.seq, batch.pos}, cache);
                EXPECT_TRUE(st.is_ok()) << st.to_string();
                std::vector<float> result = download(backend, cache.k);
                const std::vector<float> vs = download(backend, cache.v);
                result.insert(result.end(), vs.begin(), vs.end());
                return result;
            };
            pc.max_nmse = 0;  // copies
            return pc;
        }};
}

enum class Elementwise { kSwiglu, kAdd, kAddBias };

OpCase elementwise_case(Elementwise op, int64_t n, int64_t f) {
    const char* names[] = {"swiglu", "add", "add_bias"};
    return {
        safe_name(fmt::format("{}_n{}_f{}", names[static_cast<int>(op)], n, f)), [=] {
            std::mt19937 rng(static_cast<uint32_t>(n * f + static_cast<int>(op)));
            auto a = std::make_shared<Tensor>(host_f32({n, f}, random_floats(rng, n * f, 6.0f)));
            auto b = std::make_shared<Tensor>(host_f32({n, f}, random_floats(rng, n * f)));
            auto bias = std::make_shared<Tensor>(host_f32({f}, random_floats(rng, f)));
            PreparedCase pc;
            pc.run = [=](Backend& backend) {
                Tensor ab = upload(backend, *a);
                if (op == Elementwise::kAddBias) {
                    EXPECT_TRUE(backend.add_bias(ab, upload(backend, *bias)).is_ok());
                    return download(backend, ab);
                }
                GuardedOutput out(backend, {n, f});
                const Status st = op == Elementwise::kSwiglu
                                      ? backend.swiglu(ab, upload(backend, *b), out.view)
                                      : backend.add(ab, upload(backend, *b), out.view);
                EXPECT_TRUE(st.is_ok()) << st.to_string();
                return out.read(backend);
            };
            pc.max_nmse =
                op == Elementwise::kSwiglu ? kTolElementwise : 0;  // a + b is exact in any order
            return pc;
        }};
}

// ---- select_blocks: top-p block selection -----------------------------------------------------
//
// Letters of this section: hr retrieval heads, r index dim, B block size, u = p / B + 1 the
// blocks a query at position p sees. Outputs are kept sets, compared as sets: every backend's
// must be valid on its own (ids ascending in range, block 0 and the block of p present, kept
// mass >= the target m + top_p (1 - m), m the always-kept mass, so >= top_p) and equal to
// cpu-ref's except at a boundary near-tie, which is counted.

// How the index scores of a case are spread.
enum class SelectScores {
    kFlat,    // small scores: every block holds about the same mass
    kPeaked,  // strong "needle" keys in about a quarter of the blocks: they hold most of the mass
    kTies,    // needles in block 1, copied whole into every third block: exactly equal masses
};

// Block masses can differ between backends by their rounding: the fast backends compute the
// scores, the block sums and the log2 masses in f32 (relative error a few u = 2^-24 per
// operation on scores of order 1 to 10 and sums of B terms), cpu-ref in double. Kept sets may
// then differ where two boundary blocks have masses equal to within that error, or where the
// kept mass lands that close to the target: 1e-6 covers a few ulps of f32 on every such quantity.
constexpr double kSelectNearTie = 1e-6;
// Near-ties are rare: random masses fall within 1e-6 of each other or of the target about once in
// 1e5 boundaries. The exact ties of kTies resolve the same way everywhere (equal f32 inputs give
// equal masses on every backend). Allowed: at most 1 in 50 rows of a case.
constexpr double kSelectMaxNearTieShare = 0.02;

// Each block's share of the index distribution of one (token, head) row, (u,), in double from
// the f32 inputs: the test's own computation, independent of every backend.
std::vector<double> select_block_masses(const float* q, const float* keys, int64_t r, int64_t p,
                                        int64_t block_size, double scale) {
    std::vector<double> z(static_cast<size_t>(p + 1));
    double max_z = -std::numeric_limits<double>::infinity();
    for (int64_t t = 0; t <= p; ++t) {
        double dot = 0;
        for (int64_t e = 0; e < r; ++e) dot += static_cast<double>(q[e]) * keys[t * r + e];
        z[static_cast<size_t>(t)] = dot * scale;
        max_z = std::max(max_z, z[static_cast<size_t>(t)]);
    }
    std::vector<double> mass(static_cast<size_t>(p / block_size + 1), 0.0);
    double total = 0;
    for (int64_t t = 0; t <= p; ++t) {
        const double w = std::exp(z[static_cast<size_t>(t)] - max_z);
        mass[static_cast<size_t>(t / block_size)] += w;
        total += w;
    }
    for (double& m : mass) m /= total;
    return mass;
}

double select_kept_mass(const std::vector<int32_t>& ids, const std::vector<double>& mass) {
    double kept = 0;
    for (int32_t b : ids) kept += mass[static_cast<size_t>(b)];
    return kept;
}

// The kept mass top-p selection must reach in a row whose blocks from `own` on hold its query
// positions: the always-kept blocks' mass m (block 0 and those) plus top_p of the rest
// (BlockSelectParams).
double select_target(const std::vector<double>& mass, int64_t own, double top_p) {
    double always = 0;
    for (size_t b = 0; b < mass.size(); ++b) {
        if (b == 0 || static_cast<int64_t>(b) >= own) always += mass[b];
    }
    return always + top_p * (1.0 - always);
}

// Whether two kept sets of one row differ only by a boundary near-tie: the same number of
// blocks, the differing ones of equal mass within kSelectNearTie (relative): an ordering flip;
// or one set is the other plus one block, the smaller one's mass within kSelectNearTie of
// the target: a flip of the stopping test.
bool select_near_tie(const std::vector<int32_t>& a, const std::vector<int32_t>& b,
                     const std::vector<double>& mass, double target) {
    std::vector<int32_t> only_a, only_b;
    std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(only_a));
    std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(only_b));
    if (only_a.size() == only_b.size()) {
        double lo = std::numeric_limits<double>::infinity(), hi = 0;
        for (const auto* side : {&only_a, &only_b}) {
            for (int32_t id : *side) {
                lo = std::min(lo, mass[static_cast<size_t>(id)]);
                hi = std::max(hi, mass[static_cast<size_t>(id)]);
            }
        }
        return hi <= lo * (1.0 + kSelectNearTie);
    }
    if (only_a.size() + only_b.size() != 1) return false;
    const std::vector<int32_t>& smaller = only_a.empty() ? a : b;
    return std::fabs(select_kept_mass(smaller, mass) - target) <= kSelectNearTie;
}

// Whether `ids` holds the heaviest blocks of the row: every kept block other than the
// always-kept ones (block 0 and those from `own`) weighs at least as much as every dropped
// block, up to a near-tie (a fixed budget's boundary).
bool select_is_top_by_mass(const std::vector<int32_t>& ids, const std::vector<double>& mass,
                           int64_t own) {
    double lightest_kept = std::numeric_limits<double>::infinity(), heaviest_dropped = 0;
    for (int64_t b = 1; b < own; ++b) {
        const double m = mass[static_cast<size_t>(b)];
        if (std::binary_search(ids.begin(), ids.end(), static_cast<int32_t>(b)))
            lightest_kept = std::min(lightest_kept, m);
        else
            heaviest_dropped = std::max(heaviest_dropped, m);
    }
    return heaviest_dropped <= lightest_kept * (1.0 + kSelectNearTie);
}

// Positions of one sequence's tokens: inside block 0, the end of block 0, the start of block 1
// (a block of one key), both sides of the next block boundary, mid-context and the cache's last
// row (a partial last block unless c is a multiple of B). Sequences after the first replace
// the last three with random positions.
std::vector<int32_t> select_positions(int64_t block_size, int64_t c, int seq, std::mt19937& rng) {
    std::vector<int64_t> pos = {
        0,         block_size / 2, block_size - 1, block_size, 2 * block_size - 1, 2 * block_size,
        c / 2 + 3, c - 1};
    if (seq > 0) {
        std::uniform_int_distribution<int64_t> any(0, c - 1);
        for (size_t k = pos.size() - 3; k < pos.size(); ++k) pos[k] = any(rng);
    }
    std::vector<int32_t> out;
    for (int64_t p : pos) out.push_back(static_cast<int32_t>(std::min(p, c - 1)));
    return out;
}

// Positions of one sequence's tokens as prefill chunks make them, for one selection per query
// block: a run from 0 across the first block boundary, a run starting 5 before a boundary and
// crossing two more (query blocks cut at both ends), and the cache's last 70 positions.
// Sequences after the first start their middle run at a random position.
std::vector<int32_t> select_chunk_positions(int64_t block_size, int64_t c, int seq,
                                            std::mt19937& rng) {
    std::vector<int32_t> out;
    auto run = [&](int64_t from, int64_t len) {
        for (int64_t p = std::max<int64_t>(0, from); p < std::min(c, from + len); ++p)
            out.push_back(static_cast<int32_t>(p));
    };
    run(0, block_size + 3);
    const int64_t mid =
        seq == 0 ? 3 * block_size - 5 : std::uniform_int_distribution<int64_t>(0, c - 1)(rng);
    run(mid, 2 * block_size + 12);
    run(c - 70, 70);
    return out;
}

// The query groups of a batch as the test sees them (BlockSelectParams::per_query_block):
// group[i] = the first token of i's run of consecutive tokens of one sequence in one span of
// group_tokens positions.
std::vector<int64_t> select_group_of(const std::vector<int32_t>& seq,
                                     const std::vector<int32_t>& pos, int64_t group_tokens,
                                     bool per_query_block) {
    std::vector<int64_t> group(seq.size());
    for (size_t i = 0; i < seq.size(); ++i) {
        const bool joins = per_query_block && i > 0 && seq[i] == seq[i - 1] &&
                           pos[i] / group_tokens == pos[i - 1] / group_tokens;
        group[i] = joins ? group[i - 1] : static_cast<int64_t>(i);
    }
    return group;
}

// budget = K > 0: at most K blocks per row (BlockSelectParams::max_blocks) besides top_p
// (top_p = 1: the top-K blocks). key_type: the index keys' type where the backend keeps it
// (bf16: the keys are bf16 numbers, so cpu-ref's f32 copy holds the same values).
// extra_positions: random query positions added per sequence (many rows: cuda's prefill path).
// query_blocks: one selection per query block over prefill-like runs of positions
// (select_chunk_positions); the masses the kept set is judged by are the group's mean, over
// `samples` evenly spaced tokens of the group ending at its last when samples > 0.
// n_seq: the sequences of the batch (1: cuda's tensor-core mass kernel takes many rows of one
// sequence). group_blocks: blocks per query group (BlockSelectParams::query_block).
OpCase select_case(int64_t r, int64_t block_size, int64_t c, float top_p, SelectScores scores,
                   int budget = 0, DType key_type = DType::kF32, int extra_positions = 0,
                   bool query_blocks = false, int samples = 0, int n_seq = 3,
                   int group_blocks = 1) {
    const char* kinds[] = {"flat", "peaked", "ties"};
    return {
        safe_name(fmt::format("select_blocks_r{}_b{}_c{}_{}_p{}{}{}{}{}{}{}{}", r, block_size, c,
                              kinds[static_cast<int>(scores)], top_p,
                              budget > 0 ? fmt::format("_k{}", budget) : "",
                              cache_suffix("keys", key_type),
                              extra_positions > 0 ? fmt::format("_rows{}", extra_positions) : "",
                              query_blocks ? "_query_blocks" : "",
                              samples > 0 ? fmt::format("_samples{}", samples) : "",
                              n_seq != 3 ? fmt::format("_seq{}", n_seq) : "",
                              group_blocks != 1 ? fmt::format("_group{}", group_blocks) : "")),
        [=] {
            constexpr int64_t hr = 3;
            const int64_t s = n_seq, n_blocks = (c + block_size - 1) / block_size;
            // The capacity select_blocks requires (with a budget K only max(K, 1 + a group's
            // blocks)), and one spare entry: it must read -1 too.
            const int64_t group_tokens = group_blocks * block_size;
            const int64_t max_blocks =
                (budget > 0 ? std::min<int64_t>(n_blocks, std::max(budget, 1 + group_blocks))
                            : n_blocks) +
                1;
            std::mt19937 rng(static_cast<uint32_t>(r * 1009 + block_size * 97 + c +
                                                   static_cast<int>(scores) * 7 + top_p * 1000));
            auto batch = std::make_shared<Batch>();
            for (int seq = 0; seq < n_seq; ++seq) {
                for (int32_t p : query_blocks ? select_chunk_positions(block_size, c, seq, rng)
                                              : select_positions(block_size, c, seq, rng)) {
                    batch->seq.push_back(seq);
                    batch->pos.push_back(p);
                }
                std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(c - 1));
                for (int k = 0; k < extra_positions; ++k) {
                    batch->seq.push_back(seq);
                    batch->pos.push_back(any(rng));
                }
            }
            const int64_t n = static_cast<int64_t>(batch->seq.size());
            std::vector<float> keys = random_floats(rng, s * hr * c * r);  // (s, hr, c, r)
            std::vector<float> q;                                          // (n, hr, r)
            // A direction per head (entries +-1); needles are keys along it, and the queries
            // of the peaked cases lean towards it, so needles score about 1.5 * strength * r
            // before the scale 1 / sqrt(r).
            std::vector<float> dir(static_cast<size_t>(hr * r));
            std::bernoulli_distribution coin(0.5);
            for (float& v : dir) v = coin(rng) ? 1.0f : -1.0f;
            auto key_at = [&](int64_t seq, int64_t j, int64_t t) {
                return keys.data() + ((seq * hr + j) * c + t) * r;
            };
            if (scores == SelectScores::kFlat) {
                q = random_floats(rng, n * hr * r, 0.5f);
            } else {
                q = random_floats(rng, n * hr * r);
                for (int64_t i = 0; i < n; ++i) {
                    for (int64_t j = 0; j < hr; ++j) {
                        for (int64_t e = 0; e < r; ++e)
                            q[static_cast<size_t>((i * hr + j) * r + e)] +=
                                1.5f * dir[static_cast<size_t>(j * r + e)];
                    }
                }
                std::uniform_real_distribution<float> strength(0.5f, 1.5f);
                std::uniform_int_distribution<int64_t> offset(0, block_size - 1);
                std::bernoulli_distribution needle(0.25);
                for (int64_t seq = 0; seq < s; ++seq) {
                    for (int64_t j = 0; j < hr; ++j) {
                        for (int64_t b = 0; b < n_blocks; ++b) {
                            const bool planted =
                                scores == SelectScores::kPeaked ? needle(rng) : b == 1;
                            if (!planted) continue;
                            const float st = strength(rng);
                            for (int k = 0; k < (scores == SelectScores::kTies ? 2 : 1); ++k) {
                                const int64_t t = std::min(b * block_size + offset(rng), c - 1);
                                for (int64_t e = 0; e < r; ++e)
                                    key_at(seq, j, t)[e] = st * dir[static_cast<size_t>(j * r + e)];
                            }
                        }
                        if (scores != SelectScores::kTies) continue;
                        for (int64_t b = 3; (b + 1) * block_size <= c; b += 3)
                            std::copy(key_at(seq, j, block_size), key_at(seq, j, 2 * block_size),
                                      key_at(seq, j, b * block_size));
                    }
                }
            }
            for (float& v : keys) v = cache_round(v, key_type);
            const float scale = 1.0f / std::sqrt(static_cast<float>(r));
            auto iq = std::make_shared<Tensor>(host_f32({n, hr, r}, q));
            auto index_keys = std::make_shared<Tensor>(host_f32({s, hr, c, r}, keys));
            // The test's own block masses of every row, (n * hr) x (u,): the token's, or its
            // query group's mean.
            auto masses = std::make_shared<std::vector<std::vector<double>>>();
            for (int64_t i = 0; i < n; ++i) {
                for (int64_t j = 0; j < hr; ++j)
                    masses->push_back(
                        select_block_masses(q.data() + (i * hr + j) * r,
                                            key_at(batch->seq[static_cast<size_t>(i)], j, 0), r,
                                            batch->pos[static_cast<size_t>(i)], block_size, scale));
            }
            const std::vector<int64_t> group =
                select_group_of(batch->seq, batch->pos, group_tokens, query_blocks);
            // Each group's mean over its sampled tokens (all, or `samples` of them: the
            // (m + 1) size / samples - 1 th, m = 0 .. samples - 1), given to every token.
            {
                const std::vector<std::vector<double>> own = *masses;
                for (int64_t g = 0; g < n;) {
                    int64_t size = 1;
                    while (g + size < n && group[static_cast<size_t>(g + size)] == g) ++size;
                    std::vector<int64_t> sampled;
                    for (int64_t m = 0; m < size; ++m) sampled.push_back(g + m);
                    if (samples > 0 && samples < size) {
                        sampled.clear();
                        for (int64_t m = 0; m < samples; ++m)
                            sampled.push_back(g + (m + 1) * size / samples - 1);
                    }
                    for (int64_t j = 0; j < hr; ++j) {
                        // Over the group's blocks, to its last token's; 0 past a token's own.
                        const int64_t last = g + size - 1;
                        std::vector<double> mean(own[static_cast<size_t>(last * hr + j)].size(),
                                                 0.0);
                        for (int64_t i : sampled) {
                            const std::vector<double>& m = own[static_cast<size_t>(i * hr + j)];
                            for (size_t b = 0; b < m.size(); ++b)
                                mean[b] += m[b] / static_cast<double>(sampled.size());
                        }
                        for (int64_t i = g; i < g + size; ++i)
                            (*masses)[static_cast<size_t>(i * hr + j)] = mean;
                    }
                    g += size;
                }
            }
            // Each token's row: its group's first always-kept block past 0 (the group's first
            // position's) and its blocks (to the group's last position's), (n,) each.
            auto own_block = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(n));
            auto row_blocks = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(n));
            for (int64_t i = 0; i < n;) {
                int64_t end = i + 1;
                while (end < n && group[static_cast<size_t>(end)] == i) ++end;
                for (int64_t t = i; t < end; ++t) {
                    (*own_block)[static_cast<size_t>(t)] =
                        batch->pos[static_cast<size_t>(i)] / block_size;
                    (*row_blocks)[static_cast<size_t>(t)] =
                        batch->pos[static_cast<size_t>(end - 1)] / block_size + 1;
                }
                i = end;
            }
            BlockSelectParams params{static_cast<int>(block_size), top_p, scale, budget};
            params.per_query_block = query_blocks;
            params.query_block_samples = samples;
            params.query_block = group_blocks > 1 ? static_cast<int>(group_tokens) : 0;

            PreparedCase pc;
            pc.run = [=](Backend& backend) {
                Tensor iqb = upload(backend, *iq), keysb = upload_cache(backend, *index_keys, key_type);
                GuardedI32 blocks(backend, {n, hr, max_blocks});
                GuardedI32 counts(backend, {n, hr});
                const Status st = backend.select_blocks(iqb, keysb, {batch->seq, batch->pos},
                                                        params, blocks.view, counts.view);
                EXPECT_TRUE(st.is_ok()) << st.to_string();
                // Ids < 2^24 and the poison survive the trip through float exactly enough.
                const std::vector<int32_t> b = blocks.read(backend), k = counts.read(backend);
                std::vector<float> out(b.begin(), b.end());
                out.insert(out.end(), k.begin(), k.end());
                return out;
            };
            pc.compare = [=](const std::string& backend, const std::vector<float>& expected,
                             const std::vector<float>& actual) {
                const int64_t rows = n * hr;
                ASSERT_EQ(actual.size(), static_cast<size_t>(rows * (max_blocks + 1)));
                // Row `row` of an output: its count, then its first `count` ids.
                auto kept_ids = [&](const std::vector<float>& out, int64_t row) {
                    const float count = out[static_cast<size_t>(rows * max_blocks + row)];
                    std::vector<int32_t> ids;
                    for (int64_t k = 0; k < max_blocks && k < count; ++k)
                        ids.push_back(
                            static_cast<int32_t>(out[static_cast<size_t>(row * max_blocks + k)]));
                    return ids;
                };
                int near_ties = 0;
                for (int64_t i = 0; i < n; ++i) {
                    for (int64_t j = 0; j < hr; ++j) {
                        const int64_t row = i * hr + j, p = batch->pos[static_cast<size_t>(i)];
                        const int64_t u = (*row_blocks)[static_cast<size_t>(i)];
                        const int64_t own = (*own_block)[static_cast<size_t>(i)];
                        SCOPED_TRACE(fmt::format("token {} (seq {}, pos {}) head {}", i,
                                                 batch->seq[static_cast<size_t>(i)], p, j));
                        const float count = actual[static_cast<size_t>(rows * max_blocks + row)];
                        if (!(count >= 1 && count <= static_cast<float>(u))) {
                            ADD_FAILURE() << "count " << count << " outside [1, " << u << "]";
                            continue;
                        }
                        const std::vector<int32_t> ids = kept_ids(actual, row);
                        const int64_t g = group[static_cast<size_t>(i)];
                        if (g != i) {
                            EXPECT_EQ(ids, kept_ids(actual, g * hr + j))
                                << "differs from its query group's first token " << g;
                        }
                        for (size_t k = 0; k < ids.size(); ++k) {
                            EXPECT_TRUE(ids[k] >= 0 && ids[k] < u) << "block id " << ids[k];
                            if (k > 0) {
                                EXPECT_LT(ids[k - 1], ids[k]) << "ids not ascending and unique";
                            }
                        }
                        for (int64_t k = static_cast<int64_t>(count); k < max_blocks; ++k)
                            EXPECT_EQ(actual[static_cast<size_t>(row * max_blocks + k)], -1.0f)
                                << "entry " << k << " past the count";
                        EXPECT_TRUE(std::binary_search(ids.begin(), ids.end(), 0))
                            << "block 0 missing";
                        for (int64_t b = own; b < u; ++b) {
                            EXPECT_TRUE(
                                std::binary_search(ids.begin(), ids.end(), static_cast<int32_t>(b)))
                                << "block " << b << " of the query positions missing";
                        }
                        const std::vector<double>& mass = (*masses)[static_cast<size_t>(row)];
                        const double target = select_target(mass, own, top_p);
                        if (budget > 0) {
                            // min(K, u) blocks (never fewer than the always-kept ones), the
                            // heaviest; top_p < 1 may stop earlier.
                            const int64_t n_always = (own > 0 ? 1 : 0) + (u - own);
                            const int64_t allowed = std::max(n_always, std::min<int64_t>(budget, u));
                            const int64_t kept = static_cast<int64_t>(ids.size());
                            if (top_p >= 1.0f) {
                                EXPECT_EQ(kept, allowed) << "K " << budget;
                            } else {
                                EXPECT_LE(kept, allowed) << "K " << budget;
                                if (kept < allowed) {
                                    EXPECT_GE(select_kept_mass(ids, mass), target - kSelectNearTie);
                                }
                            }
                            EXPECT_TRUE(select_is_top_by_mass(ids, mass, own))
                                << "kept [" << fmt::format("{}", fmt::join(ids, " "))
                                << "] are not the heaviest blocks";
                        } else {
                            if (top_p >= 1.0f) {
                                EXPECT_EQ(static_cast<int64_t>(ids.size()), u)
                                    << "top_p 1 keeps every block";
                            }
                            EXPECT_GE(select_kept_mass(ids, mass), target - kSelectNearTie);
                        }
                        const std::vector<int32_t> want = kept_ids(expected, row);
                        if (ids == want) continue;
                        if (select_near_tie(ids, want, mass, target)) {
                            ++near_ties;
                            continue;
                        }
                        ADD_FAILURE()
                            << backend << " kept [" << fmt::format("{}", fmt::join(ids, " "))
                            << "] (mass " << select_kept_mass(ids, mass) << "), cpu-ref ["
                            << fmt::format("{}", fmt::join(want, " ")) << "] (mass "
                            << select_kept_mass(want, mass) << ")";
                    }
                }
                ::testing::Test::RecordProperty(backend + "_near_ties", near_ties);
                if (near_ties > 0 || std::getenv("PURBO_PRINT_NMSE") != nullptr)
                    std::fprintf(stderr, "%-50s %-8s %d near-ties in %lld rows\n",
                                 ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                                 backend.c_str(), near_ties, static_cast<long long>(rows));
                EXPECT_LE(near_ties, kSelectMaxNearTieShare * static_cast<double>(rows));
            };
            return pc;
        }};
}

const std::vector<DType>& weight_dtypes() {
    static const std::vector<DType> kAll = {DType::kF32,  DType::kF16,  DType::kBF16, DType::kQ4_0,
                                            DType::kQ4_1, DType::kQ8_0, DType::kQ5_0, DType::kQ5_1,
                                            DType::kQ2_K, DType::kQ3_K, DType::kQ4_K, DType::kQ5_K,
                                            DType::kQ6_K};
    return kAll;
}

std::vector<OpCase> all_cases() {
    std::vector<OpCase> cases;
    for (DType dtype : weight_dtypes()) {
        const int64_t bs = dtype_traits(dtype).block_size;
        // (k, m) of SmolLM2-135M's projections; K-quants need k a multiple of 256.
        const std::vector<std::pair<int64_t, int64_t>> shapes =
            bs == 256
                ? std::vector<std::pair<int64_t, int64_t>>{{512, 512}, {512, 1536}, {1536, 576}}
                : std::vector<std::pair<int64_t, int64_t>>{{576, 576}, {576, 1536}, {1536, 576}};
        for (int64_t n : {1, 2, 7, 33, 128}) {
            for (auto [k, m] : shapes) cases.push_back(matmul_case(dtype, n, k, m));
        }
        cases.push_back(matmul_case(dtype, 1, bs == 256 ? 512 : 576, 49152));  // the LM head
        // Ragged: odd block counts (SIMD tails), m not a multiple of any tile, n around the
        // GEMV/GEMM switch.
        const int64_t k_odd = bs == 256 ? 768 : 96;
        for (int64_t n : {3, 7, 8, 9}) cases.push_back(matmul_case(dtype, n, k_odd, 131));
        cases.push_back(embedding_case(dtype, 1000, bs == 256 ? 512 : 576, 9));
    }
    for (int64_t n : {1, 5, 64}) {
        cases.push_back(attention_case(n, 9, 3, 64, 1024, 1, 0, 0));
        cases.push_back(attention_case(n, 9, 3, 64, 200, 3, 0, 0));
        cases.push_back(attention_case(n, 32, 8, 128, 96, 2, 0, 0));
        cases.push_back(attention_case(n, 9, 3, 64, 300, 2, 32, 4));    // window + sinks
        cases.push_back(attention_case(n, 9, 3, 64, 300, 1, 64, 0));    // window only
        cases.push_back(attention_case(n, 4, 4, 32, 128, 1, 1, 0));     // window 1: only itself
        cases.push_back(attention_case(n, 9, 3, 64, 300, 1, 16, 250));  // sinks overlap the window
    }
    cases.push_back(attention_case(1, 9, 3, 64, 1, 1, 0, 0));  // a single key
    // Chunks the cuda backend computes on tensor cores: 2 query blocks + a ragged tail of 2
    // rows, key tiles cut by the chunk's start (position c - 130), window + sinks.
    cases.push_back(attention_case(130, 32, 8, 128, 500, 1, 0, 0));
    cases.push_back(attention_case(130, 9, 3, 64, 500, 1, 100, 4));
    // bf16 caches (cuda: the decode kernel on tensor cores; the prefill kernel reading bf16
    // tiles): single tokens, mixed batches over 2-3 sequences, window + sinks, long decode
    // contexts that split the keys over many CTAs and fill the cp.async pipeline.
    constexpr DType kBf16 = DType::kBF16;
    for (int64_t n : {1, 5, 64}) {
        cases.push_back(attention_case(n, 9, 3, 64, 1024, 1, 0, 0, kBf16));
        cases.push_back(attention_case(n, 9, 3, 64, 200, 3, 0, 0, kBf16));
        cases.push_back(attention_case(n, 32, 8, 128, 96, 2, 0, 0, kBf16));
        cases.push_back(attention_case(n, 9, 3, 64, 300, 2, 32, 4, kBf16));
        cases.push_back(attention_case(n, 9, 3, 64, 300, 1, 16, 250, kBf16));
        cases.push_back(attention_case(n, 4, 4, 32, 128, 1, 1, 0, kBf16));  // d 32: the fp32 kernel
    }
    // Prefill chunks: cuDNN's flash attention where it is built in (causal, window without
    // sinks), else and with sinks the tensor-core kernel.
    cases.push_back(attention_case(130, 32, 8, 128, 500, 1, 0, 0, kBf16));
    cases.push_back(attention_case(130, 9, 3, 64, 500, 1, 100, 4, kBf16));
    cases.push_back(attention_case(130, 9, 3, 64, 500, 1, 100, 0, kBf16));
    cases.push_back(attention_case(64, 9, 3, 64, 300, 1, 64, 0, kBf16));
    cases.push_back(attention_case(1, 16, 2, 128, 40000, 1, 0, 0, kBf16));
    cases.push_back(attention_case(2, 16, 2, 128, 20000, 2, 0, 0, kBf16));
    cases.push_back(attention_case(1, 32, 4, 128, 20000, 1, 4096, 4, kBf16));
    // Prefill from position 0 (cuda: cuDNN's graph without lengths when the padded rows fit
    // the cache, the padded one when they do not): rows padded to 256 in a cache of 500, a
    // window with and without sinks (the log-sum-exp merge), rows that fill the cache exactly,
    // and 130 rows whose padding (256) outgrows a cache of 200.
    cases.push_back(attention_case(130, 32, 8, 128, 500, 1, 0, 0, kBf16, true));
    cases.push_back(attention_case(130, 9, 3, 64, 500, 1, 100, 4, kBf16, true));
    cases.push_back(attention_case(130, 9, 3, 64, 500, 1, 100, 0, kBf16, true));
    cases.push_back(attention_case(64, 16, 2, 128, 64, 1, 0, 0, kBf16, true));
    cases.push_back(attention_case(130, 16, 2, 128, 200, 1, 0, 0, kBf16, true));
    for (int64_t n : {1, 7}) {
        cases.push_back(rope_case(n, 9, 64, 64, 1.0f));
        cases.push_back(rope_case(n, 8, 128, 32, 1.0f));  // rotary_dim < d: the rest passes through
        cases.push_back(rope_case(n, 3, 64, 64, 1.25f));  // attn_factor scales cos and sin
    }
    cases.push_back(kv_store_case(5, 3, 64, 32, 3));
    cases.push_back(kv_store_case(5, 3, 64, 32, 3, DType::kBF16));
    cases.push_back(kv_store_case(5, 3, 16, 32, 3, DType::kF8E4M3));  // index keys
    cases.push_back(kv_store_case(1, 8, 128, 16, 1));
    // select_blocks: r 8 and 16 (method.md section 8), B 16 and 64; c = 1000 (16 or 63 blocks,
    // a partial last block of the cache) and 4096 (64 or 256 blocks).
    for (int64_t r : {8, 16}) {
        for (int64_t block_size : {16, 64}) {
            for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
                for (float top_p : {0.5f, 0.9f, 0.99f, 1.0f})
                    cases.push_back(select_case(r, block_size, r == 8 ? 1000 : 4096, top_p, scores));
            }
        }
    }
    // Rows of more blocks than a CTA of the cuda backend has threads (1024), blocks of more keys
    // (512), and an index dim without its own unrolled body on the cpu backend (12). The flat
    // rows of 2048 blocks spread their boundary bin's candidates over every CTA of a cluster
    // (with a budget of 300 blocks too).
    cases.push_back(select_case(16, 16, 16384, 0.9f, SelectScores::kFlat));
    cases.push_back(select_case(16, 8, 16384, 0.9f, SelectScores::kFlat));
    cases.push_back(select_case(16, 8, 16384, 0.5f, SelectScores::kFlat, 300));
    cases.push_back(select_case(16, 16, 16384, 0.99f, SelectScores::kPeaked));
    cases.push_back(select_case(8, 512, 16384, 0.5f, SelectScores::kPeaked));
    cases.push_back(select_case(12, 64, 1000, 0.9f, SelectScores::kPeaked));
    // A fixed budget of K blocks (the top-k baseline): alone (top_p = 1), and with a top_p that
    // stops first in some rows and second in others. The flat 16384-key rows put about a
    // thousand blocks in the boundary bin, where the cuda backend refines.
    for (int64_t r : {8, 16}) {
        for (int64_t block_size : {16, 64}) {
            for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
                for (int k : {3, 16})
                    cases.push_back(select_case(r, block_size, r == 8 ? 1000 : 4096, 1.0f, scores, k));
            }
        }
    }
    cases.push_back(select_case(16, 64, 4096, 0.9f, SelectScores::kPeaked, 8));
    cases.push_back(select_case(16, 16, 4096, 0.5f, SelectScores::kFlat, 40));
    cases.push_back(select_case(16, 16, 16384, 1.0f, SelectScores::kFlat, 100));
    // Index keys in bf16 (kept like the KV cache), and batches of over 500 rows (cuda: the
    // narrow per-row CTAs of prefill chunks; fewer rows take the wide ones with staged masses).
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
        cases.push_back(select_case(16, 64, 4096, 0.9f, scores, 0, DType::kBF16));
        cases.push_back(select_case(8, 16, 1000, 0.99f, scores, 0, DType::kBF16));
        cases.push_back(select_case(16, 64, 4096, 0.9f, scores, 0, DType::kF32, 160));
    }
    cases.push_back(select_case(16, 16, 16384, 0.9f, SelectScores::kFlat, 0, DType::kBF16));
    cases.push_back(select_case(12, 64, 1000, 0.9f, SelectScores::kPeaked, 0, DType::kBF16));
    cases.push_back(select_case(16, 16, 16384, 0.9f, SelectScores::kFlat, 0, DType::kBF16, 100));
    cases.push_back(select_case(16, 64, 4096, 1.0f, SelectScores::kPeaked, 16, DType::kBF16, 160));
    // One selection per query block (block-sparse prefill): p below and at 1, a budget, bf16
    // keys, B 16 and 64.
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
        for (float top_p : {0.8f, 0.9f, 1.0f})
            cases.push_back(select_case(16, 64, 4096, top_p, scores, 0, DType::kF32, 0, true));
        cases.push_back(select_case(8, 16, 1000, 0.9f, scores, 0, DType::kBF16, 0, true));
    }
    cases.push_back(
        select_case(16, 64, 4096, 1.0f, SelectScores::kPeaked, 16, DType::kF32, 0, true));
    cases.push_back(
        select_case(16, 64, 4096, 0.8f, SelectScores::kPeaked, 0, DType::kBF16, 0, true));
    // The mean over 8 (or 1, or 5: uneven spacing) of a group's tokens.
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies})
        cases.push_back(select_case(16, 64, 4096, 0.8f, scores, 0, DType::kF32, 0, true, 8));
    cases.push_back(
        select_case(16, 64, 4096, 0.9f, SelectScores::kPeaked, 0, DType::kBF16, 0, true, 1));
    cases.push_back(
        select_case(8, 16, 1000, 0.9f, SelectScores::kPeaked, 0, DType::kF32, 0, true, 5));
    // Query groups of several blocks (BlockSelectParams::query_block): every block of a group's
    // positions kept, the tokens' distributions 0 past their own block; with samples, a budget,
    // and one sequence (cuda: the tensor-core mass kernel).
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
        cases.push_back(select_case(16, 64, 4096, 0.8f, scores, 0, DType::kF32, 0, true, 0, 3, 2));
        cases.push_back(select_case(16, 64, 4096, 0.8f, scores, 0, DType::kBF16, 0, true, 8, 1, 2));
    }
    cases.push_back(
        select_case(16, 64, 4096, 1.0f, SelectScores::kPeaked, 16, DType::kBF16, 0, true, 8, 3, 2));
    cases.push_back(
        select_case(8, 16, 1000, 0.9f, SelectScores::kFlat, 0, DType::kF32, 0, true, 5, 3, 4));
    cases.push_back(
        select_case(16, 32, 4096, 1.0f, SelectScores::kFlat, 12, DType::kF8E4M3, 0, true, 8, 1, 4));
    // Index keys in f8 e4m3: decode rows, many rows, a budget, query blocks with and without
    // samples, r 8 and 12 (the unrolled and the plain bodies).
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
        cases.push_back(select_case(16, 64, 4096, 0.9f, scores, 0, DType::kF8E4M3));
        cases.push_back(select_case(8, 16, 1000, 0.99f, scores, 0, DType::kF8E4M3));
    }
    cases.push_back(select_case(16, 64, 4096, 0.9f, SelectScores::kFlat, 0, DType::kF8E4M3, 160));
    cases.push_back(select_case(12, 64, 1000, 0.9f, SelectScores::kPeaked, 0, DType::kF8E4M3));
    cases.push_back(select_case(16, 64, 4096, 1.0f, SelectScores::kPeaked, 16, DType::kF8E4M3));
    cases.push_back(
        select_case(16, 64, 4096, 0.8f, SelectScores::kPeaked, 0, DType::kF8E4M3, 0, true));
    cases.push_back(
        select_case(16, 64, 4096, 0.8f, SelectScores::kFlat, 0, DType::kF8E4M3, 0, true, 8));
    // One sequence (cuda: the tensor-core mass kernel, which takes the rows of one sequence):
    // many per-token rows and query blocks; B 8 (several staged writes per key chunk), 16, 32,
    // 64 and 128 (a block across two key tiles); r 8 and 16; f32 (three-part), bf16 and f8
    // keys; 16384 keys (four key chunks per row).
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
        for (DType keys : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
            cases.push_back(select_case(16, 64, 4096, 0.9f, scores, 0, keys, 300, false, 0, 1));
            cases.push_back(select_case(16, 64, 4096, 0.8f, scores, 0, keys, 0, true, 8, 1));
        }
        for (int64_t block_size : {8, 32, 128}) {
            cases.push_back(
                select_case(16, block_size, 4096, 0.9f, scores, 0, DType::kBF16, 300, false, 0, 1));
            cases.push_back(
                select_case(16, block_size, 4096, 0.9f, scores, 0, DType::kF32, 0, true, 0, 1));
        }
        cases.push_back(select_case(8, 16, 1000, 0.9f, scores, 0, DType::kF32, 300, false, 0, 1));
        cases.push_back(select_case(8, 16, 1000, 0.99f, scores, 0, DType::kBF16, 0, true, 5, 1));
    }
    cases.push_back(
        select_case(16, 64, 16384, 0.9f, SelectScores::kFlat, 0, DType::kBF16, 300, false, 0, 1));
    cases.push_back(
        select_case(16, 64, 16384, 0.9f, SelectScores::kPeaked, 0, DType::kBF16, 0, true, 8, 1));
    cases.push_back(
        select_case(16, 64, 4096, 1.0f, SelectScores::kPeaked, 16, DType::kBF16, 300, false, 0, 1));
    // One sequence, one or two sampled tokens a query block (the first sample is the block's
    // last token), r 8 over blocks of 32: the sparse model's prefill samples on small models.
    for (SelectScores scores : {SelectScores::kFlat, SelectScores::kPeaked, SelectScores::kTies}) {
        for (int samples : {1, 2}) {
            cases.push_back(
                select_case(8, 32, 1000, 0.6f, scores, 0, DType::kBF16, 0, true, samples, 1));
            cases.push_back(
                select_case(8, 32, 1000, 0.6f, scores, 0, DType::kBF16, 0, true, samples, 1, 2));
        }
    }
    cases.push_back(rms_norm_case({1, 576}));
    cases.push_back(rms_norm_case({33, 576}));
    cases.push_back(rms_norm_case({7, 1536}));
    cases.push_back(rms_norm_case({2, 9, 64}));  // per-head norm (Qwen3's q/k norm)
    for (Elementwise op : {Elementwise::kSwiglu, Elementwise::kAdd, Elementwise::kAddBias}) {
        cases.push_back(elementwise_case(op, 1, 1536));
        cases.push_back(elementwise_case(op, 33, 1536));
    }
    return cases;
}

const std::vector<OpCase>& case_table() {
    static const std::vector<OpCase> kCases = all_cases();
    return kCases;
}

bool case_supported(const std::string& name) {
    // Cases of a weight dtype dequantize_row cannot read yet are skipped, not passed.
    for (DType dtype : weight_dtypes()) {
        if (name.find(fmt::format("_{}_", dtype_name(dtype))) != std::string::npos &&
            !dequantize_supported(dtype))
            return false;
    }
    return true;
}

class BackendOps : public ::testing::TestWithParam<size_t> {};

TEST_P(BackendOps, MatchesReference) {
    const OpCase& op_case = case_table()[GetParam()];
    if (!case_supported(op_case.name))
        GTEST_SKIP() << "dequantize_row does not read this dtype yet";
    const PreparedCase prepared = op_case.prepare();
    const std::vector<float> expected =
        prepared.reference.empty() ? prepared.run(reference_backend()) : prepared.reference;
    for (float v : expected) ASSERT_TRUE(std::isfinite(v)) << "cpu-ref produced a non-finite value";
    if (prepared.compare) prepared.compare("cpu-ref", expected, expected);
    int compared = 0;
    for (const std::string& name : backend_available()) {
        if (name == "cpu-ref") continue;
        SCOPED_TRACE("backend " + name);
        std::unique_ptr<Backend> backend = make_backend(name);
        const std::vector<float> actual = prepared.run(*backend);
        ASSERT_EQ(actual.size(), expected.size());
        size_t not_finite = 0;
        for (float v : actual) not_finite += std::isfinite(v) ? 0 : 1;
        EXPECT_EQ(not_finite, 0u) << "elements left unwritten (NaN poison) or not finite";
        if (prepared.compare) {
            prepared.compare(name, expected, actual);
            ++compared;
            continue;
        }
        std::optional<double> own_tolerance;
        if (prepared.backend_max_nmse) own_tolerance = prepared.backend_max_nmse(name, expected);
        const double max_nmse = own_tolerance.value_or(prepared.max_nmse);
        if (max_nmse == 0) {
            EXPECT_EQ(test::max_abs_diff(actual, expected), 0.0);
        } else {
            const double error = test::nmse(actual, expected);
            EXPECT_LE(error, max_nmse);
            // In the XML report (--gtest_output=xml): how much of the budget each case uses.
            RecordProperty(name + "_nmse", fmt::format("{:.3g}", error));
            RecordProperty(name + "_max_nmse", fmt::format("{:.3g}", max_nmse));
            if (std::getenv("PURBO_PRINT_NMSE") != nullptr) {
                std::fprintf(stderr, "%-50s %-8s nmse %.3g tol %.3g\n", op_case.name.c_str(), name.c_str(), error,
                             max_nmse);
            }
        }
        ++compared;
    }
    EXPECT_GE(compared, 1) << "no backend besides cpu-ref";
}

INSTANTIATE_TEST_SUITE_P(Cases, BackendOps, ::testing::Range<size_t>(0, case_table().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                             return case_table()[info.param].name;
                         });

// ---- cpu-ref against hand-computed values ---------------------------------------------------

// Rounding of f32 arithmetic on O(1) values: a few ulps.
constexpr float kHandTol = 1e-6f;

TEST(CpuRef, MatmulTwoByThree) {
    auto ref = make_backend("cpu-ref");
    Tensor x = host_f32({2, 3}, {1, 2, 3, 4, 5, 6});   // (n=2, k=3)
    Tensor w = host_f32({2, 3}, {1, 0, -1, 2, 1, 0});  // (m=2, k=3)
    Tensor out = tensor_cpu(DType::kF32, {2, 2});
    ASSERT_TRUE(ref->matmul(x, w, out).is_ok());
    // [1 2 3].[1 0 -1] = -2, [1 2 3].[2 1 0] = 4, [4 5 6].[1 0 -1] = -2, [4 5 6].[2 1 0] = 13
    const float expected[] = {-2, 4, -2, 13};
    for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(out.f32()[i], expected[i]);
}

TEST(CpuRef, MatmulReadsQ8_0Blocks) {
    auto ref = make_backend("cpu-ref");
    // One q8_0 block: d = 0.5 (exact in f16), q = 1..32; x = ones: 0.5 * (1 + ... + 32) = 264.
    Tensor w = tensor_cpu(DType::kQ8_0, {1, 32});
    auto* block = w.ptr<BlockQ8_0>();
    block->d = f32_to_f16(0.5f);
    for (int i = 0; i < 32; ++i) block->qs[i] = static_cast<int8_t>(i + 1);
    Tensor x = host_f32({1, 32}, std::vector<float>(32, 1.0f));
    Tensor out = tensor_cpu(DType::kF32, {1, 1});
    ASSERT_TRUE(ref->matmul(x, w, out).is_ok());
    EXPECT_FLOAT_EQ(out.f32()[0], 264.0f);
}

TEST(CpuRef, RmsNormOfThreeFour) {
    auto ref = make_backend("cpu-ref");
    Tensor x = host_f32({1, 2}, {3, 4});
    Tensor w = host_f32({2}, {1, 2});
    Tensor out = tensor_cpu(DType::kF32, {1, 2});
    ASSERT_TRUE(ref->rms_norm(x, w, 0.0f, out).is_ok());
    // rms = sqrt((9 + 16) / 2) = sqrt(12.5)
    const float rms = std::sqrt(12.5f);
    EXPECT_NEAR(out.f32()[0], 3 / rms * 1, kHandTol);
    EXPECT_NEAR(out.f32()[1], 4 / rms * 2, kHandTol);
}

TEST(CpuRef, RopeRotatesUnitVectorByKnownAngle) {
    auto ref = make_backend("cpu-ref");
    // One head, d = 6, rotary_dim = 4: pairs (0, 2) and (1, 3); dims 4, 5 pass through.
    // pos = 2, inv_freq = {0.5, 0.25}: angles 1 and 0.5 radians; attn_factor 2 doubles cos, sin.
    Tensor x = host_f32({1, 1, 6}, {1, 0, 0, 1, 7, -7});
    const std::vector<float> inv_freq = {0.5f, 0.25f};
    const int32_t pos[] = {2};
    ASSERT_TRUE(ref->rope(x, pos, RopeParams{inv_freq, 4, 2.0f}).is_ok());
    const float* v = x.f32();
    EXPECT_NEAR(v[0], 2 * std::cos(1.0), kHandTol);  // (1, 0) -> (cos, sin)
    EXPECT_NEAR(v[2], 2 * std::sin(1.0), kHandTol);
    EXPECT_NEAR(v[1], -2 * std::sin(0.5), kHandTol);  // (0, 1) -> (-sin, cos)
    EXPECT_NEAR(v[3], 2 * std::cos(0.5), kHandTol);
    EXPECT_EQ(v[4], 7.0f);
    EXPECT_EQ(v[5], -7.0f);
}

TEST(CpuRef, AttentionWithOneKeyReturnsItsValue) {
    auto ref = make_backend("cpu-ref");
    // s = 1, g = 1, c = 4, d = 2; the query at position 0 sees only key 0.
    Tensor k = host_f32({1, 1, 4, 2}, {5, -3, 9, 9, 9, 9, 9, 9});
    Tensor v = host_f32({1, 1, 4, 2}, {0.25f, -8, 1, 1, 1, 1, 1, 1});
    Tensor q = host_f32({1, 2, 2}, {1, 2, -4, 0.5f});  // two query heads share the KV head
    Tensor out = tensor_cpu(DType::kF32, {1, 2, 2});
    const int32_t seq[] = {0}, pos[] = {0};
    ASSERT_TRUE(ref->attention(q, {k, v}, {seq, pos}, AttentionParams{1.0f, 0, 0}, out).is_ok());
    for (int head = 0; head < 2; ++head) {
        EXPECT_EQ(out.f32()[head * 2 + 0], 0.25f);
        EXPECT_EQ(out.f32()[head * 2 + 1], -8.0f);
    }
}

TEST(CpuRef, AttentionWeighsKeysBySoftmaxAndHonoursTheWindow) {
    auto ref = make_backend("cpu-ref");
    // d = 1, scale 1, q = 1: keys 0, ln 3 at positions 0, 1 get weights 1/4, 3/4.
    Tensor k = host_f32({1, 1, 3, 1}, {0, std::log(3.0f), 100});
    Tensor v = host_f32({1, 1, 3, 1}, {4, 8, -1});
    Tensor q = host_f32({1, 1, 1}, {1});
    Tensor out = tensor_cpu(DType::kF32, {1, 1, 1});
    const int32_t seq[] = {0}, pos1[] = {1}, pos2[] = {2};
    ASSERT_TRUE(ref->attention(q, {k, v}, {seq, pos1}, AttentionParams{1.0f, 0, 0}, out).is_ok());
    EXPECT_NEAR(out.f32()[0], 0.25 * 4 + 0.75 * 8, kHandTol);  // key 2 is in the future
    // Window 1 at position 2 sees only key 2; with one sink it also sees key 0.
    ASSERT_TRUE(ref->attention(q, {k, v}, {seq, pos2}, AttentionParams{1.0f, 1, 0}, out).is_ok());
    EXPECT_EQ(out.f32()[0], -1.0f);
    ASSERT_TRUE(ref->attention(q, {k, v}, {seq, pos2}, AttentionParams{1.0f, 1, 1}, out).is_ok());
    const double w0 = std::exp(0.0 - 100.0);  // relative to the max score 100
    EXPECT_NEAR(out.f32()[0], (w0 * 4 + 1.0 * -1) / (w0 + 1.0), kHandTol);
}

TEST(CpuRef, SwigluAddEmbeddingKvStore) {
    auto ref = make_backend("cpu-ref");
    Tensor gate = host_f32({1, 2}, {1, -2});
    Tensor up = host_f32({1, 2}, {2, 3});
    Tensor out = tensor_cpu(DType::kF32, {1, 2});
    ASSERT_TRUE(ref->swiglu(gate, up, out).is_ok());
    EXPECT_NEAR(out.f32()[0], 1 / (1 + std::exp(-1.0)) * 2, kHandTol);  // silu(1) * 2
    EXPECT_NEAR(out.f32()[1], -2 / (1 + std::exp(2.0)) * 3, kHandTol);  // silu(-2) * 3
    ASSERT_TRUE(ref->add(gate, up, out).is_ok());
    EXPECT_EQ(out.f32()[0], 3.0f);
    EXPECT_EQ(out.f32()[1], 1.0f);
    ASSERT_TRUE(ref->add_bias(out, host_f32({2}, {10, 20})).is_ok());
    EXPECT_EQ(out.f32()[1], 21.0f);

    Tensor table = host_f32({3, 2}, {0, 1, 10, 11, 20, 21});
    const int32_t ids[] = {2, 0};
    EXPECT_FALSE(ref->embedding(table, ids, out).is_ok());  // out (1, 2) for 2 ids
    Tensor emb = tensor_cpu(DType::kF32, {2, 2});
    ASSERT_TRUE(ref->embedding(table, ids, emb).is_ok());
    EXPECT_EQ(emb.f32()[0], 20.0f);
    EXPECT_EQ(emb.f32()[3], 1.0f);

    // Cache (s=2, g=1, c=3, d=1): token 0 -> seq 1 pos 2, token 1 -> seq 0 pos 0.
    Tensor kc = tensor_cpu(DType::kF32, {2, 1, 3, 1}), vc = tensor_cpu(DType::kF32, {2, 1, 3, 1});
    const int32_t seq[] = {1, 0}, pos[] = {2, 0};
    ASSERT_TRUE(ref->kv_store(host_f32({2, 1, 1}, {5, 6}), host_f32({2, 1, 1}, {7, 8}), {seq, pos},
                              {kc, vc})
                    .is_ok());
    const float k_expected[] = {6, 0, 0, 0, 0, 5}, v_expected[] = {8, 0, 0, 0, 0, 7};
    for (int i = 0; i < 6; ++i) {
        EXPECT_EQ(kc.f32()[i], k_expected[i]);
        EXPECT_EQ(vc.f32()[i], v_expected[i]);
    }
}

// ---- input errors: a Status, on every backend ------------------------------------------------

// Every backend that keeps bf16 caches: kv_store rounds to nearest even (cpu and cuda store
// the same bits), and a cache whose k and v types differ is an input error.
TEST(BackendKvStore, Bf16CacheRoundsToNearestEven) {
    int checked = 0;
    for (const std::string& name : backend_available()) {
        std::unique_ptr<Backend> backend = make_backend(name);
        const std::vector<DType> types = backend->kv_cache_dtypes();
        if (std::find(types.begin(), types.end(), DType::kBF16) == types.end()) continue;
        SCOPED_TRACE("backend " + name);
        std::mt19937 rng(9);
        const int64_t n = 3, g = 2, d = 64, c = 10;
        const Tensor k = host_f32({n, g, d}, random_floats(rng, n * g * d, 50.0f));
        const Tensor v = host_f32({n, g, d}, random_floats(rng, n * g * d, 50.0f));
        Tensor kc = backend->alloc(DType::kBF16, {1, g, c, d}), vc = backend->alloc(DType::kBF16, {1, g, c, d});
        const int32_t seq[] = {0, 0, 0}, pos[] = {7, 2, 9};
        ASSERT_TRUE(backend->kv_store(upload(*backend, k), upload(*backend, v), {seq, pos}, {kc, vc}).is_ok());
        const std::vector<float> got_k = download(*backend, kc), got_v = download(*backend, vc);
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t kv = 0; kv < g; ++kv) {
                for (int64_t e = 0; e < d; ++e) {
                    const size_t at = static_cast<size_t>((kv * c + pos[i]) * d + e);
                    const int64_t src = (i * g + kv) * d + e;
                    ASSERT_EQ(got_k[at], bf16_to_f32(f32_to_bf16(k.f32()[src])));
                    ASSERT_EQ(got_v[at], bf16_to_f32(f32_to_bf16(v.f32()[src])));
                }
            }
        }
        Tensor vc32 = backend->alloc(DType::kF32, {1, g, c, d});
        EXPECT_EQ(backend->kv_store(upload(*backend, k), upload(*backend, v), {seq, pos}, {kc, vc32}).code(),
                  StatusCode::kInvalidArgument);
        ++checked;
    }
    EXPECT_GE(checked, 1) << "the cpu backend keeps bf16 caches";
}

// Every backend stores f8 e4m3 index keys: kv_store rounds to nearest even and saturates at
// +-448 (cpu and cuda store the bits core/fp8.h gives), select_blocks reads them, and attention
// refuses a K/V cache of that type.
TEST(BackendKvStore, F8IndexKeysRoundToNearestEvenAndSaturate) {
    for (const std::string& name : backend_available()) {
        std::unique_ptr<Backend> backend = make_backend(name);
        SCOPED_TRACE("backend " + name);
        std::mt19937 rng(11);
        const int64_t n = 4, g = 3, r = 16, c = 12;
        // Magnitudes from 2^-12 (below the smallest subnormal step) to 2^10 (past 448).
        std::vector<float> values(static_cast<size_t>(n * g * r));
        std::uniform_real_distribution<float> log2_magnitude(-12.0f, 10.0f);
        for (size_t i = 0; i < values.size(); ++i)
            values[i] = (i % 3 == 0 ? -1.0f : 1.0f) * std::exp2(log2_magnitude(rng));
        const Tensor keys = host_f32({n, g, r}, values);
        Tensor cache = backend->alloc(DType::kF8E4M3, {1, g, c, r});
        const int32_t seq[] = {0, 0, 0, 0}, pos[] = {7, 2, 9, 11};
        const Tensor keys_dev = upload(*backend, keys);
        ASSERT_TRUE(backend->kv_store(keys_dev, keys_dev, {seq, pos}, {cache, cache}).is_ok());
        const std::vector<float> got = download(*backend, cache);
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t j = 0; j < g; ++j) {
                for (int64_t e = 0; e < r; ++e) {
                    const float x = values[static_cast<size_t>((i * g + j) * r + e)];
                    ASSERT_EQ(got[static_cast<size_t>((j * c + pos[i]) * r + e)],
                              f8e4m3_to_f32(f32_to_f8e4m3(x)))
                        << "key element " << x;
                }
            }
        }
        const Tensor q = upload(*backend, host_f32({1, g, r}, random_floats(rng, g * r)));
        const int32_t one_seq[] = {0}, one_pos[] = {11};
        const Status st = backend->attention(q, {cache, cache}, {one_seq, one_pos}, {},
                                             backend->alloc(DType::kF32, {1, g, r}));
        EXPECT_FALSE(st.is_ok());
    }
}

// A cache type the backend does not keep (listed by kv_cache_dtypes) is kUnsupported, with
// the types it does keep in the message; it is never read as f32.
TEST(BackendErrors, CacheTypesOutsideTheBackendsListAreUnsupported) {
    for (const std::string& name : {std::string("cpu-ref"), std::string("cpu")}) {
        SCOPED_TRACE(name);
        std::unique_ptr<Backend> backend = make_backend(name);
        const std::vector<DType> types = backend->kv_cache_dtypes();
        ASSERT_FALSE(types.empty());
        EXPECT_EQ(types.front(), DType::kF32);
        if (std::find(types.begin(), types.end(), DType::kBF16) != types.end()) continue;
        Tensor kc = tensor_cpu(DType::kBF16, {1, 1, 4, 8}), vc = tensor_cpu(DType::kBF16, {1, 1, 4, 8});
        Tensor kv = tensor_cpu(DType::kF32, {1, 1, 8});
        Tensor q = tensor_cpu(DType::kF32, {1, 1, 8}), out = tensor_cpu(DType::kF32, {1, 1, 8});
        const int32_t seq[] = {0}, pos[] = {1};
        const Status store = backend->kv_store(kv, kv, {seq, pos}, {kc, vc});
        EXPECT_EQ(store.code(), StatusCode::kUnsupported);
        EXPECT_NE(store.message().find("f32"), std::string::npos) << store.message();
        EXPECT_EQ(backend->attention(q, {kc, vc}, {seq, pos}, {}, out).code(), StatusCode::kUnsupported);
    }
}

TEST(BackendErrors, WrongShapesAndIndicesAreStatuses) {
    for (const std::string& name : backend_available()) {
        SCOPED_TRACE(name);
        auto backend = make_backend(name);
        Tensor x = tensor_cpu(DType::kF32, {2, 64});
        Tensor w = tensor_cpu(DType::kF32, {3, 32});
        Tensor out = tensor_cpu(DType::kF32, {2, 3});
        EXPECT_EQ(backend->matmul(x, w, out).code(), StatusCode::kInvalidArgument);  // k 64 vs 32
        Tensor w_i32 = tensor_cpu(DType::kI32, {3, 64});
        EXPECT_EQ(backend->matmul(x, w_i32, out).code(), StatusCode::kUnsupported);
        // A q4_0 view whose rows are not whole 32-element blocks (a malformed file's shape).
        uint8_t bytes[64] = {};
        const int64_t ragged[] = {1, 48};
        Tensor w_ragged = tensor_view(DType::kQ4_0, ragged, bytes);
        Tensor x48 = tensor_cpu(DType::kF32, {2, 48}), out1 = tensor_cpu(DType::kF32, {2, 1});
        EXPECT_EQ(backend->matmul(x48, w_ragged, out1).code(), StatusCode::kInvalidArgument);
        Tensor emb = tensor_cpu(DType::kF32, {1, 32});
        const int32_t bad_id[] = {3};
        EXPECT_EQ(backend->embedding(w, bad_id, emb).code(), StatusCode::kInvalidArgument);
        Tensor kc = tensor_cpu(DType::kF32, {1, 1, 4, 8}),
               vc = tensor_cpu(DType::kF32, {1, 1, 4, 8});
        Tensor kv = tensor_cpu(DType::kF32, {1, 1, 8});
        const int32_t seq[] = {0}, past_end[] = {4}, bad_seq[] = {1}, pos[] = {0};
        EXPECT_EQ(backend->kv_store(kv, kv, {seq, past_end}, {kc, vc}).code(),
                  StatusCode::kInvalidArgument);
        EXPECT_EQ(backend->kv_store(kv, kv, {bad_seq, pos}, {kc, vc}).code(),
                  StatusCode::kInvalidArgument);
        Tensor q = tensor_cpu(DType::kF32, {1, 3, 8}), q_out = tensor_cpu(DType::kF32, {1, 3, 8});
        Tensor kc2 = tensor_cpu(DType::kF32, {1, 2, 4, 8}),
               vc2 = tensor_cpu(DType::kF32, {1, 2, 4, 8});
        EXPECT_EQ(backend->attention(q, {kc2, vc2}, {seq, pos}, {}, q_out).code(),
                  StatusCode::kInvalidArgument);  // 3 heads over 2 KV heads
        const std::vector<float> inv_freq = {1.0f};
        EXPECT_EQ(backend->rope(q, pos, RopeParams{inv_freq, 3, 1.0f}).code(),
                  StatusCode::kInvalidArgument);
        EXPECT_EQ(backend->add(x, out, x).code(), StatusCode::kInvalidArgument);
    }
}

// ---- the cpu backend's two matmul paths on every n -------------------------------------------

// The GEMV/GEMM switch hides one path for each n; run both directly on the sizes around it.
TEST(CpuMatmul, BothPathsMatchReferenceOnAnyN) {
    for (DType dtype :
         {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
        for (int64_t n : {1, 5, 40}) {
            SCOPED_TRACE(fmt::format("{} n={}", dtype_name(dtype), n));
            const int64_t k = 160, m = 70;
            std::mt19937 rng(static_cast<uint32_t>(n));
            Tensor x = host_f32({n, k}, random_floats(rng, n * k));
            Tensor w = random_weight(rng, dtype, m, k);
            Tensor expected = tensor_cpu(DType::kF32, {n, m});
            ASSERT_TRUE(reference_backend().matmul(x, w, expected).is_ok());
            const std::span<const float> ref(expected.f32(), static_cast<size_t>(n * m));
            Tensor out = tensor_cpu(DType::kF32, {n, m});
            cpu_matmul_gemm(x, w, out, 2);
            EXPECT_LE(test::nmse({out.f32(), ref.size()}, ref),
                      tol_f32_reduction(k));  // f32 throughout
            // f32 activations (the default): the same fp32 sums as cpu-ref in another order.
            cpu_matmul_gemv(x, w, out, 2, ActivationPrecision::kF32);
            EXPECT_LE(test::nmse({out.f32(), ref.size()}, ref), tol_f32_reduction(k)) << "f32 activations";
            cpu_matmul_gemv(x, w, out, 2, ActivationPrecision::kQ8);
            // q8 activations: the same derivation as the matmul cases (3x the predicted error).
            std::vector<float> w_f32(static_cast<size_t>(m * k));
            for (int64_t j = 0; j < m; ++j)
                dequantize_row(dtype, w.row_ptr(j), w_f32.data() + j * k, k);
            const double tol = tol_f32_reduction(k) +
                               (activation_quantised(dtype)
                                    ? 3.0 * predicted_q8_nmse({x.f32(), x.f32() + n * k}, w_f32, n,
                                                              k, m, {ref.begin(), ref.end()})
                                    : 0.0);
            EXPECT_LE(test::nmse({out.f32(), ref.size()}, ref), tol);
        }
    }
}

// ---- vectorised softmax exponentials ------------------------------------------------------------

// exp_shifted_sum against libm in double: every weight within 4 ulp of exp(x - shift), those
// below FLT_MIN (masked keys at -inf among them) exactly 0, NaN kept, and the returned sum the
// sum of the weights. Lengths 1..40 cover whole vectors and every masked tail.
TEST(VecExp, ShiftedExpMatchesLibm) {
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> score(-95.0f, 5.0f);
    for (int64_t n = 1; n <= 40; ++n) {
        std::vector<float> x(static_cast<size_t>(n));
        for (float& v : x) v = score(rng);
        x[0] = 5.0f;                                              // the shift itself: weight 1
        if (n > 2) x[2] = -std::numeric_limits<float>::infinity();  // a masked key
        const float shift = 5.0f;
        std::vector<float> y = x;
        const float sum = exp_shifted_sum(y.data(), n, shift);
        double want_sum = 0;
        for (int64_t t = 0; t < n; ++t) {
            SCOPED_TRACE(fmt::format("n={} t={} x={}", n, t, x[static_cast<size_t>(t)]));
            const float v = x[static_cast<size_t>(t)] - shift;
            const float got = y[static_cast<size_t>(t)];
            if (v < -87.3f) {
                EXPECT_EQ(got, 0.0f);
                continue;
            }
            const double want = std::exp(static_cast<double>(v));
            EXPECT_LE(std::fabs(got - want), 4.0 * std::numeric_limits<float>::epsilon() * want);
            want_sum += got;
        }
        EXPECT_NEAR(sum, want_sum, static_cast<double>(n) * std::numeric_limits<float>::epsilon() * want_sum);
    }
    std::vector<float> nan = {0.0f, std::numeric_limits<float>::quiet_NaN()};
    EXPECT_TRUE(std::isnan(exp_shifted_sum(nan.data(), 2, 0.0f)));
    EXPECT_TRUE(std::isnan(nan[1]));
}

// exp2_shifted_sum against libm in double: the sum of 2^(x - shift) within n x 4 ulp, terms
// below FLT_MIN (masked keys at -inf among them) 0, the input unchanged, NaN kept. Lengths 1..40
// cover whole vectors and every masked tail.
TEST(VecExp, ShiftedExp2SumMatchesLibm) {
    std::mt19937 rng(23);
    std::uniform_real_distribution<float> score(-140.0f, 3.0f);
    for (int64_t n = 1; n <= 40; ++n) {
        std::vector<float> x(static_cast<size_t>(n));
        for (float& v : x) v = score(rng);
        x[0] = 3.0f;                                              // the shift itself: 2^0
        if (n > 2) x[2] = -std::numeric_limits<float>::infinity();  // a masked key
        const std::vector<float> before = x;
        const float sum = exp2_shifted_sum(x.data(), n, 3.0f);
        double want = 0;
        for (float v : x)
            if (v - 3.0f >= -126.0f) want += std::exp2(static_cast<double>(v - 3.0f));
        SCOPED_TRACE(fmt::format("n={}", n));
        EXPECT_LE(std::fabs(sum - want), 4.0 * static_cast<double>(n) * std::numeric_limits<float>::epsilon() * want);
        EXPECT_EQ(x, before);
    }
    const std::vector<float> nan = {0.0f, std::numeric_limits<float>::quiet_NaN()};
    EXPECT_TRUE(std::isnan(exp2_shifted_sum(nan.data(), 2, 0.0f)));
}

// silu_mul against the formula in double: within 4 ulp (plus the product's own rounding) for
// gates in [-80, 80], the sign kept and |result| under 1e-30 below -88, NaN kept; every tail length.
TEST(VecExp, SiluMulMatchesFormula) {
    std::mt19937 rng(19);
    std::uniform_real_distribution<float> gate(-80.0f, 80.0f), up(-3.0f, 3.0f);
    for (int64_t n = 1; n <= 40; ++n) {
        std::vector<float> g(static_cast<size_t>(n)), u(static_cast<size_t>(n)), y(static_cast<size_t>(n));
        for (int64_t t = 0; t < n; ++t) {
            g[static_cast<size_t>(t)] = gate(rng);
            u[static_cast<size_t>(t)] = up(rng);
        }
        silu_mul(g.data(), u.data(), y.data(), n);
        for (int64_t t = 0; t < n; ++t) {
            const double gd = g[static_cast<size_t>(t)], ud = u[static_cast<size_t>(t)];
            const double want = gd / (1.0 + std::exp(-gd)) * ud;
            EXPECT_LE(std::fabs(y[static_cast<size_t>(t)] - want),
                      6.0 * std::numeric_limits<float>::epsilon() * std::fabs(want) + 1e-37)
                << "n=" << n << " g=" << gd << " u=" << ud;
        }
    }
    std::vector<float> g = {-100.0f, -90.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f, 100.0f};
    std::vector<float> u(g.size(), 1.0f), y(g.size());
    silu_mul(g.data(), u.data(), y.data(), static_cast<int64_t>(g.size()));
    EXPECT_LE(y[0], 0.0f);
    EXPECT_LT(std::fabs(y[0]), 1e-30f);
    EXPECT_LE(y[1], 0.0f);
    EXPECT_LT(std::fabs(y[1]), 1e-30f);
    EXPECT_TRUE(std::isnan(y[2]));
    EXPECT_EQ(y[3], 0.0f);
    EXPECT_EQ(y[4], 100.0f);
}

// ---- SIMD dot products against their scalar bodies -------------------------------------------

// The f32-activation block dots (the default decode path) against plain loops over
// dequantize_row: fp32 sums in another order (fused multiply-adds, 16 lanes), so equal to
// within the f32 reduction bound of a k-long dot product.
TEST(VecDotF32, SimdMatchesScalar) {
    std::mt19937 rng(11);
    for (DType dtype : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
        for (int64_t nb : {1, 3, 18, 48}) {
            for (int rows = 1; rows <= kVecDotF32MaxRows; ++rows) {
                SCOPED_TRACE(fmt::format("{} nb={} rows={}", dtype_name(dtype), nb, rows));
                const int64_t k = nb * 32;
                Tensor w = random_weight(rng, dtype, 1, k);
                const std::vector<float> x = random_floats(rng, rows * k);
                float got[kVecDotF32MaxRows], want[kVecDotF32MaxRows];
                vec_dot_rows_f32act_scalar(dtype, nb, w.data, x.data(), k, rows, want);
                switch (dtype) {
                    case DType::kQ4_0:
                        vec_dot_rows_q4_0_f32(nb, w.ptr<BlockQ4_0>(), x.data(), k, rows, got);
                        break;
                    case DType::kQ4_1:
                        vec_dot_rows_q4_1_f32(nb, w.ptr<BlockQ4_1>(), x.data(), k, rows, got);
                        break;
                    default:
                        vec_dot_rows_q8_0_f32(nb, w.ptr<BlockQ8_0>(), x.data(), k, rows, got);
                        break;
                }
                EXPECT_LE(test::nmse({got, static_cast<size_t>(rows)}, {want, static_cast<size_t>(rows)}),
                          tol_f32_reduction(k));
            }
        }
    }
}

// The decode kernels (several weight rows, one activation row) against the same plain loops,
// on row counts and block counts that exercise the unrolled steps and their tails.
TEST(VecDotF32, WeightRowsMatchScalar) {
    std::mt19937 rng(12);
    for (DType dtype : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
        for (int64_t nb : {1, 3, 4, 5, 18, 48}) {
            for (int n_w = 1; n_w <= kVecDotF32WeightRows; ++n_w) {
                SCOPED_TRACE(fmt::format("{} nb={} n_w={}", dtype_name(dtype), nb, n_w));
                const int64_t k = nb * 32;
                Tensor w = random_weight(rng, dtype, n_w, k);
                const std::vector<float> x = random_floats(rng, k);
                std::vector<float> x_sums(static_cast<size_t>(nb));
                block_sums_f32(nb, x.data(), x_sums.data());
                float got[kVecDotF32WeightRows], want[kVecDotF32WeightRows];
                for (int r = 0; r < n_w; ++r)
                    vec_dot_rows_f32act_scalar(dtype, nb, w.row_ptr(r), x.data(), k, 1, want + r);
                switch (dtype) {
                    case DType::kQ4_0:
                        vec_dot_wrows_q4_0_f32(nb, w.ptr<BlockQ4_0>(), n_w, x.data(),
                                               x_sums.data(), got);
                        break;
                    case DType::kQ4_1:
                        vec_dot_wrows_q4_1_f32(nb, w.ptr<BlockQ4_1>(), n_w, x.data(),
                                               x_sums.data(), got);
                        break;
                    default:
                        vec_dot_wrows_q8_0_f32(nb, w.ptr<BlockQ8_0>(), n_w, x.data(),
                                               x_sums.data(), got);
                        break;
                }
                // The k-long fp32 dots in another order (as SimdMatchesScalar).
                EXPECT_LE(test::nmse({got, static_cast<size_t>(n_w)},
                                     {want, static_cast<size_t>(n_w)}),
                          tol_f32_reduction(k));
            }
        }
    }
}

TEST(VecDot, SimdMatchesScalar) {
    std::mt19937 rng(7);
    for (int64_t nb : {1, 2, 3, 18, 48}) {
        const int64_t k = nb * 32;
        const std::vector<float> a = random_floats(rng, k), b = random_floats(rng, k, 5.0f);
        std::vector<BlockQ4_0> x40(static_cast<size_t>(nb));
        std::vector<BlockQ4_1> x41(static_cast<size_t>(nb));
        std::vector<BlockQ8_0> x80(static_cast<size_t>(nb));
        std::vector<ActBlockQ8> y80(static_cast<size_t>(nb)), y81(static_cast<size_t>(nb));
        quantize_row_q4_0(a.data(), x40.data(), k);
        quantize_row_q4_1(a.data(), x41.data(), k);
        quantize_row_q8_0(a.data(), x80.data(), k);
        quantize_activation_q8_0(b.data(), y80.data(), k);
        quantize_activation_q8_1(b.data(), y81.data(), k);
        x80[0].qs[0] = -128;  // the one value outside [-127, 127] a file may hold
        // The integer block sums are exact in both; only the f32 sum of the nb block terms may
        // reorder: |error| <= 2 nb eps sum_b |term_b| (Higham's bound for recursive summation,
        // doubled for the FMA and two-accumulator split).
        auto check = [&](auto simd, auto scalar, const auto* x, const auto* y) {
            double abs_terms = 0;
            for (int64_t bl = 0; bl < nb; ++bl) abs_terms += std::fabs(scalar(1, x + bl, y + bl));
            EXPECT_NEAR(simd(nb, x, y), scalar(nb, x, y),
                        2.0 * static_cast<double>(nb) * kEps * abs_terms)
                << "nb=" << nb;
        };
        check(vec_dot_q4_0_q8_0, vec_dot_q4_0_q8_0_scalar, x40.data(), y80.data());
        check(vec_dot_q4_1_q8_1, vec_dot_q4_1_q8_1_scalar, x41.data(), y81.data());
        check(vec_dot_q8_0_q8_0, vec_dot_q8_0_q8_0_scalar, x80.data(), y80.data());
        std::vector<uint16_t> h(static_cast<size_t>(k)), bf(static_cast<size_t>(k));
        double f_sum = 0, f_abs = 0;
        for (int64_t i = 0; i < k; ++i) {
            h[static_cast<size_t>(i)] = f32_to_f16(a[static_cast<size_t>(i)]);
            bf[static_cast<size_t>(i)] = f32_to_bf16(a[static_cast<size_t>(i)]);
        }
        for (int64_t i = 0; i < k; ++i) {
            f_sum += static_cast<double>(a[static_cast<size_t>(i)]) * b[static_cast<size_t>(i)];
            f_abs += std::fabs(static_cast<double>(a[static_cast<size_t>(i)]) *
                               b[static_cast<size_t>(i)]);
        }
        // Against the double sum: f32 reduction of k terms, relative k eps of sum |terms|.
        EXPECT_NEAR(vec_dot_f32(k, a.data(), b.data()), f_sum,
                    static_cast<double>(k) * kEps * f_abs);
        double h_sum = 0, bf_sum = 0;
        for (int64_t i = 0; i < k; ++i) {
            h_sum += static_cast<double>(f16_to_f32(h[static_cast<size_t>(i)])) *
                     b[static_cast<size_t>(i)];
            bf_sum += static_cast<double>(bf16_to_f32(bf[static_cast<size_t>(i)])) *
                      b[static_cast<size_t>(i)];
        }
        EXPECT_NEAR(vec_dot_f16_f32(k, h.data(), b.data()), h_sum,
                    static_cast<double>(k) * kEps * f_abs * 1.01);
        EXPECT_NEAR(vec_dot_bf16_f32(k, bf.data(), b.data()), bf_sum,
                    static_cast<double>(k) * kEps * f_abs * 1.01);
    }
}

// The multi-row kernels against one scalar dot per row: same block terms, same bound.
TEST(VecDot, RowsMatchScalar) {
    std::mt19937 rng(11);
    const int64_t nb = 19, k = nb * 32;
    const std::vector<float> a = random_floats(rng, k);
    std::vector<BlockQ4_0> x40(nb);
    std::vector<BlockQ4_1> x41(nb);
    std::vector<BlockQ8_0> x80(nb);
    quantize_row_q4_0(a.data(), x40.data(), k);
    quantize_row_q4_1(a.data(), x41.data(), k);
    quantize_row_q8_0(a.data(), x80.data(), k);
    std::vector<ActBlockQ8> y0(static_cast<size_t>(kVecDotMaxRows * nb)), y1(y0.size());
    for (int r = 0; r < kVecDotMaxRows; ++r) {
        const std::vector<float> b = random_floats(rng, k, 2.0f);
        quantize_activation_q8_0(b.data(), y0.data() + r * nb, k);
        quantize_activation_q8_1(b.data(), y1.data() + r * nb, k);
    }
    auto check = [&](auto rows_fn, auto scalar, const auto* x, const std::vector<ActBlockQ8>& y) {
        for (int n_rows = 1; n_rows <= kVecDotMaxRows; ++n_rows) {
            float out[kVecDotMaxRows];
            rows_fn(nb, x, y.data(), nb, n_rows, out);
            for (int r = 0; r < n_rows; ++r) {
                double abs_terms = 0;
                for (int64_t bl = 0; bl < nb; ++bl)
                    abs_terms += std::fabs(scalar(1, x + bl, y.data() + r * nb + bl));
                EXPECT_NEAR(out[r], scalar(nb, x, y.data() + r * nb), 2.0 * nb * kEps * abs_terms)
                    << "n_rows=" << n_rows << " r=" << r;
            }
        }
    };
    check(vec_dot_rows_q4_0_q8_0, vec_dot_q4_0_q8_0_scalar, x40.data(), y0);
    check(vec_dot_rows_q4_1_q8_1, vec_dot_q4_1_q8_1_scalar, x41.data(), y1);
    check(vec_dot_rows_q8_0_q8_0, vec_dot_q8_0_q8_0_scalar, x80.data(), y0);
}

// The vectorised activation quantisers give the reference quantisers' blocks bit for bit:
// random rows, a zero block, values that land exactly on .5 (roundf's ties go away from zero)
// and tiny ones; every length from 1 to 5 blocks.
TEST(VecDot, ActivationQuantisersMatchReference) {
    std::mt19937 rng(37);
    for (int64_t nb = 1; nb <= 5; ++nb) {
        const int64_t k = nb * 32;
        std::vector<float> x = random_floats(rng, k, 4.0f);
        if (nb >= 2) std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // amax 0: d = 0, q = 0
        if (nb >= 3) {  // amax 127 -> d = 1: x id = x, the halves are ties
            for (int i = 0; i < 32; ++i) x[static_cast<size_t>(64 + i)] = static_cast<float>(i - 16) + 0.5f;
            x[64] = 127.0f;
            x[65] = -126.5f;
        }
        if (nb >= 4) {  // tiny (normal) values: d underflows to 0 in f16, q does not
            for (int i = 0; i < 32; ++i) x[static_cast<size_t>(96 + i)] = x[static_cast<size_t>(i)] * 1e-30f;
        }
        for (bool with_sum : {false, true}) {
            std::vector<ActBlockQ8> got(static_cast<size_t>(nb)), want(static_cast<size_t>(nb));
            if (with_sum) {
                quantize_activation_q8_1(x.data(), got.data(), k);
                quantize_activation_q8_1_reference(x.data(), want.data(), k);
            } else {
                quantize_activation_q8_0(x.data(), got.data(), k);
                quantize_activation_q8_0_reference(x.data(), want.data(), k);
            }
            for (int64_t b = 0; b < nb; ++b) {
                SCOPED_TRACE(fmt::format("nb={} block {} sum {}", nb, b, with_sum));
                EXPECT_EQ(got[static_cast<size_t>(b)].d, want[static_cast<size_t>(b)].d);
                EXPECT_EQ(got[static_cast<size_t>(b)].s, want[static_cast<size_t>(b)].s);
                for (int i = 0; i < 32; ++i) EXPECT_EQ(got[static_cast<size_t>(b)].qs[i], want[static_cast<size_t>(b)].qs[i]) << i;
            }
        }
    }
}

// The 8-row interleaved q4_1 kernel (and its scalar body) against one scalar dot per row:
// the same block terms (exact integer sums, the same two scale products), summed per row in
// another order: the bound of SimdMatchesScalar. Covers every byte group and both nibbles
// because each row's nibbles are random.
TEST(VecDot, PackedQ4_1RowsMatchScalar) {
    std::mt19937 rng(13);
    for (int64_t nb : {1, 3, 18, 48}) {
        const int64_t k = nb * 32, m = 16;
        std::vector<BlockQ4_1> rows(static_cast<size_t>(m * nb));
        for (int64_t r = 0; r < m; ++r) quantize_row_q4_1(random_floats(rng, k).data(), rows.data() + r * nb, k);
        std::vector<ActBlockQ8> y(static_cast<size_t>(nb));
        quantize_activation_q8_1(random_floats(rng, k, 3.0f).data(), y.data(), k);
        std::vector<BlockQ4_1x8> packed(static_cast<size_t>(m / kQ4_1x8Rows * nb));
        repack_q4_1_x8(rows.data(), m, nb, packed.data());
        for (int64_t g = 0; g < m / kQ4_1x8Rows; ++g) {
            float simd[kQ4_1x8Rows], scalar[kQ4_1x8Rows];
            vec_dot_x8_q4_1_q8_1(nb, packed.data() + g * nb, y.data(), simd);
            vec_dot_x8_q4_1_q8_1_scalar(nb, packed.data() + g * nb, y.data(), scalar);
            for (int r = 0; r < kQ4_1x8Rows; ++r) {
                const BlockQ4_1* row = rows.data() + (g * kQ4_1x8Rows + r) * nb;
                const float want = vec_dot_q4_1_q8_1_scalar(nb, row, y.data());
                double abs_terms = 0;
                for (int64_t bl = 0; bl < nb; ++bl) abs_terms += std::fabs(vec_dot_q4_1_q8_1_scalar(1, row + bl, y.data() + bl));
                const double bound = 2.0 * static_cast<double>(nb) * kEps * abs_terms;
                EXPECT_NEAR(simd[r], want, bound) << "nb=" << nb << " row " << g * kQ4_1x8Rows + r;
                EXPECT_NEAR(scalar[r], want, bound) << "nb=" << nb << " row " << g * kQ4_1x8Rows + r;
            }
        }
    }
}

// With q8 activations the cpu backend packs prepared q4_1 matrices and decodes one token from
// the packed copy: the same result as the row-at-a-time kernel within the reordering bound;
// row views of the weight and weights it did not prepare take the unpacked path.
TEST(CpuMatmul, PackedQ4_1DecodeMatchesUnpacked) {
    std::mt19937 rng(29);
    const int64_t k = 576, m = 200;
    auto backend = backend_create("cpu", BackendOptions{2, ActivationPrecision::kQ8});
    ASSERT_TRUE(backend.is_ok());
    Tensor host = random_weight(rng, DType::kQ4_1, m, k);
    auto prepared = (*backend)->prepare_weight(host);
    ASSERT_TRUE(prepared.is_ok());
    EXPECT_EQ(prepared->data, host.data);  // no copy of the original blocks
    Tensor x = host_f32({1, k}, random_floats(rng, k));
    Tensor got = tensor_cpu(DType::kF32, {1, m}), want = tensor_cpu(DType::kF32, {1, m});
    ASSERT_TRUE((*backend)->matmul(x, *prepared, got).is_ok());
    cpu_matmul_gemv(x, host, want, 2, ActivationPrecision::kQ8);
    // Per output: the same block terms in another order, each sum within the bound of
    // VecDot.SimdMatchesScalar of the exact value, so the two within twice that.
    const int64_t nb = k / 32;
    std::vector<ActBlockQ8> y(static_cast<size_t>(nb));
    quantize_activation_q8_1(x.f32(), y.data(), k);
    for (int64_t j = 0; j < m; ++j) {
        const auto* row = reinterpret_cast<const BlockQ4_1*>(host.row_ptr(j));
        double abs_terms = 0;
        for (int64_t bl = 0; bl < nb; ++bl) abs_terms += std::fabs(vec_dot_q4_1_q8_1_scalar(1, row + bl, y.data() + bl));
        EXPECT_NEAR(got.f32()[j], want.f32()[j], 4.0 * static_cast<double>(nb) * kEps * abs_terms) << j;
    }
    int64_t differ = 0;  // the packed path did run: some outputs round differently
    for (int64_t j = 0; j < m; ++j) differ += got.f32()[j] != want.f32()[j];
    EXPECT_GT(differ, 0);
    // A row view starting at the weight's first row (same data pointer, fewer rows) and a
    // weight never prepared: the unpacked kernel, bit for bit.
    for (const Tensor& w : {prepared->rows(0, 64), random_weight(rng, DType::kQ4_1, 64, k)}) {
        Tensor a = tensor_cpu(DType::kF32, {1, 64}), b = tensor_cpu(DType::kF32, {1, 64});
        ASSERT_TRUE((*backend)->matmul(x, w, a).is_ok());
        cpu_matmul_gemv(x, w, b, 2, ActivationPrecision::kQ8);
        for (int64_t j = 0; j < 64; ++j) EXPECT_EQ(a.f32()[j], b.f32()[j]) << j;
    }
}

// A packed copy is tied to the storage it was made from: another tensor at the same address
// (here a view of the same bytes under a new owner) or of another shape is not matched.
TEST(CpuMatmul, PackedWeightsMatchOnlyTheirOwnTensor) {
    std::mt19937 rng(31);
    PackedWeights packed;
    Tensor w = random_weight(rng, DType::kQ4_1, 16, 64);
    packed.add(w);
    ASSERT_NE(packed.find(w), nullptr);
    EXPECT_EQ(packed.find(w.rows(0, 8)), nullptr);
    const std::vector<int64_t> shape = {16, 64};
    const Tensor other_owner = tensor_view(DType::kQ4_1, shape, w.data, std::make_shared<int>(0));
    EXPECT_EQ(packed.find(other_owner), nullptr);
    const Tensor no_owner = tensor_view(DType::kQ4_1, shape, w.data);
    EXPECT_EQ(packed.find(no_owner), nullptr);
    Tensor q8 = random_weight(rng, DType::kQ8_0, 16, 64), odd = random_weight(rng, DType::kQ4_1, 12, 64);
    packed.add(q8);
    packed.add(odd);
    EXPECT_EQ(packed.find(q8), nullptr);
    EXPECT_EQ(packed.find(odd), nullptr);
}

// Every output element of the GEMV, the tiled GEMM and attention is computed by one thread in
// a fixed order, so the thread count must not change a single bit.
TEST(CpuThreads, ThreadCountDoesNotChangeResults) {
    std::mt19937 rng(5);
    const int64_t k = 576, m = 300;
    Tensor w = random_weight(rng, DType::kQ4_1, m, k);
    Tensor k_cache = host_f32({1, 3, 256, 64}, random_floats(rng, 3 * 256 * 64));
    Tensor v_cache = host_f32({1, 3, 256, 64}, random_floats(rng, 3 * 256 * 64));
    std::vector<std::vector<float>> results;
    for (int n_threads : {1, 2, 3}) {
        auto backend = backend_create("cpu", BackendOptions{n_threads});
        ASSERT_TRUE(backend.is_ok());
        std::vector<float> all;
        for (int64_t n : {1, 5, 40}) {  // GEMV, multi-token GEMV, tiled GEMM
            std::mt19937 xr(static_cast<uint32_t>(n));
            Tensor x = host_f32({n, k}, random_floats(xr, n * k));
            Tensor out = tensor_cpu(DType::kF32, {n, m});
            ASSERT_TRUE((*backend)->matmul(x, w, out).is_ok());
            all.insert(all.end(), out.f32(), out.f32() + n * m);
        }
        std::mt19937 qr(9);
        Tensor q = host_f32({4, 9, 64}, random_floats(qr, 4 * 9 * 64));
        Tensor att = tensor_cpu(DType::kF32, {4, 9, 64});
        const int32_t seq[] = {0, 0, 0, 0}, pos[] = {200, 201, 202, 255};
        ASSERT_TRUE(
            (*backend)->attention(q, {k_cache, v_cache}, {seq, pos}, {0.125f, 0, 0}, att).is_ok());
        all.insert(all.end(), att.f32(), att.f32() + att.numel());
        results.push_back(std::move(all));
    }
    EXPECT_EQ(results[0], results[1]);
    EXPECT_EQ(results[0], results[2]);
}

TEST(BackendAvailable, OracleFirstThenCpu) {
    const std::vector<std::string> names = backend_available();
    ASSERT_GE(names.size(), 2u);
    EXPECT_EQ(names[0], "cpu-ref");
    EXPECT_EQ(names[1], "cpu");
    for (const std::string& name : names) EXPECT_TRUE(backend_create(name).is_ok()) << name;
    EXPECT_FALSE(backend_create("tpu").is_ok());
}

}  // namespace
}  // namespace purbo
