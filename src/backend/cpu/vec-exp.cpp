#include "backend/cpu/vec-exp.h"

#include <cmath>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace purbo {

float exp_shifted_sum(float* x, int64_t n, float shift) {
#if defined(__AVX512F__)
    const __m512 vshift = _mm512_set1_ps(shift);
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t t = 0; t < n; t += 16) {
        const __mmask16 live = n - t >= 16 ? static_cast<__mmask16>(0xffff)
                                           : static_cast<__mmask16>((1u << (n - t)) - 1u);
        const __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + t), vshift);
        const __mmask16 tiny = _mm512_cmp_ps_mask(v, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
        // min/max return their second operand when one is NaN: v second, so NaN passes through.
        const __m512 c = _mm512_max_ps(_mm512_set1_ps(-87.3f), _mm512_min_ps(_mm512_set1_ps(88.37f), v));
        const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), c);
        r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
        __m512 p = _mm512_set1_ps(1.9875691500e-4f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
        p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
        // NaN scores stay NaN (compares with NaN are false, so they are not flushed).
        const __m512 e = _mm512_maskz_mov_ps(static_cast<__mmask16>(live & ~tiny), _mm512_scalef_ps(p, k));
        _mm512_mask_storeu_ps(x + t, live, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    return _mm512_reduce_add_ps(vsum);
#else
    float sum = 0;
    for (int64_t t = 0; t < n; ++t) {
        const float v = x[t] - shift;
        x[t] = v < -87.3f ? 0.0f : std::exp(v);  // the same flush as the vector body
        sum += x[t];
    }
    return sum;
#endif
}

}  // namespace purbo
