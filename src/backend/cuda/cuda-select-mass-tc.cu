// Step 1 of the block selection (cuda-select.cu) on tensor cores, for prefill's many rows:
// every (row, key block) log2 mass a_b = m_b + log2 sum_{t in b, t <= pos} 2^(z_t - m_b) with
// z_t = scale * log2(e) * iq . k_t, the same quantity block_mass_kernel computes on CUDA cores,
// 8 lanes per (row, block).
//
// Why a second kernel: block_mass_kernel reads a block's 64 keys (2 KB in bf16) from L1/L2
// for every row that needs them and does 16 fp32 FMAs per key and row; at 1M tokens a
// block-sparse prefill has ~5e9 (row, block) cells (8 sampled rows per query block, 5 heads),
// and the warp kernel spends ~20 cycles of an SM on each, bound by L1 (~0.45 s on an H100/H200).
// Here a CTA takes 64 rows of one retrieval head against a chunk of 4096 keys: each key tile
// is loaded once for 64 rows, the scores are one k-step of mma.m16n8k16 per 8 keys, and what
// remains is one exp2 per (row, key), the floor of the method (16 per cycle and SM: ~4 cycles
// per cell, ~0.1 s at 1M). Each block's mass depends on its own keys only, so the key chunks
// of a row are independent CTAs and no partial state is combined.
//
// Precision: bf16 operands would round the scores to ~8 bits, enough to move blocks across
// the top-p boundary. Each query element is split into three bf16 parts, hi + mid + lo, whose
// sum is the f32 value exactly (8 mantissa bits each); bf16 and f8 keys are exact in bf16 and
// f32 keys are split likewise. The products of two bf16 numbers are exact in the tensor
// cores' fp32 accumulation, so the scores are those of fp32 arithmetic up to the order of the
// additions (smallest parts first), as block_mass_kernel's. Three mma per 8 keys (six with
// f32 keys: the products below 2^-24 of the largest are left out) cost little next to the
// exp2s.
//
// Fragment layouts: as in cuda-attention-tc.cu (A = the 16 rows x 16 index dims of a warp,
// B = 8 keys x 16 dims read from a [key][dim] tile by ldmatrix without .trans).
#include <cuda_bf16.h>

#include <climits>
#include <cmath>
#include <type_traits>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"
#include "backend/select-bins.h"

namespace purbo::cuda {
namespace {

constexpr int kRows = 64;  // rows per CTA: 4 warps x 16
constexpr int kThreads = 128;
constexpr int kTileKeys = 64;     // keys per tile: 8 n-tiles of mma
constexpr int kChunkKeys = 4096;  // keys per CTA along a row
constexpr int kStride = 24;       // bf16 per shared key row: 16 dims + 8, rows 48 bytes apart
constexpr int kStageBlocks = 64;  // staged masses per row before a coalesced write
constexpr int kStageStride = kStageBlocks + 1;

// One thread's share of a key tile: 8 consecutive index dims of one key (key = tid / 2, dims
// 8 (tid % 2) ..) as bf16, split into hi, mid and lo parts for f32 keys (hi alone otherwise).
// Dims >= R and keys past `limit` are zero.
struct KeyPart {
    uint4 hi = make_uint4(0, 0, 0, 0);
    uint4 mid = make_uint4(0, 0, 0, 0);
    uint4 lo = make_uint4(0, 0, 0, 0);
};

// (a, b) = hi + mid + lo exactly, each part a packed bf16 pair (a in the low half): every
// rounding's remainder is exact in f32, and three 8-bit mantissas cover f32's 24.
__device__ __forceinline__ uint32_t split3(float a, float b, uint32_t& mid, uint32_t& lo) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    const float2 hf = __bfloat1622float2(h);
    const float ra = a - hf.x, rb = b - hf.y;
    const __nv_bfloat162 m = __floats2bfloat162_rn(ra, rb);
    const float2 mf = __bfloat1622float2(m);
    mid = *reinterpret_cast<const uint32_t*>(&m);
    lo = pack_bf16(ra - mf.x, rb - mf.y);
    return *reinterpret_cast<const uint32_t*>(&h);
}

template <int R, class Key>
__device__ __forceinline__ KeyPart load_part(const Key* keys, int t, int limit) {
    KeyPart k;
    const int dim = (threadIdx.x % 2) * 8;
    if (dim >= R || t > limit) return k;
    const Key* p = keys + int64_t{t} * R + dim;
    if constexpr (std::is_same_v<Key, __nv_bfloat16>) {
        k.hi = *reinterpret_cast<const uint4*>(p);
    } else {
        const float4 a = load4(p), b = load4(p + 4);
        if constexpr (std::is_same_v<Key, float>) {
            k.hi = make_uint4(split3(a.x, a.y, k.mid.x, k.lo.x), split3(a.z, a.w, k.mid.y, k.lo.y),
                              split3(b.x, b.y, k.mid.z, k.lo.z), split3(b.z, b.w, k.mid.w, k.lo.w));
        } else {  // e4m3 values are exact in bf16 (3 mantissa bits, exponents well inside its
                  // range)
            k.hi = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y),
                              pack_bf16(b.z, b.w));
        }
    }
    return k;
}

