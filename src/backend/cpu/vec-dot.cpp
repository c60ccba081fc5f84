#include "backend/cpu/vec-dot.h"

#include <cstring>
#include <type_traits>

#include "core/fp16.h"
#include "core/status.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define PURBO_VEC_DOT_AVX2 1
#include "core/simd.h"
#endif

#include <vector>

namespace purbo {

namespace {

// The reference quantisers (quantize_row_q8_1, or q8_0 without the sum) into ActBlockQ8, one
// block at a time.
void quantize_activation_reference(const float* x, ActBlockQ8* y, int64_t k, bool with_sum) {
    for (int64_t b = 0; b < k / kQK8_1; ++b) {
        if (with_sum) {
            BlockQ8_1 q;
            quantize_row_q8_1(x + b * kQK8_1, &q, kQK8_1);
            y[b].d = f16_to_f32(q.d);
            y[b].s = f16_to_f32(q.s);
            std::memcpy(y[b].qs, q.qs, sizeof(q.qs));
        } else {
            BlockQ8_0 q;
            quantize_row_q8_0(x + b * kQK8_0, &q, kQK8_0);
            y[b].d = f16_to_f32(q.d);
            y[b].s = 0.0f;
            std::memcpy(y[b].qs, q.qs, sizeof(q.qs));
        }
    }
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
// The same values with 512-bit vectors: d = amax / 127 and id = 1 / d as scalars (the same
// operations), q = roundf(x id) with roundf's ties away from zero (trunc, then one step away
// from zero where the exact remainder is >= 1/2). One thread quantises each matmul's
// activations while the other waits, so the scalar loop (a roundf call per element) cost
// twice its own time in decode.
void quantize_activation_avx512(const float* x, ActBlockQ8* y, int64_t k, bool with_sum) {
    const __m512 sign_bit = _mm512_set1_ps(-0.0f), half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    for (int64_t b = 0; b < k / kQK8_1; ++b) {
        const __m512 v0 = _mm512_loadu_ps(x + b * 32), v1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign_bit, v0), _mm512_andnot_ps(sign_bit, v1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        __m512i q[2];
        for (int h = 0; h < 2; ++h) {
            const __m512 v = _mm512_mul_ps(h == 0 ? v0 : v1, _mm512_set1_ps(id));
            const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __mmask16 away = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign_bit, _mm512_sub_ps(v, t)), half, _CMP_GE_OQ);
            // t + copysign(1, v) where the remainder reaches 1/2
            const __m512 step = _mm512_or_ps(one, _mm512_and_ps(sign_bit, v));
            q[h] = _mm512_cvttps_epi32(_mm512_mask_add_ps(t, away, t, step));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs), _mm512_cvtsepi32_epi8(q[0]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs + 16), _mm512_cvtsepi32_epi8(q[1]));
        y[b].d = f16_to_f32(f32_to_f16(d));
        const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
        y[b].s = with_sum ? f16_to_f32(f32_to_f16(static_cast<float>(sum) * d)) : 0.0f;
    }
}
#endif

void quantize_activation(const float* x, ActBlockQ8* y, int64_t k, bool with_sum) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    quantize_activation_avx512(x, y, k, with_sum);
#else
    quantize_activation_reference(x, y, k, with_sum);
#endif
}

}  // namespace

void quantize_activation_q8_0(const float* x, ActBlockQ8* y, int64_t k) { quantize_activation(x, y, k, false); }
void quantize_activation_q8_1(const float* x, ActBlockQ8* y, int64_t k) { quantize_activation(x, y, k, true); }
void quantize_activation_q8_0_reference(const float* x, ActBlockQ8* y, int64_t k) {
    quantize_activation_reference(x, y, k, false);
}
void quantize_activation_q8_1_reference(const float* x, ActBlockQ8* y, int64_t k) {
    quantize_activation_reference(x, y, k, true);
}

// ---- scalar bodies: the definition the SIMD bodies must match -----------------------------

