// AVX-512 building blocks shared by the cpu backend's attention and block selection: rows of
// an f32 or bf16 cache loaded as f32, and the horizontal sums of many vectors at once.
#pragma once

#if defined(__AVX512F__)
#include <cstdint>

#include "core/fp8.h"
#include "core/simd.h"

namespace purbo {

// 16 elements of an f32 row, or of a bf16 or f8 e4m3 row widened to f32 (exact).
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
// e4m3 -> f32 through the f16 conversion: s.eeee.mmm placed as the f16 s.0eeee.mmm0000000 is
// the value times 2^-8 (exponent bias 15 against 7), subnormals included (f16's subnormals
// step by 2^-24, e4m3's by 2^-9 = 2^-24 x 2^7 x 2^8), which vcvtph2ps converts exactly. A
// sign-extended byte shifted left by 7 has the sign in bit 15 and its copy in bit 14, which the
// mask clears. 0x7F and 0xFF (NaN) read as +-480; the
// stores never write them for finite keys.
inline __m512 load16(const F8E4M3* p) {
    const __m256i words =
        _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i f16 = _mm256_and_si256(_mm256_slli_epi16(words, 7),
                                         _mm256_set1_epi16(static_cast<short>(0xBFFF)));
    return _mm512_mul_ps(_mm512_cvtph_ps(f16), _mm512_set1_ps(256.0f));
}
inline __m512 load16(const uint16_t* p) {  // bf16 -> f32: the bits shifted into the high half
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// The first two levels of the transposed sums of N vectors: u[k] (N / 4 of them), 128-bit
// lane L, holds lane L's partial sums of v[4k .. 4k + 3].
template <int N>
inline void fold_to_quads(const __m512* v, __m512* u) {
    __m512 t[N / 2];
    for (int i = 0; i < N / 2; ++i)
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < N / 4; ++i) {
        const __m512d a = _mm512_castps_pd(t[2 * i]), b = _mm512_castps_pd(t[2 * i + 1]);
        u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
}

// hsum(v[i]) in lane i: pairs of vectors folded with unpacks, then 128-bit lanes with
// shuffle_f32x4, 15 adds and 30 shuffles for 16 sums instead of a reduction tree per vector.
inline __m512 transpose_sums16(const __m512* v) {
    __m512 u[4];
    fold_to_quads<16>(v, u);
    const __m512 x01 = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    const __m512 x23 = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm512_shuffle_f32x4(u[2], u[3], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// hsum(v[i]) in lane i < 8 of the result (lanes 8..15 repeat them): fold_to_quads, then the
// four 128-bit lanes folded.
inline __m512 transpose_sums8(const __m512* v) {
    __m512 u[2];
    fold_to_quads<8>(v, u);
    const __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(u[0], u[1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x, x, _MM_SHUFFLE(3, 1, 3, 1)));
}

}  // namespace purbo
#endif
