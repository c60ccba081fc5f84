// Shape and dtype checks shared by every backend: each op validates its arguments here
// first, so a wrong call is the same Status on cpu-ref, cpu and cuda.
#pragma once

#include <algorithm>
#include <span>

#include "backend/backend.h"

namespace purbo {

// Letters as in backend.h: n tokens, k inputs, m outputs, h query heads, g KV heads,
// d head dim, c cache capacity, s sequence slots.
Status check_embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out);
Status check_rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out);
Status check_matmul(const Tensor& x, const Tensor& w, const Tensor& out);
Status check_add_bias(const Tensor& x, const Tensor& bias);
Status check_rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params);
// cache_dtypes: the backend's kv_cache_dtypes(); a cache of another type is kUnsupported.
Status check_kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                      const KvCacheView& cache, std::span<const DType> cache_dtypes);
Status check_attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                       const AttentionParams& params, const Tensor& out,
                       std::span<const DType> cache_dtypes);
Status check_select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                           const BlockSelectParams& params, const Tensor& blocks, const Tensor& counts,
                           std::span<const DType> key_dtypes);
Status check_same_shape_f32(std::string_view op, std::span<const Tensor* const> tensors);

}  // namespace purbo

namespace purbo {

// The attention mask, defined once: may a query at position p see the key at position j?
// Causal (j <= p); with a window, only the first n_sink positions and p - window < j.
inline bool attention_key_visible(int64_t j, int64_t p, const AttentionParams& params) {
    if (j > p) return false;
    if (params.window == 0) return true;
    return j > p - params.window || j < params.n_sink;
}

// Whether the window and sinks of `params` apply to query head `head` (a local head).
inline bool attention_head_is_local(const AttentionParams& params, int64_t head) {
    return params.window > 0 &&
           (params.local_heads.empty() || params.local_heads[static_cast<size_t>(head)] != 0);
}

// The model's KV head count as a cache view sees it (g).
inline int64_t kv_view_model_heads(const KvCacheView& cache) {
    return cache.heads.empty() ? cache.k.dim(1) : cache.n_head_kv;
}

// The cache head that holds model KV head `kv`, or -1 when the view does not hold it.
inline int64_t kv_view_index(const KvCacheView& cache, int64_t kv) {
    if (cache.heads.empty()) return kv;
    for (size_t i = 0; i < cache.heads.size(); ++i) {
        if (cache.heads[i] == kv) return static_cast<int64_t>(i);
    }
    return -1;
}

// The block ids selected for (token i, query head `head`), ascending; empty when the head is
// not restricted. Host-readable selections only (CPU backends).
inline std::span<const int32_t> attention_selected_blocks(const AttentionParams& params, int64_t i,
                                                          int64_t head) {
    const BlockSelection* sel = params.selection;
    if (sel == nullptr) return {};
    const int32_t row = sel->head_row[static_cast<size_t>(head)];
    if (row < 0) return {};
    const int64_t hr = sel->blocks.dim(1), max_blocks = sel->blocks.dim(2);
    const int32_t count = std::clamp<int32_t>(sel->counts.ptr<int32_t>()[i * hr + row], 0,
                                              static_cast<int32_t>(max_blocks));
    return {sel->blocks.ptr<int32_t>() + (i * hr + row) * max_blocks, static_cast<size_t>(count)};
}

}  // namespace purbo
