// cpu backend: attention over the KV cache. Both paths use the online softmax, so memory per
// task is O(block x (block + d)), never O(n x context):
//  - prefill (consecutive tokens of one sequence): a block of query tokens against blocks of
//    keys, the scores and the weighted sums as sgemm calls;
//  - decode (each token in its own sequence): loops per (token, KV head, key slice), the
//    slices merged at the end so few tokens over a long context still use every core.
// The cache is f32 or bf16 (widened to f32 on load: the same arithmetic on the stored values).
#include "core/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "backend/cpu/blas-threads.h"
#include "backend/cpu/cpu-backend.h"
#include "backend/cpu/vec-avx512.h"
#include "backend/cpu/vec-exp.h"
#include "backend/op-checks.h"
#include "core/fp16.h"

namespace purbo {
namespace {

// Keys scored per step of the online softmax: scores live in a (kKeyChunk,) buffer, so memory
// per task is O(kKeyChunk + heads_per_kv * d) whatever the context length.
constexpr int64_t kKeyChunk = 64;
// Accumulator elements kept in registers while a chunk's values are summed (2 zmm of floats).
constexpr int64_t kTile = 32;

// Keys at positions [begin, end) of a sequence.
struct KeyRange {
    int64_t begin;
    int64_t end;
};

// The query heads of one KV head attended together, so that each key and value row is read
// once per group: the local heads (window + sinks), the dense retrieval heads, and the
// retrieval heads with a block selection. The last see different keys: the group visits the
// union of their blocks, and each head's scores outside its own blocks are masked (-inf).
// Selections of heads that share a KV head overlap, so the union is read once instead of each
// head reading its blocks alone (latency-bound streams of scattered blocks).
struct HeadGroup {
    enum Kind { kLocal, kDense, kSelected };
    Kind kind;
    int64_t slot;                // cache head of the group's KV head in the view
    std::vector<int64_t> heads;  // query heads, ascending
};

std::vector<HeadGroup> head_groups(int64_t h, const KvCacheView& cache, const AttentionParams& params) {
    const int64_t g = kv_view_model_heads(cache), heads_per_kv = h / g;
    std::vector<HeadGroup> groups;
    for (int64_t kv = 0; kv < g; ++kv) {
        const int64_t slot = kv_view_index(cache, kv);
        if (slot < 0) continue;
        HeadGroup local{HeadGroup::kLocal, slot, {}}, dense{HeadGroup::kDense, slot, {}};
        HeadGroup selected{HeadGroup::kSelected, slot, {}};
        for (int64_t hd = kv * heads_per_kv; hd < (kv + 1) * heads_per_kv; ++hd) {
            if (attention_head_is_local(params, hd)) {
                local.heads.push_back(hd);
            } else if (params.selection && params.selection->head_row[static_cast<size_t>(hd)] >= 0) {
                selected.heads.push_back(hd);
            } else {
                dense.heads.push_back(hd);
            }
        }
        for (HeadGroup* group : {&local, &dense, &selected})
            if (!group->heads.empty()) groups.push_back(std::move(*group));
    }
    return groups;
}

// The keys query head `head` of a group sees from token i at position p, as ascending
// disjoint ranges (the mask of key_visible in cpu-ref).
void head_key_ranges(const HeadGroup& group, int64_t head, int64_t i, int64_t p, const AttentionParams& params,
                     std::vector<KeyRange>& ranges) {
    ranges.clear();
    switch (group.kind) {
    case HeadGroup::kLocal: {
        const int64_t window_begin = std::max<int64_t>(0, p - params.window + 1);
        const int64_t sink_end = std::min<int64_t>(params.n_sink, window_begin);
        if (sink_end > 0) ranges.push_back({0, sink_end});
        ranges.push_back({window_begin, p + 1});
        break;
    }
    case HeadGroup::kDense:
        ranges.push_back({0, p + 1});
        break;
    case HeadGroup::kSelected: {
        const int64_t block = params.selection->block_size;
        for (int32_t b : attention_selected_blocks(params, i, head)) {
            const int64_t begin = int64_t{b} * block, end = std::min(begin + block, p + 1);
            if (b < 0 || begin >= end || (!ranges.empty() && begin < ranges.back().end)) continue;
            if (!ranges.empty() && ranges.back().end == begin) {
                ranges.back().end = end;
            } else {
                ranges.push_back({begin, end});
            }
        }
        break;
    }
    }
}

// The union of ascending disjoint ranges, ascending and disjoint.
void union_of_ranges(std::span<const std::vector<KeyRange>> parts, std::vector<KeyRange>& ranges) {
    ranges.clear();
    for (const std::vector<KeyRange>& part : parts) ranges.insert(ranges.end(), part.begin(), part.end());
    std::sort(ranges.begin(), ranges.end(), [](KeyRange a, KeyRange b) { return a.begin < b.begin; });
    size_t kept = 0;
    for (const KeyRange& r : ranges) {
        if (kept > 0 && r.begin <= ranges[kept - 1].end) {
            ranges[kept - 1].end = std::max(ranges[kept - 1].end, r.end);
        } else {
            ranges[kept++] = r;
        }
    }
    ranges.resize(kept);
}

// Sets scores[t] of keys j0 + t (t < nj) outside `ranges` (ascending, disjoint) to -inf;
// `cursor` is the first range not wholly before j0 and moves on with ascending j0.
void mask_outside_ranges(std::span<const KeyRange> ranges, size_t& cursor, int64_t j0, int64_t nj, float* scores) {
    while (cursor < ranges.size() && ranges[cursor].end <= j0) ++cursor;
    if (cursor < ranges.size() && ranges[cursor].begin <= j0 && ranges[cursor].end >= j0 + nj) return;
    size_t k = cursor;
    for (int64_t t = 0; t < nj; ++t) {
        const int64_t j = j0 + t;
        while (k < ranges.size() && ranges[k].end <= j) ++k;
        if (k >= ranges.size() || ranges[k].begin > j) scores[t] = -std::numeric_limits<float>::infinity();
    }
}

// How many positions from j on lie in consecutive cache rows (at most `limit`): all of them,
// except in a ring, which wraps.
int64_t contiguous_positions(const KvCacheView& cache, int64_t j, int64_t limit) {
    if (cache.ring_sinks < 0) return limit;
    if (j < cache.ring_sinks) return std::min(limit, cache.ring_sinks - j);
    const int64_t span = cache.k.dim(2) - cache.ring_sinks;
    return std::min(limit, span - (j - cache.ring_sinks) % span);
}

// Cache elements: float (an f32 cache) or uint16_t (the bits of a bf16 cache), read as f32.
inline float load_f32(const float* p) { return *p; }
inline float load_f32(const uint16_t* p) { return bf16_to_f32(*p); }

// Softmax state of one query head over a set of keys (Milakov & Gimelshein 2018): running max
// m, running sum l = sum_j exp(s_j - m), running weighted sum acc = sum_j exp(s_j - m) v_j.
// States over disjoint key sets merge exactly, which lets one query's keys be split across
// threads (flash-decoding).
struct SoftmaxState {
    float* m;    // (heads_per_kv,)
    float* l;    // (heads_per_kv,)
    float* acc;  // (heads_per_kv, d)
};

// scores[t] = scale * dot(q, k_t) for the nj keys k_t at keys + t * d.
template <class T>
void key_scores_plain(const float* q, const T* keys, int64_t d, int64_t nj, float scale, float* scores) {
    for (int64_t t = 0; t < nj; ++t) {
        const T* kt = keys + t * d;
        float dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t e = 0; e < d; ++e) dot += q[e] * load_f32(kt + e);
        scores[t] = dot * scale;
    }
}


#if defined(__AVX512F__)
// key_scores for a head dim known at compile time (kVecs x 16): q and the 16 keys' partial
// sums stay in registers (with d a run-time value they went through the stack).
template <int kVecs, class T>
void key_scores_vecs(const float* q, const T* keys, int64_t nj, float scale, float* scores) {
    constexpr int64_t d = 16 * kVecs;
    __m512 qv[kVecs];
#pragma GCC unroll 8
    for (int e = 0; e < kVecs; ++e) qv[e] = _mm512_loadu_ps(q + 16 * e);
    int64_t t0 = 0;
    for (; t0 + 16 <= nj; t0 += 16) {
        __m512 p[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
            const T* kt = keys + (t0 + i) * d;
            p[i] = _mm512_mul_ps(qv[0], load16(kt));
#pragma GCC unroll 8
            for (int e = 1; e < kVecs; ++e) p[i] = _mm512_fmadd_ps(qv[e], load16(kt + 16 * e), p[i]);
        }
        _mm512_storeu_ps(scores + t0, _mm512_mul_ps(transpose_sums16(p), _mm512_set1_ps(scale)));
    }
    key_scores_plain(q, keys + t0 * d, d, nj - t0, scale, scores + t0);
}
#endif

#if defined(__AVX512F__)
// The scores of kHeads query heads (q (kHeads, d), scores (kHeads, kKeyChunk)) over the same
// keys, 8 keys at a time: each key row is loaded once and dotted with every head's query,
// as add_weighted_rows_joint does for the values.
template <int kHeads, int kVecs, class T>
void key_scores_joint(const float* q, const T* keys, int64_t nj, float scale, float* scores) {
    constexpr int64_t d = 16 * kVecs;
    const __m512 vscale = _mm512_set1_ps(scale);
    int64_t t0 = 0;
    for (; t0 + 8 <= nj; t0 += 8) {
        __m512 p[kHeads][8];
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
            const T* kt = keys + (t0 + i) * d;
            __m512 k[kVecs];
#pragma GCC unroll 8
            for (int e = 0; e < kVecs; ++e) k[e] = load16(kt + 16 * e);
#pragma GCC unroll 8
            for (int h = 0; h < kHeads; ++h) {
                p[h][i] = _mm512_mul_ps(_mm512_loadu_ps(q + h * d), k[0]);
#pragma GCC unroll 8
                for (int e = 1; e < kVecs; ++e) p[h][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * d + 16 * e), k[e], p[h][i]);
            }
        }
#pragma GCC unroll 8
        for (int h = 0; h < kHeads; ++h)
            _mm256_storeu_ps(scores + h * kKeyChunk + t0,
                             _mm512_castps512_ps256(_mm512_mul_ps(transpose_sums8(p[h]), vscale)));
    }
    for (int h = 0; h < kHeads; ++h) key_scores_plain(q + h * d, keys + t0 * d, d, nj - t0, scale, scores + h * kKeyChunk + t0);
}
#endif

