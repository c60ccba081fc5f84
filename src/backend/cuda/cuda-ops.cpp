// cuda: entry points of every op but matmul. Each validates with op-checks.h (the same Status
// as every other backend), requires device tensors, stages its host spans into device scratch
// on the stream, and calls a launcher from cuda-kernels.h.
#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda-backend.h"
#include "backend/cuda/cuda-check.h"
#include "backend/cuda/cuda-kernels.h"
#include "backend/op-checks.h"

namespace purbo {

Status CudaBackend::embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
    PURBO_TRY(check_embedding(table, ids, out));
    PURBO_TRY(require_device("embedding", table, "table"));
    PURBO_TRY(require_device("embedding", out, "out"));
    if (table.dtype != DType::kBF16 && table.dtype != DType::kF32)
        return error(StatusCode::kUnsupported,
                     "embedding: table '{}' {}: the cuda backend reads bf16 (prepare_weight) or f32 tables",
                     table.name, table.describe());
    // table (v, k), out (n, k)
    const int64_t n = static_cast<int64_t>(ids.size()), k = table.dim(1);
    if (n == 0) return Status::ok();
    PURBO_ASSIGN_OR_RETURN(void* d_ids, stage(indices_, ids.data(), ids.size_bytes()));
    const auto* dev_ids = static_cast<const int32_t*>(d_ids);
    if (table.dtype == DType::kBF16) {
        PURBO_CUDA_TRY(cuda::launch_embedding_bf16(table.ptr<uint16_t>(), dev_ids, out.ptr<float>(), n, k, stream_));
    } else {
        PURBO_CUDA_TRY(cuda::launch_embedding_f32(table.ptr<float>(), dev_ids, out.ptr<float>(), n, k, stream_));
    }
    return Status::ok();
}

Status CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
    PURBO_TRY(check_rms_norm(x, weight, eps, out));
    PURBO_TRY(require_device("rms_norm", x, "x"));
    PURBO_TRY(require_device("rms_norm", weight, "weight"));
    PURBO_TRY(require_device("rms_norm", out, "out"));
    // x, out (rows, k); weight (k,)
    PURBO_CUDA_TRY(cuda::launch_rms_norm(x.ptr<float>(), weight.ptr<float>(), out.ptr<float>(), x.n_rows(),
                                         x.row_size(), eps, stream_));
    return Status::ok();
}

Status CudaBackend::add_bias(const Tensor& x, const Tensor& bias) {
    PURBO_TRY(check_add_bias(x, bias));
    PURBO_TRY(require_device("add_bias", x, "x"));
    PURBO_TRY(require_device("add_bias", bias, "bias"));
    PURBO_CUDA_TRY(cuda::launch_add_bias(x.ptr<float>(), bias.ptr<float>(), x.n_rows(), x.row_size(), stream_));
    return Status::ok();
}

Status CudaBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
    const Tensor* operands[] = {&gate, &up, &out};
    PURBO_TRY(check_same_shape_f32("swiglu", operands));
    for (const Tensor* t : operands) PURBO_TRY(require_device("swiglu", *t, "operand"));
    PURBO_CUDA_TRY(cuda::launch_swiglu(gate.ptr<float>(), up.ptr<float>(), out.ptr<float>(), gate.numel(), stream_));
    return Status::ok();
}

Status CudaBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
    const Tensor* operands[] = {&a, &b, &out};
    PURBO_TRY(check_same_shape_f32("add", operands));
    for (const Tensor* t : operands) PURBO_TRY(require_device("add", *t, "operand"));
    PURBO_CUDA_TRY(cuda::launch_add(a.ptr<float>(), b.ptr<float>(), out.ptr<float>(), a.numel(), stream_));
    return Status::ok();
}

Status CudaBackend::rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params) {
    PURBO_TRY(check_rope(x, pos, params));
    PURBO_TRY(require_device("rope", x, "x"));
    // x (n, heads, d). One staging copy: pos (n,) int32, then inv_freq (rotary_dim / 2,) f32.
    const int64_t n = x.dim(0);
    if (n == 0 || x.dim(1) == 0) return Status::ok();
    const size_t half = params.inv_freq.size();
    std::vector<uint32_t> staging(static_cast<size_t>(n) + half);
    std::memcpy(staging.data(), pos.data(), pos.size_bytes());
    std::memcpy(staging.data() + n, params.inv_freq.data(), half * 4);
    PURBO_ASSIGN_OR_RETURN(void* dev, stage(indices_, staging.data(), staging.size() * 4));
    cuda::RopeArgs args{};
    args.x = x.ptr<float>();
    args.pos = static_cast<const int32_t*>(dev);
    args.inv_freq = reinterpret_cast<const float*>(static_cast<const uint32_t*>(dev) + n);
    args.n = n;
    args.heads = x.dim(1);
    args.d = x.dim(2);
    args.rotary_dim = params.rotary_dim;
    args.attn_factor = params.attn_factor;
    PURBO_CUDA_TRY(cuda::launch_rope(args, stream_));
    return Status::ok();
}

