// The kernels around cuDNN's prefill attention (cuda-ops.cpp's cudnn_prefill): the queries
// gathered into call order and rounded to bf16, and the outputs scattered back to f32 with
// the sink tokens of local heads merged in. cuDNN's sliding window has no StreamingLLM
// sinks, so a local head's call covers its window (p - window, p] and returns each row's
// log-sum-exp; the sinks it may still see (j < n_sink and j <= p - window) are added here as
// a softmax merge: out = (e^(lse - m) o + sum_j e^(s_j - m) v_j) / (e^(lse - m) + sum_j
// e^(s_j - m)), m the largest exponent. For the paged calls of block-sparse prefill's
// selected heads, the page tables and lengths of their items. Built with or without cuDNN
// (tiny).
#include <cuda_bf16.h>

#include <climits>
#include <cmath>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

// One thread per (token, selected head, 4 dims).
__global__ void gather_heads_bf16_kernel(const float* __restrict__ q,
                                         const int32_t* __restrict__ table,
                                         __nv_bfloat16* __restrict__ dst, HeadRows rows, int64_t n,
                                         int64_t h, int64_t hs, int64_t d) {
    const int64_t quads = d / 4;
    const int64_t total = n * hs * quads;
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        const int64_t e = (idx % quads) * 4;
        const int64_t j = (idx / quads) % hs;
        const int64_t i = idx / (quads * hs);
        const float4 x = *reinterpret_cast<const float4*>(q + (i * h + table[3 * j]) * d + e);
        const uint2 packed = make_uint2(pack_bf16(x.x, x.y), pack_bf16(x.z, x.w));
        *reinterpret_cast<uint2*>(dst + i * rows.token_stride + j * rows.head_stride + e) = packed;
    }
}

// One warp per (token, selected head); lane owns dims lane, lane + 32, ... (D / 32 of them).
template <int D>
__global__ void cudnn_finish_kernel(CudnnFinishArgs a) {
    constexpr int kPerLane = D / 32;
    const int lane = threadIdx.x % 32;
    const int64_t item = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32;
    if (item >= a.n * a.hs) return;  // warp-uniform
    const int64_t i = item / a.hs, j = item % a.hs;
    const int head = a.table[3 * j], slot = a.table[3 * j + 1], local = a.table[3 * j + 2];
    const auto* o = reinterpret_cast<const __nv_bfloat16*>(a.o) + i * a.o_rows.token_stride +
                    j * a.o_rows.head_stride;
    float acc[kPerLane];
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) acc[t] = __bfloat162float(o[lane + 32 * t]);

    const int64_t p = a.pos0 + i;
    const int64_t sink_end = (a.lse != nullptr && local && a.window > 0)
                                 ? min(int64_t{a.n_sink}, p - a.window + 1)  // sinks outside the window
                                 : 0;
    if (sink_end > 0) {
        const float* qr = a.q + (i * a.h + head) * D;
        float qv[kPerLane];
#pragma unroll
        for (int t = 0; t < kPerLane; ++t) qv[t] = qr[lane + 32 * t];
        const auto* ck = static_cast<const __nv_bfloat16*>(a.cache_k) + slot * a.c * D;
        const auto* cv = static_cast<const __nv_bfloat16*>(a.cache_v) + slot * a.c * D;
        // The window's share as one term of weight e^lse, then each sink's.
        float m = a.lse[j * a.n_pad + i];
        float total = 1.0f;  // in units of e^m
        for (int64_t s = 0; s < sink_end; ++s) {
            float dot = 0.0f;
#pragma unroll
            for (int t = 0; t < kPerLane; ++t) dot += qv[t] * __bfloat162float(ck[s * D + lane + 32 * t]);
            const float score = warp_sum(dot) * a.scale;
            const float m_new = fmaxf(m, score);
            const float keep = expf(m - m_new), w = expf(score - m_new);
            total = total * keep + w;
#pragma unroll
            for (int t = 0; t < kPerLane; ++t) acc[t] = acc[t] * keep + w * __bfloat162float(cv[s * D + lane + 32 * t]);
            m = m_new;
        }
        const float inv = 1.0f / total;
#pragma unroll
        for (int t = 0; t < kPerLane; ++t) acc[t] *= inv;
    }
    float* out = a.out + (i * a.h + head) * D;
