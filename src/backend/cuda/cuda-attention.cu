// Causal grouped-query attention over the KV cache, flash-attention style: one pass over key
// tiles with an online softmax (running max m, running sum l, unnormalised accumulator), all
// in fp32 on CUDA cores.
//
// Work split (the plan is built on the host by cuda-ops.cpp, the kernels only read it):
//  - A block is up to kAttnMaxRows / (heads per group) consecutive tokens of one sequence.
//  - A CTA takes (block, head group, split). A head group is up to kAttnMaxRows / tokens query
//    heads of one KV head that see the same keys: local heads (window + sinks), dense heads,
//    or one head with a block selection (its tiles are those of its selected blocks; blocks
//    then hold one token). Its rows are the (token, head) pairs, kAttnRowsPerWarp per warp;
//    every K/V tile it loads into shared memory serves all its rows (the GQA reuse).
//  - The cache view may hold some KV heads only, and may be a ring (rows by cache_row).
//  - Split-KV: a block's key tiles are divided over n_splits CTAs when blocks x head groups
//    alone would leave the GPU idle (decode: one token per sequence). Each split writes its
//    partial (m, l, acc) and attention_combine_kernel merges them. n_splits = 1 (prefill)
//    writes the output directly.
//  - Key tiles entirely outside every row's window (between the sinks and the window) are
//    never visited; masking inside a tile is exact per key (attention_key_visible's rule).
//
// Scores are kept in the log2 domain (q pre-scaled by scale * log2(e), exp2f), which is the
// same softmax with one multiply less per score.
//
// Head dims: 32, 64, 128 (one instantiation each); others are a kUnsupported Status.
//
// Other kernels take most of the work with the same plan and mask: prefill chunks (>=
// kAttnTcMinTokens consecutive positions of one sequence, d 64 or 128) go to the tensor-core
// kernel of cuda-attention-tc.cu; with a bf16 cache, everything else of d 64 or 128 goes to
// the tensor-core decode kernel of cuda-attention-decode.cu (launch_attention dispatches).
// This kernel keeps f32 caches outside prefill chunks (exact fp32 attention) and d 32.
//
// Scores and the cache element type: the cache is f32 or bf16 (Cache), converted to f32 on
// load into shared memory.
#include <cmath>

#include "backend/cuda/cuda-combine.cuh"
#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"
#include "core/env.h"

namespace purbo::cuda {
namespace {

static_assert(kAttnKeysPerTile == 32, "the score step gives each lane one key of the tile");

// Cache: float or __nv_bfloat16, the element type of the KV cache.
template <int D, class Cache>
__global__ void __launch_bounds__(kAttnWarps * 32) attention_kernel(AttentionArgs args) {
    const auto* cache_k = static_cast<const Cache*>(args.cache_k);
    const auto* cache_v = static_cast<const Cache*>(args.cache_v);
    constexpr int kTile = kAttnKeysPerTile;
    constexpr int kPerLane = D / 32;  // output dims per lane: lane + 32 * i
    constexpr int kRows = kAttnRowsPerWarp;
    static_assert(D % 32 == 0 && D % 4 == 0, "head dim must be a multiple of the warp size");

    __shared__ __align__(16) float q_s[kAttnMaxRows][D];   // pre-scaled query rows
    __shared__ float k_s[kTile][D + 1];                     // +1: lane j reads row j conflict-free
    __shared__ __align__(16) float v_s[kTile][D];
    __shared__ int row_pos[kAttnMaxRows];

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // The CTA's head group: [cache head, local, selection row, head count, heads...].
    const int32_t* group = args.groups + blockIdx.y * kAttnGroupInts;
    const int slot = group[0];
    const int window = group[1] ? args.window : 0;
    const int n_sink = group[1] ? args.n_sink : 0;
    const int sel_row = group[2];
    const int hpc = group[3];
    const int32_t* heads = group + 4;
    const int split = blockIdx.z;
    const int tok0 = args.blocks[2 * blockIdx.x];
    const int n_rows = args.blocks[2 * blockIdx.x + 1] * hpc;  // <= kAttnMaxRows (host plan)
    const int64_t seq = args.seq[tok0];

    // Row r = (token tok0 + r / hpc, query head heads[r % hpc]).
    const float q_scale = args.scale * kLog2e;
    for (int idx = threadIdx.x; idx < kAttnMaxRows * D; idx += blockDim.x) {
        const int r = idx / D, e = idx % D;
        float val = 0.0f;
        if (r < n_rows) {
            const int64_t row = (tok0 + r / hpc) * args.h + heads[r % hpc];
            val = args.q[row * D + e] * q_scale;
        }
        q_s[r][e] = val;
    }
    if (threadIdx.x < kAttnMaxRows)
        row_pos[threadIdx.x] = threadIdx.x < n_rows ? args.pos[tok0 + threadIdx.x / hpc] : -1;
    __syncthreads();

    int min_p = row_pos[0], max_p = row_pos[0];
    for (int r = 1; r < n_rows; ++r) {
        min_p = min(min_p, row_pos[r]);
        max_p = max(max_p, row_pos[r]);
    }

    // The block's key tiles: a selection's (one token per block, host plan), or the window's.
    KeyTiles<kTile> tiles = window_key_tiles<kTile>(min_p, max_p, window, n_sink);
    if (sel_row >= 0) {
        const int64_t at = int64_t{tok0} * args.sel_hr + sel_row;
        tiles = selected_key_tiles<kTile>(args.sel_blocks + at * args.sel_max_blocks,
                                          args.sel_counts[at], args.sel_max_blocks,
                                          args.sel_block_size);
    }
    const int t_begin = static_cast<int>(split * int64_t{tiles.count} / args.n_splits);
    const int t_end = static_cast<int>((split + 1) * int64_t{tiles.count} / args.n_splits);

    float m[kRows], l[kRows], acc[kRows][kPerLane];
#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) acc[rr][i] = 0.0f;
    }

