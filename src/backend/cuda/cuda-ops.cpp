// cuda: entry points of every op but matmul. Each validates with op-checks.h (the same Status
// as every other backend), requires device tensors, stages its host spans into device scratch
// on the stream, and calls a launcher from cuda-kernels.h.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda-backend.h"
#include "backend/cuda/cuda-check.h"
#include "backend/cuda/cuda-kernels.h"
#include "backend/op-checks.h"
#include "core/env.h"

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
        return enqueue(
            "launch_embedding_bf16",
            [&] { return cuda::launch_embedding_bf16(table.ptr<uint16_t>(), dev_ids, out.ptr<float>(), n, k, stream_); },
            table.data, dev_ids, out.data, n, k);
    }
    return enqueue(
        "launch_embedding_f32",
        [&] { return cuda::launch_embedding_f32(table.ptr<float>(), dev_ids, out.ptr<float>(), n, k, stream_); },
        table.data, dev_ids, out.data, n, k);
}

Status CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
    PURBO_TRY(check_rms_norm(x, weight, eps, out));
    PURBO_TRY(require_device("rms_norm", x, "x"));
    PURBO_TRY(require_device("rms_norm", weight, "weight"));
    PURBO_TRY(require_device("rms_norm", out, "out"));
    // x, out (rows, k); weight (k,)
    const int64_t rows = x.n_rows(), k = x.row_size();
    return enqueue(
        "launch_rms_norm",
        [&] { return cuda::launch_rms_norm(x.ptr<float>(), weight.ptr<float>(), out.ptr<float>(), rows, k, eps, stream_); },
        x.data, weight.data, out.data, rows, k, eps);
}

Status CudaBackend::add_bias(const Tensor& x, const Tensor& bias) {
    PURBO_TRY(check_add_bias(x, bias));
    PURBO_TRY(require_device("add_bias", x, "x"));
    PURBO_TRY(require_device("add_bias", bias, "bias"));
    const int64_t rows = x.n_rows(), m = x.row_size();
    return enqueue(
        "launch_add_bias", [&] { return cuda::launch_add_bias(x.ptr<float>(), bias.ptr<float>(), rows, m, stream_); },
        x.data, bias.data, rows, m);
}

Status CudaBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
    const Tensor* operands[] = {&gate, &up, &out};
    PURBO_TRY(check_same_shape_f32("swiglu", operands));
    for (const Tensor* t : operands) PURBO_TRY(require_device("swiglu", *t, "operand"));
    const int64_t count = gate.numel();
    return enqueue(
        "launch_swiglu",
        [&] { return cuda::launch_swiglu(gate.ptr<float>(), up.ptr<float>(), out.ptr<float>(), count, stream_); },
        gate.data, up.data, out.data, count);
}

Status CudaBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
    const Tensor* operands[] = {&a, &b, &out};
    PURBO_TRY(check_same_shape_f32("add", operands));
    for (const Tensor* t : operands) PURBO_TRY(require_device("add", *t, "operand"));
    const int64_t count = a.numel();
    return enqueue(
        "launch_add", [&] { return cuda::launch_add(a.ptr<float>(), b.ptr<float>(), out.ptr<float>(), count, stream_); },
        a.data, b.data, out.data, count);
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
    return enqueue("launch_rope", [&] { return cuda::launch_rope(args, stream_); }, args);
}

Status CudaBackend::kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                             const KvCacheView& cache) {
    PURBO_TRY(check_kv_store(k, v, place, cache, index_key_dtypes()));
    PURBO_TRY(require_device("kv_store", k, "k"));
    PURBO_TRY(require_device("kv_store", v, "v"));
    PURBO_TRY(require_device("kv_store", cache.k, "cache k"));
    PURBO_TRY(require_device("kv_store", cache.v, "cache v"));
    // k, v (n, g, d); cache (s, gc, c, d). Staging: seq (n,), pos (n,), slot (g,).
    const int64_t n = k.dim(0), g = k.dim(1);
    if (n == 0) return Status::ok();
    std::vector<int32_t> staging(place.seq.begin(), place.seq.end());
    staging.insert(staging.end(), place.pos.begin(), place.pos.end());
    for (int64_t kv = 0; kv < g; ++kv) staging.push_back(static_cast<int32_t>(kv_view_index(cache, kv)));
    PURBO_ASSIGN_OR_RETURN(void* dev, stage(indices_, staging.data(), staging.size() * 4));
    cuda::KvStoreArgs args{};
    args.k = k.ptr<float>();
    args.v = v.ptr<float>();
    args.seq = static_cast<const int32_t*>(dev);
    args.pos = static_cast<const int32_t*>(dev) + n;
    args.slot = static_cast<const int32_t*>(dev) + 2 * n;
    args.cache_k = cache.k.data;
    args.cache_v = cache.v.data;
    args.cache_bf16 = cache.k.dtype == DType::kBF16;
    args.cache_f8 = cache.k.dtype == DType::kF8E4M3;
    args.n = n;
    args.g = g;
    args.gc = cache.k.dim(1);
    args.c = cache.k.dim(2);
    args.d = k.dim(2);
    args.ring_sinks = cache.ring_sinks;
    return enqueue("launch_kv_store", [&] { return cuda::launch_kv_store(args, stream_); }, args);
}

