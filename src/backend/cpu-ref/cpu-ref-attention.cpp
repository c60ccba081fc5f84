// cpu-ref: rope, kv_store and attention.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend/cpu-ref/cpu-ref-backend.h"
#include "backend/op-checks.h"
#include "core/fp8.h"

namespace purbo {

// Rotate-half layout: pair (x[i], x[i + rotary_dim / 2]) rotates by the angle pos * inv_freq[i]:
//   x[i]        <- x[i] cos - x[i + half] sin
//   x[i + half] <- x[i] sin + x[i + half] cos
// with cos and sin scaled by attn_factor. The angle is an f32 product, as Hugging Face
// computes it (inv_freq @ position_ids in f32).
Status CpuRefBackend::rope(const Tensor& x, std::span<const int32_t> pos,
                           const RopeParams& params) {
    PURBO_TRY(check_rope(x, pos, params));
    // x (n, heads, d)
    const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2), half = params.rotary_dim / 2;
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t hd = 0; hd < heads; ++hd) {
            float* v = x.f32() + (i * heads + hd) * d;
            for (int64_t r = 0; r < half; ++r) {
                const float angle = static_cast<float>(pos[i]) * params.inv_freq[r];
                const float c = std::cos(angle) * params.attn_factor;
                const float s = std::sin(angle) * params.attn_factor;
                const float a = v[r], b = v[r + half];
                v[r] = a * c - b * s;
                v[r + half] = a * s + b * c;
            }
        }
    }
    return Status::ok();
}

Status CpuRefBackend::kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                               const KvCacheView& cache) {
    PURBO_TRY(check_kv_store(k, v, place, cache, index_key_dtypes()));
    // k, v (n, g, d); cache (s, gc, c, d)
    const int64_t n = k.dim(0), g = k.dim(1), d = k.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    const bool f8 = cache.k.dtype == DType::kF8E4M3;  // an index-key cache; else f32
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t kv = 0; kv < g; ++kv) {
            const int64_t slot = kv_view_index(cache, kv);
            if (slot < 0) continue;
            const int64_t dst = ((place.seq[i] * gc + slot) * c + kv_cache_row(cache, place.pos[i])) * d;
            const int64_t src = (i * g + kv) * d;
            for (int64_t e = 0; e < d; ++e) {
                if (f8) {
                    cache.k.ptr<uint8_t>()[dst + e] = f32_to_f8e4m3(k.f32()[src + e]);
                    cache.v.ptr<uint8_t>()[dst + e] = f32_to_f8e4m3(v.f32()[src + e]);
                } else {
                    cache.k.f32()[dst + e] = k.f32()[src + e];
                    cache.v.f32()[dst + e] = v.f32()[src + e];
                }
            }
        }
    }
    return Status::ok();
}

// May query head `head` of token i (at position p) see the key at position j? The mask of
// attention_key_visible for local heads; every causal key, or those of the selected blocks,
// for retrieval heads.
static bool key_visible(int64_t j, int64_t p, int64_t i, int64_t head, const AttentionParams& params) {
    if (j > p) return false;
    if (attention_head_is_local(params, head)) return attention_key_visible(j, p, params);
    if (params.selection == nullptr || params.selection->head_row[static_cast<size_t>(head)] < 0) return true;
    const int64_t block = j / params.selection->block_size;
    for (int32_t b : attention_selected_blocks(params, i, head)) {
        if (b == block) return true;
    }
    return false;
}

// out[i, head] = sum_j softmax_j(scale * q . k_j) v_j over the keys j of token i's sequence
// that key_visible allows. Two passes: scores, then the normalised weighted sum.
Status CpuRefBackend::attention(const Tensor& q, const KvCacheView& cache,
                                const TokenPlacement& place, const AttentionParams& params,
                                const Tensor& out) {
    PURBO_TRY(check_attention(q, cache, place, params, out, kv_cache_dtypes()));
    // q, out (n, h, d); cache (s, gc, c, d)
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    const int64_t heads_per_kv = h / kv_view_model_heads(cache);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t p = place.pos[i];
        for (int64_t hd = 0; hd < h; ++hd) {
            const int64_t slot = kv_view_index(cache, hd / heads_per_kv);
            if (slot < 0) continue;
            const float* qv = q.f32() + (i * h + hd) * d;
            const int64_t base = (place.seq[i] * gc + slot) * c * d;
            const float* keys = cache.k.f32() + base;    // (c, d)
            const float* values = cache.v.f32() + base;  // (c, d)
            std::vector<double> scores(static_cast<size_t>(p + 1), 0.0);  // by position
            double max_score = -std::numeric_limits<double>::infinity();
            for (int64_t j = 0; j <= p; ++j) {
                if (!key_visible(j, p, i, hd, params)) continue;
                const int64_t row = kv_cache_row(cache, j);
                double dot = 0;
                for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(qv[e]) * keys[row * d + e];
                scores[static_cast<size_t>(j)] = dot * params.scale;
                max_score = std::max(max_score, scores[static_cast<size_t>(j)]);
            }
            double sum = 0;
            std::vector<double> acc(static_cast<size_t>(d), 0.0);
            for (int64_t j = 0; j <= p; ++j) {
                if (!key_visible(j, p, i, hd, params)) continue;
                const int64_t row = kv_cache_row(cache, j);
                const double weight = std::exp(scores[static_cast<size_t>(j)] - max_score);
                sum += weight;
                for (int64_t e = 0; e < d; ++e)
                    acc[static_cast<size_t>(e)] += weight * values[row * d + e];
            }
            // A selection without the query's own block may leave nothing visible: zeros.
            float* o = out.f32() + (i * h + hd) * d;
            for (int64_t e = 0; e < d; ++e)
                o[e] = sum > 0 ? static_cast<float>(acc[static_cast<size_t>(e)] / sum) : 0.0f;
        }
    }
    return Status::ok();
}

}  // namespace purbo
