// Prefill attention on tensor cores, FlashAttention-2 style: mma.sync m16n8k16 with bf16
// operands and fp32 accumulators for S = Q K^T and O += P V, the online softmax in fp32
// registers. Same mask and output as cuda-attention.cu's fp32 kernel (which stays the path for
// decode, mixed batches and short chunks); the result differs from it by the bf16 rounding of
// q, k, v and p only.
//
// Floor and prediction (H200, d = 128, causal prefill 8K-32K tokens, h = 32 heads):
//  - Work: 4 d h flops per visible (query, key) pair (2 d for q.k, 2 d for p v).
//  - Peak: ~990 TFLOP/s dense bf16; FA2-style mma.sync kernels reach 60-70% of it at best
//    (FA2 measures ~330 TFLOP/s on H100-class parts, cuDNN's wgmma kernels 550-680).
//  - This kernel: no cp.async pipeline (tiles are loaded as f32 and converted in registers;
//    only the other CTAs on the SM hide that latency: 2 CTAs of 4 warps at d = 128 with 171
//    registers a thread, 3 at d = 64), K/V read from L2 once per 64-row query block (64 KB of
//    f32 per 2 MFLOP of tile work at d = 128). Predicted 100-200 TFLOP/s at 8K-32K (10-20x the
//    fp32 kernel's 10; below FA2's ~330), lower at d = 64 (the loads weigh twice as much per
//    flop). Window + sinks prefill: the same rate over the visible pairs.
//  - A bf16 cache (the default on cuda) takes a cp.async pipeline instead: kStages tiles of K
//    and V in shared memory, the next ones in flight while one computes (as the decode kernel
//    of cuda-attention-decode.cu). An f32 cache keeps the load-and-convert path above.
//  - Next steps (speed only): 128-row blocks (K/V traffic halved); wgmma with TMA on sm_90a.
//
// Work split: a CTA = (block of kAttnTcBlockM = 64 consecutive query tokens, one query head),
// 4 warps of 16 query rows each. It walks the key tiles of kAttnTcBlockN = 64 keys that any
// of its rows can see (the fp32 kernel's enumeration: sink tiles, then the window's tiles up
// to the last row's diagonal); a warp skips a tile none of its rows sees, and builds the
// per-element mask only on tiles some key of which is hidden from some of its rows.
//
// Block-sparse prefill: a head with a selection row walks, instead, the tiles of the blocks
// its CTA's tokens selected. Every token of the CTA shares the list (the launcher's
// condition), so the tiles are the shared-query case of the dense kernel: the same mma work
// per tile, the causal mask on the diagonal tile only. Selected 5 % of a 1M context, a CTA
// walks ~800 tiles where the dense one walks up to 16K; its time is the dense kernel's per
// tile (no prediction of its own until it is measured against the dense rows).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16", bf16): with lane = 4 gid +
// tig,
//  - A (16 x 16, row-major): reg0 = (row gid, cols 2 tig, 2 tig + 1), reg1 = (row gid + 8,
//    same cols), reg2 = (row gid, cols + 8), reg3 = (row gid + 8, cols + 8); the lower column
//    in the low half of each register.
//  - B (16 x 8, "col"): reg0 = (k rows 2 tig, 2 tig + 1; n col gid), reg1 = (k rows + 8).
//  - C (16 x 8, f32): c0, c1 = (row gid, cols 2 tig, 2 tig + 1), c2, c3 = (row gid + 8).
//  - ldmatrix.x4: lane L gives the address of row L % 8 of matrix L / 8; register i receives
//    matrix i with lane holding (row gid, cols 2 tig, 2 tig + 1), or with .trans (rows
//    2 tig, 2 tig + 1; col gid).
// Consequences used below: a row of K in shared memory ([key][dim]) read without .trans is a
// B fragment of K^T (n = key, k = dim); V ([key][dim]) read with .trans is a B fragment of V
// (k = key, n = dim); the C fragments of S for keys 16 kk .. 16 kk + 15 (n-tiles 2 kk and
// 2 kk + 1) are, packed to bf16 pairwise, exactly the A fragment of P for k-step kk.
#include <cuda_bf16.h>

#include <cmath>
#include <type_traits>

#include "backend/cuda/cuda-combine.cuh"
#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

