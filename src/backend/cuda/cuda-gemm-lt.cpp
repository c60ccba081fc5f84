// cuda: cuBLASLt matmul plans (cuda-gemm-lt.h).
//
// Row-major via the column-major transpose trick: a row-major (r, c) matrix is the
// column-major (c, r) matrix of the same bytes. So w is W' = w^T (k, m), x is X' = x^T (k, n),
// and out is O' = out^T (m, n); out^T = w x^T = W'^T X': A = W' transposed, B = X', D = O'.
#include "backend/cuda/cuda-gemm-lt.h"

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda-check.h"

namespace purbo::cuda {
namespace {

// cuBLAS's recommendation for Hopper; reused by every plan (one stream, calls in order).
constexpr size_t kWorkspaceBytes = 32u << 20;

// The largest power of two (up to 256) that divides the address: what an algorithm may assume.
int alignment(const void* p) {
    const auto address = reinterpret_cast<uintptr_t>(p);
    int a = 256;
    while (a > 1 && address % static_cast<uintptr_t>(a) != 0) a /= 2;
    return a;
}

}  // namespace

Result<std::unique_ptr<LtGemm>> LtGemm::create() {
    std::unique_ptr<LtGemm> g(new LtGemm());
    PURBO_CUBLAS_TRY(cublasLtCreate(&g->handle_));
    PURBO_CUDA_TRY(cudaMalloc(&g->workspace_, kWorkspaceBytes));
    g->workspace_bytes_ = kWorkspaceBytes;
    return g;
}

void LtGemm::destroy(Plan& p) {
    if (p.a) (void)cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) (void)cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) (void)cublasLtMatrixLayoutDestroy(p.c);
    if (p.op) (void)cublasLtMatmulDescDestroy(p.op);
    p = Plan{};
}

LtGemm::~LtGemm() {
    for (auto& entry : plans_) destroy(entry.second);
    if (workspace_) (void)cudaFree(workspace_);  // waits for the GEMMs still using it
    if (handle_) (void)cublasLtDestroy(handle_);
}

Status LtGemm::make_plan(const Key& key, Plan& p) {
    const auto [n, k, m, type_int, align] = key;
    const auto type = static_cast<cudaDataType_t>(type_int);
    PURBO_CUBLAS_TRY(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    PURBO_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
    PURBO_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
    PURBO_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p.a, type, k, m, k));       // W' (k, m), used transposed
    PURBO_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p.b, type, k, n, k));       // X' (k, n)
    PURBO_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, m, n, m));  // O' (m, n): C and D

    cublasLtMatmulPreference_t pref = nullptr;
    PURBO_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref));
    const uint32_t align_bytes = static_cast<uint32_t>(align);
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &workspace_bytes_, sizeof(workspace_bytes_));
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        if (st == CUBLAS_STATUS_SUCCESS)
            st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align_bytes, sizeof(align_bytes));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    (void)cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS) return cublas_error("cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__, st);
    if (found == 0)
        return error(StatusCode::kUnsupported,
                     "matmul: cuBLASLt has no algorithm for ({} x {}) @ ({} x {})^T in {} with {}-byte aligned operands",
                     n, k, m, k, type == CUDA_R_16BF ? "bf16" : "f32", align);
    p.algo = result.algo;
    return Status::ok();
}

Result<const LtGemm::Plan*> LtGemm::plan(const Key& key) {
    if (auto it = plans_.find(key); it != plans_.end()) return &it->second;
    Plan p;
    if (Status st = make_plan(key, p); !st.is_ok()) {
        destroy(p);  // nothing half-made is kept: the next call of the shape tries again
        return st;
    }
    return &plans_.emplace(key, p).first->second;
}

Status LtGemm::run(int n, int k, int m, cudaDataType_t type, const void* w, const void* x, float* out,
                   cudaStream_t stream) {
    const int align = std::min({alignment(w), alignment(x), alignment(out)});
    PURBO_ASSIGN_OR_RETURN(const Plan* p, plan(Key{n, k, m, static_cast<int>(type), align}));
    const float alpha = 1.0f, beta = 0.0f;
    PURBO_CUBLAS_TRY(cublasLtMatmul(handle_, p->op, &alpha, w, p->a, x, p->b, &beta, out, p->c, out, p->c,
                                    &p->algo, workspace_, workspace_bytes_, stream));
    return Status::ok();
}

}  // namespace purbo::cuda