namespace {

// How the attention kernel's work is cut (speed only, not correctness: any plan that keeps
// one sequence per block and at most kAttnMaxRows rows per CTA gives the same result).
struct AttentionPlan {
    std::vector<int32_t> groups;  // (n_groups, kAttnGroupInts), see cuda-kernels.h
    std::vector<int32_t> blocks;  // (n_blocks, 2): first token, token count
    int n_splits = 1;
    int max_group_heads = 1;  // the largest head count of any group
};

// Splits give each CTA at least this many key tiles, so that the combine pass and the partial
// traffic stay small next to the tiles themselves.
constexpr int64_t kMinTilesPerSplit = 4;

// PURBO_ATTN_CTAS_PER_SM=k (1 .. 16): the split plan below aims at k CTAs per SM instead of 2
// (4 with a selection). For measuring the plan; the default is what RESULTS.md measures.
int ctas_per_sm_override() {
    static const int value = [] {
        const char* s = std::getenv("PURBO_ATTN_CTAS_PER_SM");
        const int k = s != nullptr ? std::atoi(s) : 0;
        return k >= 1 && k <= 16 ? k : 0;
    }();
    return value;
}

// selected_only: only the heads with a selection row (the others are done already).
AttentionPlan plan_attention(const TokenPlacement& place, int64_t h, const KvCacheView& cache,
                             const AttentionParams& params, int n_sms, bool selected_only) {
    AttentionPlan plan;
    const int64_t g = kv_view_model_heads(cache), heads_per_kv = h / g;
    // Heads per group: the largest divisor of heads_per_kv that fits a CTA's rows, so that the
    // heads of one class split into equal groups where they can.
    int64_t hpc = 1;
    for (int64_t c = std::min<int64_t>(heads_per_kv, cuda::kAttnMaxRows); c >= 1; --c) {
        if (heads_per_kv % c == 0) {
            hpc = c;
            break;
        }
    }
    auto add_group = [&](int64_t slot, bool local, int32_t sel_row, const std::vector<int32_t>& heads) {
        for (size_t begin = 0; begin < heads.size(); begin += static_cast<size_t>(hpc)) {
            const size_t count = std::min(heads.size() - begin, static_cast<size_t>(hpc));
            std::vector<int32_t> entry(cuda::kAttnGroupInts, 0);
            entry[0] = static_cast<int32_t>(slot);
            entry[1] = local ? 1 : 0;
            entry[2] = sel_row;
            entry[3] = static_cast<int32_t>(count);
            std::copy_n(heads.begin() + static_cast<std::ptrdiff_t>(begin), count, entry.begin() + 4);
            plan.max_group_heads = std::max(plan.max_group_heads, static_cast<int>(count));
            plan.groups.insert(plan.groups.end(), entry.begin(), entry.end());
        }
    };
    for (int64_t kv = 0; kv < g; ++kv) {
        const int64_t slot = kv_view_index(cache, kv);
        if (slot < 0) continue;
        std::vector<int32_t> local, dense;
        for (int64_t hd = kv * heads_per_kv; hd < (kv + 1) * heads_per_kv; ++hd) {
            const int32_t row = params.selection ? params.selection->head_row[static_cast<size_t>(hd)] : -1;
            if (attention_head_is_local(params, hd)) {
                local.push_back(static_cast<int32_t>(hd));
            } else if (row >= 0) {
                add_group(slot, false, row, {static_cast<int32_t>(hd)});
            } else {
                dense.push_back(static_cast<int32_t>(hd));
            }
        }
        if (selected_only) continue;
        add_group(slot, true, -1, local);
        add_group(slot, false, -1, dense);
    }
    // A selection is per token: its blocks hold one token each.
    const int64_t tokens_per_block = params.selection ? 1 : cuda::kAttnMaxRows / hpc;
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
        max_tiles = std::max<int64_t>(max_tiles, max_p / cuda::kAttnKeysPerTile + 1);
        begin = end;
    }
    // Split the keys only when blocks x head groups leave SMs idle (decode, small batches).
    // With a selection the groups' work is uneven and unknown here (the counts are on the
    // device): a retrieval head's selected blocks can outweigh a local group's window many
    // times. Twice as many, smaller splits then let the heavy groups spread over every SM.
    const int64_t n_blocks = static_cast<int64_t>(plan.blocks.size() / 2);
    const int64_t n_groups = static_cast<int64_t>(plan.groups.size()) / cuda::kAttnGroupInts;
    const int64_t ctas = std::max<int64_t>(1, n_blocks * n_groups);
    const int per_sm = ctas_per_sm_override() > 0 ? ctas_per_sm_override()
                       : params.selection         ? 4
                                                  : 2;
    const int64_t target = int64_t{per_sm} * n_sms;
    if (ctas < target) {
        const int64_t wanted = (target + ctas - 1) / ctas;
        const int64_t by_work = std::max<int64_t>(1, max_tiles / kMinTilesPerSplit);
        // At most 64 splits unless the override asks for more CTAs (the measured default).
        const int64_t max_splits = ctas_per_sm_override() > 0 ? cuda::kAttnMaxSplits : 64;
        plan.n_splits =
            static_cast<int>(std::clamp<int64_t>(std::min(wanted, by_work), 1, max_splits));
    }
    return plan;
}