constexpr int kWarps = kAttnTcBlockM / 16;
constexpr int kThreads = kWarps * 32;
static_assert(kAttnTcBlockN % 16 == 0, "key tiles are whole k-steps of P V");

// The tile of keys key0 .. key0 + kN - 1 into shared rows of kStride bf16: an f32 cache is
// rounded on the way, a bf16 one copied as it is (8 elements per 16-byte move). Keys beyond
// p_hi are zero (masked anyway, and they may lie past the capacity).
template <int D, int kStride>
__device__ __forceinline__ void load_tile(const float* cache, int64_t cache_row0, int key0, int p_hi,
                                          const AttentionTcArgs& args, __nv_bfloat16* dst) {
    constexpr int kSteps = kAttnTcBlockN * D / 4 / kThreads;
    static_assert(kAttnTcBlockN * D / 4 % kThreads == 0, "the tile load has no tail");
#pragma unroll 4
    for (int step = 0; step < kSteps; ++step) {
        const int idx = static_cast<int>(threadIdx.x) + step * kThreads;
        const int j = idx / (D / 4), e = (idx % (D / 4)) * 4;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (key0 + j <= p_hi) x = load4(cache + (cache_row0 + cache_row(key0 + j, args.ring_sinks, args.c)) * D + e);
        *reinterpret_cast<uint2*>(&dst[j * kStride + e]) = make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
    }
}
template <int D, int kStride>
__device__ __forceinline__ void load_tile(const __nv_bfloat16* cache, int64_t cache_row0, int key0, int p_hi,
                                          const AttentionTcArgs& args, __nv_bfloat16* dst) {
    constexpr int kSteps = kAttnTcBlockN * D / 8 / kThreads;
    static_assert(kAttnTcBlockN * D / 8 % kThreads == 0, "the tile load has no tail");
#pragma unroll 4
    for (int step = 0; step < kSteps; ++step) {
        const int idx = static_cast<int>(threadIdx.x) + step * kThreads;
        const int j = idx / (D / 8), e = (idx % (D / 8)) * 8;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (key0 + j <= p_hi)
            x = *reinterpret_cast<const uint4*>(cache + (cache_row0 + cache_row(key0 + j, args.ring_sinks, args.c)) * D + e);
        *reinterpret_cast<uint4*>(&dst[j * kStride + e]) = x;
    }
}

// kWindowed: window > 0, and the window and sinks apply to the heads marked local in
// args.heads (never to a head with a selection); otherwise causal only, and the window tests
// compile away. Heads whose KV head is not in the view (cache head -1) exit at once.
// Tiles of K and V a CTA holds in shared memory: a pipeline of 3 for a bf16 cache (cp.async),
// one for an f32 cache (loaded through registers and rounded).
template <class Cache>
constexpr int tc_stages() {
    return std::is_same_v<Cache, __nv_bfloat16> ? 3 : 1;
}
template <int D, class Cache>
constexpr size_t tc_smem_bytes() {
    return size_t{tc_stages<Cache>()} * 2 * kAttnTcBlockN * (D + 8) * sizeof(__nv_bfloat16);
}

// The tiles of the selected blocks with ids in [lo, hi): a sub-list of the ascending list,
// found by the whole CTA counting the ids below each bound (one round trip for a list of up
// to a few thousand blocks, where a binary search would be a dozen dependent loads).
template <int kN>
__device__ KeyTiles<kN> range_of(KeyTiles<kN> tiles, int lo, int hi) {
    __shared__ int below[2];
    if (threadIdx.x < 2) below[threadIdx.x] = 0;
    __syncthreads();
    const int count = tiles.count / tiles.tiles_per_block;
    int below_lo = 0, below_hi = 0;
    for (int k = static_cast<int>(threadIdx.x); k < count; k += kThreads) {
        const int id = tiles.selected[k];
        below_lo += id < lo;
        below_hi += id < hi;
    }
    below_lo = static_cast<int>(__reduce_add_sync(kFullMask, static_cast<unsigned>(below_lo)));
    below_hi = static_cast<int>(__reduce_add_sync(kFullMask, static_cast<unsigned>(below_hi)));
    if (threadIdx.x % 32 == 0) {
        atomicAdd(&below[0], below_lo);
        atomicAdd(&below[1], below_hi);
    }
    __syncthreads();
    tiles.selected += below[0];
    tiles.count = (below[1] - below[0]) * tiles.tiles_per_block;
    return tiles;
}

