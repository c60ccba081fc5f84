// Shape and dtype checks shared by every backend: each op validates its arguments here
// first, so a wrong call is the same Status on cpu-ref, cpu and cuda.
#pragma once

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
Status check_kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                      const KvCacheView& cache);
Status check_attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                       const AttentionParams& params, const Tensor& out);
Status check_select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                           const BlockSelectParams& params, const Tensor& blocks, const Tensor& counts);
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

}  // namespace purbo
