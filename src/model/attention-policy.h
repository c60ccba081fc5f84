// How each layer attends: the hook through which the method (src/sparse) turns dense layers
// into local and retrieval heads without the model layer knowing about adapters. Without a
// policy every head attends densely.
#pragma once

#include <vector>

#include "backend/backend.h"

namespace purbo {

// Which KV heads of each layer keep only sinks + window (a ring buffer, method.md section 2):
// those whose query heads are all local. The ring holds sinks + window + max_batch rows so
// that a whole micro-batch fits beside the window of its first token.
struct KvLayout {
    int ring_sinks = 0;
    int ring_window = 0;
    std::vector<std::vector<int32_t>> ring_heads;  // per layer, ascending; empty = none
};

class AttentionPolicy {
public:
    virtual ~AttentionPolicy() = default;

    // The cache layout this policy's head classes allow (no rings by default).
    virtual KvLayout kv_layout() const { return {}; }

    // Called for layer `il` after the q/k projections (and q/k norms), before RoPE, with the
    // batch's pre-RoPE q (n, h, d) and k (n, g, d) on the backend. Fills `params` (window,
    // sinks, local heads, block selection) for this batch's attention; may store state of its
    // own (the indexer's cached keys). Scale is already set.
    virtual Status plan_layer(int il, const Tensor& q_pre, const Tensor& k_pre, const TokenPlacement& place,
                              AttentionParams& params) = 0;

    // Bytes of per-position state the policy keeps beside the KV cache (the indexer's cached
    // keys), counted with the cache wherever KV bytes are reported.
    virtual size_t cache_bytes() const { return 0; }

    // Called after every layer of the batch has been issued (and, on the GPU, may not yet
    // have run): the place to read back per-batch results, which plan_layer may not do
    // while a decode step is recorded as a graph.
    virtual Status end_batch(const TokenPlacement& place) {
        (void)place;
        return Status::ok();
    }
};

}  // namespace purbo
