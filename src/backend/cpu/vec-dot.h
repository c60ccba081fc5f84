// Dot products of one weight row with one activation row, the inner loop of the cpu
// backend's GEMV (decode) path. Quantised weights are paired with an activation row
// quantised once per matmul call, so the loop multiplies small integers and applies the two
// block scales once per 32 elements, as ggml's vec_dot_q4_1_q8_1 does:
//   q4_0 . q8_0:  sum_b dx_b dy_b sum_i (qx_i - 8) qy_i
//   q4_1 . q8_1:  sum_b dx_b dy_b sum_i qx_i qy_i + mx_b s_b     (s_b = dy_b sum_i qy_i)
//   q8_0 . q8_0:  sum_b dx_b dy_b sum_i qx_i qy_i
// Each function has a SIMD body (AVX2; AVX512-VNNI for the integer sums where the compiler
// targets it) and a portable scalar body; the *_scalar versions are exported so the tests
// can compare the two on any machine.
#pragma once

#include <cstdint>

#include "core/quants.h"

namespace purbo {

// An activation block as the GEMV path holds it: the integers of a q8_0 / q8_1 block (made
// by quantize_row_q8_0 / q8_1, the reference quantisers) with its f16 scale d and scaled sum
// s converted to f32 once per call, instead of once per weight row. Same values exactly.
struct ActBlockQ8 {
    float d;
    float s;  // d * sum(qs) from q8_1; 0 for q8_0
    int8_t qs[kQK8_0];
};

// k floats -> k / 32 blocks: the values of the reference quantisers (quantize_row_q8_0 /
// q8_1) exactly, vectorised where AVX-512 is built in; the *_reference versions run the
// reference quantisers themselves, for the tests.
void quantize_activation_q8_0(const float* x, ActBlockQ8* y, int64_t k);
void quantize_activation_q8_1(const float* x, ActBlockQ8* y, int64_t k);
void quantize_activation_q8_0_reference(const float* x, ActBlockQ8* y, int64_t k);
void quantize_activation_q8_1_reference(const float* x, ActBlockQ8* y, int64_t k);

// nb = number of 32-element blocks in the row.
float vec_dot_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y);
float vec_dot_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y);
float vec_dot_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y);
float vec_dot_q4_0_q8_0_scalar(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y);
float vec_dot_q4_1_q8_1_scalar(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y);
float vec_dot_q8_0_q8_0_scalar(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y);

// The same dot products of one weight row with n_rows (1..kVecDotMaxRows) activation rows,
// row r at y + r * y_stride: each weight block is unpacked once for all of them, which is what
// makes a GEMV over a few tokens cheaper than n single ones. out[r] for r < n_rows.
constexpr int kVecDotMaxRows = 4;
void vec_dot_rows_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out);
void vec_dot_rows_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out);
void vec_dot_rows_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out);

// Decode (one activation row): n_w consecutive weight rows of nb blocks each, row j at
// x + j * nb, against one quantised activation row y: out[j] = vec_dot(nb, x + j * nb, y),
// the same values as one call per row without the call and row lookup per row.
void vec_dot_wrows_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, int n_w, const ActBlockQ8* y, float* out);
void vec_dot_wrows_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, int n_w, const ActBlockQ8* y, float* out);
void vec_dot_wrows_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, int n_w, const ActBlockQ8* y, float* out);

// Decode over q4_1 weights repacked 8 rows at a time (the q8 activation path): block b of rows
// 8g .. 8g + 7 holds their 8 scales d, their 8 minimums m, then for j = 0..3 the bytes
// 4j .. 4j + 3 of each row's nibbles, row after row (32 bytes per j). One 32-bit lane then
// holds four consecutive elements of one row, so an 8-lane integer dot product computes a
// block for all 8 rows at once against one broadcast group of four activation bytes: the
// scales apply to 8 rows with one multiply and no horizontal sums, about a third of the
// instructions of the row-at-a-time kernel. Same bytes as the 8 rows' BlockQ4_1.
constexpr int kQ4_1x8Rows = 8;
struct BlockQ4_1x8 {
    uint16_t d[kQ4_1x8Rows];  // f16
    uint16_t m[kQ4_1x8Rows];  // f16
    uint8_t qs[kQ4_1x8Rows * kQK4_1 / 2];
};
static_assert(sizeof(BlockQ4_1x8) == kQ4_1x8Rows * sizeof(BlockQ4_1), "a repacked block is the rows' blocks");

// rows (m, nb) blocks with m a multiple of 8 -> (m / 8, nb) repacked blocks.
void repack_q4_1_x8(const BlockQ4_1* rows, int64_t m, int64_t nb, BlockQ4_1x8* out);
// out[r] (r < 8) = the q4_1 . q8_1 dot product of row r of the 8 repacked rows w (nb blocks)
// with y: the same block terms as vec_dot_q4_1_q8_1, summed in another order.
void vec_dot_x8_q4_1_q8_1(int64_t nb, const BlockQ4_1x8* w, const ActBlockQ8* y, float* out);
void vec_dot_x8_q4_1_q8_1_scalar(int64_t nb, const BlockQ4_1x8* w, const ActBlockQ8* y, float* out);

// k = number of elements; w in the weight's dtype, x f32; fp32 accumulation.
float vec_dot_f32(int64_t k, const float* w, const float* x);
float vec_dot_f16_f32(int64_t k, const uint16_t* w, const float* x);
float vec_dot_bf16_f32(int64_t k, const uint16_t* w, const float* x);

}  // namespace purbo
