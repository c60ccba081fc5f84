// cuBLASLt matmuls with a plan per shape: out (n, m) f32 = x (n, k) @ w (m, k)^T, x and w both
// bf16 (tensor cores) or both f32, fp32 accumulation. A plan (operation descriptor, matrix
// layouts and the algorithm cuBLASLt's heuristic picks for them) is made on the first call of
// a shape and reused by every later one: decode calls the same few shapes hundreds of times per
// token, and the heuristic query costs more than the GEMM at these sizes.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <tuple>

#include "core/status.h"

namespace purbo::cuda {

class LtGemm {
public:
    static Result<std::unique_ptr<LtGemm>> create();
    ~LtGemm();
    LtGemm(const LtGemm&) = delete;
    LtGemm& operator=(const LtGemm&) = delete;

    // Row-major x (n, k), w (m, k), out (n, m); type: CUDA_R_16BF or CUDA_R_32F for x and w.
    Status run(int n, int k, int m, cudaDataType_t type, const void* w, const void* x, float* out,
               cudaStream_t stream);
    // Plans made so far (tests and logs).
    size_t plans() const { return plans_.size(); }

private:
    LtGemm() = default;
    struct Plan {
        cublasLtMatmulDesc_t op = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo{};
    };
    // (n, k, m, type, alignment of the three pointers): the heuristic's algorithm may assume
    // the alignment it was asked for, so a differently aligned view gets a plan of its own.
    using Key = std::tuple<int, int, int, int, int>;
    Result<const Plan*> plan(const Key& key);
    Status make_plan(const Key& key, Plan& p);
    static void destroy(Plan& p);

    cublasLtHandle_t handle_ = nullptr;
    void* workspace_ = nullptr;
    size_t workspace_bytes_ = 0;
    std::map<Key, Plan> plans_;
};

}  // namespace purbo::cuda