float vec_dot_q4_0_q8_0_scalar(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y) {
    float sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int i = 0; i < kQK4_0 / 2; ++i) {
            isum += ((x[b].qs[i] & 0x0f) - 8) * y[b].qs[i];
            isum += ((x[b].qs[i] >> 4) - 8) * y[b].qs[i + kQK4_0 / 2];
        }
        sum += f16_to_f32(x[b].d) * y[b].d * static_cast<float>(isum);
    }
    return sum;
}

float vec_dot_q4_1_q8_1_scalar(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y) {
    float sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int i = 0; i < kQK4_1 / 2; ++i) {
            isum += (x[b].qs[i] & 0x0f) * y[b].qs[i];
            isum += (x[b].qs[i] >> 4) * y[b].qs[i + kQK4_1 / 2];
        }
        sum += f16_to_f32(x[b].d) * y[b].d * static_cast<float>(isum) + f16_to_f32(x[b].m) * y[b].s;
    }
    return sum;
}

float vec_dot_q8_0_q8_0_scalar(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y) {
    float sum = 0;
    for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int i = 0; i < kQK8_0; ++i) isum += x[b].qs[i] * y[b].qs[i];
        sum += f16_to_f32(x[b].d) * y[b].d * static_cast<float>(isum);
    }
    return sum;
}

void repack_q4_1_x8(const BlockQ4_1* rows, int64_t m, int64_t nb, BlockQ4_1x8* out) {
    for (int64_t g = 0; g < m / kQ4_1x8Rows; ++g) {
        for (int64_t b = 0; b < nb; ++b) {
            BlockQ4_1x8& o = out[g * nb + b];
            for (int r = 0; r < kQ4_1x8Rows; ++r) {
                const BlockQ4_1& src = rows[(g * kQ4_1x8Rows + r) * nb + b];
                o.d[r] = src.d;
                o.m[r] = src.m;
                for (int j = 0; j < 4; ++j) std::memcpy(o.qs + 32 * j + 4 * r, src.qs + 4 * j, 4);
            }
        }
    }
}

void vec_dot_x8_q4_1_q8_1_scalar(int64_t nb, const BlockQ4_1x8* w, const ActBlockQ8* y, float* out) {
    for (int r = 0; r < kQ4_1x8Rows; ++r) {
        float sum = 0;
        for (int64_t b = 0; b < nb; ++b) {
            int32_t isum = 0;
            for (int j = 0; j < 4; ++j) {
                for (int e = 0; e < 4; ++e) {
                    const uint8_t q = w[b].qs[32 * j + 4 * r + e];
                    isum += (q & 0x0f) * y[b].qs[4 * j + e] + (q >> 4) * y[b].qs[16 + 4 * j + e];
                }
            }
            sum += f16_to_f32(w[b].d[r]) * y[b].d * static_cast<float>(isum) + f16_to_f32(w[b].m[r]) * y[b].s;
        }
        out[r] = sum;
    }
}

#if PURBO_VEC_DOT_AVX2

namespace {

float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 16 bytes of nibbles -> 32 bytes in [0, 15]: low nibbles (elements 0..15) in the low lane,
// high nibbles (elements 16..31) in the high lane, the order of the q4 blocks.
__m256i unpack_nibbles(const uint8_t* qs) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// Sums of 4 adjacent products u8 x s8 -> 8 int32. u in [0, 255] but here at most 128, s in
// [-127, 127]: maddubs's int16 pair sums stay below 2 * 128 * 127 < 32767, so it never saturates.
__m256i dot_u8_s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// acc + dot_u8_s8(u, s): VNNI accumulates in the same instruction.
__m256i dot_u8_s8_add(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, dot_u8_s8(u, s));
#endif
}

