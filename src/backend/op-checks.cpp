#include "backend/op-checks.h"

#include <algorithm>
#include <cmath>

#include "core/quants.h"

namespace purbo {
namespace {

std::string label(const Tensor& t, std::string_view role) {
    return fmt::format("{} '{}' {}", role, t.name, t.describe());
}

Status check_f32(std::string_view op, const Tensor& t, std::string_view role, int ndim) {
    if (t.empty())
        return error(StatusCode::kInvalidArgument, "{}: {} has no data", op, label(t, role));
    if (t.dtype != DType::kF32)
        return error(StatusCode::kInvalidArgument, "{}: {} must be f32", op, label(t, role));
    if (ndim > 0 && t.ndim != ndim)
        return error(StatusCode::kInvalidArgument, "{}: {} must have {} dims", op, label(t, role),
                     ndim);
    return Status::ok();
}

Status check_weight(std::string_view op, const Tensor& w) {
    if (w.empty())
        return error(StatusCode::kInvalidArgument, "{}: {} has no data", op, label(w, "weight"));
    if (w.ndim != 2)
        return error(StatusCode::kInvalidArgument, "{}: {} must have 2 dims", op,
                     label(w, "weight"));
    const int64_t block = dtype_traits(w.dtype).block_size;
    if (w.dim(1) % block != 0)
        return error(StatusCode::kInvalidArgument,
                     "{}: {}: rows of {} elements are not whole {}-element blocks of {}", op,
                     label(w, "weight"), w.dim(1), block, dtype_name(w.dtype));
    if (!dequantize_supported(w.dtype))
        return error(StatusCode::kUnsupported, "{}: {}: dtype {} cannot be read", op,
                     label(w, "weight"), dtype_name(w.dtype));
    return Status::ok();
}

// c < 0: the cache is a ring buffer and accepts any position.
Status check_placement(std::string_view op, const TokenPlacement& place, int64_t n, int64_t s,
                       int64_t c) {
    if (static_cast<int64_t>(place.seq.size()) != n || static_cast<int64_t>(place.pos.size()) != n)
        return error(StatusCode::kInvalidArgument,
                     "{}: placement has {} seq and {} pos entries for {} tokens", op,
                     place.seq.size(), place.pos.size(), n);
    for (int64_t i = 0; i < n; ++i) {
        if (place.seq[i] < 0 || place.seq[i] >= s)
            return error(StatusCode::kInvalidArgument,
                         "{}: token {}: seq {} outside the cache's {} slots", op, i, place.seq[i],
                         s);
        if (place.pos[i] < 0 || (c >= 0 && place.pos[i] >= c))
            return error(StatusCode::kInvalidArgument,
                         "{}: token {}: pos {} outside the cache capacity {}", op, i, place.pos[i],
                         c);
    }
    return Status::ok();
}

Status check_cache(std::string_view op, const KvCacheView& cache, std::span<const DType> cache_dtypes) {
    for (const Tensor* t : {&cache.k, &cache.v}) {
        const std::string_view role = t == &cache.k ? "cache k" : "cache v";
        if (t->empty())
            return error(StatusCode::kInvalidArgument, "{}: {} has no data", op, label(*t, role));
        if (t->ndim != 4)
            return error(StatusCode::kInvalidArgument, "{}: {} must have 4 dims", op, label(*t, role));
        if (std::find(cache_dtypes.begin(), cache_dtypes.end(), t->dtype) == cache_dtypes.end()) {
            std::string names;
            for (DType dt : cache_dtypes) names += fmt::format("{}{}", names.empty() ? "" : " or ", dtype_name(dt));
            return error(StatusCode::kUnsupported, "{}: {}: this backend keeps KV caches in {}", op,
                         label(*t, role), names);
        }
    }
    if (!same_shape(cache.k, cache.v) || cache.k.dtype != cache.v.dtype)
        return error(StatusCode::kInvalidArgument, "{}: cache k {} and v {} differ in shape or type", op,
                     cache.k.describe(), cache.v.describe());
    if (!cache.heads.empty()) {
        if (static_cast<int64_t>(cache.heads.size()) != cache.k.dim(1))
            return error(StatusCode::kInvalidArgument,
                         "{}: cache {} lists {} KV heads for its {} cache heads", op,
                         cache.k.describe(), cache.heads.size(), cache.k.dim(1));
        for (size_t i = 0; i < cache.heads.size(); ++i) {
            if (cache.heads[i] < 0 || cache.heads[i] >= cache.n_head_kv ||
                (i > 0 && cache.heads[i] <= cache.heads[i - 1]))
                return error(StatusCode::kInvalidArgument,
                             "{}: cache head {} holds KV head {}: heads must ascend within [0, {})",
                             op, i, cache.heads[i], cache.n_head_kv);
        }
    }
    if (cache.ring_sinks >= 0 && cache.ring_sinks >= cache.k.dim(2))
        return error(StatusCode::kInvalidArgument,
                     "{}: ring of {} rows cannot keep {} sinks and a window", op, cache.k.dim(2),
                     cache.ring_sinks);
    return Status::ok();
}

// KV heads of the model (g) as the view sees them.
int64_t model_kv_heads(const KvCacheView& cache) {
    return cache.heads.empty() ? cache.k.dim(1) : cache.n_head_kv;
}

// Cache capacity for check_placement: -1 (any position) for a ring.
int64_t placement_capacity(const KvCacheView& cache) {
    return cache.ring_sinks >= 0 ? -1 : cache.k.dim(2);
}

}  // namespace

Status check_embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
    PURBO_TRY(check_weight("embedding", table));
    PURBO_TRY(check_f32("embedding", out, "out", 2));
    if (out.dim(0) != static_cast<int64_t>(ids.size()) || out.dim(1) != table.dim(1))
        return error(StatusCode::kInvalidArgument,
                     "embedding: {} does not match {} ids x {} columns of {}", label(out, "out"),
                     ids.size(), table.dim(1), label(table, "table"));
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= table.dim(0))
            return error(StatusCode::kInvalidArgument,
                         "embedding: id {} at index {} outside [0, {})", ids[i], i, table.dim(0));
    }
    return Status::ok();
}

