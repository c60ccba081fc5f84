#include "model/kv-cache.h"

#include <algorithm>

namespace purbo {

size_t KvCache::nbytes() const {
    size_t total = 0;
    for (const KvCacheView& l : layers) total += l.k.empty() ? 0 : l.k.nbytes() + l.v.nbytes();
    for (const KvCacheView& r : rings) total += r.k.empty() ? 0 : r.k.nbytes() + r.v.nbytes();
    return total;
}

size_t KvCache::dense_nbytes() const {
    size_t total = 0;
    for (size_t il = 0; il < layers.size(); ++il) {
        const KvCacheView& l = layers[il];
        const KvCacheView& r = rings[il];
        const int64_t heads = (l.k.empty() ? 0 : l.k.dim(1)) + (r.k.empty() ? 0 : r.k.dim(1));
        const Tensor& any = l.k.empty() ? r.k : l.k;
        total += 2 * static_cast<size_t>(n_seq * heads * n_ctx * any.dim(3)) * dtype_traits(any.dtype).block_bytes;
    }
    return total;
}

Result<KvCache> kv_cache_create(Backend& backend, const ModelConfig& config, int n_seq, int n_ctx,
                                const KvLayout& layout, int max_batch, std::optional<DType> dtype) {
    if (n_seq <= 0 || n_ctx <= 0) {
        return error(StatusCode::kInvalidArgument, "KV cache: n_seq {} and n_ctx {} must be positive", n_seq, n_ctx);
    }
    const std::vector<DType> supported = backend.kv_cache_dtypes();
    const DType type = dtype.value_or(supported.front());
    if (std::find(supported.begin(), supported.end(), type) == supported.end()) {
        std::string names;
        for (DType dt : supported) names += fmt::format("{}{}", names.empty() ? "" : ", ", dtype_name(dt));
        return error(StatusCode::kUnsupported, "KV cache type {}: the {} backend keeps caches in {}", dtype_name(type),
                     backend.name(), names);
    }
    if (!layout.ring_heads.empty() && static_cast<int>(layout.ring_heads.size()) != config.n_layer) {
        return error(StatusCode::kInvalidArgument, "KV cache: ring layout for {} layers, the model has {}",
                     layout.ring_heads.size(), config.n_layer);
    }
    KvCache cache;
    cache.n_seq = n_seq;
    cache.n_ctx = n_ctx;
    const int g = config.n_head_kv, d = config.head_dim;
    // A ring only pays when it is shorter than the context.
    const int ring_rows = layout.ring_sinks + layout.ring_window + std::max(max_batch, 1);
    const bool rings = !layout.ring_heads.empty() && ring_rows < n_ctx;
    auto alloc_view = [&](int heads, int rows, std::vector<int32_t> held, int ring_sinks) -> Result<KvCacheView> {
        KvCacheView view;
        if (heads == 0) return view;
        view.k = backend.alloc(type, {n_seq, heads, rows, d}, "cache_k");
        view.v = backend.alloc(type, {n_seq, heads, rows, d}, "cache_v");
        if (view.k.empty() || view.v.empty()) {
            return error(StatusCode::kOutOfMemory, "KV cache: cannot allocate {} sequences x {} heads x {} tokens",
                         n_seq, heads, rows);
        }
        view.heads = std::move(held);
        view.n_head_kv = view.heads.empty() ? 0 : g;
        view.ring_sinks = ring_sinks;
        return view;
    };
    for (int il = 0; il < config.n_layer; ++il) {
        std::vector<int32_t> ring = rings ? layout.ring_heads[static_cast<size_t>(il)] : std::vector<int32_t>{};
        for (size_t i = 0; i < ring.size(); ++i) {
            if (ring[i] < 0 || ring[i] >= g || (i > 0 && ring[i] <= ring[i - 1]))
                return error(StatusCode::kInvalidArgument, "KV cache: layer {} ring head {} outside [0, {}) or unsorted",
                             il, ring[i], g);
        }
        std::vector<int32_t> full;
        for (int kv = 0; kv < g; ++kv) {
            if (!std::binary_search(ring.begin(), ring.end(), kv)) full.push_back(kv);
        }
        const int n_full = static_cast<int>(full.size());
        if (ring.empty()) full.clear();  // every head: the plain layout
        PURBO_ASSIGN_OR_RETURN(KvCacheView f, alloc_view(n_full, n_ctx, std::move(full), -1));
        const int n_ring = static_cast<int>(ring.size());
        PURBO_ASSIGN_OR_RETURN(KvCacheView r, alloc_view(n_ring, ring_rows, std::move(ring), layout.ring_sinks));
        cache.layers.push_back(std::move(f));
        cache.rings.push_back(std::move(r));
    }
    return cache;
}

}  // namespace purbo
