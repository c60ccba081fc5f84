// The row pass of the stage-1 indexer loss (cuda-indexer-loss.h): one CTA per query row turns
// the row's teacher and student logits over its visible keys [0, len) into
//   KL(T || S) = E_T[t - s] - (lse_t - lse_s)     (sums in double, as on the CPU)
//   T = softmax(t), G = (softmax(s) - T) * inv_n  (G replaces s; zero for keys past len)
// and copies T and softmax(s) of the sampled rows out for the recall metrics. Three passes
// over the row (max, exp and sums, normalise): a row of nk f32 is at most a few hundred KB,
// read from L2 after the GEMM that wrote it.
#include <cfloat>
#include <cmath>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ double warp_sum_double(double v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// The CTA's maximum of a and b (each thread's partial), returned to every thread.
__device__ __forceinline__ float2 block_max2(float a, float b, float2* shared) {
    a = warp_max(a);
    b = warp_max(b);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) shared[warp] = make_float2(a, b);
    __syncthreads();
    float2 m = shared[0];
    for (int w = 1; w < kWarps; ++w) m = make_float2(fmaxf(m.x, shared[w].x), fmaxf(m.y, shared[w].y));
    __syncthreads();  // shared is reused by the next reduction
    return m;
}

// The CTA's sums of three doubles, returned to every thread.
__device__ __forceinline__ void block_sum3(double& a, double& b, double& c, double (*shared)[3]) {
    a = warp_sum_double(a);
    b = warp_sum_double(b);
    c = warp_sum_double(c);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) {
        shared[warp][0] = a;
        shared[warp][1] = b;
        shared[warp][2] = c;
    }
    __syncthreads();
    a = b = c = 0;
    for (int w = 0; w < kWarps; ++w) {  // the same order in every thread and every run
        a += shared[w][0];
        b += shared[w][1];
        c += shared[w][2];
    }
}

__global__ void __launch_bounds__(kThreads) kl_rows_kernel(KlRowsArgs args) {
    __shared__ float2 max_shared[kWarps];
    __shared__ double sum_shared[kWarps][3];
    const int64_t i = blockIdx.x, u = args.u0 + i;
    const int64_t len = int64_t{args.positions[u]} + 1;
    float* t = args.t + i * args.nk;
    float* s = args.s + i * args.nk;

    float t_max = -FLT_MAX, s_max = -FLT_MAX;
    for (int64_t n = threadIdx.x; n < len; n += kThreads) {
        t_max = fmaxf(t_max, t[n]);
        s_max = fmaxf(s_max, s[n]);
    }
    const float2 m = block_max2(t_max, s_max, max_shared);
    t_max = m.x;
    s_max = m.y;

    double t_sum = 0, s_sum = 0, weighted_gap = 0;
    for (int64_t n = threadIdx.x; n < len; n += kThreads) {
        const float tn = t[n], sn = s[n];
        const float et = expf(tn - t_max), es = expf(sn - s_max);
        weighted_gap += static_cast<double>(et) * (static_cast<double>(tn) - sn);
        t_sum += et;
        s_sum += es;
        t[n] = et;
        s[n] = es;
    }
    block_sum3(t_sum, s_sum, weighted_gap, sum_shared);
    if (threadIdx.x == 0)
        args.row_kl[u] = weighted_gap / t_sum - (t_max + log(t_sum)) + (s_max + log(s_sum));

    const float t_inv = static_cast<float>(1.0 / t_sum), s_inv = static_cast<float>(1.0 / s_sum);
    const bool sampled = args.metric_stride > 0 && u % args.metric_stride == 0;
    float* sample_t = nullptr;
    float* sample_s = nullptr;
    if (sampled) {
        const int64_t slot = u / args.metric_stride - args.sample0;
        sample_t = args.sample_t + slot * args.nk;
        sample_s = args.sample_s + slot * args.nk;
    }
    for (int64_t n = threadIdx.x; n < len; n += kThreads) {
        const float tn = t[n] * t_inv, sn = s[n] * s_inv;
        if (sampled) {
            sample_t[n] = tn;
            sample_s[n] = sn;
        }
        t[n] = tn;
        s[n] = (sn - tn) * args.inv_n;
    }
    for (int64_t n = len + threadIdx.x; n < args.nk; n += kThreads) s[n] = 0.0f;
}

}  // namespace

cudaError_t launch_kl_rows(const KlRowsArgs& args, cudaStream_t stream) {
    if (args.nc <= 0) return cudaSuccess;
    if (args.nc > INT32_MAX || (args.metric_stride > 0 && (args.sample_t == nullptr || args.sample_s == nullptr)))
        return cudaErrorInvalidValue;
    kl_rows_kernel<<<static_cast<unsigned>(args.nc), kThreads, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace purbo::cuda