// Key ranges of block-sparse prefill's selected heads (AttentionTcArgs::n_ranges): a range of
// range_blocks blocks per KV head (64 keys of K and V, 32 KB a block at d = 128 in bf16) that
// the CTAs running together read from L2. kRangeBytes keeps one range of each of two KV heads
// under the H100's 50 MB of L2; the partial states (d + 2 floats per token, head and range)
// stay under kRangePartialBytes, and short contexts (one range) keep the direct path.
// On by default (1.46 s instead of 1.67 s for block-sparse prefill at 1M on an H100,
// bench/RESULTS.md 23); PURBO_TC_RANGE_BLOCKS=k sets range_blocks = k (0: off; small k: many
// ranges, for tests).
struct KeyRanges {
    int count = 1;
    int blocks = 0;
};
constexpr int64_t kRangeBytes = int64_t{16} << 20;
constexpr int64_t kRangePartialBytes = int64_t{1} << 30;

KeyRanges plan_key_ranges(const BlockSelection* sel, const TokenPlacement& place, int64_t hs,
                          int64_t n, int64_t d) {
    KeyRanges ranges;
    if (sel == nullptr || n == 0) return ranges;
    static const int64_t override_blocks = [] {
        const char* s = std::getenv("PURBO_TC_RANGE_BLOCKS");
        return s != nullptr ? std::max<int64_t>(0, std::atoll(s)) : -1;
    }();
    const int64_t block_bytes = int64_t{sel->block_size} * d * 2 * 2;  // K and V in bf16
    int64_t range_blocks =
        override_blocks >= 0 ? override_blocks : std::max<int64_t>(1, kRangeBytes / block_bytes);
    if (range_blocks == 0) return ranges;
    // The chunk's positions are consecutive: the last token sees the most blocks.
    const int64_t visible = int64_t{place.pos.back()} / sel->block_size + 1;
    const int64_t max_ranges = std::clamp<int64_t>(
        kRangePartialBytes / std::max<int64_t>(1, hs * n * (d + 2) * 4), 1, cuda::kAttnMaxSplits);
    range_blocks = std::max(range_blocks, (visible + max_ranges - 1) / max_ranges);
    const int64_t count = (visible + range_blocks - 1) / range_blocks;
    if (count <= 1) return ranges;
    ranges.count = static_cast<int>(count);
    ranges.blocks = static_cast<int>(range_blocks);
    return ranges;
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

#if PURBO_HAVE_CUDNN
// The finish pass (cuda-cudnn-glue.cu) over bf16 rows o, laid out as `rows`, of the (hs, 3)
// call table's heads: their f32 rows of out, no sinks merged (the caller adds lse, window and
// sinks for local heads). q, out (n, h, d); seq_k, seq_v the sequence's cache heads (gc, c, d).
cuda::CudnnFinishArgs finish_args(const uint16_t* o, cuda::HeadRows rows, const int32_t* table,
                                  const Tensor& q, const uint16_t* seq_k, const uint16_t* seq_v,
                                  const Tensor& out, int64_t n_pad, int64_t c,
                                  const TokenPlacement& place, const AttentionParams& params,
                                  int64_t hs) {
    cuda::CudnnFinishArgs fin{};
    fin.o = o;
    fin.o_rows = rows;
    fin.table = table;
    fin.q = q.ptr<float>();
    fin.cache_k = seq_k;
    fin.cache_v = seq_v;
    fin.out = out.ptr<float>();
    fin.n = q.dim(0);
    fin.n_pad = n_pad;
    fin.h = q.dim(1);
    fin.hs = hs;
    fin.d = q.dim(2);
    fin.c = c;
    fin.pos0 = place.pos[0];
    fin.scale = params.scale;
    return fin;
}
#endif

}  // namespace