    const int64_t cache_base = (seq * args.gc + slot) * args.c;  // row index of cache row 0
    for (int t = t_begin; t < t_end; ++t) {
        const int key0 = tiles.key0(t);
        __syncthreads();  // every warp is done with the previous tile
        for (int idx = threadIdx.x; idx < kTile * D / 4; idx += blockDim.x) {
            const int j = idx / (D / 4), e = (idx % (D / 4)) * 4;
            float4 kv = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kv;
            if (key0 >= 0 && key0 + j <= max_p) {  // beyond every row's position: masked, and maybe >= c
                const int64_t off = (cache_base + cache_row(key0 + j, args.ring_sinks, args.c)) * D + e;
                kv = load4(cache_k + off);
                vv = load4(cache_v + off);
            }
            k_s[j][e + 0] = kv.x;
            k_s[j][e + 1] = kv.y;
            k_s[j][e + 2] = kv.z;
            k_s[j][e + 3] = kv.w;
            *reinterpret_cast<float4*>(&v_s[j][e]) = vv;
        }
        __syncthreads();

#pragma unroll
        for (int rr = 0; rr < kRows; ++rr) {
            const int r = warp + rr * kAttnWarps;
            if (r >= n_rows) continue;  // warp-uniform
            const int key = key0 + lane;
            float s = -INFINITY;
            if (key0 >= 0 && key_visible(key, row_pos[r], window, n_sink)) {
                float dot = 0.0f;
#pragma unroll 16
                for (int e = 0; e < D; ++e) dot += q_s[r][e] * k_s[lane][e];
                s = dot;
            }
            const float tile_max = warp_max(s);
            if (tile_max == -INFINITY) continue;  // no visible key for this row in this tile
            const float m_new = fmaxf(m[rr], tile_max);
            const float correction = exp2f(m[rr] - m_new);  // 0 on the first visible tile
            const float p = exp2f(s - m_new);               // 0 for masked keys
            l[rr] = l[rr] * correction + warp_sum(p);
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) acc[rr][i] *= correction;
#pragma unroll 8
            for (int j = 0; j < kTile; ++j) {
                const float pj = __shfl_sync(kFullMask, p, j);
#pragma unroll
                for (int i = 0; i < kPerLane; ++i) acc[rr][i] += pj * v_s[j][lane + 32 * i];
            }
            m[rr] = m_new;
        }
    }

#pragma unroll
    for (int rr = 0; rr < kRows; ++rr) {
        const int r = warp + rr * kAttnWarps;
        if (r >= n_rows) continue;
        const int64_t row = (tok0 + r / hpc) * args.h + heads[r % hpc];  // token * h + head
        if (args.n_splits == 1) {
            // Every row sees at least its own key (j = p), so l > 0 here.
            const float inv_l = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) args.out[row * D + lane + 32 * i] = acc[rr][i] * inv_l;
        } else {
            const int64_t part = row * args.n_splits + split;
#pragma unroll
            for (int i = 0; i < kPerLane; ++i) args.partial_acc[part * D + lane + 32 * i] = acc[rr][i];
            if (lane == 0) {
                args.partial_ml[part * 2 + 0] = m[rr];
                args.partial_ml[part * 2 + 1] = l[rr];
            }
        }
    }
}

