// Scalar reference for the ggml block formats. The arithmetic follows gguf-py's numpy
// dequantisers operation by operation (the same float32 products and sums, in the same order),
// so the output is bit-identical to theirs; faster kernels are tested against this file.
// Products and sums stay separate statements: a fused multiply-add would round once instead of
// twice and break that bit-exactness.
#include "core/quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/fp16.h"
#include "core/fp8.h"
#include "core/status.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace purbo {
namespace {

// Element e of a 32-element q4/q5 block: low nibbles hold 0..15, high nibbles 16..31.
inline int nibble_32(const uint8_t* qs, int e) {
    return e < 16 ? (qs[e] & 0x0F) : (qs[e - 16] >> 4);
}

// The fifth bit of element e in q5_0 / q5_1: bit e of the little-endian u32 qh.
inline int high_bit_32(const uint8_t* qh, int e) {
    return (qh[e / 8] >> (e % 8)) & 1;
}

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        for (int e = 0; e < kQK4_0; ++e) {
            y[e] = d * static_cast<float>(nibble_32(x[i].qs, e) - 8);
        }
        y += kQK4_0;
    }
}

void dequantize_q4_1(const BlockQ4_1* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        const float m = f16_to_f32(x[i].m);
        for (int e = 0; e < kQK4_1; ++e) {
            const float dq = d * static_cast<float>(nibble_32(x[i].qs, e));
            y[e] = dq + m;
        }
        y += kQK4_1;
    }
}

void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        for (int e = 0; e < kQK5_0; ++e) {
            const int q = nibble_32(x[i].qs, e) | (high_bit_32(x[i].qh, e) << 4);
            y[e] = d * static_cast<float>(q - 16);
        }
        y += kQK5_0;
    }
}

void dequantize_q5_1(const BlockQ5_1* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        const float m = f16_to_f32(x[i].m);
        for (int e = 0; e < kQK5_1; ++e) {
            const int q = nibble_32(x[i].qs, e) | (high_bit_32(x[i].qh, e) << 4);
            const float dq = d * static_cast<float>(q);
            y[e] = dq + m;
        }
        y += kQK5_1;
    }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        for (int e = 0; e < kQK8_0; ++e) y[e] = static_cast<float>(x[i].qs[e]) * d;
        y += kQK8_0;
    }
}

// q8_1 keeps s = d * sum(q) only for dot products; the values are d * q as in q8_0.
void dequantize_q8_1(const BlockQ8_1* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        for (int e = 0; e < kQK8_1; ++e) y[e] = static_cast<float>(x[i].qs[e]) * d;
        y += kQK8_1;
    }
}

// In q2_K, q3_K and q6_K a byte of 2-bit fields serves 4 elements 32 apart: element e of
// the super-block sits in byte (e / 128) * 32 + e % 32 at bit 2 * ((e % 128) / 32).
inline int crumb_256(const uint8_t* qs, int e) {
    return (qs[(e / 128) * 32 + e % 32] >> (2 * ((e % 128) / 32))) & 3;
}

// Scales are per 16 elements: scales byte = (min << 4) | scale.
void dequantize_q2_k(const BlockQ2_K* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        const float dmin = f16_to_f32(x[i].dmin);
        for (int s = 0; s < kQK_K / 16; ++s) {
            const float dl = d * static_cast<float>(x[i].scales[s] & 0x0F);
            const float ml = dmin * static_cast<float>(x[i].scales[s] >> 4);
            for (int l = 0; l < 16; ++l) {
                const int e = s * 16 + l;
                const float dq = dl * static_cast<float>(crumb_256(x[i].qs, e));
                y[e] = dq - ml;
            }
        }
        y += kQK_K;
    }
}

// 16 signed 6-bit scales (stored + 32): low 4 bits in nibbles of bytes 0..7 (scale s < 8 in the
// low nibble of byte s, s >= 8 in the high nibble of byte s - 8), high 2 bits in bytes 8..11
// (scale s at bits 2 * (s / 4) of byte 8 + s % 4).
inline int q3_k_scale(const uint8_t* scales, int s) {
    const int low = s < 8 ? (scales[s] & 0x0F) : (scales[s - 8] >> 4);
    const int high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (low | (high << 4)) - 32;
}

// q = 2 low bits - (hmask bit set ? 0 : 4); hmask bit e / 32 of byte e % 32.
void dequantize_q3_k(const BlockQ3_K* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        for (int s = 0; s < kQK_K / 16; ++s) {
            const float dl = d * static_cast<float>(q3_k_scale(x[i].scales, s));
            for (int l = 0; l < 16; ++l) {
                const int e = s * 16 + l;
                const int high = (x[i].hmask[e % 32] >> (e / 32)) & 1;
                const int q = crumb_256(x[i].qs, e) - (high ? 0 : 4);
                y[e] = dl * static_cast<float>(q);
            }
        }
        y += kQK_K;
    }
}

