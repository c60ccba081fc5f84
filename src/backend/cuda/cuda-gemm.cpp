// cuda: matmul. out (n, m) = x (n, k) @ w (m, k)^T with fp32 accumulation.
//  - w bf16 (prepare_weight), up to kGemvMaxTokens tokens (decode): one GEMV kernel reading
//    the f32 x directly (cuda-gemv.cu).
//  - w bf16, more tokens: x is rounded to bf16 into a scratch buffer, then a cuBLASLt bf16 x
//    bf16 GEMM with CUBLAS_COMPUTE_32F (tensor cores; products of bf16 values are exact in
//    fp32), a plan per shape (cuda-gemm-lt.h).
//  - w f32 (alloc + from_host, tiny test models): an f32 GEMM on the f32 x directly.
#include <climits>

#include "backend/cuda/cuda-backend.h"
#include "backend/cuda/cuda-check.h"
#include "backend/cuda/cuda-kernels.h"
#include "backend/op-checks.h"

namespace purbo {

Status CudaBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& out) {
    PURBO_TRY(check_matmul(x, w, out));
    PURBO_TRY(require_device("matmul", x, "x"));
    PURBO_TRY(require_device("matmul", w, "weight"));
    PURBO_TRY(require_device("matmul", out, "out"));
    if (w.dtype != DType::kBF16 && w.dtype != DType::kF32)
        return error(StatusCode::kUnsupported,
                     "matmul: weight '{}' {}: the cuda backend multiplies bf16 (prepare_weight) or f32 "
                     "matrices",
                     w.name, w.describe());
    // x (n, k), w (m, k), out (n, m)
    const int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
    if (n > INT_MAX || k > INT_MAX || m > INT_MAX)
        return error(StatusCode::kUnsupported, "matmul: {} x {}^T exceeds cuBLASLt's int dimensions",
                     x.describe(), w.describe());
    if (n == 0 || m == 0) return Status::ok();
    if (k == 0) {  // an empty sum
        const size_t bytes = out.nbytes();
        return enqueue("cudaMemsetAsync", [&] { return cudaMemsetAsync(out.data, 0, bytes, stream_); }, out.data, bytes);
    }
    const int in = static_cast<int>(n), ik = static_cast<int>(k), im = static_cast<int>(m);
    if (w.dtype == DType::kF32) {
        return enqueue(
            "LtGemm::run f32", [&] { return gemm_->run(in, ik, im, CUDA_R_32F, w.data, x.data, out.ptr<float>(), stream_); },
            in, ik, im, w.data, x.data, out.data);
    }
    if (cuda::gemv_bf16_supported(x.data, w.data, n, k)) {
        return enqueue(
            "launch_gemv_bf16",
            [&] { return cuda::launch_gemv_bf16(x.ptr<float>(), w.ptr<uint16_t>(), out.ptr<float>(), n, k, m, stream_); },
            x.data, w.data, out.data, n, k, m);
    }
    PURBO_ASSIGN_OR_RETURN(void* x_bf16, reserve(x_bf16_, static_cast<size_t>(n * k) * 2));
    const int64_t count = n * k;
    PURBO_TRY(enqueue(
        "launch_f32_to_bf16",
        [&] { return cuda::launch_f32_to_bf16(x.ptr<float>(), static_cast<uint16_t*>(x_bf16), count, stream_); },
        x.data, x_bf16, count));
    return enqueue(
        "LtGemm::run bf16", [&] { return gemm_->run(in, ik, im, CUDA_R_16BF, w.data, x_bf16, out.ptr<float>(), stream_); },
        in, ik, im, w.data, x_bf16, out.data);
}

}  // namespace purbo