// key_scores_joint for the (heads, head dim) pairs whose 8 x heads partial sums and key row
// fit the registers; false: the caller scores head by head.
template <class T>
bool key_scores_heads(const float* q, int64_t nh, const T* keys, int64_t d, int64_t nj, float scale, float* scores) {
#if defined(__AVX512F__)
    switch (d * 8 + nh) {
        case 64 * 8 + 2: key_scores_joint<2, 4>(q, keys, nj, scale, scores); return true;
        case 64 * 8 + 3: key_scores_joint<3, 4>(q, keys, nj, scale, scores); return true;
        case 128 * 8 + 2: key_scores_joint<2, 8>(q, keys, nj, scale, scores); return true;
        default: return false;
    }
#else
    (void)q, (void)nh, (void)keys, (void)d, (void)nj, (void)scale, (void)scores;
    return false;
#endif
}

// The same, 16 keys at a time where d is a multiple of 16 (head dims 64, 128): each key's
// products go into one vector and the 16 vectors are summed together (transpose_sums16). A
// horizontal reduction per key and query head was most of the decode attention time at depth
// 4096. fp32 sums in another order.
template <class T>
void key_scores(const float* q, const T* keys, int64_t d, int64_t nj, float scale, float* scores) {
#if defined(__AVX512F__)
    switch (d) {
        case 64: return key_scores_vecs<4>(q, keys, nj, scale, scores);
        case 128: return key_scores_vecs<8>(q, keys, nj, scale, scores);
        default: break;
    }
    if (d % 16 == 0) {
        int64_t t0 = 0;
        for (; t0 + 16 <= nj; t0 += 16) {
            __m512 p[16];
            for (int i = 0; i < 16; ++i) {
                const T* kt = keys + (t0 + i) * d;
                p[i] = _mm512_mul_ps(_mm512_loadu_ps(q), load16(kt));
                for (int64_t e = 16; e < d; e += 16)
                    p[i] = _mm512_fmadd_ps(_mm512_loadu_ps(q + e), load16(kt + e), p[i]);
            }
            _mm512_storeu_ps(scores + t0, _mm512_mul_ps(transpose_sums16(p), _mm512_set1_ps(scale)));
        }
        key_scores_plain(q, keys + t0 * d, d, nj - t0, scale, scores + t0);
        return;
    }
#endif
    key_scores_plain(q, keys, d, nj, scale, scores);
}

