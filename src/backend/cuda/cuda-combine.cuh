// The merge of split attention states (split-KV decode, key ranges of block-sparse prefill):
// out = sum_z w_z acc_z / sum_z w_z l_z with w_z = 2^(m_z - M) over the splits that saw a
// visible key (l_z > 0), M their largest running max (log2 domain). Included by .cu files.
//
// Decode has a few rows to merge (32 at one token of a 32-head model), each reading n_splits
// partial rows of d floats: latency-bound, not bandwidth-bound. So each of the CTA's
// kCombineThreads threads owns 4 dims of a subset of the splits and issues its first
// kCombinePrefetch partial loads before the weights are known; the first warp computes the
// weights meanwhile, and the threads' sums over their splits are added through shared memory.
// One round trip to memory where a thread per dim summing all splits took n_splits / 8
// (8 us at 64 splits on an H100).
#pragma once

#include <cmath>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {

constexpr int kCombineThreads = 256;
constexpr int kCombinePrefetch = 8;  // partial loads in flight per thread

// One output row, by a whole CTA of kCombineThreads threads. ml (n_splits, 2): running max and
// sum; acc (n_splits, d) unnormalised, 16-byte aligned; d in {32, 64, 128}; out (d,) any
// float alignment.
__device__ __forceinline__ void combine_split_states(const float* ml, const float* acc_row,
                                                     int n_splits, int d, float* out) {
    __shared__ float weight[kAttnMaxSplits];
    __shared__ float inv_total;
    __shared__ float4 part_sum[kCombineThreads];
    // Thread = (split lane, 4 dims): split lane s takes splits s, s + lanes, ...
    const int columns = d / 4, lanes = kCombineThreads / columns;
    const int column = threadIdx.x % columns, split_lane = threadIdx.x / columns;
    const float4* acc = reinterpret_cast<const float4*>(acc_row) + column;
    float4 first[kCombinePrefetch];
#pragma unroll
    for (int i = 0; i < kCombinePrefetch; ++i) {
        const int z = split_lane + i * lanes;
        first[i] = z < n_splits ? acc[int64_t{z} * columns] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        float max_m = -INFINITY;
        for (int z = lane; z < n_splits; z += 32) {
            if (ml[2 * z + 1] > 0.0f) max_m = fmaxf(max_m, ml[2 * z]);
        }
        max_m = warp_max(max_m);
        float total = 0.0f;
        for (int z = lane; z < n_splits; z += 32) {
            const float l = ml[2 * z + 1];
            const float w = l > 0.0f ? exp2f(ml[2 * z] - max_m) : 0.0f;
            weight[z] = w;
            total += w * l;
        }
        total = warp_sum(total);
        if (lane == 0) inv_total = total > 0.0f ? 1.0f / total : 0.0f;
    }
    __syncthreads();
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    auto add = [&](float w, float4 v) {
        sum.x += w * v.x, sum.y += w * v.y, sum.z += w * v.z, sum.w += w * v.w;
    };
#pragma unroll
    for (int i = 0; i < kCombinePrefetch; ++i) {
        const int z = split_lane + i * lanes;
        if (z < n_splits) add(weight[z], first[i]);
    }
    for (int z = split_lane + kCombinePrefetch * lanes; z < n_splits; z += lanes)
        add(weight[z], acc[int64_t{z} * columns]);
    part_sum[threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.x >= columns) return;
    float4 total = part_sum[column];
    for (int s = 1; s < lanes; ++s) {
        const float4 v = part_sum[s * columns + column];
        total.x += v.x, total.y += v.y, total.z += v.z, total.w += v.w;
    }
    float* o = out + 4 * column;
    o[0] = total.x * inv_total, o[1] = total.y * inv_total;
    o[2] = total.z * inv_total, o[3] = total.w * inv_total;
}

}  // namespace purbo::cuda
