#include "backend/cpu/vec-dot-f32.h"

#include "core/simd.h"

#include <cstring>

#include "core/fp16.h"

namespace purbo {

void block_sums_f32(int64_t nb, const float* x, float* x_sums) {
    for (int64_t b = 0; b < nb; ++b) {
        float sum = 0;
        for (int i = 0; i < 32; ++i) sum += x[b * 32 + i];
        x_sums[b] = sum;
    }
}

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

// q4 blocks through a table of the 16 values a nibble can take, table[q] = d q + m (q4_1) or
// d q - 8 d (q4_0): one fused multiply-add builds it, so each value is exactly the
// fma(q, d, m) the per-element dequantisation computed. qs[i] holds element i in its low
// nibble and element i + 16 in its high nibble. The 16 bytes are widened once to 16 int32
// lanes; vpermps reads only the low 4 bits of each index, so the low nibbles need no mask and
// the high ones one shift, and the lookup replaces the int -> float conversions. Against
// mask / shift / two widenings / two conversions per block. The decode kernels (dot_row below)
// use a constant table (no scales) and apply the scales to the block sums instead.
inline __m512 nibble_values() {
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

inline Block32 lookup_nibbles(const uint8_t* qs, __m512 table) {
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
    return {_mm512_permutexvar_ps(q, table),
            _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table)};
}

inline Block32 dequant(const BlockQ4_0& b) {
    const float d = f16_to_f32(b.d);  // d (q - 8) = d q - 8 d
    return lookup_nibbles(b.qs, _mm512_fmadd_ps(nibble_values(), _mm512_set1_ps(d),
                                                _mm512_set1_ps(-8.0f * d)));
}

inline Block32 dequant(const BlockQ4_1& b) {
    // d and m (adjacent f16) in one broadcast load and one conversion: lanes d, m, d, m, ...
    int32_t dm;
    std::memcpy(&dm, &b.d, sizeof(dm));
    const __m512 dm_f32 = _mm512_cvtph_ps(_mm256_set1_epi32(dm));
    return lookup_nibbles(b.qs, _mm512_fmadd_ps(nibble_values(), _mm512_moveldup_ps(dm_f32),
                                                _mm512_movehdup_ps(dm_f32)));
}

inline Block32 dequant(const BlockQ8_0& b) {
    const __m512 vd = _mm512_set1_ps(f16_to_f32(b.d));
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16));
    return {_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), vd),
            _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), vd)};
}

// The integers of a block as floats, without its scales: q - 8 (q4_0), q (q8_0); elements
// 0..15 and 16..31.
inline Block32 integers(const BlockQ4_0& b) {
    return lookup_nibbles(b.qs, _mm512_sub_ps(nibble_values(), _mm512_set1_ps(8.0f)));
}
inline Block32 integers(const BlockQ8_0& b) {
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16));
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1))};
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

// One weight row against one activation row, kUnroll blocks per step with their own
// accumulators, so that the fused multiply-adds of consecutive blocks do not wait on each other
// (4 cycles each on Zen 4; one chain ran at about 10 cycles per q4_1 block). The row is read
// front to back: interleaving 4 rows (4 nearby streams) instead halved the bandwidth of the
// 30 MB q8_0 LM head (2.2 -> 4.9 ms on one core) although it was as fast on cached weights.
constexpr int64_t kUnroll = 4;

// q4_0 / q8_0: sum_b d_b (sum_i q_i x_i), q4_0's q already less 8 (the table 0..15 - 8).
template <class Block>
float dot_row(int64_t nb, const Block* w, const float* x, const float*) {
    __m512 acc[kUnroll];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    auto step = [&](int64_t b, int u) {
        const Block32 q = integers(w[b]);
        const __m512 t = _mm512_fmadd_ps(q.hi, _mm512_loadu_ps(x + b * 32 + 16),
                                         _mm512_mul_ps(q.lo, _mm512_loadu_ps(x + b * 32)));
        acc[u] = _mm512_fmadd_ps(t, _mm512_set1_ps(f16_to_f32(w[b].d)), acc[u]);
    };
    int64_t b = 0;
    for (; b + kUnroll <= nb; b += kUnroll) {
        for (int u = 0; u < kUnroll; ++u) step(b + u, u);
    }
    for (; b < nb; ++b) step(b, 0);
    for (int u = 1; u < kUnroll; ++u) acc[0] = _mm512_add_ps(acc[0], acc[u]);
    return _mm512_reduce_add_ps(acc[0]);
}