template <int D, bool kWindowed, class Cache>
__global__ void __launch_bounds__(kThreads) attention_tc_kernel(AttentionTcArgs args) {
    constexpr int kN = kAttnTcBlockN;
    constexpr int kStride = D + 8;     // bf16 per shared row: rows 16 bytes apart in banks
    constexpr int kKSteps = D / 16;    // k-steps of Q K^T
    constexpr int kDimTiles = D / 8;   // n-tiles of P V (8 output dims each)
    constexpr int kKeyTiles = kN / 8;  // n-tiles of Q K^T (8 keys each)
    constexpr int kStages = tc_stages<Cache>();
    constexpr bool kAsync = kStages > 1;
    constexpr int kStageElems =
        2 * kN * kStride;  // K then V of one tile, (kN, kStride) each, row = key
    static_assert(D % 16 == 0 && (kStride * 2) % 16 == 0, "ldmatrix rows must be 16-byte aligned");
    extern __shared__ __align__(16) unsigned char tc_smem_raw[];
    auto* stages = reinterpret_cast<__nv_bfloat16*>(tc_smem_raw);

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int gid = lane / 4, tig = lane % 4;
    const int n = static_cast<int>(args.n);
    const int h = static_cast<int>(args.h);
    // Blocks in reverse: the last query blocks see the most keys and start first.
    const int block = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
    const int32_t* head_row = args.heads + kAttnTcHeadInts * blockIdx.y;
    const int head = head_row[0], slot = head_row[1], sel_row = head_row[3];
    if (slot < 0) return;  // the head's KV head is not in this view: CTA-uniform exit
    const int range = static_cast<int>(blockIdx.z);
    const bool ranged = sel_row >= 0 && args.n_ranges > 1;
    if (sel_row < 0 && range > 0) return;  // the ranges split selections only: CTA-uniform
    const bool windowed = kWindowed && head_row[2] != 0 && sel_row < 0;
    // The CTA's first token (negative: the first CTA starts before the chunk, row_shift > 0).
    const int row0 = block * kAttnTcBlockM - args.row_shift;
    const int p_lo = args.pos0 + max(row0, 0);                      // its tokens' lowest position
    const int p_hi = args.pos0 + min(row0 + kAttnTcBlockM, n) - 1;  // and highest
    const int window = windowed ? args.window : 0;
    const int n_sink = windowed ? args.n_sink : 0;

    // The warp's rows: tokens wrow0 .. wrow0 + 15 (those < 0 or >= n are padding: computed on
    // zero queries, never written). This thread holds rows ra = wrow0 + gid and rb = ra + 8.
    const int wrow0 = row0 + warp * 16;
    const bool warp_active = wrow0 < n && wrow0 + 15 >= 0;
    const int w_p_lo = args.pos0 + wrow0;
    const int w_p_hi = min(w_p_lo + 15, p_hi);
    const int ra = wrow0 + gid, rb = ra + 8;
    const int pa = args.pos0 + ra, pb = args.pos0 + rb;

    // Q as A fragments, pre-scaled into the log2 domain (scores feed exp2f) and rounded to
    // bf16 once: qf[kk] covers dims 16 kk .. 16 kk + 15.
    uint32_t qf[kKSteps][4];
    load_q_fragments<D>(qf, ra >= 0 && ra < n ? args.q + (int64_t{ra} * h + head) * D : nullptr,
                        rb >= 0 && rb < n ? args.q + (int64_t{rb} * h + head) * D : nullptr,
                        args.scale * kLog2e, tig);

    // The block's key tiles: the window's, or with a selection the tiles of the blocks its
    // CTA's tokens selected (every token of the CTA shares its first token's list).
    KeyTiles<kN> tiles = window_key_tiles<kN>(p_lo, p_hi, window, n_sink);
    if (sel_row >= 0) {
        const int64_t list = int64_t{max(row0, 0)} * args.sel_hr + sel_row;
        tiles =
            selected_key_tiles<kN>(args.sel_blocks + list * args.sel_max_blocks,
                                   args.sel_counts[list], args.sel_max_blocks, args.sel_block_size);
        if (ranged)
            tiles = range_of(tiles, range * args.range_blocks, (range + 1) * args.range_blocks);
    }
    const int n_tiles = tiles.count;

    float o[kDimTiles][4];
#pragma unroll
    for (int t = 0; t < kDimTiles; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
    // Running max (log2 domain) and this thread's partial row sums of rows ra and rb; the max
    // is shared by the row's quad, the sums are reduced over the quad at the end.
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f;

    const int64_t cache_row0 = (static_cast<int64_t>(args.seq) * args.gc + slot) * args.c;  // cache row 0
    auto tile_key0 = [&](int t) { return tiles.key0(t); };
    // bf16 cache: issues the copies of tile t into stage t % kStages; keys past p_hi are
    // zero-filled (masked anyway, and they may lie past the capacity).
    auto issue_tile = [&](int t) {
        if constexpr (kAsync) {
            const auto* cache_k = static_cast<const __nv_bfloat16*>(args.cache_k);
            const auto* cache_v = static_cast<const __nv_bfloat16*>(args.cache_v);
            __nv_bfloat16* k_dst = stages + (t % kStages) * kStageElems;
            __nv_bfloat16* v_dst = k_dst + kN * kStride;
            const int key0 = tile_key0(t);
            constexpr int kChunks = D / 8;  // 16-byte pieces of a row
            static_assert(kN * kChunks % kThreads == 0, "the tile load has no tail");
#pragma unroll
            for (int step = 0; step < kN * kChunks / kThreads; ++step) {
                const int idx = static_cast<int>(threadIdx.x) + step * kThreads;
                const int j = idx / kChunks, e = (idx % kChunks) * 8;
                const bool live = key0 + j <= p_hi;
                const int64_t off =
                    live ? (cache_row0 + cache_row(key0 + j, args.ring_sinks, args.c)) * D + e : 0;
                cp_async_16(&k_dst[j * kStride + e], cache_k + off, live ? 16 : 0);
                cp_async_16(&v_dst[j * kStride + e], cache_v + off, live ? 16 : 0);
            }
        }
    };
    // Prologue: the first kStages - 1 tiles in flight, one commit per slot issued or not, so
    // that "all but kStages - 2 groups done" always means "tile t has landed".
    if constexpr (kAsync) {
#pragma unroll
        for (int st = 0; st < kStages - 1; ++st) {
            if (st < n_tiles) issue_tile(st);
            cp_async_commit();
        }
    }
    for (int t = 0; t < n_tiles; ++t) {
        const int key0 = tile_key0(t);
        const __nv_bfloat16* k_s;
        if constexpr (kAsync) {
            cp_async_wait<kStages - 2>();
            __syncthreads();  // tile t visible to all; every warp is done with tile t - 1's stage
            if (t + kStages - 1 < n_tiles) issue_tile(t + kStages - 1);
            cp_async_commit();
            k_s = stages + (t % kStages) * kStageElems;
        } else {
            __syncthreads();  // every warp is done with the previous tile
            load_tile<D, kStride>(static_cast<const Cache*>(args.cache_k), cache_row0, key0, p_hi,
                                  args, stages);
            load_tile<D, kStride>(static_cast<const Cache*>(args.cache_v), cache_row0, key0, p_hi,
                                  args, stages + kN * kStride);
            __syncthreads();
            k_s = stages;
        }
        const __nv_bfloat16* v_s = k_s + kN * kStride;

        // Warp-uniform: does the warp see nothing of this tile, or all of it?
        if (!warp_active || key0 > w_p_hi) continue;  // causal: every key after every row
        if (windowed && key0 + kN - 1 <= w_p_lo - window && key0 >= n_sink) continue;
        const bool all_visible = key0 + kN - 1 <= w_p_lo &&
                                 (!windowed || key0 > w_p_hi - window || key0 + kN - 1 < n_sink);

        // S = Q K^T: s[j] is the C fragment of keys key0 + 8 j .. + 7.
        float s[kKeyTiles][4];
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
            for (int jp = 0; jp < kKeyTiles / 2; ++jp) {
                // Matrices: (keys 16 jp + 0..7, dims 16 kk + 0..7), (same keys, dims + 8),
                // (keys + 8, dims + 0), (keys + 8, dims + 8) = B of n-tile 2 jp (reg0, reg1)
                // and of n-tile 2 jp + 1 (reg2, reg3).
                const int key = jp * 16 + (lane / 16) * 8 + lane % 8;
                const int dim = kk * 16 + ((lane / 8) % 2) * 8;
                uint32_t b[4];
                ldmatrix_x4(b, &k_s[key * kStride + dim]);
                mma_bf16(s[2 * jp], qf[kk], b[0], b[1]);
                mma_bf16(s[2 * jp + 1], qf[kk], b[2], b[3]);
            }
        }

        if (!all_visible) {
#pragma unroll
            for (int j = 0; j < kKeyTiles; ++j) {
                const int key = key0 + j * 8 + 2 * tig;
                if (!key_visible(key, pa, window, n_sink)) s[j][0] = -INFINITY;
                if (!key_visible(key + 1, pa, window, n_sink)) s[j][1] = -INFINITY;
                if (!key_visible(key, pb, window, n_sink)) s[j][2] = -INFINITY;
                if (!key_visible(key + 1, pb, window, n_sink)) s[j][3] = -INFINITY;
            }
        }

        // Online softmax: the tile's row max over the quad, the correction of the running sum
        // and accumulator, then p = 2^(s - m).
        float ta = ma, tb = mb;
#pragma unroll
        for (int j = 0; j < kKeyTiles; ++j) {
            ta = fmaxf(ta, fmaxf(s[j][0], s[j][1]));
            tb = fmaxf(tb, fmaxf(s[j][2], s[j][3]));
        }
        ta = quad_max(ta);
        tb = quad_max(tb);
        // A row with no visible key so far keeps m = -inf: subtract 0 instead, so that its
        // p and correction are 2^-inf = 0, never NaN.
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
        for (int j = 0; j < kKeyTiles; ++j) {
            s[j][0] = exp2f(s[j][0] - base_a);
            s[j][1] = exp2f(s[j][1] - base_a);
            s[j][2] = exp2f(s[j][2] - base_b);
            s[j][3] = exp2f(s[j][3] - base_b);
            la += s[j][0] + s[j][1];
            lb += s[j][2] + s[j][3];
        }

        // O += P V over the tile's keys, 16 per k-step.
#pragma unroll
        for (int kk = 0; kk < kN / 16; ++kk) {
            const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                   pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                   pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                   pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int dp = 0; dp < kDimTiles / 2; ++dp) {
                // Matrices (transposed on load): (keys 16 kk + 0..7, dims 16 dp + 0..7),
                // (keys + 8, same dims), (keys + 0, dims + 8), (keys + 8, dims + 8) = B of
                // dim tile 2 dp (reg0, reg1) and of dim tile 2 dp + 1 (reg2, reg3).
                const int key = kk * 16 + ((lane / 8) % 2) * 8 + lane % 8;
                const int dim = dp * 16 + (lane / 16) * 8;
                uint32_t b[4];
                ldmatrix_x4_trans(b, &v_s[key * kStride + dim]);
                mma_bf16(o[2 * dp], a, b[0], b[1]);
                mma_bf16(o[2 * dp + 1], a, b[2], b[3]);
            }
        }
    }

    if (!warp_active) return;
    la = quad_sum(la);
    lb = quad_sum(lb);
    if (ranged) {
        // The rows' partial states, unnormalised; a row that saw no key of the range has l = 0.
        auto write_part = [&](int r, float m, float l, int c) {
            if (r < 0 || r >= n) return;
            const int64_t part = (int64_t{blockIdx.y} * n + r) * args.n_ranges + range;
            float* acc = args.partial_acc + part * D;
#pragma unroll
            for (int dt = 0; dt < kDimTiles; ++dt)
                *reinterpret_cast<float2*>(acc + dt * 8 + 2 * tig) =
                    make_float2(o[dt][c], o[dt][c + 1]);
            if (tig == 0) {
                args.partial_ml[part * 2 + 0] = m;
                args.partial_ml[part * 2 + 1] = l;
            }
        };
        write_part(ra, ma, la, 0);
        write_part(rb, mb, lb, 2);
        return;
    }
    // Every real row sees at least its own key (j = p), so l > 0 there.
    const float inv_a = la > 0.0f ? 1.0f / la : 0.0f, inv_b = lb > 0.0f ? 1.0f / lb : 0.0f;
    float* out_a = args.out + (static_cast<int64_t>(ra) * h + head) * D;
    float* out_b = args.out + (static_cast<int64_t>(rb) * h + head) * D;