// kSeg: keys per mass segment, min(B, 64) (B a power of two, 8 .. kChunkKeys); a block of
// B > 64 keys spans B / 64 tiles whose states are merged. kSplitKeys: f32 keys (three parts).
// Grid (key chunks, row tiles, retrieval heads).
template <int R, int kSeg, class Key>
__global__ void __launch_bounds__(kThreads)
    block_mass_tc_kernel(SelectBlocksArgs args, float* log2_mass) {
    constexpr bool kSplitKeys = std::is_same_v<Key, float>;
    constexpr int kSegs = kTileKeys / kSeg;  // segments per tile
    constexpr int kSegTiles = kSeg / 8;      // n-tiles per segment
    // Two key tiles: the warps read one while the next is stored into the other.
    __shared__ __align__(16) __nv_bfloat16 k_hi[2][kTileKeys * kStride];
    __shared__ __align__(16) __nv_bfloat16 k_mid[2][kSplitKeys ? kTileKeys * kStride : 8];
    __shared__ __align__(16) __nv_bfloat16 k_lo[2][kSplitKeys ? kTileKeys * kStride : 8];
    __shared__ float stage[kRows * kStageStride];

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gid = lane / 4, tig = lane % 4;
    const int64_t j = blockIdx.z;                      // retrieval head
    const int64_t row0 = int64_t{blockIdx.y} * kRows;  // the CTA's first token
    const int key_begin = static_cast<int>(blockIdx.x) * kChunkKeys;
    const int B = args.block_size, u = args.n_used_max;
    const int64_t ia = row0 + warp * 16 + gid, ib = ia + 8;  // this thread's rows
    const int pa = ia < args.n ? args.pos[ia] : -1, pb = ib < args.n ? args.pos[ib] : -1;
    // The CTA's keys: key_begin .. min(chunk end, its highest position). CTA-uniform exit when
    // every row's position lies before the chunk.
    if (!__syncthreads_or(max(pa, pb) >= key_begin)) return;
    int p_max = max(pa, pb);
    for (int offset = 16; offset > 0; offset >>= 1)
        p_max = max(p_max, __shfl_xor_sync(kFullMask, p_max, offset));
    __shared__ int warp_p_max[kThreads / 32];
    if (lane == 0) warp_p_max[warp] = p_max;
    __syncthreads();
    p_max = max(max(warp_p_max[0], warp_p_max[1]), max(warp_p_max[2], warp_p_max[3]));
    const int key_end = min(key_begin + kChunkKeys, p_max + 1);  // exclusive
    const int n_tiles = (key_end - key_begin + kTileKeys - 1) / kTileKeys;
    // The warp's lowest position: tiles wholly at or below it need no causal mask (all but the
    // last few of a row). Rows past n see nothing and their masses are not written.
    int p_min = min(pa < 0 ? INT_MAX : pa, pb < 0 ? INT_MAX : pb);
    for (int offset = 16; offset > 0; offset >>= 1)
        p_min = min(p_min, __shfl_xor_sync(kFullMask, p_min, offset));

    // The queries as A fragments, in the log2 domain, split into bf16 hi + mid + lo; dims >= R
    // zero.
    uint32_t qh[4], qm[4], ql[4];
    {
        const float q_scale = args.scale * kSelectLog2e;
        auto q_at = [&](int64_t i, int e) {
            return i < args.n && e < R ? args.iq[(i * args.hr + j) * R + e] * q_scale : 0.0f;
        };
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int col = half * 8 + 2 * tig;
            qh[2 * half] = split3(q_at(ia, col), q_at(ia, col + 1), qm[2 * half], ql[2 * half]);
            qh[2 * half + 1] =
                split3(q_at(ib, col), q_at(ib, col + 1), qm[2 * half + 1], ql[2 * half + 1]);
        }
    }

    const Key* keys = static_cast<const Key*>(args.index_keys) +
                      (int64_t{args.one_seq} * args.hr + j) * args.c * R;
    const int tiles_per_block = B > kTileKeys ? B / kTileKeys : 1;
    const int blocks_per_tile = B > kTileKeys ? 1 : kTileKeys / B;
    const int first_block = key_begin / B;
    // A running state per row for blocks that span tiles (B > 64).
    float run_ma = -INFINITY, run_la = 0.0f, run_mb = -INFINITY, run_lb = 0.0f;

    // Writes the staged masses of blocks first .. first + count - 1 (absolute ids, staged at
    // slots 0 ..) of the rows that see them, row by row (coalesced).
    auto flush = [&](int first, int count) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < kRows * count; idx += kThreads) {
            const int rr = idx / count, k = idx % count;
            const int64_t i = row0 + rr;
            if (i >= args.n || first + k > args.pos[i] / B) continue;
            log2_mass[(i * args.hr + j) * u + first + k] = stage[rr * kStageStride + k];
        }
        __syncthreads();
    };
    // Stores row a's and b's mass of block b at its stage slot (one lane per quad).
    auto put = [&](int b, float ma, float la, float mb, float lb) {
        const int slot = (b - first_block) % kStageBlocks;
        if (tig == 0) {
            stage[(warp * 16 + gid) * kStageStride + slot] =
                ma == -INFINITY ? -INFINITY : ma + log2f(la);
            stage[(warp * 16 + gid + 8) * kStageStride + slot] =
                mb == -INFINITY ? -INFINITY : mb + log2f(lb);
        }
    };

    // This thread's share of a key tile into buffer `buf`.
    auto store_part = [&](const KeyPart& part, int buf) {
        const int at = (threadIdx.x / 2) * kStride + (threadIdx.x % 2) * 8;
        *reinterpret_cast<uint4*>(&k_hi[buf][at]) = part.hi;
        if constexpr (kSplitKeys) {
            *reinterpret_cast<uint4*>(&k_mid[buf][at]) = part.mid;
            *reinterpret_cast<uint4*>(&k_lo[buf][at]) = part.lo;
        }
    };
    store_part(load_part<R>(keys, key_begin + static_cast<int>(threadIdx.x) / 2, key_end - 1), 0);
    __syncthreads();
    int staged_first = first_block;  // the block of stage slot 0
    for (int t = 0; t < n_tiles; ++t) {
        const int key0 = key_begin + t * kTileKeys, buf = t % 2;
        // The next tile's keys in flight while this one is scored; stored after, into the
        // other buffer, which every warp finished reading before the last barrier.
        KeyPart next;
        if (t + 1 < n_tiles)
            next = load_part<R>(keys, key0 + kTileKeys + static_cast<int>(threadIdx.x) / 2,
                                key_end - 1);

        // S = Q K^T for the warp's 16 rows and the tile's 64 keys: s[n] = keys key0 + 8 n ..
        // The parts' products, smallest first.
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int jp = 0; jp < 4; ++jp) {
            const int key = jp * 16 + (lane / 16) * 8 + lane % 8;
            const int dim = ((lane / 8) % 2) * 8;
            uint32_t kh[4];
            ldmatrix_x4(kh, &k_hi[buf][key * kStride + dim]);
            if constexpr (kSplitKeys) {
                uint32_t km[4], kl[4];
                ldmatrix_x4(km, &k_mid[buf][key * kStride + dim]);
                ldmatrix_x4(kl, &k_lo[buf][key * kStride + dim]);
                mma_bf16(s[2 * jp], qh, kl[0], kl[1]);
                mma_bf16(s[2 * jp + 1], qh, kl[2], kl[3]);
                mma_bf16(s[2 * jp], qm, km[0], km[1]);
                mma_bf16(s[2 * jp + 1], qm, km[2], km[3]);
                mma_bf16(s[2 * jp], qh, km[0], km[1]);
                mma_bf16(s[2 * jp + 1], qh, km[2], km[3]);
            }
            mma_bf16(s[2 * jp], ql, kh[0], kh[1]);
            mma_bf16(s[2 * jp + 1], ql, kh[2], kh[3]);
            mma_bf16(s[2 * jp], qm, kh[0], kh[1]);
            mma_bf16(s[2 * jp + 1], qm, kh[2], kh[3]);
            mma_bf16(s[2 * jp], qh, kh[0], kh[1]);
            mma_bf16(s[2 * jp + 1], qh, kh[2], kh[3]);
        }
        // Causal: key t counts for a row at position p when t <= p.
        if (key0 + kTileKeys - 1 > p_min) {  // warp-uniform
#pragma unroll
            for (int n = 0; n < 8; ++n) {
                const int key = key0 + n * 8 + 2 * tig;
                if (key > pa) s[n][0] = -INFINITY;
                if (key + 1 > pa) s[n][1] = -INFINITY;
                if (key > pb) s[n][2] = -INFINITY;
                if (key + 1 > pb) s[n][3] = -INFINITY;
            }
        }