// acc (kN,) = acc * correction + sum_t weight[t] v_t, v_t at values + t * d: the kN elements
// stay in registers across the nj keys (updating acc in memory once per key made every key
// wait on the previous key's stores). Per element the same operations in the same order.
template <int64_t kN, class T>
void add_weighted_values(const float* weight, int64_t nj, const T* values, int64_t d, float correction,
                         float* acc) {
    float tile[kN];
#pragma omp simd
    for (int64_t e = 0; e < kN; ++e) tile[e] = acc[e] * correction;
    for (int64_t t = 0; t < nj; ++t) {
        const float w = weight[t];
        const T* vt = values + t * d;
#pragma omp simd
        for (int64_t e = 0; e < kN; ++e) tile[e] += w * load_f32(vt + e);
    }
#pragma omp simd
    for (int64_t e = 0; e < kN; ++e) acc[e] = tile[e];
}

// The same over whole rows of d = 32, 64 or 128 elements held in kVecs registers, with the
// keys' products added in the same order per element: the generic loop above kept its tile
// on the stack (a store and a reload per key, which the row's loads then waited behind).
template <int kVecs, class T>
void add_weighted_row_vecs(const float* weight, int64_t nj, const T* values, int64_t d, float correction,
                           float* acc) {
#if defined(__AVX512F__)
    __m512 a[kVecs];
    const __m512 c = _mm512_set1_ps(correction);
#pragma GCC unroll 8
    for (int i = 0; i < kVecs; ++i) a[i] = _mm512_mul_ps(_mm512_loadu_ps(acc + 16 * i), c);
    for (int64_t t = 0; t < nj; ++t) {
        const __m512 w = _mm512_set1_ps(weight[t]);
        const T* vt = values + t * d;
#pragma GCC unroll 8
        for (int i = 0; i < kVecs; ++i) a[i] = _mm512_fmadd_ps(w, load16(vt + 16 * i), a[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < kVecs; ++i) _mm512_storeu_ps(acc + 16 * i, a[i]);
#else
    (void)weight, (void)nj, (void)values, (void)d, (void)correction, (void)acc;
#endif
}

// add_weighted_rows for the head dims with a register kernel; false: the caller takes the
// generic tiles.
template <class T>
bool add_weighted_rows(const float* weight, int64_t nj, const T* values, int64_t d, float correction, float* acc) {
#if defined(__AVX512F__)
    switch (d) {
        case 32: add_weighted_row_vecs<2>(weight, nj, values, d, correction, acc); return true;
        case 64: add_weighted_row_vecs<4>(weight, nj, values, d, correction, acc); return true;
        case 128: add_weighted_row_vecs<8>(weight, nj, values, d, correction, acc); return true;
        default: return false;
    }
#else
    (void)weight, (void)nj, (void)values, (void)d, (void)correction, (void)acc;
    return false;
#endif
}

// The value sums of all nh query heads of a group at once: each value row is loaded once and
// added into every head's accumulators (nh x kVecs registers). Per head and element the same
// operations in the same order as add_weighted_row_vecs; what changes is that the row, read
// from DRAM at long context, is used by all heads while it is in registers.
constexpr int64_t kMaxJointHeads = 6;

template <int kHeads, int kVecs, class T>
void add_weighted_rows_joint(const float* weights, int64_t nj, const T* values, int64_t d,
                             const float* corrections, float* acc) {
#if defined(__AVX512F__)
    __m512 a[kHeads][kVecs];
#pragma GCC unroll 8
    for (int h = 0; h < kHeads; ++h) {
        const __m512 c = _mm512_set1_ps(corrections[h]);
#pragma GCC unroll 8
        for (int i = 0; i < kVecs; ++i) a[h][i] = _mm512_mul_ps(_mm512_loadu_ps(acc + h * d + 16 * i), c);
    }
    for (int64_t t = 0; t < nj; ++t) {
        const T* vt = values + t * d;
        __m512 v[kVecs];
#pragma GCC unroll 8
        for (int i = 0; i < kVecs; ++i) v[i] = load16(vt + 16 * i);
#pragma GCC unroll 8
        for (int h = 0; h < kHeads; ++h) {
            const __m512 w = _mm512_set1_ps(weights[h * kKeyChunk + t]);
#pragma GCC unroll 8
            for (int i = 0; i < kVecs; ++i) a[h][i] = _mm512_fmadd_ps(w, v[i], a[h][i]);
        }
    }
#pragma GCC unroll 8
    for (int h = 0; h < kHeads; ++h) {
#pragma GCC unroll 8
        for (int i = 0; i < kVecs; ++i) _mm512_storeu_ps(acc + h * d + 16 * i, a[h][i]);
    }
#else
    (void)weights, (void)nj, (void)values, (void)d, (void)corrections, (void)acc;
#endif
}

// add_weighted_rows_joint for the (heads, head dim) pairs whose accumulators fit the 32
// vector registers (at most 24 of them); false: the caller goes head by head.
template <class T>
bool add_weighted_rows_heads(const float* weights, int64_t nh, int64_t nj, const T* values, int64_t d,
                             const float* corrections, float* acc) {
#if defined(__AVX512F__)
    switch (d * 8 + nh) {
        case 32 * 8 + 2: add_weighted_rows_joint<2, 2>(weights, nj, values, d, corrections, acc); return true;
        case 32 * 8 + 3: add_weighted_rows_joint<3, 2>(weights, nj, values, d, corrections, acc); return true;
        case 32 * 8 + 4: add_weighted_rows_joint<4, 2>(weights, nj, values, d, corrections, acc); return true;
        case 64 * 8 + 2: add_weighted_rows_joint<2, 4>(weights, nj, values, d, corrections, acc); return true;
        case 64 * 8 + 3: add_weighted_rows_joint<3, 4>(weights, nj, values, d, corrections, acc); return true;
        case 64 * 8 + 4: add_weighted_rows_joint<4, 4>(weights, nj, values, d, corrections, acc); return true;
        case 128 * 8 + 2: add_weighted_rows_joint<2, 8>(weights, nj, values, d, corrections, acc); return true;
        default: return false;
    }
#else
    (void)weights, (void)nh, (void)nj, (void)values, (void)d, (void)corrections, (void)acc;
    return false;
#endif
}

// Adds the keys of `ranges` within positions [lo, hi) to the states of the nh query heads of
// one group, rescaling once per chunk of at most kKeyChunk keys in consecutive cache rows.
// head_ranges: empty when every head sees all of `ranges`, else (nh,) each head's own keys
// (`ranges` is then their union), the others masked.
template <class T>
void attend_partial(const float* q, int64_t nh, int64_t d, const T* keys, const T* values, const KvCacheView& cache,
                    std::span<const KeyRange> ranges, std::span<const std::vector<KeyRange>> head_ranges, int64_t lo,
                    int64_t hi, float scale, float* scores, const SoftmaxState& state) {
    // q (nh, d); keys, values (c, d) of one cache head; scores (nh, kKeyChunk)
    // Every list starts at its first range that ends after lo: a long context has hundreds of
    // slices, and each walks only its own part of the ranges.
    auto first_after_lo = [lo](std::span<const KeyRange> list) {
        return static_cast<size_t>(std::partition_point(list.begin(), list.end(),
                                                        [lo](KeyRange r) { return r.end <= lo; }) -
                                   list.begin());
    };
    size_t cursors[kMaxJointHeads] = {};
    std::vector<size_t> more_cursors(head_ranges.size() > kMaxJointHeads ? head_ranges.size() : 0, 0);
    size_t* cursor = more_cursors.empty() ? cursors : more_cursors.data();
    for (size_t hq = 0; hq < head_ranges.size(); ++hq) cursor[hq] = first_after_lo(head_ranges[hq]);
    for (const KeyRange& range : ranges.subspan(first_after_lo(ranges))) {
        if (range.begin >= hi) break;
        const int64_t begin = std::max(lo, range.begin);
        const int64_t end = std::min(hi, range.end);
        for (int64_t j0 = begin; j0 < end;) {
            const int64_t nj = contiguous_positions(cache, j0, std::min(kKeyChunk, end - j0));
            const int64_t row = kv_cache_row(cache, j0);
            float corrections[kMaxJointHeads];
            const bool joint = nh <= kMaxJointHeads;
            const bool scored = key_scores_heads(q, nh, keys + row * d, d, nj, scale, scores);
            for (int64_t hq = 0; hq < nh; ++hq) {
                const float* qh = q + hq * d;
                float* sh = scores + hq * kKeyChunk;
                float chunk_max = -std::numeric_limits<float>::infinity();
                if (!scored) key_scores(qh, keys + row * d, d, nj, scale, sh);
                if (!head_ranges.empty()) mask_outside_ranges(head_ranges[static_cast<size_t>(hq)], cursor[hq], j0, nj, sh);
                for (int64_t t = 0; t < nj; ++t) chunk_max = std::max(chunk_max, sh[t]);
                if (chunk_max == -std::numeric_limits<float>::infinity()) {  // the head sees none of the chunk
                    std::fill(sh, sh + nj, 0.0f);
                    if (joint) corrections[hq] = 1.0f;
                    continue;
                }
                const float new_m = std::max(state.m[hq], chunk_max);
                const float correction = std::exp(state.m[hq] - new_m);  // 0 on the first chunk
                const float sum = state.l[hq] * correction + exp_shifted_sum(sh, nj, new_m);
                if (joint) corrections[hq] = correction;
                state.l[hq] = sum;
                state.m[hq] = new_m;
                if (joint) continue;
                float* ah = state.acc + hq * d;
                if (!add_weighted_rows(sh, nj, values + row * d, d, correction, ah)) {
                    int64_t e0 = 0;
                    for (; e0 + kTile <= d; e0 += kTile)
                        add_weighted_values<kTile, T>(sh, nj, values + row * d + e0, d, correction, ah + e0);
                    for (; e0 < d; ++e0)
                        add_weighted_values<1, T>(sh, nj, values + row * d + e0, d, correction, ah + e0);
                }
            }
            if (joint && !add_weighted_rows_heads(scores, nh, nj, values + row * d, d, corrections, state.acc)) {
                for (int64_t hq = 0; hq < nh; ++hq) {
                    const float* sh = scores + hq * kKeyChunk;
                    float* ah = state.acc + hq * d;
                    if (add_weighted_rows(sh, nj, values + row * d, d, corrections[hq], ah)) continue;
                    int64_t e0 = 0;
                    for (; e0 + kTile <= d; e0 += kTile)
                        add_weighted_values<kTile, T>(sh, nj, values + row * d + e0, d, corrections[hq], ah + e0);
                    for (; e0 < d; ++e0)
                        add_weighted_values<1, T>(sh, nj, values + row * d + e0, d, corrections[hq], ah + e0);
                }
            }
            j0 += nj;
        }
    }
}

// Below this many (token, KV head) tasks the keys of each task are split into slices of
// kSplitKeys positions, so decode over a long context keeps every core busy. Speed only; the
// split depends on the shapes alone, never on the thread count, so results do not either.
constexpr int64_t kMinTasksWithoutSplit = 32;
constexpr int64_t kSplitKeys = 256;

// Prefill: consecutive tokens of one sequence share their keys, so a block of up to
// kQueryBlock tokens x heads_per_kv query heads is scored against a chunk of kKeyBlock keys
// with two sgemm calls (S = Q K^T, O += P V), FlashAttention-2 style: online softmax per
// query row, memory O(rows x (kKeyBlock + d)) per task whatever the context length.
constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 128;

// Runs of consecutive tokens with the same sequence slot, at most kQueryBlock long.
struct TokenRun {
    int64_t begin;
    int64_t count;
};

std::vector<TokenRun> token_runs(const TokenPlacement& place) {
    std::vector<TokenRun> runs;
    const int64_t n = static_cast<int64_t>(place.seq.size());
    for (int64_t i = 0; i < n; ++i) {
        if (!runs.empty() && place.seq[i] == place.seq[runs.back().begin] &&
            runs.back().count < kQueryBlock) {
            ++runs.back().count;
        } else {
            runs.push_back({i, 1});
        }
    }
    return runs;
}

// The rows sgemm reads: an f32 cache's own rows, or a bf16 cache's rows widened into `tmp`.
const float* f32_rows(const float* rows, int64_t, float*) { return rows; }
const float* f32_rows(const uint16_t* rows, int64_t count, float* tmp) {
    for (int64_t i = 0; i < count; ++i) tmp[i] = bf16_to_f32(rows[i]);
    return tmp;
}

// One (run, head group) task. q, out (n, h, d) of the whole batch; keys, values (c, d) of the
// group's cache head.
template <class T>
void attend_block(const float* q, float* out, int64_t h, int64_t d, const HeadGroup& group, const TokenRun& run,
                  std::span<const int32_t> pos, const KvCacheView& cache, const T* keys, const T* values,
                  const AttentionParams& params, std::vector<float>& buffer) {
    const int64_t nh = static_cast<int64_t>(group.heads.size());
    const int64_t rows = run.count * nh;  // row r: token r / nh, query head group.heads[r % nh]
    const int64_t widened = std::is_same_v<T, float> ? 0 : 2 * kKeyBlock * d;  // a chunk's keys, values
    buffer.resize(static_cast<size_t>(rows * (2 * d + kKeyBlock + 2) + widened));
    float* qb = buffer.data();          // (rows, d)
    float* ob = qb + rows * d;          // (rows, d)
    float* sb = ob + rows * d;          // (rows, kKeyBlock)
    float* mb = sb + rows * kKeyBlock;  // (rows,)
    float* lb = mb + rows;              // (rows,)
    float* kw = lb + rows;              // (kKeyBlock, d) with a bf16 cache
    float* vw = kw + kKeyBlock * d;     // (kKeyBlock, d)
    for (int64_t t = 0; t < run.count; ++t) {
        for (int64_t hq = 0; hq < nh; ++hq) {
            const float* src = q + ((run.begin + t) * h + group.heads[static_cast<size_t>(hq)]) * d;
            std::copy(src, src + d, qb + (t * nh + hq) * d);
        }
    }
    std::fill(ob, ob + rows * d, 0.0f);
    std::fill(mb, mb + rows, -std::numeric_limits<float>::infinity());
    std::fill(lb, lb + rows, 0.0f);
    // Per row (token, head): its ranges, and a cursor to the first range not yet behind the
    // chunk (keys are visited in ascending positions).
    std::vector<std::vector<KeyRange>> ranges(static_cast<size_t>(rows));
    std::vector<size_t> cursor(static_cast<size_t>(rows), 0);
    int64_t max_pos = 0;
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = run.begin + r / nh;
        head_key_ranges(group, group.heads[static_cast<size_t>(r % nh)], i, pos[i], params,
                        ranges[static_cast<size_t>(r)]);
        max_pos = std::max<int64_t>(max_pos, pos[i]);
    }
    for (int64_t j0 = 0; j0 <= max_pos;) {
        const int64_t nj = contiguous_positions(cache, j0, std::min(kKeyBlock, max_pos + 1 - j0));
        const int64_t row0 = kv_cache_row(cache, j0);
        bool any_visible = false;  // skip chunks no query of the block sees (window, causal)
        for (size_t t = 0; t < ranges.size(); ++t) {
            while (cursor[t] < ranges[t].size() && ranges[t][cursor[t]].end <= j0) ++cursor[t];
            any_visible |= cursor[t] < ranges[t].size() && ranges[t][cursor[t]].begin < j0 + nj;
        }
        if (!any_visible) {
            j0 += nj;
            continue;
        }
        const float* chunk_keys = f32_rows(keys + row0 * d, nj * d, kw);
        const float* chunk_values = f32_rows(values + row0 * d, nj * d, vw);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                    static_cast<int>(nj), static_cast<int>(d), params.scale, qb,
                    static_cast<int>(d), chunk_keys, static_cast<int>(d), 0.0f, sb,
                    static_cast<int>(kKeyBlock));
        for (int64_t r = 0; r < rows; ++r) {
            const size_t t = static_cast<size_t>(r);
            float* sr = sb + r * kKeyBlock;
            float chunk_max = -std::numeric_limits<float>::infinity();
            size_t k = cursor[t];
            for (int64_t u = 0; u < nj; ++u) {
                const int64_t j = j0 + u;
                while (k < ranges[t].size() && ranges[t][k].end <= j) ++k;
                const bool visible = k < ranges[t].size() && ranges[t][k].begin <= j;
                if (!visible) sr[u] = -std::numeric_limits<float>::infinity();
                chunk_max = std::max(chunk_max, sr[u]);
            }
            if (chunk_max == -std::numeric_limits<float>::infinity()) {
                std::fill(sr, sr + nj, 0.0f);  // this row sees none of the chunk: P row = 0
                continue;
            }
            const float new_m = std::max(mb[r], chunk_max);
            const float correction = std::exp(mb[r] - new_m);  // 0 on the row's first chunk
            const float sum = exp_shifted_sum(sr, nj, new_m);  // masked keys (-inf) get 0
            lb[r] = lb[r] * correction + sum;
            mb[r] = new_m;
            float* orow = ob + r * d;
#pragma omp simd
            for (int64_t e = 0; e < d; ++e) orow[e] *= correction;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                    static_cast<int>(d), static_cast<int>(nj), 1.0f, sb,
                    static_cast<int>(kKeyBlock), chunk_values, static_cast<int>(d), 1.0f, ob,
                    static_cast<int>(d));
        j0 += nj;
    }
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = r / nh, hd = group.heads[static_cast<size_t>(r % nh)];
        float* dst = out + ((run.begin + t) * h + hd) * d;
        // l = 0 only when a selection leaves a query nothing to see: zeros, as in cpu-ref.
        const float inv = lb[r] > 0 ? 1.0f / lb[r] : 0.0f;
        for (int64_t e = 0; e < d; ++e) dst[e] = ob[r * d + e] * inv;
    }
}

}  // namespace

