// Every CUDA runtime and cuBLAS call is checked: an error becomes a Status naming the call,
// file:line and the runtime's own description. Host code only (.cpp): it pulls in fmt through
// core/status.h, which the device compiler never needs to see.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/status.h"

namespace purbo {

inline Status cuda_error(const char* call, const char* file, int line, cudaError_t err) {
    return error(err == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kInternal,
                 "{} failed at {}:{}: {} ({})", call, file, line, cudaGetErrorString(err),
                 cudaGetErrorName(err));
}

inline Status cublas_error(const char* call, const char* file, int line, cublasStatus_t err) {
    return error(err == CUBLAS_STATUS_ALLOC_FAILED ? StatusCode::kOutOfMemory : StatusCode::kInternal,
                 "{} failed at {}:{}: {}", call, file, line, cublasGetStatusString(err));
}

}  // namespace purbo

// Returns a Status from the enclosing function when the CUDA runtime call fails.
#define PURBO_CUDA_TRY(call)                                                           \
    do {                                                                               \
        const cudaError_t purbo_cuda_err_ = (call);                                    \
        if (purbo_cuda_err_ != cudaSuccess)                                            \
            return ::purbo::cuda_error(#call, __FILE__, __LINE__, purbo_cuda_err_);    \
    } while (0)

// The same for cuBLAS.
#define PURBO_CUBLAS_TRY(call)                                                         \
    do {                                                                               \
        const cublasStatus_t purbo_cublas_err_ = (call);                               \
        if (purbo_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                \
            return ::purbo::cublas_error(#call, __FILE__, __LINE__, purbo_cublas_err_); \
    } while (0)
