// Block-quantised formats, bit-compatible with ggml (llama.cpp's GGUF files).
// A row of n elements is n / QK blocks; each block stores its scale(s) and packed integers.
// dequantize_row is the one definition of what the bytes mean; every faster kernel is
// tested against it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace purbo {

constexpr int kQK4_0 = 32;
constexpr int kQK4_1 = 32;
constexpr int kQK5_0 = 32;
constexpr int kQK5_1 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK8_1 = 32;
constexpr int kQK_K = 256;     // super-block of the K-quants
constexpr int kKScaleSize = 12;  // packed 6-bit scales and mins of q4_K / q5_K

// x = d * (q - 8), q in [0, 15]; low nibbles hold elements 0..15, high nibbles 16..31.
struct BlockQ4_0 {
    uint16_t d;  // f16
    uint8_t qs[kQK4_0 / 2];
};
// x = d * q + m, q in [0, 15]; same nibble order as q4_0.
struct BlockQ4_1 {
    uint16_t d;  // f16
    uint16_t m;  // f16
    uint8_t qs[kQK4_1 / 2];
};
// x = d * (q - 16), q = nibble | (bit from qh) << 4.
struct BlockQ5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[kQK5_0 / 2];
};
struct BlockQ5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[kQK5_1 / 2];
};
// x = d * q, q in [-127, 127].
struct BlockQ8_0 {
    uint16_t d;
    int8_t qs[kQK8_0];
};
// Activation format paired with q4_1/q5_1: s = d * sum(q), so the min term of the weight
// block folds into one multiply.
struct BlockQ8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[kQK8_1];
};
struct BlockQ2_K {
    uint8_t scales[kQK_K / 16];
    uint8_t qs[kQK_K / 4];
    uint16_t d;
    uint16_t dmin;
};
struct BlockQ3_K {
    uint8_t hmask[kQK_K / 8];
    uint8_t qs[kQK_K / 4];
    uint8_t scales[12];
    uint16_t d;
};
struct BlockQ4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[kKScaleSize];
    uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[kKScaleSize];
    uint8_t qh[kQK_K / 8];
    uint8_t qs[kQK_K / 2];
};
struct BlockQ6_K {
    uint8_t ql[kQK_K / 2];
    uint8_t qh[kQK_K / 4];
    int8_t scales[kQK_K / 16];
    uint16_t d;
};
struct BlockQ8_K {
    float d;
    int8_t qs[kQK_K];
    int16_t bsums[kQK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84);
static_assert(sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// Can dequantize_row read this dtype? (every DType but i32)
bool dequantize_supported(DType dtype);

// dst[0..n) = the values encoded by one row of n elements at src; n a multiple of the block size.
void dequantize_row(DType dtype, const void* src, float* dst, int64_t n);

// Reference quantisers (round to nearest, as ggml's *_ref functions): used for activations
// of quantised matmuls and to build test data. n a multiple of the block size.
void quantize_row_q8_0(const float* src, void* dst, int64_t n);
void quantize_row_q8_1(const float* src, void* dst, int64_t n);
void quantize_row_q4_0(const float* src, void* dst, int64_t n);
void quantize_row_q4_1(const float* src, void* dst, int64_t n);
void quantize_row_q8_k(const float* src, void* dst, int64_t n);

}  // namespace purbo
