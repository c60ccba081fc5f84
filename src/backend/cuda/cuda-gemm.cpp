// cuda: matmul through cuBLAS. out (n, m) = x (n, k) @ w (m, k)^T with fp32 accumulation.
//  - w bf16 (prepare_weight): x is rounded to bf16 into a scratch buffer, then a bf16 x bf16
//    GEMM with CUBLAS_COMPUTE_32F (tensor cores; products of bf16 values are exact in fp32).
//  - w f32 (alloc + from_host, tiny test models): an f32 GEMM on the f32 x directly.
//
// Row-major via the column-major transpose trick: a row-major (r, c) matrix is the
// column-major (c, r) matrix of the same bytes. So w is W' = w^T (k, m), x is X' = x^T (k, n),
// and out is O' = out^T (m, n); out^T = w x^T = W'^T X': gemm(T, N, m, n, k, W', ld k, X',
// ld k, O', ld m).
//
// Next speed steps: cublasLt with a cached heuristic per (n, k, m) and a workspace; fusing the
// bf16 cast of x into the previous op (rms_norm / swiglu writing bf16 directly).
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
        return error(StatusCode::kUnsupported, "matmul: {} x {}^T exceeds cuBLAS's int dimensions",
                     x.describe(), w.describe());
    if (n == 0 || m == 0) return Status::ok();
    if (k == 0) {  // an empty sum
        PURBO_CUDA_TRY(cudaMemsetAsync(out.data, 0, out.nbytes(), stream_));
        return Status::ok();
    }
    const float alpha = 1.0f, beta = 0.0f;
    const int in = static_cast<int>(n), ik = static_cast<int>(k), im = static_cast<int>(m);
    if (w.dtype == DType::kF32) {
        PURBO_CUBLAS_TRY(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, im, in, ik, &alpha, w.data, CUDA_R_32F,
                                      ik, x.data, CUDA_R_32F, ik, &beta, out.data, CUDA_R_32F, im,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        return Status::ok();
    }
    PURBO_ASSIGN_OR_RETURN(void* x_bf16, reserve(x_bf16_, static_cast<size_t>(n * k) * 2));
    PURBO_CUDA_TRY(cuda::launch_f32_to_bf16(x.ptr<float>(), static_cast<uint16_t*>(x_bf16), n * k, stream_));
    PURBO_CUBLAS_TRY(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, im, in, ik, &alpha, w.data, CUDA_R_16BF, ik,
                                  x_bf16, CUDA_R_16BF, ik, &beta, out.data, CUDA_R_32F, im, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT));
    return Status::ok();
}

}  // namespace purbo
