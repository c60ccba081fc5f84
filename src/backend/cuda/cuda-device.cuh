// Device helpers shared by the attention kernels (included by .cu files only): the mask rule,
// warp reductions, f32/bf16 cache loads, and the tensor-core primitives (mma.sync m16n8k16,
// ldmatrix, cp.async). Fragment layouts are spelled out in cuda-attention-tc.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

namespace purbo::cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

// The mask of op-checks.h's attention_key_visible, on the device.
__device__ __forceinline__ bool key_visible(int j, int p, int window, int n_sink) {
    if (j > p) return false;
    if (window == 0) return true;
    return j > p - window || j < n_sink;
}

// The key tiles of kTileKeys keys a CTA walks, in order (the three attention kernels share
// this plan). With a block selection: the tiles of the selected blocks (ids ascending,
// block_size / kTileKeys tiles each). Otherwise, for rows at positions p_lo .. p_hi: tiles
// [0, sink_tiles) then [window_first, p_hi / kTileKeys]; with no window (or sinks that reach
// the window) simply [0, p_hi / kTileKeys]. The tiles in between hold keys >= n_sink and
// <= p_lo - window, hidden from every row.
template <int kTileKeys>
struct KeyTiles {
    const int32_t* selected = nullptr;
    int tiles_per_block = 1;
    int sink_tiles = 0;
    int window_first = 0;
    int count = 0;  // tiles

    __device__ __forceinline__ int key0(int t) const {
        const int tile = selected != nullptr
                             ? selected[t / tiles_per_block] * tiles_per_block + t % tiles_per_block
                         : t < sink_tiles ? t
                                          : window_first + (t - sink_tiles);
        return tile * kTileKeys;
    }
};

template <int kTileKeys>
__device__ __forceinline__ KeyTiles<kTileKeys> window_key_tiles(int p_lo, int p_hi, int window,
                                                                int n_sink) {
    KeyTiles<kTileKeys> tiles;
    if (window > 0) {
        const int64_t lowest = int64_t{p_lo} - window + 1;  // the lowest window key of any row
        const int64_t first = lowest > 0 ? lowest / kTileKeys : 0;
        const int64_t sinks = (int64_t{n_sink} + kTileKeys - 1) / kTileKeys;
        if (first > sinks) {
            tiles.sink_tiles = static_cast<int>(sinks);
            tiles.window_first = static_cast<int>(first);
        }
    }
    tiles.count = tiles.sink_tiles + (p_hi / kTileKeys - tiles.window_first + 1);
    return tiles;
}

// count: the selection's block count as stored (clamped to [0, max_blocks]).
template <int kTileKeys>
__device__ __forceinline__ KeyTiles<kTileKeys> selected_key_tiles(const int32_t* ids, int count,
                                                                  int max_blocks, int block_size) {
    KeyTiles<kTileKeys> tiles;
    tiles.selected = ids;
    tiles.tiles_per_block = block_size / kTileKeys;
    tiles.count = min(max(count, 0), max_blocks) * tiles.tiles_per_block;
    return tiles;
}

// 2^x on the special function unit alone: results below 2^-126 (and subnormal x) flush to
// zero, which spares exp2f's fix-up instructions around the same unit. For softmax terms
// 2^(z - max), where a term that small is lost against the max's 1 anyway.
__device__ __forceinline__ float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Programmatic dependent launch (sm_90 and later; no-ops before): a kernel launched with
// programmatic stream serialization may be scheduled before the kernel ahead of it on the
// stream completes; it must wait_for_prior_grid() before reading what that kernel writes
// (the wait returns once the prior grid has completed and its writes are visible).
// allow_dependent_grid() in the prior kernel lets the dependent be scheduled as soon as every
// CTA has passed it rather than exited.
__device__ __forceinline__ void wait_for_prior_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// Max and sum over the 4 lanes of a quad (lanes 4 g .. 4 g + 3), which hold one row of an
// mma C fragment between them.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, 1));
    return fmaxf(v, __shfl_xor_sync(kFullMask, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(kFullMask, v, 1);
    return v + __shfl_xor_sync(kFullMask, v, 2);
}

// Merges the softmax state (m2, l2) into (m, l): l = sum 2^(z - m) over the union of the keys
// (log2 domain). An empty state has m = -inf and l = 0.
__device__ __forceinline__ void merge_softmax_state(float& m, float& l, float m2, float l2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2;
        l = l2;
        return;
    }
    const float m_new = fmaxf(m, m2);
    l = l * exp2f(m - m_new) + l2 * exp2f(m2 - m_new);
    m = m_new;
}

// Four consecutive cache elements (16-byte aligned for f32, 8-byte for bf16) as f32.
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
    const uint2 bits = *reinterpret_cast<const uint2*>(p);
    const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits.x));
    const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits.y));
    return make_float4(lo.x, lo.y, hi.x, hi.y);
}
// f8 e4m3 (index keys; 4-byte aligned): two hardware conversions of 2 elements to half2.
__device__ __forceinline__ float4 load4(const __nv_fp8_e4m3* p) {
    const uint32_t bits = *reinterpret_cast<const uint32_t*>(p);
    const __half2 lo(
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits & 0xFFFFu), __NV_E4M3));
    const __half2 hi(
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(bits >> 16), __NV_E4M3));
    const float2 a = __half22float2(lo), b = __half22float2(hi);
    return make_float4(a.x, a.y, b.x, b.y);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low 16 bits
    return *reinterpret_cast<const uint32_t*>(&v);
}

// Two query rows as the A fragments of m16n8k16 (row a: the thread's row gid, row b: gid + 8),
// scaled (into the log2 domain by the callers) and rounded to bf16 once: qf[kk] covers dims
// 16 kk .. 16 kk + 15. A null row reads as zeros. tig: the thread's lane % 4.
template <int D>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qf)[D / 16][4], const float* qa,
                                                 const float* qb, float scale, int tig) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int col = kk * 16 + half * 8 + 2 * tig;
            float2 xa = make_float2(0.0f, 0.0f), xb = xa;
            if (qa) xa = *reinterpret_cast<const float2*>(qa + col);
            if (qb) xb = *reinterpret_cast<const float2*>(qb + col);
            qf[kk][2 * half] = pack_bf16(xa.x * scale, xa.y * scale);
            qf[kk][2 * half + 1] = pack_bf16(xb.x * scale, xb.y * scale);
        }
    }
}

// d (16 x 8 f32) += a (16 x 16 bf16) b (16 x 8 bf16).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const __nv_bfloat16* row) {
    const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* row) {
    const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// 16 bytes global -> shared without passing through registers; src_bytes 0 writes zeros
// (and reads nothing). Completion: cp_async_commit groups the copies issued so far,
// cp_async_wait<N> waits until at most N groups are still in flight.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
    const auto addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

}  // namespace purbo::cuda