// One CTA of kCombineThreads per (token, head group, head of the group): the merge of
// cuda-combine.cuh. Heads outside the call's groups are untouched.
__global__ void __launch_bounds__(kCombineThreads) attention_combine_kernel(AttentionArgs args) {
    wait_for_prior_grid();  // the attention kernel's partials
    allow_dependent_grid();  // the next decode kernel may start on the keys it already has
    const int32_t* group = args.groups + blockIdx.y * kAttnGroupInts;
    if (static_cast<int>(blockIdx.z) >= group[3]) return;  // CTA-uniform
    const int64_t row = blockIdx.x * args.h + group[4 + blockIdx.z];  // token * h + head
    combine_split_states(args.partial_ml + row * args.n_splits * 2,
                         args.partial_acc + row * args.n_splits * args.d, args.n_splits, args.d,
                         args.out + row * args.d);
}

}  // namespace

cudaLaunchAttribute programmatic_dependent_attribute() {
    static const bool off = env_flag("PURBO_NO_PDL");
    cudaLaunchAttribute a = {};
    a.id = off ? cudaLaunchAttributeIgnore : cudaLaunchAttributeProgrammaticStreamSerialization;
    a.val.programmaticStreamSerializationAllowed = off ? 0 : 1;
    return a;
}

// 64 and 128 are the models' head dims; 32 keeps small test configurations on the GPU path.
bool attention_head_dim_supported(int d) { return d == 32 || d == 64 || d == 128; }

cudaError_t launch_attention(const AttentionArgs& args, cudaStream_t stream) {
    if (args.n == 0) return cudaSuccess;
    if (args.n_groups < 1 || args.n_groups > 65535 || args.n_blocks < 1 || args.n_splits < 1 ||
        args.n_splits > kAttnMaxSplits || args.n * args.h > INT32_MAX || args.max_group_heads < 1 ||
        args.max_group_heads > kAttnMaxRows ||
        (args.sel_blocks != nullptr && (args.sel_block_size <= 0 || args.sel_block_size % kAttnKeysPerTile != 0)))
        return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(args.n_blocks), static_cast<unsigned>(args.n_groups),
                    static_cast<unsigned>(args.n_splits));
    constexpr int kThreads = kAttnWarps * 32;
    cudaError_t err = cudaSuccess;
    if (attention_decode_supported(args)) {
        err = launch_attention_decode(args, stream);  // bf16 cache: the tensor-core kernel
    } else {
        // DISPATCH on the head dim and the cache type: six instantiations.
        switch (args.d * (args.cache_bf16 ? -1 : 1)) {
            case 32: attention_kernel<32, float><<<grid, kThreads, 0, stream>>>(args); break;
            case 64: attention_kernel<64, float><<<grid, kThreads, 0, stream>>>(args); break;
            case 128: attention_kernel<128, float><<<grid, kThreads, 0, stream>>>(args); break;
            case -32: attention_kernel<32, __nv_bfloat16><<<grid, kThreads, 0, stream>>>(args); break;
            case -64: attention_kernel<64, __nv_bfloat16><<<grid, kThreads, 0, stream>>>(args); break;
            case -128: attention_kernel<128, __nv_bfloat16><<<grid, kThreads, 0, stream>>>(args); break;
            default: return cudaErrorInvalidValue;
        }
        err = cudaGetLastError();
    }
    if (err != cudaSuccess || args.n_splits == 1) return err;
    // A programmatic dependent of the attention kernel: scheduled while that kernel's last
    // CTAs finish instead of after it completes (its launch latency hidden in a decode step).
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(static_cast<unsigned>(args.n), static_cast<unsigned>(args.n_groups),
                          static_cast<unsigned>(args.max_group_heads));
    config.blockDim = dim3(kCombineThreads);
    config.stream = stream;
    cudaLaunchAttribute dependent = programmatic_dependent_attribute();
    config.attrs = &dependent;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, attention_combine_kernel, args);
}

}  // namespace purbo::cuda
