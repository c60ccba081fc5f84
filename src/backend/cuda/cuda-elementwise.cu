// Elementwise and per-row kernels: conversions, embedding, rms_norm, add_bias, swiglu, add,
// rope, kv_store. fp32 math throughout (no fast-math intrinsics: expf, cosf, sinf and the
// division are the IEEE-accurate versions, so the results track cpu-ref within a few ulps).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cmath>

#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGridBlocks = 1 << 20;  // grid-stride loops cover the rest

// Blocks for a grid-stride loop over count elements.
unsigned grid_for(int64_t count) {
    const int64_t blocks = (count + kThreads - 1) / kThreads;
    return static_cast<unsigned>(blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks);
}

__global__ void f32_to_bf16_kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst,
                                   int64_t count) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        dst[i] = __float2bfloat16_rn(src[i]);
    }
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* __restrict__ src, float* __restrict__ dst, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        dst[i] = __bfloat162float(src[i]);
    }
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// One CTA per output row.
template <class T>
__global__ void embedding_kernel(const T* __restrict__ table, const int32_t* __restrict__ ids,
                                 float* __restrict__ out, int64_t k) {
    const int64_t i = blockIdx.x;
    const T* row = table + static_cast<int64_t>(ids[i]) * k;
    for (int64_t col = threadIdx.x; col < k; col += blockDim.x) out[i * k + col] = to_f32(row[col]);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// One CTA per row: the sum of squares in f32 (per-thread partials, then warps, then the CTA),
// then a second pass that scales. A thread reads x[col] and writes out[col] for the same
// columns only, after the reduction's barrier, so out may alias x.
__global__ void rms_norm_kernel(const float* x, const float* __restrict__ weight, float* out,
                                int64_t k, float eps) {
    __shared__ float warp_sums[kThreads / 32];
    __shared__ float inv_rms;
    const float* xr = x + blockIdx.x * k;
    float* yr = out + blockIdx.x * k;
    float sum_sq = 0.0f;
    for (int64_t col = threadIdx.x; col < k; col += blockDim.x) sum_sq += xr[col] * xr[col];
    sum_sq = warp_sum(sum_sq);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum_sq;
    __syncthreads();
    if (threadIdx.x < 32) {
        float total = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0f;
        total = warp_sum(total);
        if (threadIdx.x == 0) inv_rms = 1.0f / sqrtf(total / static_cast<float>(k) + eps);
    }
    __syncthreads();
    const float scale = inv_rms;
    for (int64_t col = threadIdx.x; col < k; col += blockDim.x) yr[col] = xr[col] * scale * weight[col];
}

__global__ void add_bias_kernel(float* __restrict__ x, const float* __restrict__ bias, int64_t count,
                                int64_t m) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        x[i] += bias[i % m];
    }
}

// silu(g) * up = g / (1 + exp(-g)) * up, as cpu-ref writes it.
__global__ void swiglu_kernel(const float* __restrict__ gate, const float* __restrict__ up,
                              float* __restrict__ out, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// No __restrict__: out may alias a or b (each element is read before it is written).
__global__ void add_kernel(const float* a, const float* b, float* out, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
         i += int64_t{gridDim.x} * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}

// One CTA per (token, head); threads over the rotary_dim / 2 pairs. The angle is the f32
// product pos * inv_freq as cpu-ref (and Hugging Face) computes it; the rotation uses
// explicitly rounded products so no FMA contraction changes the rounding.
__global__ void rope_kernel(RopeArgs args) {
    const int64_t row = blockIdx.x;  // token * heads + head
    const int64_t token = row / args.heads;
    float* v = args.x + row * args.d;
    const int half = args.rotary_dim / 2;
    const float p = static_cast<float>(args.pos[token]);
    for (int r = threadIdx.x; r < half; r += blockDim.x) {
        const float angle = __fmul_rn(p, args.inv_freq[r]);
        const float c = __fmul_rn(cosf(angle), args.attn_factor);
        const float s = __fmul_rn(sinf(angle), args.attn_factor);
        const float a = v[r], b = v[r + half];
        v[r] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        v[r + half] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
    }
}

__device__ __forceinline__ void store_as(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void store_as(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_as(__nv_fp8_e4m3* dst, float v) {
    dst->__x = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);  // nearest even, +-448 at most
}

// One CTA per (token, KV head); threads over d. Cache: float, __nv_bfloat16 (rounded to
// nearest even) or __nv_fp8_e4m3 (index keys: nearest even, saturated, as core/fp8.h).
template <class Cache>
__global__ void kv_store_kernel(KvStoreArgs args) {
    auto* cache_k = static_cast<Cache*>(args.cache_k);
    auto* cache_v = static_cast<Cache*>(args.cache_v);
    const int64_t row = blockIdx.x;  // token * g + kv head
    const int64_t i = row / args.g, kv = row % args.g;
    const int64_t slot = args.slot[kv];
    if (slot < 0) return;  // a KV head the view does not hold
    const int64_t dst =
        ((args.seq[i] * args.gc + slot) * args.c + cache_row(args.pos[i], args.ring_sinks, args.c)) * args.d;
    const int64_t src = row * args.d;
    for (int64_t e = threadIdx.x; e < args.d; e += blockDim.x) {
        store_as(cache_k + dst + e, args.k[src + e]);
        store_as(cache_v + dst + e, args.v[src + e]);
    }
}

}  // namespace

cudaError_t launch_f32_to_bf16(const float* src, uint16_t* dst, int64_t count, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    f32_to_bf16_kernel<<<grid_for(count), kThreads, 0, stream>>>(
        src, reinterpret_cast<__nv_bfloat16*>(dst), count);
    return cudaGetLastError();
}

cudaError_t launch_bf16_to_f32(const uint16_t* src, float* dst, int64_t count, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    bf16_to_f32_kernel<<<grid_for(count), kThreads, 0, stream>>>(reinterpret_cast<const __nv_bfloat16*>(src), dst,
                                                                count);
    return cudaGetLastError();
}

cudaError_t launch_embedding_bf16(const uint16_t* table, const int32_t* ids, float* out, int64_t n,
                                  int64_t k, cudaStream_t stream) {
    if (n == 0 || k == 0) return cudaSuccess;
    if (n > INT32_MAX) return cudaErrorInvalidValue;
    embedding_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        reinterpret_cast<const __nv_bfloat16*>(table), ids, out, k);
    return cudaGetLastError();
}