#pragma unroll
    for (int t = 0; t < kPerLane; ++t) out[lane + 32 * t] = acc[t];
}

// One CTA per item (selected head, query group); threads stride over the page table's row.
__global__ void paged_selection_kernel(PagedSelectionArgs a) {
    const int item = blockIdx.x, j = item / a.groups, g = item % a.groups;
    const int64_t first = int64_t{g} * a.group_tokens;  // the group's first token in the chunk
    const int32_t base = static_cast<int32_t>(a.table[3 * j + 1] * a.pages_per_head);
    int32_t* pages = a.page_table + int64_t{item} * a.max_blocks;
    int count = 0, rows = 1, keys = 1;
    const int32_t* ids = nullptr;
    if (first < a.n) {
        const int64_t row = first * a.sel_hr + a.sel_rows[j];
        count = min(max(a.sel_counts[row], 0), a.max_blocks);
        ids = a.sel_blocks + row * a.max_blocks;
        rows = static_cast<int>(min(int64_t{a.group_tokens}, a.n - first));
        // The group's positions and their blocks [own, last_block]: the list's last entries.
        const int64_t first_pos = a.pos0 + first, last_pos = first_pos + rows - 1;
        const int64_t own = first_pos / a.page, last_block = last_pos / a.page;
        const int n_own = static_cast<int>(last_block - own + 1);
        bool ok = count >= n_own;
        for (int p = threadIdx.x; p < count; p += blockDim.x) {
            const int32_t id = ids[p];
            const int from_end = count - 1 - p;
            if (id < 0 || id > last_block || (from_end < n_own && id != last_block - from_end))
                ok = false;
        }
        if (__syncthreads_or(!ok)) {
            if (threadIdx.x == 0) atomicOr(a.mismatch, 1);
            count = 0;
        } else {
            keys =
                static_cast<int>((count - n_own) * int64_t{a.page} + (last_pos - own * a.page + 1));
        }
    }
    for (int p = threadIdx.x; p < a.max_blocks; p += blockDim.x) {
        const int32_t id = p < count ? ids[p] : 0;
        pages[p] = base + id;
    }
    if (threadIdx.x == 0) {
        a.seq_q[item] = rows;
        a.seq_kv[item] = keys;
    }
}

constexpr int kThreads = 256;

unsigned blocks_for(int64_t count, int64_t per_block) {
    const int64_t blocks = (count + per_block - 1) / per_block;
    return static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20));
}

}  // namespace

cudaError_t launch_gather_heads_bf16(const float* q, const int32_t* table, uint16_t* dst,
                                     HeadRows rows, int64_t n, int64_t h, int64_t hs, int64_t d,
                                     cudaStream_t stream) {
    if (n == 0 || hs == 0) return cudaSuccess;
    if (d % 4 != 0) return cudaErrorInvalidValue;
    gather_heads_bf16_kernel<<<blocks_for(n * hs * d / 4, kThreads), kThreads, 0, stream>>>(
        q, table, reinterpret_cast<__nv_bfloat16*>(dst), rows, n, h, hs, d);
    return cudaGetLastError();
}

cudaError_t launch_paged_selection(const PagedSelectionArgs& args, cudaStream_t stream) {
    const int64_t items = int64_t{args.hs} * args.groups;
    if (items == 0) return cudaSuccess;
    if (items > INT_MAX || args.max_blocks <= 0 || args.page <= 0) return cudaErrorInvalidValue;
    cudaError_t err = cudaMemsetAsync(args.mismatch, 0, sizeof(int32_t), stream);
    if (err != cudaSuccess) return err;
    paged_selection_kernel<<<static_cast<unsigned>(items), 128, 0, stream>>>(args);
    return cudaGetLastError();
}

cudaError_t launch_cudnn_finish(const CudnnFinishArgs& args, cudaStream_t stream) {
    const int64_t items = args.n * args.hs;
    if (items == 0) return cudaSuccess;
    if (items > (int64_t{1} << 31)) return cudaErrorInvalidValue;
    const unsigned grid = static_cast<unsigned>((items + kThreads / 32 - 1) / (kThreads / 32));
    switch (args.d) {
        case 64: cudnn_finish_kernel<64><<<grid, kThreads, 0, stream>>>(args); break;
        case 128: cudnn_finish_kernel<128><<<grid, kThreads, 0, stream>>>(args); break;
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

}  // namespace purbo::cuda