// Parallel over (token, head group, key slice) in decode and (token run, head group) in
// prefill. The slices' states merge exactly:
// M = max_s m_s, l = sum_s l_s exp(m_s - M), acc = sum_s acc_s exp(m_s - M), out = acc / l.
Status CpuBackend::attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                             const AttentionParams& params, const Tensor& out) {
    PURBO_TRY(check_attention(q, cache, place, params, out, kv_cache_dtypes()));
    // q, out (n, h, d); cache (s, gc, c, d)
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    const std::vector<HeadGroup> groups = head_groups(h, cache, params);
    const int64_t n_groups = static_cast<int64_t>(groups.size());
    const bool bf16 = cache.k.dtype == DType::kBF16;  // else f32 (check_attention)
    auto cache_base = [&](int64_t seq, const HeadGroup& group) { return (seq * gc + group.slot) * c * d; };
    const std::vector<TokenRun> runs = token_runs(place);
    if (static_cast<int64_t>(runs.size()) < n) {  // some tokens share a sequence: prefill
        const int64_t n_runs = static_cast<int64_t>(runs.size());
        ScopedBlasThreads blas_threads(1);  // one sgemm per thread (see blas-threads.h)
#pragma omp parallel num_threads(n_threads_)
        {
            std::vector<float> buffer;
#pragma omp for collapse(2) schedule(dynamic)
            for (int64_t r = 0; r < n_runs; ++r) {
                for (int64_t gi = 0; gi < n_groups; ++gi) {
                    const HeadGroup& group = groups[static_cast<size_t>(gi)];
                    const int64_t base = cache_base(place.seq[runs[r].begin], group);
                    if (bf16) {
                        attend_block(q.f32(), out.f32(), h, d, group, runs[r], place.pos, cache,
                                     cache.k.ptr<uint16_t>() + base, cache.v.ptr<uint16_t>() + base, params, buffer);
                    } else {
                        attend_block(q.f32(), out.f32(), h, d, group, runs[r], place.pos, cache,
                                     cache.k.f32() + base, cache.v.f32() + base, params, buffer);
                    }
                }
            }
        }
        return Status::ok();
    }
    // Decode: every token in its own sequence.
    int64_t max_pos = 0;
    for (int32_t p : place.pos) max_pos = std::max<int64_t>(max_pos, p);
    const int64_t n_splits =
        n * n_groups >= kMinTasksWithoutSplit ? 1 : (max_pos + kSplitKeys) / kSplitKeys;
    const int64_t split_keys = n_splits == 1 ? max_pos + 1 : kSplitKeys;
    // States of one (token, slice): per group, m (nh,), l (nh,), acc (nh, d).
    std::vector<int64_t> group_offset(static_cast<size_t>(n_groups) + 1, 0);
    for (int64_t gi = 0; gi < n_groups; ++gi)
        group_offset[static_cast<size_t>(gi) + 1] =
            group_offset[static_cast<size_t>(gi)] +
            static_cast<int64_t>(groups[static_cast<size_t>(gi)].heads.size()) * (d + 2);
    const int64_t stride = group_offset.back();
    // Kept across calls (per calling thread): at 128K the 513 slices' states are over a MB, which
    // a fresh vector zeroed and page-faulted in every decode step. Each slice's task writes its
    // whole state before anything reads it.
    // (The OpenMP threads below see the caller's buffer through this pointer: a thread_local
    // named inside the parallel region would be each worker's own.)
    thread_local std::vector<float> states_buffer;
    if (states_buffer.size() < static_cast<size_t>(n * n_splits * stride))
        states_buffer.resize(static_cast<size_t>(n * n_splits * stride));
    float* const states = states_buffer.data();
    auto state_at = [&](int64_t i, int64_t gi, int64_t split) {
        const int64_t nh = static_cast<int64_t>(groups[static_cast<size_t>(gi)].heads.size());
        float* base =
            states + (i * n_splits + split) * stride + group_offset[static_cast<size_t>(gi)];
        return SoftmaxState{base, base + nh, base + 2 * nh};
    };
    // The keys each (token, group) sees, once for all its slices: their union, and per head
    // for a selected group whose heads see different blocks (empty otherwise).
    std::vector<std::vector<KeyRange>> task_ranges(static_cast<size_t>(n * n_groups));
    std::vector<std::vector<std::vector<KeyRange>>> task_head_ranges(
        static_cast<size_t>(n * n_groups));
#pragma omp parallel num_threads(n_threads_) if (n * n_groups * n_splits > 1)
    {
        std::vector<float> scores, qbuf;
#pragma omp for collapse(2) schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t gi = 0; gi < n_groups; ++gi) {
                const HeadGroup& group = groups[static_cast<size_t>(gi)];
                const int64_t nh = static_cast<int64_t>(group.heads.size());
                std::vector<KeyRange>& ranges = task_ranges[static_cast<size_t>(i * n_groups + gi)];
                std::vector<std::vector<KeyRange>>& head_ranges =
                    task_head_ranges[static_cast<size_t>(i * n_groups + gi)];
                if (group.kind == HeadGroup::kSelected && nh > 1) {
                    head_ranges.resize(static_cast<size_t>(nh));
                    for (int64_t hq = 0; hq < nh; ++hq)
                        head_key_ranges(group, group.heads[static_cast<size_t>(hq)], i,
                                        place.pos[i], params, head_ranges[static_cast<size_t>(hq)]);
                    union_of_ranges(head_ranges, ranges);
                } else {
                    head_key_ranges(group, group.heads[0], i, place.pos[i], params, ranges);
                }
            }
        }