#pragma unroll
    for (int dt = 0; dt < kDimTiles; ++dt) {
        const int col = dt * 8 + 2 * tig;
        if (ra >= 0 && ra < n)
            *reinterpret_cast<float2*>(out_a + col) =
                make_float2(o[dt][0] * inv_a, o[dt][1] * inv_a);
        if (rb >= 0 && rb < n)
            *reinterpret_cast<float2*>(out_b + col) =
                make_float2(o[dt][2] * inv_b, o[dt][3] * inv_b);
    }
}

template <int D, class Cache>
cudaError_t launch_d(const AttentionTcArgs& args, dim3 grid, cudaStream_t stream) {
    constexpr int kSmem = static_cast<int>(tc_smem_bytes<D, Cache>());
    auto launch = [&](auto kernel) {
        // Beyond the 48 KB a kernel gets without asking (3 stages at d = 128: 102 KB).
        if (kSmem > 48 * 1024) {
            const cudaError_t err =
                cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
            if (err != cudaSuccess) return err;
        }
        kernel<<<grid, kThreads, kSmem, stream>>>(args);
        return cudaGetLastError();
    };
    return args.window > 0 ? launch(attention_tc_kernel<D, true, Cache>)
                           : launch(attention_tc_kernel<D, false, Cache>);
}

