// Decode attention over a bf16 KV cache on tensor cores (FlashDecoding style). It takes the
// work that cuda-attention.cu's fp32 kernel would (same plan, same args, same partials and
// combine pass) whenever the cache is bf16, the head dim 64 or 128 and a block selection's
// block size a multiple of its 64-key tile: decode steps, short chunks, mixed batches.
//
// Floor and prediction (H200, qwen3-30b-a3b shape: 32 query heads on 4 KV heads, d = 128):
//  - Bytes: every visible key's K and V row once, 2 x 128 x 2 = 512 bytes per key and KV
//    head: 2.1 GB at 1M tokens, 0.52 ms at ~4 TB/s. The queries, partials and the combine
//    pass add under 1 MB.
//  - Work: the CTA's query rows (here the 8 heads of a KV head) share every tile, so a key
//    costs 2 x 8 x 128 MACs on tensor cores: far below their rate, and the kernel is bound
//    by the bytes only if enough of them are in flight: 2 CTAs per SM with 3 stages of 32 KB
//    (64 keys of K and V) each keep up to 128 KB in flight per SM.
//  - Prediction: 80-90% of the copy bandwidth at 128K-1M (the fp32 kernel: ~25%, reading
//    twice the bytes on CUDA cores).
//
// Work split: a CTA = (block of <= 16 query rows: tokens x query heads of one KV head, one
// split of the keys), 4 warps. The rows are the A operand of one m16 tile. Key tiles of
// kTile = 64 keys arrive by cp.async into a kStages-deep ring of shared buffers; warp w
// computes keys 16 w .. 16 w + 15 of each tile with its own online softmax, and the 4 warps'
// (max, sum, accumulator) are merged at the end through shared memory. Fragment layouts as
// in cuda-attention-tc.cu: K rows read by ldmatrix are the B operand of K^T, V rows read with
// .trans the B operand of V, and the C fragments of S packed to bf16 the A fragment of P.
#include <cuda_bf16.h>

#include <climits>
#include <cmath>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

constexpr int kTile = 64;     // keys per pipeline stage
constexpr int kStages = 3;    // tiles in flight or in use per CTA
constexpr int kWarps = 4;     // each computes 16 keys of a tile
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16;     // the m of mma.m16n8k16
static_assert(kTile == kWarps * 16 && kAttnMaxRows <= kRows, "a warp takes one k-step of P V per tile");

template <int D>
constexpr int stride() { return D + 8; }  // bf16 per shared row: ldmatrix rows 16 bytes apart in banks

template <int D>
constexpr size_t smem_bytes() {
    return size_t{kStages} * 2 * kTile * stride<D>() * sizeof(__nv_bfloat16);
}

