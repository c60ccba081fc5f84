// cpu backend matmul: out (n, m) = x (n, k) @ w (m, k)^T.
//
// Two paths, chosen by the number of tokens n (kGemmMinRows, speed only, not correctness):
//  - GEMV (decode, n small): the weight is read once, straight from its blocks. By default
//    q4_0 / q4_1 / q8_0 blocks are dequantised in registers and dotted with the f32
//    activations (vec-dot-f32.h: exact fp32, as transformers computes; one token takes the
//    decode kernels, which apply the block scales to the block sums). With
//    ActivationPrecision::kQ8 the activation rows are quantised to q8_0 (q8_1 for q4_1) once
//    per call and each output is an integer block dot product (vec-dot.h, llama.cpp's
//    numerics). f32/f16/bf16 weights are dotted directly against the f32 activations. Parallel over output rows; the n tokens
//    are the inner loop so each weight row is loaded from memory once, and for quantised
//    weights each block is unpacked once per group of kVecDotMaxRows tokens.
//  - GEMM (prefill, n large): f32 weights go to one multithreaded cblas_sgemm. Other dtypes
//    are dequantised in tiles of kGemmTileRows rows by each thread into its own scratch
//    buffer, and each tile is one single-threaded sgemm, so no f32 copy of the whole weight
//    is made.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/blas-threads.h"
#include "backend/cpu/cpu-backend.h"
#include "backend/cpu/vec-dot-f32.h"
#include "backend/cpu/vec-dot.h"
#include "backend/op-checks.h"
#include "core/quants.h"

namespace purbo {
namespace {

// Speed only, not correctness. Below this many tokens the quantised GEMV wins: it reads
// 0.56-1.06 bytes per weight and makes no f32 copy. Measured on one thread, q4_1, k = 576,
// m = 1536 (GEMV / GEMM): n = 4: 0.18 / 0.29 ms; n = 8: 0.35 / 0.39 ms; n = 16: 0.71 / 0.58 ms.
constexpr int64_t kGemmMinRows = 12;
// Rows of the weight dequantised per sgemm call: 64 x k f32 fits in L2 for k <= 4096.
constexpr int64_t kGemmTileRows = 64;

// out[i, j] = dot(row j of w, activation row i) for the dtype's dot function `dot`.
template <class Dot>
void gemv_rows(int64_t n, int64_t m, const Tensor& w, float* out, int n_threads, Dot dot) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m >= 64)
    for (int64_t j = 0; j < m; ++j) {
        const uint8_t* w_row = w.row_ptr(j);
        for (int64_t i = 0; i < n; ++i) out[i * m + j] = dot(w_row, i);
    }
}

// One token (decode): w's m contiguous rows in groups of kVecDotF32WeightRows, one call of
// dot_group(first row, rows in the group, its output) per group, the threads taking static
// halves (one ascending stream each: dynamic schedules were far slower, bench/NOTES.md).
template <class Block, class DotGroup>
void gemv_one_token(int64_t m, const Tensor& w, float* out, int n_threads, DotGroup dot_group) {
    const int64_t nb = w.dim(1) / 32;
    const Block* w0 = reinterpret_cast<const Block*>(w.data);  // rows are contiguous
    const int64_t groups = (m + kVecDotF32WeightRows - 1) / kVecDotF32WeightRows;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m >= 64)
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t j = g * kVecDotF32WeightRows;
        dot_group(w0 + j * nb, static_cast<int>(std::min<int64_t>(kVecDotF32WeightRows, m - j)), out + j);
    }
}

// The same for the quantised formats, kVecDotMaxRows tokens per call of `dot_rows` so that each
// weight block is unpacked once per group of tokens. One token (decode) goes through
// `dot_wrows`, kVecDotF32WeightRows consecutive weight rows per call.
template <class Block, class DotRows, class DotWRows>
void gemv_rows_quantized(int64_t n, int64_t m, const Tensor& w, const std::vector<ActBlockQ8>& xq,
                         float* out, int n_threads, DotRows dot_rows, DotWRows dot_wrows) {
    const int64_t nb = w.dim(1) / 32;
    if (n == 1) {
        gemv_one_token<Block>(m, w, out, n_threads, [&](const Block* rows, int n_rows, float* o) {
            dot_wrows(nb, rows, n_rows, xq.data(), o);
        });
        return;
    }
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m >= 64)
    for (int64_t j = 0; j < m; ++j) {
        const Block* w_row = reinterpret_cast<const Block*>(w.row_ptr(j));
        for (int64_t i0 = 0; i0 < n; i0 += kVecDotMaxRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kVecDotMaxRows, n - i0));
            float result[kVecDotMaxRows];
            dot_rows(nb, w_row, xq.data() + i0 * nb, nb, rows, result);
            for (int r = 0; r < rows; ++r) out[(i0 + r) * m + j] = result[r];
        }
    }
}