// 8 scales and 8 mins of 6 bits packed in 12 bytes (ggml get_scale_min_k4).
inline void k4_scale_min(const uint8_t* q, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Element e of a q4_K / q5_K super-block: 32-byte group e / 64, nibble (e % 64) / 32.
inline int nibble_256(const uint8_t* qs, int e) {
    return (qs[(e / 64) * 32 + e % 32] >> (4 * ((e % 64) / 32))) & 0x0F;
}

void dequantize_q4_k(const BlockQ4_K* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        const float dmin = f16_to_f32(x[i].dmin);
        for (int j = 0; j < kQK_K / 32; ++j) {
            int sc, m;
            k4_scale_min(x[i].scales, j, &sc, &m);
            const float d1 = d * static_cast<float>(sc);
            const float m1 = dmin * static_cast<float>(m);
            for (int l = 0; l < 32; ++l) {
                const int e = j * 32 + l;
                const float dq = d1 * static_cast<float>(nibble_256(x[i].qs, e));
                y[e] = dq - m1;
            }
        }
        y += kQK_K;
    }
}

// As q4_K with a fifth bit: bit e / 32 of qh[e % 32].
void dequantize_q5_k(const BlockQ5_K* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        const float dmin = f16_to_f32(x[i].dmin);
        for (int j = 0; j < kQK_K / 32; ++j) {
            int sc, m;
            k4_scale_min(x[i].scales, j, &sc, &m);
            const float d1 = d * static_cast<float>(sc);
            const float m1 = dmin * static_cast<float>(m);
            for (int l = 0; l < 32; ++l) {
                const int e = j * 32 + l;
                const int q = nibble_256(x[i].qs, e) | (((x[i].qh[e % 32] >> j) & 1) << 4);
                const float dq = d1 * static_cast<float>(q);
                y[e] = dq - m1;
            }
        }
        y += kQK_K;
    }
}

// Low 4 bits: 64-byte half e / 128, byte e % 64, nibble (e % 128) / 64. High 2 bits: as the
// 2-bit fields of q2_K. q = 6-bit value - 32, scale int8 per 16 elements.
void dequantize_q6_k(const BlockQ6_K* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        const float d = f16_to_f32(x[i].d);
        for (int s = 0; s < kQK_K / 16; ++s) {
            const float dl = d * static_cast<float>(x[i].scales[s]);
            for (int l = 0; l < 16; ++l) {
                const int e = s * 16 + l;
                const int r = e % 128;
                const int low = (x[i].ql[(e / 128) * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
                const int q = (low | (crumb_256(x[i].qh, e) << 4)) - 32;
                y[e] = dl * static_cast<float>(q);
            }
        }
        y += kQK_K;
    }
}

void dequantize_q8_k(const BlockQ8_K* x, float* y, int64_t n_blocks) {
    for (int64_t i = 0; i < n_blocks; ++i) {
        for (int e = 0; e < kQK_K; ++e) y[e] = x[i].d * static_cast<float>(x[i].qs[e]);
        y += kQK_K;
    }
}

// ggml's nearest_int: round half to even through the float mantissa, |x| <= 2^22.
inline int nearest_int(float x) {
    const float shifted = x + 12582912.f;  // 1.5 * 2^23: the integer lands in the low mantissa bits
    int32_t bits;
    std::memcpy(&bits, &shifted, 4);
    return (bits & 0x007fffff) - 0x00400000;
}

}  // namespace

bool dequantize_supported(DType dtype) {
    return dtype != DType::kI32;
}

void dequantize_row(DType dtype, const void* src, float* dst, int64_t n) {
    const int64_t block = dtype_traits(dtype).block_size;
    PURBO_ASSERT(n >= 0 && n % block == 0, "dequantize_row: {} elements of {} (block size {})", n,
                 dtype_name(dtype), block);
    const int64_t n_blocks = n / block;
    switch (dtype) {
        case DType::kF32:
            std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
            return;
        case DType::kF16: {
            const auto* h = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(h[i]);
            return;
        }
        case DType::kBF16: {
            const auto* h = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
            return;
        }
        case DType::kQ4_0:
            return dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, n_blocks);
        case DType::kQ4_1:
            return dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, n_blocks);
        case DType::kQ5_0:
            return dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, n_blocks);
        case DType::kQ5_1:
            return dequantize_q5_1(static_cast<const BlockQ5_1*>(src), dst, n_blocks);
        case DType::kQ8_0:
            return dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, n_blocks);
        case DType::kQ8_1:
            return dequantize_q8_1(static_cast<const BlockQ8_1*>(src), dst, n_blocks);
        case DType::kQ2_K:
            return dequantize_q2_k(static_cast<const BlockQ2_K*>(src), dst, n_blocks);
        case DType::kQ3_K:
            return dequantize_q3_k(static_cast<const BlockQ3_K*>(src), dst, n_blocks);
        case DType::kQ4_K:
            return dequantize_q4_k(static_cast<const BlockQ4_K*>(src), dst, n_blocks);
        case DType::kQ5_K:
            return dequantize_q5_k(static_cast<const BlockQ5_K*>(src), dst, n_blocks);
        case DType::kQ6_K:
            return dequantize_q6_k(static_cast<const BlockQ6_K*>(src), dst, n_blocks);
        case DType::kQ8_K:
            return dequantize_q8_k(static_cast<const BlockQ8_K*>(src), dst, n_blocks);
        case DType::kF8E4M3: {
            const auto* b = static_cast<const uint8_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_f32(b[i]);
            return;
        }
        case DType::kI32:
            break;
    }
    PURBO_ASSERT(false, "dequantize_row: {} is not a floating-point format", dtype_name(dtype));
}