// One CTA per (token, head row of a selected head): its key ranges' states merged into out.
__global__ void __launch_bounds__(kCombineThreads)
    attention_tc_combine_kernel(AttentionTcArgs args) {
    const int32_t* head_row = args.heads + kAttnTcHeadInts * blockIdx.y;
    if (head_row[1] < 0 || head_row[3] < 0) return;  // no KV head in the view, or no selection
    const int64_t part = (int64_t{blockIdx.y} * args.n + blockIdx.x) * args.n_ranges;
    combine_split_states(args.partial_ml + part * 2, args.partial_acc + part * args.d,
                         args.n_ranges, args.d,
                         args.out + (int64_t{blockIdx.x} * args.h + head_row[0]) * args.d);
}

}  // namespace

bool attention_tc_head_dim_supported(int d) {
    return d == 64 || d == 128;
}

cudaError_t launch_attention_tc(const AttentionTcArgs& args, cudaStream_t stream) {
    if (args.n == 0) return cudaSuccess;
    if (args.hs == 0) return cudaSuccess;
    if (args.hs > 65535 || args.n * args.h > INT32_MAX || args.pos0 < 0 ||
        (args.ring_sinks < 0 && int64_t{args.pos0} + args.n > args.c) || args.window < 0 ||
        args.n_sink < 0 || args.row_shift < 0 || args.row_shift >= kAttnTcBlockM ||
        (args.sel_blocks != nullptr &&
         (args.sel_block_size <= 0 || args.sel_block_size % kAttnTcBlockN != 0)) ||
        args.n_ranges < 1 || args.n_ranges > kAttnMaxSplits ||
        (args.n_ranges > 1 && (args.sel_blocks == nullptr || args.range_blocks < 1 ||
                               args.partial_acc == nullptr || args.partial_ml == nullptr)))
        return cudaErrorInvalidValue;
    const dim3 grid(
        static_cast<unsigned>((args.n + args.row_shift + kAttnTcBlockM - 1) / kAttnTcBlockM),
        static_cast<unsigned>(args.hs), static_cast<unsigned>(args.n_ranges));
    // DISPATCH on the head dim, the cache type and whether a window applies: eight
    // instantiations.
    cudaError_t err = cudaErrorInvalidValue;
    switch (args.d) {
        case 64:
            err = args.cache_bf16 ? launch_d<64, __nv_bfloat16>(args, grid, stream)
                                  : launch_d<64, float>(args, grid, stream);
            break;
        case 128:
            err = args.cache_bf16 ? launch_d<128, __nv_bfloat16>(args, grid, stream)
                                  : launch_d<128, float>(args, grid, stream);
            break;
        default:
            break;
    }
    if (err != cudaSuccess || args.n_ranges == 1) return err;
    attention_tc_combine_kernel<<<dim3(static_cast<unsigned>(args.n),
                                       static_cast<unsigned>(args.hs)),
                                  kCombineThreads, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace purbo::cuda