// Signed x signed through the u8 x s8 instruction: |x| * (y with x's sign).
__m256i dot_s8_s8(__m256i x, __m256i y) {
    return dot_u8_s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

// The integer sums of block b (8 lanes of int32 partial sums) for each weight format.
__m256i block_sums(const BlockQ4_0& x, const ActBlockQ8& y) {
    const __m256i qx = _mm256_sub_epi8(unpack_nibbles(x.qs), _mm256_set1_epi8(8));
    return dot_s8_s8(qx, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs)));
}
__m256i block_sums(const BlockQ4_1& x, const ActBlockQ8& y) {
    return dot_u8_s8(unpack_nibbles(x.qs),
                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs)));
}
__m256i block_sums(const BlockQ8_0& x, const ActBlockQ8& y) {
    return dot_s8_s8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.qs)),
                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y.qs)));
}

// sum_b dx_b dy_b isum_b (+ mx_b s_b for q4_1). Four blocks per step keep four FMA chains and
// integer sums in flight (measured x2 over one block per step at k = 1536); the leftover
// blocks take the same SIMD body one at a time (a scalar tail cost x2 at k = 576, 18 blocks).
template <class Block>
float vec_dot_blocks(int64_t nb, const Block* x, const ActBlockQ8* y) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    float sum_min = 0;
    __m128 min_acc[4] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    auto step = [&](int64_t b, int u) {
        if constexpr (std::is_same_v<Block, BlockQ4_1>) {
            // dx and mx (adjacent f16) in one load and one conversion, times (dy, sy): lane 0
            // scales the block's integer sum, lane 1 is its min term (one chain per u).
            int32_t dm_bits;
            std::memcpy(&dm_bits, &x[b].d, sizeof(dm_bits));
            const __m128 prod = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits)),
                                           _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(&y[b].d))));
            acc[u] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(block_sums(x[b], y[b])), acc[u]);
            min_acc[u] = _mm_add_ss(min_acc[u], _mm_movehdup_ps(prod));
        } else {
            acc[u] = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(x[b].d) * y[b].d),
                                     _mm256_cvtepi32_ps(block_sums(x[b], y[b])), acc[u]);
        }
    };
    int64_t b = 0;
    for (; b + 3 < nb; b += 4) {
        for (int u = 0; u < 4; ++u) step(b + u, u);
    }
    for (; b < nb; ++b) step(b, 0);
    if constexpr (std::is_same_v<Block, BlockQ4_1>)
        sum_min = _mm_cvtss_f32(_mm_add_ss(_mm_add_ss(min_acc[0], min_acc[1]), _mm_add_ss(min_acc[2], min_acc[3])));
    return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) +
           sum_min;
}

}  // namespace

float vec_dot_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y) {
    return vec_dot_blocks(nb, x, y);
}

// Per block: for j = 0..3 the 8 rows' bytes 4j .. 4j + 3 (one 32-byte load), their low
// nibbles against the broadcast activation bytes 4j .. 4j + 3 and their high nibbles against
// 16 + 4j .. 16 + 4j + 3, 8 integer dot products into two int32 chains; then the 8 rows'
// scales (one 16 x f16 conversion: d in lanes 0..7, m in 8..15) times dy, and the m s term.
// Measured on one core, 1536 x 576 in cache: 12.6 us against 45.7 us for a row at a time.
void vec_dot_x8_q4_1_q8_1(int64_t nb, const BlockQ4_1x8* w, const ActBlockQ8* y, float* out) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps(), acc_m = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const BlockQ4_1x8& wb = w[b];
        const ActBlockQ8& yb = y[b];
        __m256i lo_sum = _mm256_setzero_si256(), hi_sum = _mm256_setzero_si256();
        for (int j = 0; j < 4; ++j) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qs + 32 * j));
            int32_t y_lo, y_hi;
            std::memcpy(&y_lo, yb.qs + 4 * j, sizeof(y_lo));
            std::memcpy(&y_hi, yb.qs + 16 + 4 * j, sizeof(y_hi));
            lo_sum = dot_u8_s8_add(lo_sum, _mm256_and_si256(q, low4), _mm256_set1_epi32(y_lo));
            hi_sum = dot_u8_s8_add(hi_sum, _mm256_and_si256(_mm256_srli_epi16(q, 4), low4), _mm256_set1_epi32(y_hi));
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.d)));
        const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.m)));
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(yb.d)),
                              _mm256_cvtepi32_ps(_mm256_add_epi32(lo_sum, hi_sum)), acc);
        acc_m = _mm256_fmadd_ps(m, _mm256_set1_ps(yb.s), acc_m);
    }
    _mm256_storeu_ps(out, _mm256_add_ps(acc, acc_m));
}
float vec_dot_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y) {
    return vec_dot_blocks(nb, x, y);
}
float vec_dot_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y) {
    return vec_dot_blocks(nb, x, y);
}