template <int D>
__global__ void __launch_bounds__(kThreads, 2) attention_decode_kernel(AttentionArgs args) {
    constexpr int kStride = stride<D>();
    constexpr int kKSteps = D / 16;    // k-steps of Q K^T
    constexpr int kDimTiles = D / 8;   // n-tiles of P V
    constexpr int kChunks = D / 8;     // 16-byte pieces of a row
    constexpr int kStageElems = 2 * kTile * kStride;  // K then V of one tile
    static_assert(kTile * kChunks % kThreads == 0, "the tile load has no tail");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    auto* stages = reinterpret_cast<__nv_bfloat16*>(smem_raw);
    __shared__ int row_pos[kRows];
    __shared__ float merge_ml[kWarps][kRows][2];

    const auto* cache_k = static_cast<const __nv_bfloat16*>(args.cache_k);
    const auto* cache_v = static_cast<const __nv_bfloat16*>(args.cache_v);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int gid = lane / 4, tig = lane % 4;

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

    // Row r = (token tok0 + r / hpc, query head heads[r % hpc]); rows >= n_rows have position
    // -1 and see no key.
    if (threadIdx.x < kRows) row_pos[threadIdx.x] = threadIdx.x < n_rows ? args.pos[tok0 + threadIdx.x / hpc] : -1;
    __syncthreads();
    int min_p = row_pos[0], max_p = row_pos[0];
    for (int r = 1; r < n_rows; ++r) {
        min_p = min(min_p, row_pos[r]);
        max_p = max(max_p, row_pos[r]);
    }
    const int ra = gid, rb = gid + 8;  // this thread's rows in the C fragments
    const int pa = row_pos[ra], pb = row_pos[rb];

    // Launched as a programmatic dependent (launch_d): everything the kernel ahead of it may
    // write (q, a selection, the batch's own keys) is read after wait_for_prior_grid(). The
    // first tiles' cache rows are copied before it when every key in them lies below the
    // batch's smallest position (the batch's kv_store writes none of them; the plan's
    // positions come from a copy, not a kernel), in batches of at most 32 tokens, not from
    // ring caches (whose rows are reused).
    int stable_keys = -1;
    if (args.n <= 32) {
        const int p = lane < args.n ? args.pos[lane] : INT_MAX;
        stable_keys = __reduce_min_sync(kFullMask, p);
    }
    const bool may_start_early = sel_row < 0 && args.ring_sinks < 0 && stable_keys > 0;
    if (!may_start_early) wait_for_prior_grid();

    // The block's key tiles (64 keys each): a selection's, or the window's.
    KeyTiles<kTile> tiles = window_key_tiles<kTile>(min_p, max_p, window, n_sink);
    if (sel_row >= 0) {
        const int64_t at = int64_t{tok0} * args.sel_hr + sel_row;
        tiles = selected_key_tiles<kTile>(args.sel_blocks + at * args.sel_max_blocks,
                                          args.sel_counts[at], args.sel_max_blocks,
                                          args.sel_block_size);
    }
    const int t_begin = static_cast<int>(split * int64_t{tiles.count} / args.n_splits);
    const int t_end = static_cast<int>((split + 1) * int64_t{tiles.count} / args.n_splits);
    auto tile_key0 = [&](int t) { return tiles.key0(t); };

    // Issues the copies of tile t into stage t % kStages: keys past every row's position are
    // zero-filled (they may lie past the capacity; their scores are masked).
    const int64_t cache_base = (seq * args.gc + slot) * args.c;
    auto load_tile = [&](int t) {
        __nv_bfloat16* k_dst = stages + (t % kStages) * kStageElems;
        __nv_bfloat16* v_dst = k_dst + kTile * kStride;
        const int key0 = tile_key0(t);
#pragma unroll
        for (int step = 0; step < kTile * kChunks / kThreads; ++step) {
            const int idx = static_cast<int>(threadIdx.x) + step * kThreads;
            const int j = idx / kChunks, e = (idx % kChunks) * 8;
            const bool live = key0 + j <= max_p;
            const int64_t off = live ? (cache_base + cache_row(key0 + j, args.ring_sinks, args.c)) * D + e : 0;
            cp_async_16(&k_dst[j * kStride + e], cache_k + off, live ? 16 : 0);
            cp_async_16(&v_dst[j * kStride + e], cache_v + off, live ? 16 : 0);
        }
    };

    float o[kDimTiles][4];
#pragma unroll
    for (int t = 0; t < kDimTiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f;

    // Prologue: the first kStages - 1 tiles in flight. One commit per tile slot, issued or not,
    // so that "all but kStages - 2 groups done" always means "tile t has landed".
    const int last_prologue = min(t_begin + kStages - 1, t_end) - 1;
    const bool prologue_early =
        may_start_early &&
        (last_prologue < t_begin || tile_key0(last_prologue) + kTile <= stable_keys);
    if (may_start_early && !prologue_early) wait_for_prior_grid();
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
        if (t_begin + s < t_end) load_tile(t_begin + s);
        cp_async_commit();
    }
    if (prologue_early) wait_for_prior_grid();

    // Q as A fragments, pre-scaled into the log2 domain and rounded to bf16 once.
    auto q_row = [&](int r) -> const float* {
        return r < n_rows ? args.q + ((tok0 + r / hpc) * args.h + heads[r % hpc]) * D : nullptr;
    };
    uint32_t qf[kKSteps][4];
    load_q_fragments<D>(qf, q_row(ra), q_row(rb), args.scale * kLog2e, tig);

    for (int t = t_begin; t < t_end; ++t) {
        cp_async_wait<kStages - 2>();
        __syncthreads();  // tile t visible to all; every warp is done with tile t - 1's stage
        if (t + kStages - 1 < t_end) load_tile(t + kStages - 1);
        cp_async_commit();

        const __nv_bfloat16* k_s = stages + (t % kStages) * kStageElems + warp * 16 * kStride;
        const __nv_bfloat16* v_s = k_s + kTile * kStride;
        const int key0 = tile_key0(t) + warp * 16;
        if (key0 > max_p) continue;  // warp-uniform: no row sees these keys (causal)

        // S = Q K^T for the warp's 16 keys: s[0] keys key0 + 0..7, s[1] keys key0 + 8..15.
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
            const int key = (lane / 16) * 8 + lane % 8;
            const int dim = kk * 16 + ((lane / 8) % 2) * 8;
            uint32_t b[4];
            ldmatrix_x4(b, &k_s[key * kStride + dim]);
            mma_bf16(s[0], qf[kk], b[0], b[1]);
            mma_bf16(s[1], qf[kk], b[2], b[3]);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const int key = key0 + j * 8 + 2 * tig;
            if (!key_visible(key, pa, window, n_sink)) s[j][0] = -INFINITY;
            if (!key_visible(key + 1, pa, window, n_sink)) s[j][1] = -INFINITY;
            if (!key_visible(key, pb, window, n_sink)) s[j][2] = -INFINITY;
            if (!key_visible(key + 1, pb, window, n_sink)) s[j][3] = -INFINITY;
        }

        // Online softmax (as in cuda-attention-tc.cu): the rows' max over the quad, then
        // p = 2^(s - m); a row with no visible key so far keeps m = -inf and p = 0.
        float ta = fmaxf(ma, fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1])));
        float tb = fmaxf(mb, fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3])));
        ta = fmaxf(ta, __shfl_xor_sync(kFullMask, ta, 1));
        ta = fmaxf(ta, __shfl_xor_sync(kFullMask, ta, 2));
        tb = fmaxf(tb, __shfl_xor_sync(kFullMask, tb, 1));
        tb = fmaxf(tb, __shfl_xor_sync(kFullMask, tb, 2));
        const float base_a = ta == -INFINITY ? 0.0f : ta;
        const float base_b = tb == -INFINITY ? 0.0f : tb;
        const float corr_a = exp2f(ma - base_a), corr_b = exp2f(mb - base_b);
        ma = ta;
        mb = tb;
        la *= corr_a;
        lb *= corr_b;