#pragma unroll
        for (int seg = 0; seg < kSegs; ++seg) {
            float ma = -INFINITY, mb = -INFINITY;
#pragma unroll
            for (int n = seg * kSegTiles; n < (seg + 1) * kSegTiles; ++n) {
                ma = fmaxf(ma, fmaxf(s[n][0], s[n][1]));
                mb = fmaxf(mb, fmaxf(s[n][2], s[n][3]));
            }
            ma = quad_max(ma);
            mb = quad_max(mb);
            // A row that sees none of the segment's keys keeps m = -inf: subtract 0 instead.
            const float base_a = ma == -INFINITY ? 0.0f : ma, base_b = mb == -INFINITY ? 0.0f : mb;
            float la = 0.0f, lb = 0.0f;
#pragma unroll
            for (int n = seg * kSegTiles; n < (seg + 1) * kSegTiles; ++n) {
                la += exp2_ftz(s[n][0] - base_a) + exp2_ftz(s[n][1] - base_a);
                lb += exp2_ftz(s[n][2] - base_b) + exp2_ftz(s[n][3] - base_b);
            }
            la = quad_sum(la);
            lb = quad_sum(lb);
            if (tiles_per_block == 1) {
                put(key0 / B + seg, ma, la, mb, lb);
            } else {
                merge_softmax_state(run_ma, run_la, ma, la);
                merge_softmax_state(run_mb, run_lb, mb, lb);
                if (t % tiles_per_block == tiles_per_block - 1 || t == n_tiles - 1) {
                    put(key0 / B, run_ma, run_la, run_mb, run_lb);
                    run_ma = run_mb = -INFINITY;
                    run_la = run_lb = 0.0f;
                }
            }
        }
        // The stage holds kStageBlocks blocks: write them out when full.
        const int done = key0 / B + blocks_per_tile;  // blocks finished so far (B <= 64), exclusive
        if (tiles_per_block == 1 && done - staged_first == kStageBlocks) {
            flush(staged_first, kStageBlocks);
            staged_first = done;
        }
        if (t + 1 < n_tiles) store_part(next, 1 - buf);
        __syncthreads();  // the next tile stored; every warp done with this one
    }
    // The rest: the blocks from staged_first up to the last one this CTA touched.
    const int last_block = (key_begin + n_tiles * kTileKeys - 1) / B;
    if (last_block >= staged_first)
        flush(staged_first, min(last_block - staged_first + 1, kStageBlocks));
}