// The same with f32 activations: kVecDotF32MaxRows tokens per call of `dot_rows`. One token
// (decode) goes through `dot_wrows` instead, kVecDotF32WeightRows weight rows per call.
template <class Block, class DotRows, class DotWRows>
void gemv_rows_f32act(int64_t n, int64_t m, int64_t k, const Tensor& w, const float* x, float* out,
                      int n_threads, DotRows dot_rows, DotWRows dot_wrows) {
    const int64_t nb = k / 32;
    if (n == 1) {
        std::vector<float> x_sums(static_cast<size_t>(nb));  // (nb,)
        block_sums_f32(nb, x, x_sums.data());
        gemv_one_token<Block>(m, w, out, n_threads, [&](const Block* rows, int n_rows, float* o) {
            dot_wrows(nb, rows, n_rows, x, x_sums.data(), o);
        });
        return;
    }
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m >= 64)
    for (int64_t j = 0; j < m; ++j) {
        const Block* w_row = reinterpret_cast<const Block*>(w.row_ptr(j));
        for (int64_t i0 = 0; i0 < n; i0 += kVecDotF32MaxRows) {
            const int rows = static_cast<int>(std::min<int64_t>(kVecDotF32MaxRows, n - i0));
            float result[kVecDotF32MaxRows];
            dot_rows(nb, w_row, x + i0 * k, k, rows, result);
            for (int r = 0; r < rows; ++r) out[(i0 + r) * m + j] = result[r];
        }
    }
}

// Activation rows quantised once per call: (n, k / 32) blocks.
std::vector<ActBlockQ8> quantize_activations(const float* x, int64_t n, int64_t k,
                                             void (*quantize)(const float*, ActBlockQ8*, int64_t)) {
    std::vector<ActBlockQ8> xq(static_cast<size_t>(n * (k / 32)));
    for (int64_t i = 0; i < n; ++i) quantize(x + i * k, xq.data() + i * (k / 32), k);
    return xq;
}

}  // namespace

void cpu_matmul_gemv(const Tensor& x, const Tensor& w, const Tensor& out, int n_threads,
                     ActivationPrecision activations) {
    // x (n, k), w (m, k), out (n, m)
    const int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
    const float* xf = x.f32();
    float* y = out.f32();
    if (activations == ActivationPrecision::kF32) {
        switch (w.dtype) {
            case DType::kQ4_0:
                gemv_rows_f32act<BlockQ4_0>(n, m, k, w, xf, y, n_threads, vec_dot_rows_q4_0_f32,
                                            vec_dot_wrows_q4_0_f32);
                return;
            case DType::kQ4_1:
                gemv_rows_f32act<BlockQ4_1>(n, m, k, w, xf, y, n_threads, vec_dot_rows_q4_1_f32,
                                            vec_dot_wrows_q4_1_f32);
                return;
            case DType::kQ8_0:
                gemv_rows_f32act<BlockQ8_0>(n, m, k, w, xf, y, n_threads, vec_dot_rows_q8_0_f32,
                                            vec_dot_wrows_q8_0_f32);
                return;
            default:
                break;
        }
    }
    switch (w.dtype) {
        case DType::kQ4_0:
            gemv_rows_quantized<BlockQ4_0>(n, m, w,
                                           quantize_activations(xf, n, k, quantize_activation_q8_0),
                                           y, n_threads, vec_dot_rows_q4_0_q8_0, vec_dot_wrows_q4_0_q8_0);
            return;
        case DType::kQ8_0:
            gemv_rows_quantized<BlockQ8_0>(n, m, w,
                                           quantize_activations(xf, n, k, quantize_activation_q8_0),
                                           y, n_threads, vec_dot_rows_q8_0_q8_0, vec_dot_wrows_q8_0_q8_0);
            return;
        case DType::kQ4_1:
            gemv_rows_quantized<BlockQ4_1>(n, m, w,
                                           quantize_activations(xf, n, k, quantize_activation_q8_1),
                                           y, n_threads, vec_dot_rows_q4_1_q8_1, vec_dot_wrows_q4_1_q8_1);
            return;
        case DType::kF32:
            gemv_rows(n, m, w, y, n_threads, [&](const uint8_t* row, int64_t i) {
                return vec_dot_f32(k, reinterpret_cast<const float*>(row), xf + i * k);
            });
            return;
        case DType::kF16:
            gemv_rows(n, m, w, y, n_threads, [&](const uint8_t* row, int64_t i) {
                return vec_dot_f16_f32(k, reinterpret_cast<const uint16_t*>(row), xf + i * k);
            });
            return;
        case DType::kBF16:
            gemv_rows(n, m, w, y, n_threads, [&](const uint8_t* row, int64_t i) {
                return vec_dot_bf16_f32(k, reinterpret_cast<const uint16_t*>(row), xf + i * k);
            });
            return;
        default:
            break;
    }
        // Any other dtype: dequantise each weight row into a per-thread scratch row, then f32 dots.
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> w_row(static_cast<size_t>(k));  // (k,)
#pragma omp for schedule(static)
        for (int64_t j = 0; j < m; ++j) {
            dequantize_row(w.dtype, w.row_ptr(j), w_row.data(), k);
            for (int64_t i = 0; i < n; ++i) y[i * m + j] = vec_dot_f32(k, w_row.data(), xf + i * k);
        }
    }
}