Status check_rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
    PURBO_TRY(check_f32("rms_norm", x, "x", 0));
    PURBO_TRY(check_f32("rms_norm", weight, "weight", 1));
    PURBO_TRY(check_f32("rms_norm", out, "out", 0));
    if (x.ndim < 1 || !same_shape(x, out) || weight.dim(0) != x.row_size())
        return error(StatusCode::kInvalidArgument, "rms_norm: {}, {} and {} disagree",
                     label(x, "x"), label(weight, "weight"), label(out, "out"));
    if (!(eps >= 0))
        return error(StatusCode::kInvalidArgument, "rms_norm: eps {} is negative", eps);
    return Status::ok();
}

Status check_matmul(const Tensor& x, const Tensor& w, const Tensor& out) {
    PURBO_TRY(check_f32("matmul", x, "x", 2));
    PURBO_TRY(check_weight("matmul", w));
    PURBO_TRY(check_f32("matmul", out, "out", 2));
    if (x.dim(1) != w.dim(1) || out.dim(0) != x.dim(0) || out.dim(1) != w.dim(0))
        return error(StatusCode::kInvalidArgument, "matmul: {} @ {}^T does not give {}",
                     label(x, "x"), label(w, "w"), label(out, "out"));
    return Status::ok();
}

Status check_add_bias(const Tensor& x, const Tensor& bias) {
    PURBO_TRY(check_f32("add_bias", x, "x", 0));
    PURBO_TRY(check_f32("add_bias", bias, "bias", 1));
    if (x.ndim < 1 || bias.dim(0) != x.row_size())
        return error(StatusCode::kInvalidArgument, "add_bias: {} does not match rows of {}",
                     label(bias, "bias"), label(x, "x"));
    return Status::ok();
}

Status check_rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params) {
    PURBO_TRY(check_f32("rope", x, "x", 3));
    if (static_cast<int64_t>(pos.size()) != x.dim(0))
        return error(StatusCode::kInvalidArgument, "rope: {} positions for {}", pos.size(),
                     label(x, "x"));
    if (params.rotary_dim <= 0 || params.rotary_dim % 2 != 0 || params.rotary_dim > x.dim(2))
        return error(StatusCode::kInvalidArgument,
                     "rope: rotary_dim {} must be even and in (0, {}]", params.rotary_dim,
                     x.dim(2));
    if (static_cast<int64_t>(params.inv_freq.size()) != params.rotary_dim / 2)
        return error(StatusCode::kInvalidArgument,
                     "rope: inv_freq has {} entries, rotary_dim {} needs {}",
                     params.inv_freq.size(), params.rotary_dim, params.rotary_dim / 2);
    return Status::ok();
}