#pragma omp for collapse(3) schedule(dynamic)
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t gi = 0; gi < n_groups; ++gi) {
                for (int64_t split = 0; split < n_splits; ++split) {
                    const HeadGroup& group = groups[static_cast<size_t>(gi)];
                    const int64_t nh = static_cast<int64_t>(group.heads.size());
                    const SoftmaxState state = state_at(i, gi, split);
                    std::fill(state.m, state.m + nh, -std::numeric_limits<float>::infinity());
                    std::fill(state.l, state.acc + nh * d, 0.0f);
                    scores.resize(static_cast<size_t>(nh * kKeyChunk));
                    qbuf.resize(static_cast<size_t>(nh * d));
                    for (int64_t hq = 0; hq < nh; ++hq) {
                        const float* src = q.f32() + (i * h + group.heads[static_cast<size_t>(hq)]) * d;
                        std::copy(src, src + d, qbuf.data() + hq * d);
                    }
                    // Heads of a selected group each see their own blocks: the group visits
                    // their union. Other groups' heads all see the same keys.
                    const std::vector<KeyRange>& ranges =
                        task_ranges[static_cast<size_t>(i * n_groups + gi)];
                    const std::vector<std::vector<KeyRange>>& head_ranges =
                        task_head_ranges[static_cast<size_t>(i * n_groups + gi)];
                    const int64_t base = cache_base(place.seq[i], group);
                    const int64_t lo = split * split_keys, hi = (split + 1) * split_keys;
                    if (bf16) {
                        attend_partial(qbuf.data(), nh, d, cache.k.ptr<uint16_t>() + base,
                                       cache.v.ptr<uint16_t>() + base, cache, ranges, head_ranges, lo, hi,
                                       params.scale, scores.data(), state);
                    } else {
                        attend_partial(qbuf.data(), nh, d, cache.k.f32() + base, cache.v.f32() + base, cache,
                                       ranges, head_ranges, lo, hi, params.scale, scores.data(), state);
                    }
                }
            }
        }