// ggml quantize_row_q8_0_ref: d = max|x| / 127, q = roundf(x / d) (half away from zero).
void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
    PURBO_ASSERT(n % kQK8_0 == 0);
    auto* y = static_cast<BlockQ8_0*>(dst);
    for (int64_t i = 0; i < n / kQK8_0; ++i) {
        const float* x = src + i * kQK8_0;
        float amax = 0.0f;
        for (int j = 0; j < kQK8_0; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        for (int j = 0; j < kQK8_0; ++j) y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
    }
}

// ggml quantize_row_q8_1_ref: as q8_0, plus s = sum(q) * d.
void quantize_row_q8_1(const float* src, void* dst, int64_t n) {
    PURBO_ASSERT(n % kQK8_1 == 0);
    auto* y = static_cast<BlockQ8_1*>(dst);
    for (int64_t i = 0; i < n / kQK8_1; ++i) {
        const float* x = src + i * kQK8_1;
        float amax = 0.0f;
        for (int j = 0; j < kQK8_1; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < kQK8_1; ++j) {
            y[i].qs[j] = static_cast<int8_t>(std::roundf(x[j] * id));
            sum += y[i].qs[j];
        }
        y[i].s = f32_to_f16(static_cast<float>(sum) * d);
    }
}

// ggml quantize_row_q4_0_ref: d = (signed value of largest magnitude) / -8, so that value maps
// to q = 0 exactly; q = min(15, trunc(x / d + 8.5)).
void quantize_row_q4_0(const float* src, void* dst, int64_t n) {
    PURBO_ASSERT(n % kQK4_0 == 0);
    auto* y = static_cast<BlockQ4_0*>(dst);
    for (int64_t i = 0; i < n / kQK4_0; ++i) {
        const float* x = src + i * kQK4_0;
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < kQK4_0; ++j) {
            if (amax < std::fabs(x[j])) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        for (int j = 0; j < kQK4_0 / 2; ++j) {
            const float x0 = x[j] * id;
            const float x1 = x[kQK4_0 / 2 + j] * id;
            const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f)));
            const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f)));
            y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
        }
    }
}

// ggml quantize_row_q4_1_ref: d = (max - min) / 15, m = min, q = min(15, trunc((x - m) / d + 0.5)).
void quantize_row_q4_1(const float* src, void* dst, int64_t n) {
    PURBO_ASSERT(n % kQK4_1 == 0);
    auto* y = static_cast<BlockQ4_1*>(dst);
    for (int64_t i = 0; i < n / kQK4_1; ++i) {
        const float* x = src + i * kQK4_1;
        float min = x[0];
        float max = x[0];
        for (int j = 1; j < kQK4_1; ++j) {
            min = std::min(min, x[j]);
            max = std::max(max, x[j]);
        }
        const float d = (max - min) / 15.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = f32_to_f16(d);
        y[i].m = f32_to_f16(min);
        for (int j = 0; j < kQK4_1 / 2; ++j) {
            const float x0 = (x[j] - min) * id;
            const float x1 = (x[kQK4_1 / 2 + j] - min) * id;
            const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f)));
            const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f)));
            y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
        }
    }
}

// ggml quantize_row_q8_K_ref: scale -127 / (signed value of largest magnitude), round half to
// even, d = 1 / scale (f32), bsums = sums of 16 quants for the K-quant dot products.
void quantize_row_q8_k(const float* src, void* dst, int64_t n) {
    PURBO_ASSERT(n % kQK_K == 0);
    auto* y = static_cast<BlockQ8_K*>(dst);
    for (int64_t i = 0; i < n / kQK_K; ++i) {
        const float* x = src + i * kQK_K;
        float amax = 0.0f;
        float max = 0.0f;
        for (int j = 0; j < kQK_K; ++j) {
            if (std::fabs(x[j]) > amax) {
                amax = std::fabs(x[j]);
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            y[i].d = 0.0f;
            std::memset(y[i].qs, 0, sizeof(y[i].qs));
            std::memset(y[i].bsums, 0, sizeof(y[i].bsums));
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < kQK_K; ++j) {
            y[i].qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
        }
        for (int j = 0; j < kQK_K / 16; ++j) {
            int sum = 0;
            for (int l = 0; l < 16; ++l) sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = static_cast<int16_t>(sum);
        }
        y[i].d = 1.0f / iscale;
    }
}

}  // namespace purbo