Status CudaBackend::kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                             const KvCacheView& cache) {
    PURBO_TRY(check_kv_store(k, v, place, cache));
    PURBO_TRY(require_device("kv_store", k, "k"));
    PURBO_TRY(require_device("kv_store", v, "v"));
    PURBO_TRY(require_device("kv_store", cache.k, "cache k"));
    PURBO_TRY(require_device("kv_store", cache.v, "cache v"));
    if (!cache.heads.empty() || cache.ring_sinks >= 0)
        return error(StatusCode::kUnsupported,
                     "kv_store: the cuda backend has no partial or ring caches yet (cache {})", cache.k.describe());
    // k, v (n, g, d); cache (s, g, c, d). Staging: seq (n,), pos (n,).
    const int64_t n = k.dim(0);
    if (n == 0) return Status::ok();
    std::vector<int32_t> staging(place.seq.begin(), place.seq.end());
    staging.insert(staging.end(), place.pos.begin(), place.pos.end());
    PURBO_ASSIGN_OR_RETURN(void* dev, stage(indices_, staging.data(), staging.size() * 4));
    cuda::KvStoreArgs args{};
    args.k = k.ptr<float>();
    args.v = v.ptr<float>();
    args.seq = static_cast<const int32_t*>(dev);
    args.pos = static_cast<const int32_t*>(dev) + n;
    args.cache_k = cache.k.ptr<float>();
    args.cache_v = cache.v.ptr<float>();
    args.n = n;
    args.g = k.dim(1);
    args.c = cache.k.dim(2);
    args.d = k.dim(2);
    PURBO_CUDA_TRY(cuda::launch_kv_store(args, stream_));
    return Status::ok();
}

namespace {

// How the attention kernel's work is cut (speed only, not correctness: any plan that keeps
// one sequence per block and at most kAttnMaxRows rows per CTA gives the same result).
struct AttentionPlan {
    int heads_per_cta = 1;
    std::vector<int32_t> blocks;  // (n_blocks, 2): first token, token count
    int n_splits = 1;
};

// Splits give each CTA at least this many key tiles, so that the combine pass and the partial
// traffic stay small next to the tiles themselves.
constexpr int64_t kMinTilesPerSplit = 4;

AttentionPlan plan_attention(const TokenPlacement& place, int64_t h, int64_t g, const AttentionParams& params,
                             int n_sms) {
    AttentionPlan plan;
    const int64_t heads_per_kv = h / g;
    // The largest divisor of heads_per_kv that fits a CTA's rows: every head of a CTA shares
    // its KV head.
    for (int64_t hpc = std::min<int64_t>(heads_per_kv, cuda::kAttnMaxRows); hpc >= 1; --hpc) {
        if (heads_per_kv % hpc == 0) {
            plan.heads_per_cta = static_cast<int>(hpc);
            break;
        }
    }
    const int64_t tokens_per_block = cuda::kAttnMaxRows / plan.heads_per_cta;
    const int64_t n = static_cast<int64_t>(place.seq.size());
    int64_t max_tiles = 0;
    for (int64_t begin = 0; begin < n;) {
        int64_t end = begin + 1;
        int32_t max_p = place.pos[begin];
        while (end < n && end - begin < tokens_per_block && place.seq[end] == place.seq[begin]) {
            max_p = std::max(max_p, place.pos[end]);
            ++end;
        }
        plan.blocks.push_back(static_cast<int32_t>(begin));
        plan.blocks.push_back(static_cast<int32_t>(end - begin));
        int64_t tiles = max_p / cuda::kAttnKeysPerTile + 1;
        if (params.window > 0) {  // an upper bound: sink tiles plus the window's tiles
            const int64_t window_tiles = (int64_t{params.window} + 2 * cuda::kAttnKeysPerTile - 1) /
                                             cuda::kAttnKeysPerTile +
                                         (int64_t{params.n_sink} + cuda::kAttnKeysPerTile - 1) /
                                             cuda::kAttnKeysPerTile;
            tiles = std::min(tiles, window_tiles);
        }
        max_tiles = std::max(max_tiles, tiles);
        begin = end;
    }
    // Split the keys only when blocks x head groups leave SMs idle (decode, small batches).
    const int64_t n_blocks = static_cast<int64_t>(plan.blocks.size() / 2);
    const int64_t ctas = n_blocks * (h / plan.heads_per_cta);
    const int64_t target = 2 * static_cast<int64_t>(n_sms);
    if (ctas < target) {
        const int64_t wanted = (target + ctas - 1) / ctas;
        const int64_t by_work = std::max<int64_t>(1, max_tiles / kMinTilesPerSplit);
        plan.n_splits = static_cast<int>(std::clamp<int64_t>(std::min(wanted, by_work), 1, cuda::kAttnMaxSplits));
    }
    return plan;
}

// The tensor-core kernel (bf16 operands) or the fp32 one: speed only, both compute the same
// mask and softmax. The tensor-core kernel takes prefill chunks: at least a full CTA of
// consecutive positions of one sequence, head dim 64 or 128. Decode, short chunks and mixed
// batches keep the fp32 kernel (with split-KV where the grid would be small).
bool takes_tensor_core_path(const TokenPlacement& place, int64_t d) {
    const size_t n = place.seq.size();
    if (!cuda::attention_tc_head_dim_supported(static_cast<int>(d)) ||
        n < static_cast<size_t>(cuda::kAttnTcMinTokens))
        return false;
    for (size_t i = 1; i < n; ++i) {
        if (place.seq[i] != place.seq[0] ||
            int64_t{place.pos[i]} != int64_t{place.pos[0]} + static_cast<int64_t>(i))
            return false;
    }
    return true;
}

}  // namespace