Result<bool> CudaBackend::start_cudnn_side() {
#if PURBO_HAVE_CUDNN
    if (side_.cudnn) return true;
    if (side_.tried) return false;
    side_.tried = true;
    if (env_flag("PURBO_NO_CUDNN_OVERLAP")) return false;
    int least = 0, greatest = 0;
    PURBO_CUDA_TRY(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    PURBO_CUDA_TRY(cudaStreamCreateWithPriority(&side_.stream, cudaStreamNonBlocking, greatest));
    PURBO_CUDA_TRY(cudaEventCreateWithFlags(&side_.fork, cudaEventDisableTiming));
    PURBO_CUDA_TRY(cudaEventCreateWithFlags(&side_.join, cudaEventDisableTiming));
    side_.cudnn = cuda::CudnnAttention::create(side_.stream);
    return side_.cudnn != nullptr;
#else
    return false;
#endif
}

Result<bool> CudaBackend::cudnn_prefill(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                                        const AttentionParams& params, const Tensor& out) {
#if PURBO_HAVE_CUDNN
    // q, out (n, h, d); cache (s, gc, c, d) bf16, rows = positions; the chunk's positions are
    // consecutive (the tensor-core path's condition).
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    // Not inside a graph step: cuDNN's calls are not routed through enqueue (and prefill chunks
    // are not what graphs are for).
    if (cache.k.dtype != DType::kBF16 || cache.ring_sinks >= 0 || c > INT32_MAX || graph_->open()) return false;
    if (!cudnn_) {
        if (cudnn_tried_) return false;
        cudnn_tried_ = true;
        if (env_flag("PURBO_NO_CUDNN")) return false;
        cudnn_ = cuda::CudnnAttention::create(stream_);
        if (!cudnn_) return false;
    }
    // The calls: one grouped-query call for every head when they share a class, the view
    // holds every KV head in order and no sinks need merging; otherwise one call per (KV head,
    // class) over the query heads of that KV head and class (cuDNN takes one window per call
    // and grouped heads by position, not by list). table (hs, 3): query head, cache head,
    // local, in call order.
    // With a block selection (block-sparse prefill) only the heads that do not use it: the
    // selected heads are left to attention below.
    const int64_t g = kv_view_model_heads(cache), heads_per_kv = h / g;
    const bool sinks = params.window > 0 && params.n_sink > 0;
    auto selected = [&](int64_t hd) {
        return params.selection != nullptr &&
               params.selection->head_row[static_cast<size_t>(hd)] >= 0;
    };
    bool any_local = false, any_global = false, any_selected = false;
    for (int64_t hd = 0; hd < h; ++hd) {
        if (kv_view_index(cache, hd / heads_per_kv) < 0) continue;
        if (selected(hd)) {
            any_selected = true;
        } else {
            (attention_head_is_local(params, hd) ? any_local : any_global) = true;
        }
    }
    const bool grouped =
        cache.heads.empty() && !any_selected && !(any_local && any_global) && !(any_local && sinks);
    struct Call {
        int first, count, slot, kv_heads;
        bool local;
    };
    std::vector<int32_t> table;
    std::vector<Call> calls;
    if (grouped) {
        for (int64_t hd = 0; hd < h; ++hd) {
            table.insert(table.end(), {static_cast<int32_t>(hd), static_cast<int32_t>(hd / heads_per_kv), any_local ? 1 : 0});
        }
        calls.push_back({0, static_cast<int>(h), 0, static_cast<int>(g), any_local});
    } else {
        for (int64_t kv = 0; kv < g; ++kv) {
            const int64_t slot = kv_view_index(cache, kv);
            if (slot < 0) continue;
            for (const bool local : {false, true}) {
                const int first = static_cast<int>(table.size() / 3);
                for (int64_t hd = kv * heads_per_kv; hd < (kv + 1) * heads_per_kv; ++hd) {
                    if (selected(hd) || attention_head_is_local(params, hd) != local) continue;
                    table.insert(table.end(), {static_cast<int32_t>(hd), static_cast<int32_t>(slot), local ? 1 : 0});
                }
                const int count = static_cast<int>(table.size() / 3) - first;
                if (count > 0) calls.push_back({first, count, static_cast<int>(slot), 1, local});
            }
        }
    }
    const int64_t hs = static_cast<int64_t>(table.size() / 3);
    if (hs == 0) return true;  // the view holds none of the heads' KV heads: nothing to write

    const int n_pad = cuda::cudnn_padded_rows(static_cast<int>(n));
    const size_t elems = static_cast<size_t>(n_pad) * static_cast<size_t>(hs * d);
    const size_t lse_floats = sinks ? static_cast<size_t>(hs) * static_cast<size_t>(n_pad) : 0;
    PURBO_ASSIGN_OR_RETURN(void* io, reserve(cudnn_io_, 2 * elems * sizeof(uint16_t) + lse_floats * sizeof(float)));
    auto* q_sel = static_cast<uint16_t*>(io);  // (n_pad, hs, d)
    uint16_t* o_sel = q_sel + elems;            // (n_pad, hs, d)
    float* lse = sinks ? reinterpret_cast<float*>(o_sel + elems) : nullptr;  // (hs, n_pad)
    PURBO_ASSIGN_OR_RETURN(void* dev_table, stage(indices_, table.data(), table.size() * 4));
    const auto* table_dev = static_cast<const int32_t*>(dev_table);
    const cuda::HeadRows token_major{hs * d, d};
    PURBO_CUDA_TRY(cuda::launch_gather_heads_bf16(q.ptr<float>(), table_dev, q_sel, token_major, n,
                                                  h, hs, d, stream_));

    const int64_t seq_offset = int64_t{place.seq[0]} * gc * c * d;  // bf16 elements
    const uint16_t* seq_k = cache.k.ptr<uint16_t>() + seq_offset;
    const uint16_t* seq_v = cache.v.ptr<uint16_t>() + seq_offset;
    // Dense and local calls side by side (CudnnSide): the dense ones on the side stream, which
    // starts after the gather; stream_ waits for it before the finish pass, on every way out.
    bool overlap = false;
    if (any_local && any_global && !grouped) {
        PURBO_ASSIGN_OR_RETURN(overlap, start_cudnn_side());
    }
    if (overlap) {
        PURBO_CUDA_TRY(cudaEventRecord(side_.fork, stream_));
        PURBO_CUDA_TRY(cudaStreamWaitEvent(side_.stream, side_.fork));
    }
    auto join = [&]() -> Status {
        if (!overlap) return Status::ok();
        overlap = false;
        PURBO_CUDA_TRY(cudaEventRecord(side_.join, side_.stream));
        PURBO_CUDA_TRY(cudaStreamWaitEvent(stream_, side_.join));
        return Status::ok();
    };
    for (const Call& call : calls) {
        cuda::CudnnPrefill p;
        p.q = q_sel + static_cast<int64_t>(call.first) * d;
        p.q_row = hs * d;
        p.k = seq_k + int64_t{call.slot} * c * d;
        p.v = seq_v + int64_t{call.slot} * c * d;
        p.out = o_sel + static_cast<int64_t>(call.first) * d;
        p.lse = (lse != nullptr && call.local) ? lse + static_cast<int64_t>(call.first) * n_pad : nullptr;
        p.n = static_cast<int>(n);
        p.n_pad = n_pad;
        p.hq = call.count;
        p.hk = call.kv_heads;
        p.d = static_cast<int>(d);
        p.c = c;
        p.pos0 = place.pos[0];
        p.scale = params.scale;
        p.window = call.local ? params.window : 0;
        const Status st = (overlap && !call.local ? side_.cudnn : cudnn_)->prefill(p);
        if (!st.is_ok()) PURBO_TRY(join());
        if (st.code() == StatusCode::kUnsupported) return false;  // the own kernel redoes every head
        PURBO_TRY(st);
    }
    PURBO_TRY(join());
    cuda::CudnnFinishArgs fin = finish_args(o_sel, token_major, table_dev, q, seq_k, seq_v, out,
                                            n_pad, c, place, params, hs);
    fin.lse = lse;
    fin.window = params.window;
    fin.n_sink = params.n_sink;
    PURBO_CUDA_TRY(cuda::launch_cudnn_finish(fin, stream_));
    return true;
#else
    (void)q, (void)cache, (void)place, (void)params, (void)out;
    return false;
#endif
}

Result<bool> CudaBackend::cudnn_paged_prefill(const Tensor& q, const KvCacheView& cache,
                                              const TokenPlacement& place,
                                              const AttentionParams& params, const Tensor& out) {
#if PURBO_HAVE_CUDNN
    // q, out (n, h, d); cache (s, gc, c, d) bf16, rows = positions; selection blocks
    // (n, hr, max_blocks), one list per query group.
    const BlockSelection& sel = *params.selection;
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    // Pages are the selection's blocks; an item's queries its group's tokens.
    const int page = sel.block_size, group = sel.query_block > 0 ? sel.query_block : page;
    if (!cudnn_ || cache.k.dtype != DType::kBF16 || cache.ring_sinks >= 0 || graph_->open() ||
        group % page != 0 || place.pos[0] % group != 0 || c % page != 0 ||
        env_flag("PURBO_NO_CUDNN_PAGED"))
        return false;
    // table (hs, 3): query head, cache head, 0 (not local), as cudnn_prefill's; rows (hs,): the
    // heads' selection rows.
    const int64_t heads_per_kv = h / kv_view_model_heads(cache);
    std::vector<int32_t> staging;
    std::vector<int32_t> rows;
    for (int64_t hd = 0; hd < h; ++hd) {
        const int32_t row = sel.head_row[static_cast<size_t>(hd)];
        const int64_t slot = kv_view_index(cache, hd / heads_per_kv);
        if (row < 0 || slot < 0) continue;
        staging.insert(staging.end(), {static_cast<int32_t>(hd), static_cast<int32_t>(slot), 0});
        rows.push_back(row);
    }
    const int64_t hs = static_cast<int64_t>(rows.size());
    if (hs == 0) return true;  // no selected head has its KV head in the view
    staging.insert(staging.end(), rows.begin(), rows.end());

    // Items: (selected head, query group), the groups padded to a power of two so that a
    // handful of graphs serve every chunk; padded items attend to 1 key.
    const int64_t groups = (n + group - 1) / group;
    int64_t groups_pad = 1;
    while (groups_pad < groups) groups_pad *= 2;
    const int64_t rows_pad = groups_pad * group, items = hs * groups_pad;
    const int64_t max_pages = sel.blocks.dim(2);
    if (items > INT_MAX || max_pages * page > INT_MAX) return false;
    auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
    const size_t io_bytes = aligned(static_cast<size_t>(hs * rows_pad * d) * sizeof(uint16_t));
    const size_t table_bytes = aligned(static_cast<size_t>(items * max_pages) * sizeof(int32_t));
    const size_t length_bytes = aligned(static_cast<size_t>(items) * sizeof(int32_t));
    PURBO_ASSIGN_OR_RETURN(
        void* buffer, reserve(cudnn_paged_, 2 * io_bytes + table_bytes + 2 * length_bytes + 256));
    auto* bytes = static_cast<char*>(buffer);
    auto* q_paged = reinterpret_cast<uint16_t*>(bytes);  // (hs, rows_pad, d)
    auto* o_paged = reinterpret_cast<uint16_t*>(bytes + io_bytes);
    auto* page_table = reinterpret_cast<int32_t*>(bytes + 2 * io_bytes);  // (items, max_pages)
    auto* seq_q = reinterpret_cast<int32_t*>(bytes + 2 * io_bytes + table_bytes);
    auto* seq_kv = reinterpret_cast<int32_t*>(bytes + 2 * io_bytes + table_bytes + length_bytes);
    auto* mismatch =
        reinterpret_cast<int32_t*>(bytes + 2 * io_bytes + table_bytes + 2 * length_bytes);
    PURBO_ASSIGN_OR_RETURN(void* dev_staging, stage(indices_, staging.data(), staging.size() * 4));
    const auto* table_dev = static_cast<const int32_t*>(dev_staging);

    const int64_t seq_offset = int64_t{place.seq[0]} * gc * c * d;  // bf16 elements
    const uint16_t* seq_k = cache.k.ptr<uint16_t>() + seq_offset;
    const uint16_t* seq_v = cache.v.ptr<uint16_t>() + seq_offset;
    cuda::PagedSelectionArgs ps{};
    ps.sel_blocks = sel.blocks.ptr<int32_t>();
    ps.sel_counts = sel.counts.ptr<int32_t>();
    ps.table = table_dev;
    ps.sel_rows = table_dev + 3 * hs;
    ps.page_table = page_table;
    ps.seq_q = seq_q;
    ps.seq_kv = seq_kv;
    ps.mismatch = mismatch;
    ps.n = n;
    ps.pages_per_head = c / page;
    ps.hs = static_cast<int>(hs);
    ps.groups = static_cast<int>(groups_pad);
    ps.group_tokens = group;
    ps.sel_hr = static_cast<int>(sel.blocks.dim(1));
    ps.max_blocks = static_cast<int>(max_pages);
    ps.page = page;
    ps.pos0 = place.pos[0];
    PURBO_CUDA_TRY(cuda::launch_paged_selection(ps, stream_));
    // Lists that do not end with their group's own blocks cannot be told to cuDNN: the
    // tensor-core kernel takes them. One small read back per chunk.
    int32_t lists_mismatch = 0;
    PURBO_CUDA_TRY(cudaMemcpyAsync(&lists_mismatch, mismatch, sizeof(int32_t),
                                   cudaMemcpyDeviceToHost, stream_));
    PURBO_CUDA_TRY(cudaStreamSynchronize(stream_));
    if (lists_mismatch != 0) return false;

    const cuda::HeadRows head_major{d, rows_pad * d};
    PURBO_CUDA_TRY(cuda::launch_gather_heads_bf16(q.ptr<float>(), table_dev, q_paged, head_major, n,
                                                  h, hs, d, stream_));
    cuda::CudnnPagedPrefill p;
    p.q = q_paged;
    p.k = seq_k;
    p.v = seq_v;
    p.page_table = page_table;
    p.seq_q = seq_q;
    p.seq_kv = seq_kv;
    p.out = o_paged;
    p.b = static_cast<int>(items);
    p.rows = group;
    p.page = page;
    p.max_pages = static_cast<int>(max_pages);
    p.d = static_cast<int>(d);
    p.pages = gc * (c / page);
    p.scale = params.scale;
    const Status st = cudnn_->paged_prefill(p);
    if (st.code() == StatusCode::kUnsupported) return false;
    PURBO_TRY(st);
    // The scatter back to f32 rows, nothing to merge.
    PURBO_CUDA_TRY(
        cuda::launch_cudnn_finish(finish_args(o_paged, head_major, table_dev, q, seq_k, seq_v, out,
                                              rows_pad, c, place, params, hs),
                                  stream_));
    return true;
#else
    (void)q, (void)cache, (void)place, (void)params, (void)out;
    return false;
#endif
}

Status CudaBackend::attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                              const AttentionParams& params, const Tensor& out) {
    PURBO_TRY(check_attention(q, cache, place, params, out, kv_cache_dtypes()));
    PURBO_TRY(require_device("attention", q, "q"));
    PURBO_TRY(require_device("attention", cache.k, "cache k"));
    PURBO_TRY(require_device("attention", cache.v, "cache v"));
    PURBO_TRY(require_device("attention", out, "out"));
    // q, out (n, h, d); cache (s, gc, c, d)
    const int64_t n = q.dim(0), h = q.dim(1), d = q.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    const BlockSelection* sel = params.selection;
    if (sel) {
        PURBO_TRY(require_device("attention", sel->blocks, "selected blocks"));
        PURBO_TRY(require_device("attention", sel->counts, "selected block counts"));
        if (sel->block_size % cuda::kAttnKeysPerTile != 0)
            return error(StatusCode::kUnsupported, "attention: block size {} of the selection is not a multiple of {}",
                         sel->block_size, cuda::kAttnKeysPerTile);
    }
    if (!cuda::attention_head_dim_supported(static_cast<int>(d)))
        return error(StatusCode::kUnsupported, "attention: head dim {} of q '{}' {} has no CUDA kernel (32, 64 or 128)",
                     d, q.name, q.describe());
    if (n == 0 || h == 0) return Status::ok();
    if (n > INT_MAX / 2 || n * h > INT_MAX || h > 65535)
        return error(StatusCode::kUnsupported, "attention: q {} exceeds the kernel's grid", q.describe());

    // A prefill chunk goes through cuDNN where it is built in. With a selection (block-sparse
    // prefill) cuDNN takes the heads that do not use it (local heads, dense retrieval heads;
    // most of the work); the selected heads, when their selection is one list per query group
    // of whole 64-key tiles, go through cuDNN's paged attention (each group's blocks its pages)
    // or else the tensor-core kernel, and otherwise through the per-token kernel below.
    const bool prefill_chunk = takes_tensor_core_path(place, d);
    bool unselected_done = false;
    if (prefill_chunk) {
        PURBO_ASSIGN_OR_RETURN(unselected_done, cudnn_prefill(q, cache, place, params, out));
    }
    const bool tiled_selection =
        sel && sel->shared_by_query_group && sel->block_size % cuda::kAttnTcBlockN == 0;
    if (prefill_chunk && (!sel || tiled_selection)) {
        if (!sel && unselected_done) return Status::ok();
        if (sel && unselected_done) {
            PURBO_ASSIGN_OR_RETURN(const bool selected_done,
                                   cudnn_paged_prefill(q, cache, place, params, out));
            if (selected_done) return Status::ok();
        }
        // heads (hs, 4): a row per query head the kernel computes: the head, the cache head of
        // its KV head, local, selection row. Heads whose KV head the view lacks, and those
        // cuDNN did, take no CTAs.
        const int64_t heads_per_kv = h / kv_view_model_heads(cache);
        std::vector<int32_t> heads;
        for (int64_t hd = 0; hd < h; ++hd) {
            const int64_t slot = kv_view_index(cache, hd / heads_per_kv);
            const int32_t sel_row = sel ? sel->head_row[static_cast<size_t>(hd)] : -1;
            if (slot < 0 || (unselected_done && sel_row < 0)) continue;
            heads.insert(heads.end(), {static_cast<int32_t>(hd), static_cast<int32_t>(slot),
                                       attention_head_is_local(params, hd) ? 1 : 0, sel_row});
        }
        if (heads.empty()) return Status::ok();
        PURBO_ASSIGN_OR_RETURN(void* dev_heads, stage(indices_, heads.data(), heads.size() * 4));
        cuda::AttentionTcArgs tc{};
        tc.q = q.ptr<float>();
        tc.cache_k = cache.k.data;
        tc.cache_v = cache.v.data;
        tc.cache_bf16 = cache.k.dtype == DType::kBF16;
        tc.heads = static_cast<const int32_t*>(dev_heads);
        tc.hs = static_cast<int64_t>(heads.size()) / cuda::kAttnTcHeadInts;
        tc.out = out.ptr<float>();
        tc.n = n;
        tc.h = h;
        tc.gc = gc;
        tc.c = c;
        tc.d = static_cast<int>(d);
        tc.seq = place.seq[0];
        tc.pos0 = place.pos[0];
        tc.scale = params.scale;
        tc.window = params.window;
        tc.n_sink = params.n_sink;
        tc.ring_sinks = cache.ring_sinks;
        if (sel) {
            // A CTA's tokens must lie in one query group: CTAs start at multiples of 64.
            tc.row_shift = place.pos[0] % cuda::kAttnTcBlockM;
            tc.sel_blocks = sel->blocks.ptr<int32_t>();
            tc.sel_counts = sel->counts.ptr<int32_t>();
            tc.sel_hr = static_cast<int>(sel->blocks.dim(1));
            tc.sel_max_blocks = static_cast<int>(sel->blocks.dim(2));
            tc.sel_block_size = sel->block_size;
        }
        tc.n_ranges = 1;
        const KeyRanges ranges = plan_key_ranges(sel, place, tc.hs, n, d);
        if (ranges.count > 1) {
            // (hs, n, n_ranges, d) accumulators, then (hs, n, n_ranges, 2) max and sum.
            const size_t acc_floats = static_cast<size_t>(tc.hs * n * ranges.count * d);
            const size_t ml_floats = static_cast<size_t>(tc.hs * n * ranges.count * 2);
            PURBO_ASSIGN_OR_RETURN(void* part,
                                   reserve(attn_partial_, (acc_floats + ml_floats) * 4));
            tc.n_ranges = ranges.count;
            tc.range_blocks = ranges.blocks;
            tc.partial_acc = static_cast<float*>(part);
            tc.partial_ml = static_cast<float*>(part) + acc_floats;
        }
        return enqueue("launch_attention_tc", [&] { return cuda::launch_attention_tc(tc, stream_); }, tc);
    }

    const AttentionPlan plan = plan_attention(place, h, cache, params, n_sms_, unselected_done);
    if (plan.groups.empty()) return Status::ok();  // the view holds none of the heads' KV heads
    // Staging: seq (n,), pos (n,), blocks (n_blocks, 2), groups, all int32.
    std::vector<int32_t> staging(place.seq.begin(), place.seq.end());
    staging.insert(staging.end(), place.pos.begin(), place.pos.end());
    staging.insert(staging.end(), plan.blocks.begin(), plan.blocks.end());
    staging.insert(staging.end(), plan.groups.begin(), plan.groups.end());
    // Every layer of a decode step stages the same plan: the device copy of the last one is
    // reused while it matches (outside step graphs, which stage into their own arena).
    void* dev = attn_plan_.ptr;
    if (graph_->open() || staging != attn_plan_host_) {
        if (!graph_->open()) attn_plan_host_.clear();  // until the new copy is enqueued
        PURBO_ASSIGN_OR_RETURN(
            dev, stage(graph_->open() ? indices_ : attn_plan_, staging.data(), staging.size() * 4));
        if (!graph_->open()) attn_plan_host_ = std::move(staging);
    }
    const auto* dev_ints = static_cast<const int32_t*>(dev);

    cuda::AttentionArgs args{};
    args.q = q.ptr<float>();
    args.cache_k = cache.k.data;
    args.cache_v = cache.v.data;
    args.cache_bf16 = cache.k.dtype == DType::kBF16;
    args.seq = dev_ints;
    args.pos = dev_ints + n;
    args.blocks = dev_ints + 2 * n;
    args.groups = dev_ints + 2 * n + static_cast<int64_t>(plan.blocks.size());
    args.out = out.ptr<float>();
    args.n = n;
    args.h = h;
    args.gc = gc;
    args.c = c;
    args.d = static_cast<int>(d);
    args.n_blocks = static_cast<int>(plan.blocks.size() / 2);
    args.n_groups = static_cast<int>(plan.groups.size() / cuda::kAttnGroupInts);
    args.n_splits = plan.n_splits;
    args.max_group_heads = plan.max_group_heads;
    args.scale = params.scale;
    args.window = params.window;
    args.n_sink = params.n_sink;
    args.ring_sinks = cache.ring_sinks;
    if (sel) {
        args.sel_blocks = sel->blocks.ptr<int32_t>();
        args.sel_counts = sel->counts.ptr<int32_t>();
        args.sel_hr = static_cast<int>(sel->blocks.dim(1));
        args.sel_max_blocks = static_cast<int>(sel->blocks.dim(2));
        args.sel_block_size = sel->block_size;
    }
    if (plan.n_splits > 1) {
        // (n, h, n_splits, d) accumulators, then (n, h, n_splits, 2) max and sum.
        const size_t acc_floats = static_cast<size_t>(n * h * plan.n_splits * d);
        const size_t ml_floats = static_cast<size_t>(n * h * plan.n_splits * 2);
        PURBO_ASSIGN_OR_RETURN(void* part, reserve(attn_partial_, (acc_floats + ml_floats) * 4));
        args.partial_acc = static_cast<float*>(part);
        args.partial_ml = static_cast<float*>(part) + acc_floats;
    }
    return enqueue("launch_attention", [&] { return cuda::launch_attention(args, stream_); }, args);
}

}  // namespace purbo