// q4_1 with its scales factored out of the block sums:
//   sum_b sum_i (d_b q_i + m_b) x_i = sum_b d_b (sum_i q_i x_i) + sum_b m_b sx_b,
// sx_b = sum of block b of x (x_sums, once per activation row and matmul call). fp32
// throughout; against dequantise-then-dot only the rounding order changes (the products
// q_i x_i are summed before d_b multiplies them). Per block the table becomes the constant
// 0..15, so the per-block broadcast of d and m, the conversion of both and the fused
// multiply-add that built the table shrink to one scalar conversion and broadcast of d and one
// scalar fused multiply-add for m (kUnroll scalar chains: one chain alone is 4 cycles per
// block). 1536 x 576 q4_1 GEMV on one core, weights in cache: 68 -> 59 us (q4_0, which has no m
// term: 49 us; before this file's decode kernels: 73 us).
template <>
float dot_row(int64_t nb, const BlockQ4_1* w, const float* x, const float* x_sums) {
    __m512 acc[kUnroll];
    for (__m512& a : acc) a = _mm512_setzero_ps();
    float acc_m[kUnroll] = {};  // one chain each: a single scalar chain capped the kernel at 4 cycles per block
    const __m512 table = nibble_values();
    auto step = [&](int64_t b, int u) {
        const Block32 q = lookup_nibbles(w[b].qs, table);
        const __m512 t = _mm512_fmadd_ps(q.hi, _mm512_loadu_ps(x + b * 32 + 16),
                                         _mm512_mul_ps(q.lo, _mm512_loadu_ps(x + b * 32)));
        // d and m (adjacent f16) in one 32-bit load and one conversion: lanes d, m.
        int32_t dm_bits;
        std::memcpy(&dm_bits, &w[b].d, sizeof(dm_bits));
        const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));
        acc[u] = _mm512_fmadd_ps(t, _mm512_broadcastss_ps(dm), acc[u]);
        acc_m[u] += _mm_cvtss_f32(_mm_movehdup_ps(dm)) * x_sums[b];
    };
    int64_t b = 0;
    for (; b + kUnroll <= nb; b += kUnroll) {
        for (int u = 0; u < kUnroll; ++u) step(b + u, u);
    }
    for (; b < nb; ++b) step(b, 0);
    for (int u = 1; u < kUnroll; ++u) acc[0] = _mm512_add_ps(acc[0], acc[u]);
    return _mm512_reduce_add_ps(acc[0]) + ((acc_m[0] + acc_m[1]) + (acc_m[2] + acc_m[3]));
}

template <class Block>
void dispatch_wrows(int64_t nb, const Block* w, int n_w, const float* x, const float* x_sums,
                    float* out) {
    for (int r = 0; r < n_w; ++r) out[r] = dot_row(nb, w + r * nb, x, x_sums);
}

}  // namespace

void vec_dot_wrows_q4_0_f32(int64_t nb, const BlockQ4_0* w, int n_w, const float* x,
                            const float* x_sums, float* out) {
    dispatch_wrows(nb, w, n_w, x, x_sums, out);
}
void vec_dot_wrows_q4_1_f32(int64_t nb, const BlockQ4_1* w, int n_w, const float* x,
                            const float* x_sums, float* out) {
    dispatch_wrows(nb, w, n_w, x, x_sums, out);
}
void vec_dot_wrows_q8_0_f32(int64_t nb, const BlockQ8_0* w, int n_w, const float* x,
                            const float* x_sums, float* out) {
    dispatch_wrows(nb, w, n_w, x, x_sums, out);
}

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

// Weight rows one at a time through the scalar loop.
void vec_dot_wrows_q4_0_f32(int64_t nb, const BlockQ4_0* w, int n_w, const float* x,
                            const float*, float* out) {
    for (int r = 0; r < n_w; ++r) vec_dot_rows_f32act_scalar(DType::kQ4_0, nb, w + r * nb, x, 0, 1, out + r);
}
void vec_dot_wrows_q4_1_f32(int64_t nb, const BlockQ4_1* w, int n_w, const float* x,
                            const float*, float* out) {
    for (int r = 0; r < n_w; ++r) vec_dot_rows_f32act_scalar(DType::kQ4_1, nb, w + r * nb, x, 0, 1, out + r);
}
void vec_dot_wrows_q8_0_f32(int64_t nb, const BlockQ8_0* w, int n_w, const float* x,
                            const float*, float* out) {
    for (int r = 0; r < n_w; ++r) vec_dot_rows_f32act_scalar(DType::kQ8_0, nb, w + r * nb, x, 0, 1, out + r);
}

#endif

}  // namespace purbo
