// Decode matmuls (a few tokens) in one kernel: out (n, m) = x (n, k) @ w (m, k)^T with x in
// f32 and w in bf16, fp32 products and sums. cuBLASLt needs x rounded to bf16 first (a cast
// kernel before every GEMM) and its kernels are sized for large tiles; a decode step of the
// default model has 4 matmuls per layer of 0.7-2 MB each, where launch latency, not bytes,
// sets the time.
//
// One warp per output row j, for all n tokens: each lane reads 8 bf16 of the row (16 bytes)
// per step, strided by the warp, and the matching 8 floats of each token's x (x is at most
// kGemvMaxTokens x k floats and stays in L1/L2); the lanes' sums meet by shuffles. Every
// weight byte is read once. x keeps its fp32 values (cuBLASLt's path rounds it to bf16), so
// the result is closer to the fp32 matmul than the GEMM path's.
#include <cuda_bf16.h>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

constexpr int kWarps = 8;  // output rows per CTA
constexpr int kThreads = kWarps * 32;

// The 8 bf16 of a 16-byte chunk as floats (a bf16 is the high half of its f32).
__device__ __forceinline__ void unpack8(const uint4 bits, float (&v)[8]) {
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v[2 * i] = __uint_as_float(words[i] << 16);
        v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
}

template <int N>
__global__ void __launch_bounds__(kThreads) gemv_bf16_kernel(const float* __restrict__ x,
                                                             const uint4* __restrict__ w,
                                                             float* __restrict__ out, int64_t k, int64_t m) {
    const int lane = threadIdx.x % 32;
    const int64_t j = blockIdx.x * int64_t{kWarps} + threadIdx.x / 32;
    if (j >= m) return;  // warp-uniform
    const int64_t chunks = k / 8;
    const uint4* row = w + j * chunks;
    float acc[N];
#pragma unroll
    for (int t = 0; t < N; ++t) acc[t] = 0.0f;
#pragma unroll 4
    for (int64_t c = lane; c < chunks; c += 32) {
        float wv[8];
        unpack8(row[c], wv);
#pragma unroll
        for (int t = 0; t < N; ++t) {
            const float4 x0 = *reinterpret_cast<const float4*>(x + t * k + c * 8);
            const float4 x1 = *reinterpret_cast<const float4*>(x + t * k + c * 8 + 4);
            float s = acc[t];
            s = fmaf(wv[0], x0.x, s);
            s = fmaf(wv[1], x0.y, s);
            s = fmaf(wv[2], x0.z, s);
            s = fmaf(wv[3], x0.w, s);
            s = fmaf(wv[4], x1.x, s);
            s = fmaf(wv[5], x1.y, s);
            s = fmaf(wv[6], x1.z, s);
            s = fmaf(wv[7], x1.w, s);
            acc[t] = s;
        }
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
        const float sum = warp_sum(acc[t]);
        if (lane == 0) out[t * m + j] = sum;
    }
}

}  // namespace

bool gemv_bf16_supported(const void* x, const void* w, int64_t n, int64_t k) {
    return n >= 1 && n <= kGemvMaxTokens && k % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
           reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

cudaError_t launch_gemv_bf16(const float* x, const uint16_t* w, float* out, int64_t n, int64_t k, int64_t m,
                             cudaStream_t stream) {
    if (!gemv_bf16_supported(x, w, n, k)) return cudaErrorInvalidValue;
    if (m == 0) return cudaSuccess;
    const int64_t blocks = (m + kWarps - 1) / kWarps;
    if (blocks > INT32_MAX) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(blocks));
    const auto* w4 = reinterpret_cast<const uint4*>(w);
    switch (n) {
        case 1: gemv_bf16_kernel<1><<<grid, kThreads, 0, stream>>>(x, w4, out, k, m); break;
        case 2: gemv_bf16_kernel<2><<<grid, kThreads, 0, stream>>>(x, w4, out, k, m); break;
        case 3: gemv_bf16_kernel<3><<<grid, kThreads, 0, stream>>>(x, w4, out, k, m); break;
        default: gemv_bf16_kernel<4><<<grid, kThreads, 0, stream>>>(x, w4, out, k, m); break;
    }
    return cudaGetLastError();
}

}  // namespace purbo::cuda
