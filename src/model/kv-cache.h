// The key/value cache of every layer: s sequence slots of capacity c tokens each.
// The runtime decides which slot a sequence uses and at which positions its tokens go.
// With a KvLayout, the KV heads of a layer whose query heads are all local live in a ring
// of sinks + window + max_batch rows instead (method.md section 2).
#pragma once

#include <optional>
#include <vector>

#include "backend/backend.h"
#include "model/attention-policy.h"
#include "model/model-config.h"

namespace purbo {

struct KvCache {
    int n_seq = 0;  // s
    int n_ctx = 0;  // c
    // Per layer: the KV heads kept for the whole context, k, v (s, g_full, c, d); their
    // `heads` list is empty when the layer has no ring (all g heads, in order).
    std::vector<KvCacheView> layers;
    // Per layer: the ring of the layer's local KV heads (s, g_ring, rows, d); empty tensors
    // when it has none.
    std::vector<KvCacheView> rings;

    size_t nbytes() const;
    // What the cache would take with every KV head kept for the whole context.
    size_t dense_nbytes() const;
};

// dtype: the element type of every cache tensor, one of backend.kv_cache_dtypes() (default:
// the backend's preferred one, its first); another is a kUnsupported Status.
Result<KvCache> kv_cache_create(Backend& backend, const ModelConfig& config, int n_seq, int n_ctx,
                                const KvLayout& layout = {}, int max_batch = 0,
                                std::optional<DType> dtype = std::nullopt);

}  // namespace purbo
