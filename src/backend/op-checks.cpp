#include "backend/op-checks.h"

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
        if (place.pos[i] < 0 || place.pos[i] >= c)
            return error(StatusCode::kInvalidArgument,
                         "{}: token {}: pos {} outside the cache capacity {}", op, i, place.pos[i],
                         c);
    }
    return Status::ok();
}

Status check_cache(std::string_view op, const KvCacheView& cache) {
    PURBO_TRY(check_f32(op, cache.k, "cache k", 4));
    PURBO_TRY(check_f32(op, cache.v, "cache v", 4));
    if (!same_shape(cache.k, cache.v))
        return error(StatusCode::kInvalidArgument, "{}: cache k {} and v {} differ in shape", op,
                     cache.k.describe(), cache.v.describe());
    return Status::ok();
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
                      const KvCacheView& cache) {
    PURBO_TRY(check_f32("kv_store", k, "k", 3));
    PURBO_TRY(check_f32("kv_store", v, "v", 3));
    PURBO_TRY(check_cache("kv_store", cache));
    if (!same_shape(k, v) || k.dim(1) != cache.k.dim(1) || k.dim(2) != cache.k.dim(3))
        return error(StatusCode::kInvalidArgument, "kv_store: {} and {} do not fit the cache {}",
                     label(k, "k"), label(v, "v"), cache.k.describe());
    return check_placement("kv_store", place, k.dim(0), cache.k.dim(0), cache.k.dim(2));
}

Status check_attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                       const AttentionParams& params, const Tensor& out) {
    PURBO_TRY(check_f32("attention", q, "q", 3));
    PURBO_TRY(check_f32("attention", out, "out", 3));
    PURBO_TRY(check_cache("attention", cache));
    const int64_t h = q.dim(1), g = cache.k.dim(1);
    if (!same_shape(q, out) || q.dim(2) != cache.k.dim(3) || g <= 0 || h % g != 0)
        return error(StatusCode::kInvalidArgument,
                     "attention: {} (heads a multiple of the KV heads), {} and cache {} disagree",
                     label(q, "q"), label(out, "out"), cache.k.describe());
    if (params.window < 0 || params.n_sink < 0)
        return error(StatusCode::kInvalidArgument,
                     "attention: window {} and n_sink {} must be >= 0", params.window,
                     params.n_sink);
    return check_placement("attention", place, q.dim(0), cache.k.dim(0), cache.k.dim(2));
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