namespace {

// A symmetric block's 32 integers as signed bytes: q4_0's nibbles less 8, q8_0's as stored.
inline __m256i signed_ints(const BlockQ4_0& b) {
    return _mm256_sub_epi8(unpack_nibbles(b.qs), _mm256_set1_epi8(8));
}
inline __m256i signed_ints(const BlockQ8_0& b) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// One weight row (q4_0 or q8_0: d times signed integers) against R activation rows; each
// weight block is loaded and unpacked once.
template <int R, class Block>
void dot_rows_signed(int64_t nb, const Block* x, const ActBlockQ8* y, int64_t y_stride,
                     float* out) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i qx = signed_ints(x[b]);
        const __m256i ax = _mm256_sign_epi8(qx, qx);  // |qx|; its sign moves onto each row
        const float dx = f16_to_f32(x[b].d);
        for (int r = 0; r < R; ++r) {
            const ActBlockQ8& yb = y[r * y_stride + b];
            const __m256i sy =
                _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(yb.qs)), qx);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx * yb.d),
                                     _mm256_cvtepi32_ps(dot_u8_s8(ax, sy)), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
}

// q4_1 (d q + m) against R activation rows.
template <int R>
void dot_rows_q4_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y, int64_t y_stride,
                   float* out) {
    __m256 acc[R];
    float sum_min[R];  // sum_b mx_b s_b
    for (int r = 0; r < R; ++r) {
        acc[r] = _mm256_setzero_ps();
        sum_min[r] = 0;
    }
    for (int64_t b = 0; b < nb; ++b) {
        const __m256i qx = unpack_nibbles(x[b].qs);
        const float dx = f16_to_f32(x[b].d), mx = f16_to_f32(x[b].m);
        for (int r = 0; r < R; ++r) {
            const ActBlockQ8& yb = y[r * y_stride + b];
            const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yb.qs));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dx * yb.d),
                                     _mm256_cvtepi32_ps(dot_u8_s8(qx, qy)), acc[r]);
            sum_min[r] += mx * yb.s;
        }
    }
    for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]) + sum_min[r];
}

// Runtime row count -> template constant (2..4; one row has its own unrolled kernel).
template <class Block, class Single>
void dispatch_rows(int64_t nb, const Block* x, const ActBlockQ8* y, int64_t y_stride, int n_rows,
                   float* out, Single single,
                   void (*r2)(int64_t, const Block*, const ActBlockQ8*, int64_t, float*),
                   void (*r3)(int64_t, const Block*, const ActBlockQ8*, int64_t, float*),
                   void (*r4)(int64_t, const Block*, const ActBlockQ8*, int64_t, float*)) {
    switch (n_rows) {
        case 1:
            out[0] = single(nb, x, y);
            return;
        case 2:
            r2(nb, x, y, y_stride, out);
            return;
        case 3:
            r3(nb, x, y, y_stride, out);
            return;
        case 4:
            r4(nb, x, y, y_stride, out);
            return;
        default:
            PURBO_ASSERT(false, "vec_dot_rows: {} rows (1..{})", n_rows, kVecDotMaxRows);
    }
}

}  // namespace

void vec_dot_rows_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out) {
    dispatch_rows(nb, x, y, y_stride, n_rows, out, vec_dot_q4_0_q8_0, dot_rows_signed<2, BlockQ4_0>,
                  dot_rows_signed<3, BlockQ4_0>, dot_rows_signed<4, BlockQ4_0>);
}

void vec_dot_rows_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out) {
    dispatch_rows(nb, x, y, y_stride, n_rows, out, vec_dot_q4_1_q8_1, dot_rows_q4_1<2>,
                  dot_rows_q4_1<3>, dot_rows_q4_1<4>);
}