Status check_kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                      const KvCacheView& cache, std::span<const DType> cache_dtypes) {
    PURBO_TRY(check_f32("kv_store", k, "k", 3));
    PURBO_TRY(check_f32("kv_store", v, "v", 3));
    PURBO_TRY(check_cache("kv_store", cache, cache_dtypes));
    if (!same_shape(k, v) || k.dim(1) != model_kv_heads(cache) || k.dim(2) != cache.k.dim(3))
        return error(StatusCode::kInvalidArgument, "kv_store: {} and {} do not fit the cache {}",
                     label(k, "k"), label(v, "v"), cache.k.describe());
    return check_placement("kv_store", place, k.dim(0), cache.k.dim(0), placement_capacity(cache));
}

Status check_attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                       const AttentionParams& params, const Tensor& out,
                       std::span<const DType> cache_dtypes) {
    PURBO_TRY(check_f32("attention", q, "q", 3));
    PURBO_TRY(check_f32("attention", out, "out", 3));
    PURBO_TRY(check_cache("attention", cache, cache_dtypes));
    const int64_t n = q.dim(0), h = q.dim(1), g = model_kv_heads(cache);
    if (!same_shape(q, out) || q.dim(2) != cache.k.dim(3) || g <= 0 || h % g != 0)
        return error(StatusCode::kInvalidArgument,
                     "attention: {} (heads a multiple of the KV heads), {} and cache {} disagree",
                     label(q, "q"), label(out, "out"), cache.k.describe());
    if (params.window < 0 || params.n_sink < 0)
        return error(StatusCode::kInvalidArgument,
                     "attention: window {} and n_sink {} must be >= 0", params.window,
                     params.n_sink);
    if (!params.local_heads.empty() && static_cast<int64_t>(params.local_heads.size()) != h)
        return error(StatusCode::kInvalidArgument, "attention: {} head classes for {} query heads",
                     params.local_heads.size(), h);
    PURBO_TRY(check_placement("attention", place, n, cache.k.dim(0), placement_capacity(cache)));
    if (const BlockSelection* sel = params.selection) {
        if (sel->block_size <= 0 || static_cast<int64_t>(sel->head_row.size()) != h)
            return error(StatusCode::kInvalidArgument,
                         "attention: block selection of block size {} maps {} of {} query heads",
                         sel->block_size, sel->head_row.size(), h);
        const Tensor& b = sel->blocks;
        const Tensor& cnt = sel->counts;
        if (b.empty() || b.dtype != DType::kI32 || b.ndim != 3 || b.dim(0) != n || cnt.empty() ||
            cnt.dtype != DType::kI32 || cnt.ndim != 2 || cnt.dim(0) != n || cnt.dim(1) != b.dim(1))
            return error(StatusCode::kInvalidArgument,
                         "attention: block selection {} and counts {} must be i32 (n, hr, max_blocks) and (n, hr) for {} tokens",
                         b.describe(), cnt.describe(), n);
        for (int64_t j = 0; j < h; ++j) {
            const int32_t row = sel->head_row[static_cast<size_t>(j)];
            if (row < -1 || row >= b.dim(1))
                return error(StatusCode::kInvalidArgument,
                             "attention: query head {} maps to selection row {} of {}", j, row,
                             b.dim(1));
            if (row >= 0 && !params.local_heads.empty() && params.local_heads[static_cast<size_t>(j)])
                return error(StatusCode::kInvalidArgument,
                             "attention: query head {} is local and also has a block selection", j);
        }
    }
    if (cache.ring_sinks >= 0) {
        // Every key a query may see must still be in the ring: the sinks, and the window of
        // the earliest query of a sequence after the batch's latest key overwrote the oldest rows.
        if (params.window == 0 || params.n_sink > cache.ring_sinks)
            return error(StatusCode::kInvalidArgument,
                         "attention: a ring cache ({} sinks) needs local heads with a window and at most {} sinks (window {}, sinks {})",
                         cache.ring_sinks, cache.ring_sinks, params.window, params.n_sink);
        const int64_t hpk = h / g;
        for (int64_t j = 0; j < h; ++j) {
            const bool held = cache.heads.empty() ||
                              std::binary_search(cache.heads.begin(), cache.heads.end(), j / hpk);
            if (held && !attention_head_is_local(params, j))
                return error(StatusCode::kInvalidArgument,
                             "attention: query head {} reads a ring cache but is not local", j);
        }
        const int64_t span = cache.k.dim(2) - cache.ring_sinks;
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t other = 0; other < n; ++other) {
                if (place.seq[other] != place.seq[i]) continue;
                if (place.pos[other] - place.pos[i] + params.window > span)
                    return error(StatusCode::kInvalidArgument,
                                 "attention: ring of {} window rows is too small for window {} and a batch spanning positions {}..{}",
                                 span, params.window, place.pos[i], place.pos[other]);
            }
        }
    }
    return Status::ok();
}