Status CudaBackend::attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                              const AttentionParams& params, const Tensor& out) {
    PURBO_TRY(check_attention(q, cache, place, params, out));
    PURBO_TRY(require_device("attention", q, "q"));
    PURBO_TRY(require_device("attention", cache.k, "cache k"));
    PURBO_TRY(require_device("attention", cache.v, "cache v"));
    PURBO_TRY(require_device("attention", out, "out"));
    if (!cache.heads.empty() || cache.ring_sinks >= 0 || !params.local_heads.empty() || params.selection)
        return error(StatusCode::kUnsupported,
                     "attention: the cuda backend has no head classes, block selections, partial or ring caches yet");
    // q, out (n, h, d); cache (s, g, c, d)
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), g = cache.k.dim(1), c = cache.k.dim(2);
    if (!cuda::attention_head_dim_supported(static_cast<int>(d)))
        return error(StatusCode::kUnsupported, "attention: head dim {} of q '{}' {} has no CUDA kernel (32, 64 or 128)",
                     d, q.name, q.describe());
    if (n == 0 || h == 0) return Status::ok();
    if (n > INT_MAX / 2 || n * h > INT_MAX || h > 65535)
        return error(StatusCode::kUnsupported, "attention: q {} exceeds the kernel's grid", q.describe());

    if (takes_tensor_core_path(place, d)) {
        cuda::AttentionTcArgs tc{};
        tc.q = q.ptr<float>();
        tc.cache_k = cache.k.ptr<float>();
        tc.cache_v = cache.v.ptr<float>();
        tc.out = out.ptr<float>();
        tc.n = n;
        tc.h = h;
        tc.g = g;
        tc.c = c;
        tc.d = static_cast<int>(d);
        tc.seq = place.seq[0];
        tc.pos0 = place.pos[0];
        tc.scale = params.scale;
        tc.window = params.window;
        tc.n_sink = params.n_sink;
        PURBO_CUDA_TRY(cuda::launch_attention_tc(tc, stream_));
        return Status::ok();
    }

    const AttentionPlan plan = plan_attention(place, h, g, params, n_sms_);
    // Staging: seq (n,), pos (n,), blocks (n_blocks, 2), all int32.
    std::vector<int32_t> staging(place.seq.begin(), place.seq.end());
    staging.insert(staging.end(), place.pos.begin(), place.pos.end());
    staging.insert(staging.end(), plan.blocks.begin(), plan.blocks.end());
    PURBO_ASSIGN_OR_RETURN(void* dev, stage(indices_, staging.data(), staging.size() * 4));
    const auto* dev_ints = static_cast<const int32_t*>(dev);

    cuda::AttentionArgs args{};
    args.q = q.ptr<float>();
    args.cache_k = cache.k.ptr<float>();
    args.cache_v = cache.v.ptr<float>();
    args.seq = dev_ints;
    args.pos = dev_ints + n;
    args.blocks = dev_ints + 2 * n;
    args.out = out.ptr<float>();
    args.n = n;
    args.h = h;
    args.g = g;
    args.c = c;
    args.d = static_cast<int>(d);
    args.n_blocks = static_cast<int>(plan.blocks.size() / 2);
    args.heads_per_cta = plan.heads_per_cta;
    args.n_splits = plan.n_splits;
    args.scale = params.scale;
    args.window = params.window;
    args.n_sink = params.n_sink;
    if (plan.n_splits > 1) {
        // (n, h, n_splits, d) accumulators, then (n, h, n_splits, 2) max and sum.
        const size_t acc_floats = static_cast<size_t>(n * h * plan.n_splits * d);
        const size_t ml_floats = static_cast<size_t>(n * h * plan.n_splits * 2);
        PURBO_ASSIGN_OR_RETURN(void* part, reserve(attn_partial_, (acc_floats + ml_floats) * 4));
        args.partial_acc = static_cast<float*>(part);
        args.partial_ml = static_cast<float*>(part) + acc_floats;
    }
    PURBO_CUDA_TRY(cuda::launch_attention(args, stream_));
    return Status::ok();
}

}  // namespace purbo