cudaError_t launch_embedding_f32(const float* table, const int32_t* ids, float* out, int64_t n,
                                 int64_t k, cudaStream_t stream) {
    if (n == 0 || k == 0) return cudaSuccess;
    if (n > INT32_MAX) return cudaErrorInvalidValue;
    embedding_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(table, ids, out, k);
    return cudaGetLastError();
}

cudaError_t launch_rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t k,
                            float eps, cudaStream_t stream) {
    if (rows == 0 || k == 0) return cudaSuccess;
    if (rows > INT32_MAX) return cudaErrorInvalidValue;
    rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, out, k, eps);
    return cudaGetLastError();
}

cudaError_t launch_add_bias(float* x, const float* bias, int64_t rows, int64_t m, cudaStream_t stream) {
    const int64_t count = rows * m;
    if (count == 0) return cudaSuccess;
    add_bias_kernel<<<grid_for(count), kThreads, 0, stream>>>(x, bias, count, m);
    return cudaGetLastError();
}

cudaError_t launch_swiglu(const float* gate, const float* up, float* out, int64_t count,
                          cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    swiglu_kernel<<<grid_for(count), kThreads, 0, stream>>>(gate, up, out, count);
    return cudaGetLastError();
}

cudaError_t launch_add(const float* a, const float* b, float* out, int64_t count, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    add_kernel<<<grid_for(count), kThreads, 0, stream>>>(a, b, out, count);
    return cudaGetLastError();
}

cudaError_t launch_rope(const RopeArgs& args, cudaStream_t stream) {
    const int64_t rows = args.n * args.heads;
    if (rows == 0) return cudaSuccess;
    if (rows > INT32_MAX || args.rotary_dim % 2 != 0 || args.rotary_dim > args.d)
        return cudaErrorInvalidValue;
    const int threads = args.rotary_dim / 2 < 128 ? 64 : 128;  // pairs per head: 16..64 typically
    rope_kernel<<<static_cast<unsigned>(rows), threads, 0, stream>>>(args);
    return cudaGetLastError();
}

cudaError_t launch_kv_store(const KvStoreArgs& args, cudaStream_t stream) {
    const int64_t rows = args.n * args.g;
    if (rows == 0) return cudaSuccess;
    if (rows > INT32_MAX) return cudaErrorInvalidValue;
    if (args.cache_bf16) {
        kv_store_kernel<__nv_bfloat16><<<static_cast<unsigned>(rows), 128, 0, stream>>>(args);
    } else if (args.cache_f8) {
        kv_store_kernel<__nv_fp8_e4m3><<<static_cast<unsigned>(rows), 128, 0, stream>>>(args);
    } else {
        kv_store_kernel<float><<<static_cast<unsigned>(rows), 128, 0, stream>>>(args);
    }
    return cudaGetLastError();
}

}  // namespace purbo::cuda