void vec_dot_rows_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out) {
    dispatch_rows(nb, x, y, y_stride, n_rows, out, vec_dot_q8_0_q8_0, dot_rows_signed<2, BlockQ8_0>,
                  dot_rows_signed<3, BlockQ8_0>, dot_rows_signed<4, BlockQ8_0>);
}

float vec_dot_f32(int64_t k, const float* w, const float* x) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float sum = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < k; ++i) sum += w[i] * x[i];
    return sum;
}

float vec_dot_f16_f32(int64_t k, const uint16_t* w, const float* x) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
        const __m256 w1 =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i + 8)));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1);
    }
    float sum = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < k; ++i) sum += f16_to_f32(w[i]) * x[i];
    return sum;
}

float vec_dot_bf16_f32(int64_t k, const uint16_t* w, const float* x) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    // bf16 -> f32 is a 16-bit left shift of the bits.
    auto load = [](const uint16_t* p) {
        const __m256i wide =
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    };
    for (; i + 16 <= k; i += 16) {
        acc0 = _mm256_fmadd_ps(load(w + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(load(w + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float sum = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < k; ++i) sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

#else  // portable fallbacks

void vec_dot_rows_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out) {
    for (int r = 0; r < n_rows; ++r) out[r] = vec_dot_q4_0_q8_0_scalar(nb, x, y + r * y_stride);
}
void vec_dot_rows_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out) {
    for (int r = 0; r < n_rows; ++r) out[r] = vec_dot_q4_1_q8_1_scalar(nb, x, y + r * y_stride);
}
void vec_dot_rows_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y, int64_t y_stride,
                            int n_rows, float* out) {
    for (int r = 0; r < n_rows; ++r) out[r] = vec_dot_q8_0_q8_0_scalar(nb, x, y + r * y_stride);
}

float vec_dot_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, const ActBlockQ8* y) {
    return vec_dot_q4_0_q8_0_scalar(nb, x, y);
}
void vec_dot_x8_q4_1_q8_1(int64_t nb, const BlockQ4_1x8* w, const ActBlockQ8* y, float* out) {
    vec_dot_x8_q4_1_q8_1_scalar(nb, w, y, out);
}
float vec_dot_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, const ActBlockQ8* y) {
    return vec_dot_q4_1_q8_1_scalar(nb, x, y);
}
float vec_dot_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, const ActBlockQ8* y) {
    return vec_dot_q8_0_q8_0_scalar(nb, x, y);
}

float vec_dot_f32(int64_t k, const float* w, const float* x) {
    float sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += w[i] * x[i];
    return sum;
}

float vec_dot_f16_f32(int64_t k, const uint16_t* w, const float* x) {
    float sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += f16_to_f32(w[i]) * x[i];
    return sum;
}

float vec_dot_bf16_f32(int64_t k, const uint16_t* w, const float* x) {
    float sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += bf16_to_f32(w[i]) * x[i];
    return sum;
}

#endif

// One call per group of weight rows (both builds: the row kernels above inline here).
void vec_dot_wrows_q4_0_q8_0(int64_t nb, const BlockQ4_0* x, int n_w, const ActBlockQ8* y, float* out) {
    for (int j = 0; j < n_w; ++j) out[j] = vec_dot_q4_0_q8_0(nb, x + j * nb, y);
}
void vec_dot_wrows_q4_1_q8_1(int64_t nb, const BlockQ4_1* x, int n_w, const ActBlockQ8* y, float* out) {
    for (int j = 0; j < n_w; ++j) out[j] = vec_dot_q4_1_q8_1(nb, x + j * nb, y);
}
void vec_dot_wrows_q8_0_q8_0(int64_t nb, const BlockQ8_0* x, int n_w, const ActBlockQ8* y, float* out) {
    for (int j = 0; j < n_w; ++j) out[j] = vec_dot_q8_0_q8_0(nb, x + j * nb, y);
}

}  // namespace purbo
