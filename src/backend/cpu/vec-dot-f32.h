// Dot products of quantised weight rows with f32 activation rows, the default decode GEMV.
// Each weight block is dequantised in registers (w_i = d * q_i + m, exactly what
// dequantize_row produces up to the rounding of one fused multiply-add) and multiplied with
// the f32 activations in fp32. The result is what an fp32 matmul on the dequantised weights
// gives (as Hugging Face computes on a dequantised GGUF), at the memory cost of the quantised
// weights. The integer path of vec-dot.h (q8 activations, llama.cpp's numerics) is faster
// per block but moves logits by ~0.1, enough to flip close greedy choices.
#pragma once

#include <cstdint>

#include "core/quants.h"

namespace purbo {

// One weight row of nb 32-element blocks against n_rows (1..kVecDotF32MaxRows) activation rows,
// row r at x + r * x_stride: out[r] = sum_i w_i * x_r[i]. Each block is unpacked once for all rows.
constexpr int kVecDotF32MaxRows = 4;
void vec_dot_rows_q4_0_f32(int64_t nb, const BlockQ4_0* w, const float* x, int64_t x_stride, int n_rows,
                           float* out);
void vec_dot_rows_q4_1_f32(int64_t nb, const BlockQ4_1* w, const float* x, int64_t x_stride, int n_rows,
                           float* out);
void vec_dot_rows_q8_0_f32(int64_t nb, const BlockQ8_0* w, const float* x, int64_t x_stride, int n_rows,
                           float* out);

// Decode (one activation row): n_w (1..kVecDotF32WeightRows) consecutive weight rows of nb blocks
// each, row j at w + j * nb, against one activation row x: out[j] = sum_i w_j[i] * x[i]. The
// rows are independent accumulator chains, which the one-row kernel above lacks: its two fused
// multiply-adds per block wait on each other (4 cycles each on Zen 4), so it ran at about
// 10 cycles per q4_1 block, 7.6 GB/s on one core, where DRAM gives 20 GB/s per core.
// x_sums (nb,) = block_sums_f32(x), read by q4_1, whose block scales are factored out of the
// block sums (see vec-dot-f32.cpp: fp32 throughout, only the rounding order differs).
constexpr int kVecDotF32WeightRows = 4;
void block_sums_f32(int64_t nb, const float* x, float* x_sums);
void vec_dot_wrows_q4_0_f32(int64_t nb, const BlockQ4_0* w, int n_w, const float* x,
                            const float* x_sums, float* out);
void vec_dot_wrows_q4_1_f32(int64_t nb, const BlockQ4_1* w, int n_w, const float* x,
                            const float* x_sums, float* out);
void vec_dot_wrows_q8_0_f32(int64_t nb, const BlockQ8_0* w, int n_w, const float* x,
                            const float* x_sums, float* out);

// Plain loops over dequantize_row's values: the reference the SIMD versions are tested against.
void vec_dot_rows_f32act_scalar(DType dtype, int64_t nb, const void* w, const float* x, int64_t x_stride,
                                int n_rows, float* out);

}  // namespace purbo