#pragma unroll
        for (int dt = 0; dt < kDimTiles; ++dt) {
            o[dt][0] *= corr_a;
            o[dt][1] *= corr_a;
            o[dt][2] *= corr_b;
            o[dt][3] *= corr_b;
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            s[j][0] = exp2f(s[j][0] - base_a);
            s[j][1] = exp2f(s[j][1] - base_a);
            s[j][2] = exp2f(s[j][2] - base_b);
            s[j][3] = exp2f(s[j][3] - base_b);
            la += s[j][0] + s[j][1];
            lb += s[j][2] + s[j][3];
        }

        // O += P V over the 16 keys: one k-step.
        const uint32_t a[4] = {pack_bf16(s[0][0], s[0][1]), pack_bf16(s[0][2], s[0][3]),
                               pack_bf16(s[1][0], s[1][1]), pack_bf16(s[1][2], s[1][3])};
#pragma unroll
        for (int dp = 0; dp < kDimTiles / 2; ++dp) {
            const int key = ((lane / 8) % 2) * 8 + lane % 8;
            const int dim = dp * 16 + (lane / 16) * 8;
            uint32_t b[4];
            ldmatrix_x4_trans(b, &v_s[key * kStride + dim]);
            mma_bf16(o[2 * dp], a, b[0], b[1]);
            mma_bf16(o[2 * dp + 1], a, b[2], b[3]);
        }
    }
    cp_async_wait<0>();
    allow_dependent_grid();  // the combine pass may be scheduled (it waits for these writes)

    // Merge the warps: each row's largest max M over the warps, every warp's share rescaled
    // by 2^(m_w - M), the accumulators summed through shared memory (the stage buffers are
    // free now).
    la += __shfl_xor_sync(kFullMask, la, 1);
    la += __shfl_xor_sync(kFullMask, la, 2);
    lb += __shfl_xor_sync(kFullMask, lb, 1);
    lb += __shfl_xor_sync(kFullMask, lb, 2);
    if (tig == 0) {
        merge_ml[warp][ra][0] = ma;
        merge_ml[warp][ra][1] = la;
        merge_ml[warp][rb][0] = mb;
        merge_ml[warp][rb][1] = lb;
    }
    __syncthreads();
    auto row_max = [&](int r) {
        float m = -INFINITY;
        for (int w = 0; w < kWarps; ++w) m = fmaxf(m, merge_ml[w][r][0]);
        return m;
    };
    const float big_a = row_max(ra), big_b = row_max(rb);
    const float own_a = ma == -INFINITY ? 0.0f : exp2f(ma - big_a);
    const float own_b = mb == -INFINITY ? 0.0f : exp2f(mb - big_b);
    auto* acc_s = reinterpret_cast<float*>(smem_raw);  // (kWarps, kRows, D)
    static_assert(size_t{kWarps} * kRows * D * sizeof(float) <= smem_bytes<D>(), "merge fits the stages");
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
        const int col = dt * 8 + 2 * tig;
        *reinterpret_cast<float2*>(&acc_s[(warp * kRows + ra) * D + col]) =
            make_float2(o[dt][0] * own_a, o[dt][1] * own_a);
        *reinterpret_cast<float2*>(&acc_s[(warp * kRows + rb) * D + col]) =
            make_float2(o[dt][2] * own_b, o[dt][3] * own_b);
    }
    __syncthreads();

    for (int idx = threadIdx.x; idx < n_rows * D; idx += kThreads) {
        const int r = idx / D, e = idx % D;
        const float big = row_max(r);
        float sum = 0.0f, value = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            const float m = merge_ml[w][r][0];
            const float scale = m == -INFINITY ? 0.0f : exp2f(m - big);
            sum += scale * merge_ml[w][r][1];
            value += acc_s[(w * kRows + r) * D + e];
        }
        const int64_t row = (tok0 + r / hpc) * args.h + heads[r % hpc];  // token * h + head
        if (args.n_splits == 1) {
            // Every row sees at least its own key (j = p), so sum > 0 here.
            args.out[row * D + e] = sum > 0.0f ? value / sum : 0.0f;
        } else {
            const int64_t part = row * args.n_splits + split;
            args.partial_acc[part * D + e] = value;
            if (e == 0) {
                args.partial_ml[part * 2 + 0] = big;
                args.partial_ml[part * 2 + 1] = sum;
            }
        }
    }
}

