#include "backend/cpu/vec-dot-f32.h"

#include <immintrin.h>

#include "core/fp16.h"

namespace purbo {

void vec_dot_rows_f32act_scalar(DType dtype, int64_t nb, const void* w, const float* x, int64_t x_stride,
                                int n_rows, float* out) {
    float block[32];
    for (int r = 0; r < n_rows; ++r) out[r] = 0.0f;
    const size_t block_bytes = dtype_traits(dtype).block_bytes;
    for (int64_t b = 0; b < nb; ++b) {
        dequantize_row(dtype, static_cast<const uint8_t*>(w) + b * block_bytes, block, 32);
        for (int r = 0; r < n_rows; ++r) {
            const float* xr = x + r * x_stride + b * 32;
            for (int i = 0; i < 32; ++i) out[r] += block[i] * xr[i];
        }
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__)

namespace {

// A block dequantised into two vectors of 16 floats: elements 0..15 and 16..31.
struct Block32 {
    __m512 lo, hi;
};

// q4 nibbles: low nibbles are elements 0..15, high nibbles 16..31.
inline void unpack_nibbles(const uint8_t* qs, __m512* lo, __m512* hi) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m128i mask = _mm_set1_epi8(0x0F);
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(bytes, mask)));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask)));
}

inline Block32 dequant(const BlockQ4_0& b) {
    __m512 lo, hi;
    unpack_nibbles(b.qs, &lo, &hi);
    const float d = f16_to_f32(b.d);
    const __m512 vd = _mm512_set1_ps(d), vm = _mm512_set1_ps(-8.0f * d);  // d (q - 8) = d q - 8 d
    return {_mm512_fmadd_ps(lo, vd, vm), _mm512_fmadd_ps(hi, vd, vm)};
}

inline Block32 dequant(const BlockQ4_1& b) {
    __m512 lo, hi;
    unpack_nibbles(b.qs, &lo, &hi);
    const __m512 vd = _mm512_set1_ps(f16_to_f32(b.d)), vm = _mm512_set1_ps(f16_to_f32(b.m));
    return {_mm512_fmadd_ps(lo, vd, vm), _mm512_fmadd_ps(hi, vd, vm)};
}

inline Block32 dequant(const BlockQ8_0& b) {
    const __m512 vd = _mm512_set1_ps(f16_to_f32(b.d));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16));
    return {_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), vd),
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), vd)};
}

template <int kRows, class Block>
void dot_rows(int64_t nb, const Block* w, const float* x, int64_t x_stride, float* out) {
    __m512 acc[kRows];
    for (int r = 0; r < kRows; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const Block32 v = dequant(w[b]);
        for (int r = 0; r < kRows; ++r) {
            const float* xr = x + r * x_stride + b * 32;
            acc[r] = _mm512_fmadd_ps(v.lo, _mm512_loadu_ps(xr), acc[r]);
            acc[r] = _mm512_fmadd_ps(v.hi, _mm512_loadu_ps(xr + 16), acc[r]);
        }
    }
    for (int r = 0; r < kRows; ++r) out[r] = _mm512_reduce_add_ps(acc[r]);
}

template <class Block>
void dispatch(int64_t nb, const Block* w, const float* x, int64_t x_stride, int n_rows, float* out) {
    switch (n_rows) {
        case 1: dot_rows<1>(nb, w, x, x_stride, out); return;
        case 2: dot_rows<2>(nb, w, x, x_stride, out); return;
        case 3: dot_rows<3>(nb, w, x, x_stride, out); return;
        default: dot_rows<4>(nb, w, x, x_stride, out); return;
    }
}

}  // namespace

void vec_dot_rows_q4_0_f32(int64_t nb, const BlockQ4_0* w, const float* x, int64_t x_stride, int n_rows,
                           float* out) {
    dispatch(nb, w, x, x_stride, n_rows, out);
}
void vec_dot_rows_q4_1_f32(int64_t nb, const BlockQ4_1* w, const float* x, int64_t x_stride, int n_rows,
                           float* out) {
    dispatch(nb, w, x, x_stride, n_rows, out);
}
void vec_dot_rows_q8_0_f32(int64_t nb, const BlockQ8_0* w, const float* x, int64_t x_stride, int n_rows,
                           float* out) {
    dispatch(nb, w, x, x_stride, n_rows, out);
}

#else  // no AVX-512: the plain loops

void vec_dot_rows_q4_0_f32(int64_t nb, const BlockQ4_0* w, const float* x, int64_t x_stride, int n_rows,
                           float* out) {
    vec_dot_rows_f32act_scalar(DType::kQ4_0, nb, w, x, x_stride, n_rows, out);
}
void vec_dot_rows_q4_1_f32(int64_t nb, const BlockQ4_1* w, const float* x, int64_t x_stride, int n_rows,
                           float* out) {
    vec_dot_rows_f32act_scalar(DType::kQ4_1, nb, w, x, x_stride, n_rows, out);
}
void vec_dot_rows_q8_0_f32(int64_t nb, const BlockQ8_0* w, const float* x, int64_t x_stride, int n_rows,
                           float* out) {
    vec_dot_rows_f32act_scalar(DType::kQ8_0, nb, w, x, x_stride, n_rows, out);
}

#endif

}  // namespace purbo
