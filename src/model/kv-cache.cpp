#include "model/kv-cache.h"

namespace purbo {

size_t KvCache::nbytes() const {
    size_t total = 0;
    for (const KvCacheView& l : layers) total += l.k.nbytes() + l.v.nbytes();
    return total;
}

Result<KvCache> kv_cache_create(Backend& backend, const ModelConfig& config, int n_seq, int n_ctx) {
    if (n_seq <= 0 || n_ctx <= 0) {
        return error(StatusCode::kInvalidArgument, "KV cache: n_seq {} and n_ctx {} must be positive", n_seq, n_ctx);
    }
    KvCache cache;
    cache.n_seq = n_seq;
    cache.n_ctx = n_ctx;
    cache.layers.reserve(static_cast<size_t>(config.n_layer));
    for (int il = 0; il < config.n_layer; ++il) {
        KvCacheView view;
        view.k = backend.alloc(DType::kF32, {n_seq, config.n_head_kv, n_ctx, config.head_dim}, "cache_k");
        view.v = backend.alloc(DType::kF32, {n_seq, config.n_head_kv, n_ctx, config.head_dim}, "cache_v");
        if (view.k.empty() || view.v.empty()) {
            return error(StatusCode::kOutOfMemory, "KV cache: cannot allocate {} sequences x {} tokens", n_seq, n_ctx);
        }
        cache.layers.push_back(std::move(view));
    }
    return cache;
}

}  // namespace purbo