template <int D>
cudaError_t launch_d(const AttentionArgs& args, dim3 grid, cudaStream_t stream) {
    constexpr int kSmem = static_cast<int>(smem_bytes<D>());
    static const cudaError_t configured =
        cudaFuncSetAttribute(attention_decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (configured != cudaSuccess) return configured;
    // A programmatic dependent of the kernel ahead of it (see the kernel's first wait).
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = kSmem;
    config.stream = stream;
    cudaLaunchAttribute dependent = programmatic_dependent_attribute();
    config.attrs = &dependent;
    config.numAttrs = 1;
    return cudaLaunchKernelEx(&config, attention_decode_kernel<D>, args);
}

}  // namespace

bool attention_decode_supported(const AttentionArgs& args) {
    return args.cache_bf16 && (args.d == 64 || args.d == 128) &&
           (args.sel_blocks == nullptr || args.sel_block_size % kTile == 0);
}

cudaError_t launch_attention_decode(const AttentionArgs& args, cudaStream_t stream) {
    const dim3 grid(static_cast<unsigned>(args.n_blocks), static_cast<unsigned>(args.n_groups),
                    static_cast<unsigned>(args.n_splits));
    switch (args.d) {
        case 64: return launch_d<64>(args, grid, stream);
        case 128: return launch_d<128>(args, grid, stream);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace purbo::cuda