#pragma omp for collapse(2) schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t gi = 0; gi < n_groups; ++gi) {
                const HeadGroup& group = groups[static_cast<size_t>(gi)];
                for (size_t hq = 0; hq < group.heads.size(); ++hq) {
                    float max_m = -std::numeric_limits<float>::infinity();
                    for (int64_t split = 0; split < n_splits; ++split)
                        max_m = std::max(max_m, state_at(i, gi, split).m[hq]);
                    float* o = out.f32() + (i * h + group.heads[hq]) * d;
                    std::fill(o, o + d, 0.0f);
                    float l = 0;
                    for (int64_t split = 0; split < n_splits; ++split) {
                        const SoftmaxState st = state_at(i, gi, split);
                        if (st.l[hq] == 0) continue;  // a slice without visible keys
                        const float w = std::exp(st.m[hq] - max_m);
                        l += st.l[hq] * w;
                        const float* a = st.acc + hq * d;
#pragma omp simd
                        for (int64_t e = 0; e < d; ++e) o[e] += a[e] * w;
                    }
                    // l = 0 only when a selection leaves a query nothing to see: zeros.
                    const float inv = l > 0 ? 1.0f / l : 0.0f;
#pragma omp simd
                    for (int64_t e = 0; e < d; ++e) o[e] *= inv;
                }
            }
        }
    }
    return Status::ok();
}

}  // namespace purbo