template <int R, class Key>
cudaError_t launch_r(const SelectBlocksArgs& args, float* log2_mass, dim3 grid,
                     cudaStream_t stream) {
    switch (args.block_size) {
        case 8:
            block_mass_tc_kernel<R, 8, Key><<<grid, kThreads, 0, stream>>>(args, log2_mass);
            break;
        case 16:
            block_mass_tc_kernel<R, 16, Key><<<grid, kThreads, 0, stream>>>(args, log2_mass);
            break;
        case 32:
            block_mass_tc_kernel<R, 32, Key><<<grid, kThreads, 0, stream>>>(args, log2_mass);
            break;
        default:
            block_mass_tc_kernel<R, 64, Key><<<grid, kThreads, 0, stream>>>(args, log2_mass);
            break;
    }
    return cudaGetLastError();
}

template <class Key>
cudaError_t launch_key(const SelectBlocksArgs& args, float* log2_mass, dim3 grid,
                       cudaStream_t stream) {
    return args.r == 8 ? launch_r<8, Key>(args, log2_mass, grid, stream)
                       : launch_r<16, Key>(args, log2_mass, grid, stream);
}

}  // namespace

bool block_mass_tc_supported(const SelectBlocksArgs& args) {
    const int B = args.block_size;
    const bool power_of_two = B > 0 && (B & (B - 1)) == 0;
    return (args.r == 8 || args.r == 16) && power_of_two && B >= 8 && B <= kChunkKeys &&
           args.one_seq >= 0 && args.hr <= 65535 && (args.n + kRows - 1) / kRows <= 65535 &&
           reinterpret_cast<uintptr_t>(args.index_keys) % 16 == 0;
}

cudaError_t launch_block_mass_tc(const SelectBlocksArgs& args, float* log2_mass,
                                 cudaStream_t stream) {
    if (!block_mass_tc_supported(args)) return cudaErrorInvalidValue;
    if (args.n == 0 || args.hr == 0) return cudaSuccess;
    const int64_t keys = int64_t{args.n_used_max} * args.block_size;
    const dim3 grid(static_cast<unsigned>((keys + kChunkKeys - 1) / kChunkKeys),
                    static_cast<unsigned>((args.n + kRows - 1) / kRows),
                    static_cast<unsigned>(args.hr));
    if (args.keys_bf16) return launch_key<__nv_bfloat16>(args, log2_mass, grid, stream);
    if (args.keys_f8) return launch_key<__nv_fp8_e4m3>(args, log2_mass, grid, stream);
    return launch_key<float>(args, log2_mass, grid, stream);
}

}  // namespace purbo::cuda
