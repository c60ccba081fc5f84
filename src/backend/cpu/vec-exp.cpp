#include "backend/cpu/vec-exp.h"

#include <cmath>
#if defined(__AVX512F__)
#include "core/simd.h"
#endif

namespace purbo {

#if defined(__AVX512F__)
namespace {

// Cephes' single-precision exp of 16 lanes: x clamped to [-87.3, 88.37], n = round(x log2 e),
// r = x - n ln 2 (ln 2 in two parts), a degree-6 polynomial for e^r, and 2^n applied with
// scalef. About 1 ulp. min/max return their second operand when one is NaN: with x second,
// NaN passes through.
// e^r for |r| <= ln 2 / 2: Cephes' degree-6 polynomial.
inline __m512 exp_reduced16(__m512 r) {
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    return _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
}

inline __m512 exp16(__m512 x) {
    const __m512 c = _mm512_max_ps(_mm512_set1_ps(-87.3f), _mm512_min_ps(_mm512_set1_ps(88.37f), x));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), c);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    return _mm512_scalef_ps(exp_reduced16(r), k);
}

// 2^x the same way: n = round(x), f = x - n exactly (|f| <= 1/2), 2^f = e^(f ln 2). x is
// clamped to [-126, 127.99] (FLT_MIN .. under FLT_MAX); about 1-2 ulp.
inline __m512 exp2_16(__m512 x) {
    const __m512 c = _mm512_max_ps(_mm512_set1_ps(-126.0f), _mm512_min_ps(_mm512_set1_ps(127.99f), x));
    const __m512 n = _mm512_roundscale_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_mul_ps(_mm512_sub_ps(c, n), _mm512_set1_ps(0.693147180559945309f));
    return _mm512_scalef_ps(exp_reduced16(r), n);
}

// Lanes [t, min(t + 16, n)).
inline __mmask16 live_lanes(int64_t t, int64_t n) {
    return n - t >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - t)) - 1u);
}

}  // namespace
#endif

namespace {

// sum_t f(x[t] - shift) for t < n, f = e^v (kBase2 false) or 2^v, terms with v below kFlush
// (FLT_MIN's exponent in that base) 0; with kStore the terms are written to out (may be x).
template <bool kBase2, bool kStore>
float shifted_exp_sum(const float* x, float* out, int64_t n, float shift) {
    constexpr float kFlush = kBase2 ? -126.0f : -87.3f;
#if defined(__AVX512F__)
    const __m512 vshift = _mm512_set1_ps(shift);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t t = 0; t < n; t += 16) {
        const __mmask16 live = live_lanes(t, n);
        const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + t), vshift);
        // Below FLT_MIN: 0 (compares with NaN are false, so NaN is not flushed).
        const __mmask16 tiny = _mm512_cmp_ps_mask(v, _mm512_set1_ps(kFlush), _CMP_LT_OQ);
        const __m512 e = _mm512_maskz_mov_ps(static_cast<__mmask16>(live & ~tiny), kBase2 ? exp2_16(v) : exp16(v));
        if constexpr (kStore) _mm512_mask_storeu_ps(out + t, live, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    return _mm512_reduce_add_ps(vsum);
#else
    float sum = 0;
    for (int64_t t = 0; t < n; ++t) {
        const float v = x[t] - shift;
        const float e = v < kFlush ? 0.0f : (kBase2 ? std::exp2(v) : std::exp(v));  // the same flush as the vector body
        if constexpr (kStore) out[t] = e;
        sum += e;
    }
    return sum;
#endif
}

}  // namespace

float exp_shifted_sum(float* x, int64_t n, float shift) { return shifted_exp_sum<false, true>(x, x, n, shift); }

float exp2_shifted_sum(const float* x, int64_t n, float shift) {
    return shifted_exp_sum<true, false>(x, nullptr, n, shift);
}

void silu_mul(const float* g, const float* u, float* out, int64_t n) {
#if defined(__AVX512F__)
    for (int64_t t = 0; t < n; t += 16) {
        const __mmask16 live = live_lanes(t, n);
        const __m512 gv = _mm512_maskz_loadu_ps(live, g + t);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));  // exp(-g)
        const __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(out + t, live, _mm512_mul_ps(s, _mm512_maskz_loadu_ps(live, u + t)));
    }
#else
    for (int64_t t = 0; t < n; ++t) out[t] = g[t] / (1.0f + std::exp(-g[t])) * u[t];
#endif
}

}  // namespace purbo
