// The key/value cache of every layer: s sequence slots of capacity c tokens each.
// The runtime decides which slot a sequence uses and at which positions its tokens go.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "model/model-config.h"

namespace purbo {

struct KvCache {
    int n_seq = 0;  // s
    int n_ctx = 0;  // c
    std::vector<KvCacheView> layers;  // per layer: k, v (s, g, c, d)

    size_t nbytes() const;
};

Result<KvCache> kv_cache_create(Backend& backend, const ModelConfig& config, int n_seq, int n_ctx);

}  // namespace purbo