Status check_select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                           const BlockSelectParams& params, const Tensor& blocks, const Tensor& counts,
                           std::span<const DType> key_dtypes) {
    PURBO_TRY(check_f32("select_blocks", iq, "iq", 3));
    // The index keys are kept like a KV cache (stored by kv_store), in a cache type the backend keeps.
    if (index_keys.empty() || index_keys.ndim != 4)
        return error(StatusCode::kInvalidArgument, "select_blocks: {} must have 4 dims",
                     label(index_keys, "index_keys"));
    if (std::find(key_dtypes.begin(), key_dtypes.end(), index_keys.dtype) == key_dtypes.end()) {
        std::string names;
        for (DType dt : key_dtypes) names += fmt::format("{}{}", names.empty() ? "" : " or ", dtype_name(dt));
        return error(StatusCode::kInvalidArgument, "select_blocks: {}: this backend keeps index keys in {}",
                     label(index_keys, "index_keys"), names);
    }
    const int64_t n = iq.dim(0), hr = iq.dim(1), r = iq.dim(2);
    const int64_t s = index_keys.dim(0), c = index_keys.dim(2);
    if (index_keys.dim(1) != hr || index_keys.dim(3) != r)
        return error(StatusCode::kInvalidArgument, "select_blocks: {} and {} disagree",
                     label(iq, "iq"), label(index_keys, "index_keys"));
    if (params.block_size <= 0 || !(params.top_p > 0.0f && params.top_p <= 1.0f) ||
        !std::isfinite(params.scale))
        return error(StatusCode::kInvalidArgument,
                     "select_blocks: block size {} must be positive, top_p {} in (0, 1], scale {} finite",
                     params.block_size, params.top_p, params.scale);
    if (params.max_blocks < 0)
        return error(StatusCode::kInvalidArgument,
                     "select_blocks: max_blocks {} must be 0 (no limit) or positive", params.max_blocks);
    if (params.query_block_samples < 0)
        return error(StatusCode::kInvalidArgument,
                     "select_blocks: query_block_samples {} must be 0 (every token) or positive",
                     params.query_block_samples);
    if (params.query_block < 0 || params.query_block % params.block_size != 0)
        return error(StatusCode::kInvalidArgument,
                     "select_blocks: query_block {} must be 0 (the block size) or a multiple of "
                     "the block size {}",
                     params.query_block, params.block_size);
    // The most blocks a row can keep: every block of the cache, or under a budget of K blocks
    // max(K, always) (block 0 and the blocks of the row's tokens are kept whatever K: 2, or 1 +
    // the blocks of a query group).
    const int64_t n_blocks = (c + params.block_size - 1) / params.block_size;
    const int64_t always =
        1 + (params.per_query_block ? query_group_tokens(params) / params.block_size : 1);
    const int64_t most_kept =
        params.max_blocks > 0
            ? std::min<int64_t>(n_blocks, std::max<int64_t>(params.max_blocks, always))
            : n_blocks;
    if (blocks.empty() || blocks.dtype != DType::kI32 || blocks.ndim != 3 || blocks.dim(0) != n ||
        blocks.dim(1) != hr || blocks.dim(2) < most_kept)
        return error(StatusCode::kInvalidArgument, "select_blocks: {} must be i32 ({}, {}, >= {})",
                     label(blocks, "blocks"), n, hr, most_kept);
    if (counts.empty() || counts.dtype != DType::kI32 || counts.ndim != 2 || counts.dim(0) != n ||
        counts.dim(1) != hr)
        return error(StatusCode::kInvalidArgument, "select_blocks: {} must be i32 ({}, {})",
                     label(counts, "counts"), n, hr);
    return check_placement("select_blocks", place, n, s, c);
}

Status check_same_shape_f32(std::string_view op, std::span<const Tensor* const> tensors) {
    for (const Tensor* t : tensors) PURBO_TRY(check_f32(op, *t, "operand", 0));
    for (const Tensor* t : tensors) {
        if (!same_shape(*t, *tensors[0]))
            return error(StatusCode::kInvalidArgument, "{}: {} and {} differ in shape", op,
                         label(*tensors[0], "operand"), label(*t, "operand"));
    }
    return Status::ok();
}

}  // namespace purbo