void cpu_matmul_gemm(const Tensor& x, const Tensor& w, const Tensor& out, int n_threads) {
    // x (n, k), w (m, k), out (n, m)
    const int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
    if (w.dtype == DType::kF32) {
        ScopedBlasThreads blas_threads(n_threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                    static_cast<int>(m), static_cast<int>(k), 1.0f, x.f32(), static_cast<int>(k),
                    w.ptr<float>(), static_cast<int>(k), 0.0f, out.f32(), static_cast<int>(m));
        return;
    }
    const int64_t n_tiles = (m + kGemmTileRows - 1) / kGemmTileRows;
    // One thread per tile sgemm (see blas-threads.h).
    ScopedBlasThreads blas_threads(1);
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> tile(static_cast<size_t>(kGemmTileRows * k));  // (kGemmTileRows, k)
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < n_tiles; ++t) {
            const int64_t j0 = t * kGemmTileRows, rows = std::min(kGemmTileRows, m - j0);
            for (int64_t r = 0; r < rows; ++r)
                dequantize_row(w.dtype, w.row_ptr(j0 + r), tile.data() + r * k, k);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n),
                        static_cast<int>(rows), static_cast<int>(k), 1.0f, x.f32(),
                        static_cast<int>(k), tile.data(), static_cast<int>(k), 0.0f, out.f32() + j0,
                        static_cast<int>(m));
        }
    }
}

void cpu_matmul_gemv_packed_q4_1(const Tensor& x, const BlockQ4_1x8* w, int64_t m, const Tensor& out,
                                 int n_threads) {
    const int64_t k = x.dim(1), nb = k / kQK4_1, groups = m / kQ4_1x8Rows;
    const std::vector<ActBlockQ8> xq = quantize_activations(x.f32(), 1, k, quantize_activation_q8_1);
    float* y = out.f32();
    // Static halves: one ascending stream per thread, as gemv_one_token.
#pragma omp parallel for num_threads(n_threads) schedule(static) if (m >= 64)
    for (int64_t g = 0; g < groups; ++g) vec_dot_x8_q4_1_q8_1(nb, w + g * nb, xq.data(), y + g * kQ4_1x8Rows);
}

Status CpuBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& out) {
    PURBO_TRY(check_matmul(x, w, out));
    if (x.dim(0) == 1 && gemv_activations_ == ActivationPrecision::kQ8) {
        if (const BlockQ4_1x8* packed = packed_.find(w)) {
            cpu_matmul_gemv_packed_q4_1(x, packed, w.dim(0), out, n_threads_);
            return Status::ok();
        }
    }
    if (x.dim(0) < kGemmMinRows) {
        cpu_matmul_gemv(x, w, out, n_threads_, gemv_activations_);
    } else {
        cpu_matmul_gemm(x, w, out, n_threads_);
    }
    return Status::ok();
}

}  // namespace purbo
