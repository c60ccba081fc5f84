// cpu backend: rope, kv_store and attention.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu/cpu-backend.h"
#include "backend/op-checks.h"

namespace purbo {

// Same arithmetic as cpu-ref (f32 angle, std::cos/std::sin, then the rotation), with the
// cos/sin table computed once per token instead of once per head.
Status CpuBackend::rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params) {
    PURBO_TRY(check_rope(x, pos, params));
    // x (n, heads, d)
    const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2), half = params.rotary_dim / 2;
#pragma omp parallel num_threads(n_threads_) if (n > 1)
    {
        std::vector<float> cos_t(static_cast<size_t>(half)),
            sin_t(static_cast<size_t>(half));  // (half,)
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t r = 0; r < half; ++r) {
                const float angle = static_cast<float>(pos[i]) * params.inv_freq[r];
                cos_t[r] = std::cos(angle) * params.attn_factor;
                sin_t[r] = std::sin(angle) * params.attn_factor;
            }
            for (int64_t hd = 0; hd < heads; ++hd) {
                float* v = x.f32() + (i * heads + hd) * d;
#pragma omp simd
                for (int64_t r = 0; r < half; ++r) {
                    const float a = v[r], b = v[r + half];
                    v[r] = a * cos_t[r] - b * sin_t[r];
                    v[r + half] = a * sin_t[r] + b * cos_t[r];
                }
            }
        }
    }
    return Status::ok();
}

Status CpuBackend::kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                            const KvCacheView& cache) {
    PURBO_TRY(check_kv_store(k, v, place, cache));
    // k, v (n, g, d); cache (s, g, c, d)
    const int64_t n = k.dim(0), g = k.dim(1), d = k.dim(2), c = cache.k.dim(2);
    const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t kv = 0; kv < g; ++kv) {
            const int64_t dst = ((place.seq[i] * g + kv) * c + place.pos[i]) * d;
            const int64_t src = (i * g + kv) * d;
            std::memcpy(cache.k.f32() + dst, k.f32() + src, row_bytes);
            std::memcpy(cache.v.f32() + dst, v.f32() + src, row_bytes);
        }
    }
    return Status::ok();
}

namespace {

// Keys scored per step of the online softmax: scores live in a (kKeyChunk,) buffer, so memory
// per task is O(kKeyChunk + heads_per_kv * d) whatever the context length.
constexpr int64_t kKeyChunk = 64;

// The visible keys of a query at position p as two disjoint ranges [begin, end): the sinks
// below the window, then the window (everything up to p without a window, the sink range
// then being empty). Same set as attention_key_visible.
struct KeyRanges {
    int64_t begin[2];
    int64_t end[2];
};

KeyRanges visible_ranges(int64_t p, const AttentionParams& params) {
    const int64_t window_begin =
        params.window == 0 ? 0 : std::max<int64_t>(0, p - params.window + 1);
    const int64_t sink_end = std::min<int64_t>(params.n_sink, window_begin);
    return {{0, window_begin}, {sink_end, p + 1}};
}

// Online softmax (Milakov & Gimelshein 2018) for the heads_per_kv query heads of one KV head:
// running max m, running sum l, running weighted sum acc, rescaled once per chunk of keys.
void attend_group(const float* q, int64_t heads_per_kv, int64_t d, const float* keys,
                  const float* values, const KeyRanges& ranges, float scale, float* out,
                  float* scores, float* acc) {
    // q, out (heads_per_kv, d); keys, values (c, d); scores (heads_per_kv, kKeyChunk);
    // acc (heads_per_kv, d)
    std::vector<float> m(static_cast<size_t>(heads_per_kv),
                         -std::numeric_limits<float>::infinity());
    std::vector<float> l(static_cast<size_t>(heads_per_kv), 0.0f);
    std::fill(acc, acc + heads_per_kv * d, 0.0f);
    for (int range = 0; range < 2; ++range) {
        const int64_t begin = ranges.begin[range], end = ranges.end[range];
        for (int64_t j0 = begin; j0 < end; j0 += kKeyChunk) {
            const int64_t nj = std::min(kKeyChunk, end - j0);
            for (int64_t hq = 0; hq < heads_per_kv; ++hq) {
                const float* qh = q + hq * d;
                float* sh = scores + hq * kKeyChunk;
                float chunk_max = -std::numeric_limits<float>::infinity();
                for (int64_t t = 0; t < nj; ++t) {
                    const float* kj = keys + (j0 + t) * d;
                    float dot = 0;
#pragma omp simd reduction(+ : dot)
                    for (int64_t e = 0; e < d; ++e) dot += qh[e] * kj[e];
                    sh[t] = dot * scale;
                    chunk_max = std::max(chunk_max, sh[t]);
                }
                const float new_m = std::max(m[hq], chunk_max);
                const float correction = std::exp(m[hq] - new_m);  // 0 on the first chunk
                float* ah = acc + hq * d;
                float sum = l[hq] * correction;
#pragma omp simd
                for (int64_t e = 0; e < d; ++e) ah[e] *= correction;
                for (int64_t t = 0; t < nj; ++t) {
                    const float weight = std::exp(sh[t] - new_m);
                    sum += weight;
                    const float* vj = values + (j0 + t) * d;
#pragma omp simd
                    for (int64_t e = 0; e < d; ++e) ah[e] += weight * vj[e];
                }
                l[hq] = sum;
                m[hq] = new_m;
            }
        }
    }
    for (int64_t hq = 0; hq < heads_per_kv; ++hq) {
        const float inv = 1.0f / l[hq];  // l >= 1: the query's own position is always visible
        for (int64_t e = 0; e < d; ++e) out[hq * d + e] = acc[hq * d + e] * inv;
    }
}

}  // namespace

// Parallel over (token, KV head); the query heads sharing a KV head are processed together
// so each key and value row is read once per group.
Status CpuBackend::attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                             const AttentionParams& params, const Tensor& out) {
    PURBO_TRY(check_attention(q, cache, place, params, out));
    // q, out (n, h, d); cache (s, g, c, d)
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), g = cache.k.dim(1), c = cache.k.dim(2);
    const int64_t heads_per_kv = h / g;
#pragma omp parallel num_threads(n_threads_) if (n * g > 1)
    {
        std::vector<float> scores(static_cast<size_t>(heads_per_kv * kKeyChunk));
        std::vector<float> acc(static_cast<size_t>(heads_per_kv * d));
#pragma omp for collapse(2) schedule(dynamic)
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t kv = 0; kv < g; ++kv) {
                const int64_t base = (place.seq[i] * g + kv) * c * d;
                const int64_t head0 = kv * heads_per_kv;
                attend_group(q.f32() + (i * h + head0) * d, heads_per_kv, d, cache.k.f32() + base,
                             cache.v.f32() + base, visible_ranges(place.pos[i], params),
                             params.scale, out.f32() + (i * h + head0) * d, scores.data(),
                             acc.data());
            }
        }
    }
    return Status::ok();
}

}  // namespace purbo
