// cuda: the stage-1 indexer loss of one query head and its gradient on the GPU (the formulas
// are in train/indexer-loss.h; this is the same computation as its f32 fast path, with
// cuBLAS sgemm for the products and one kernel for the softmaxes and the KL of each row).
//
// Per block of `chunk` query rows: teacher logits T = scale q_post k_post^T and student
// logits S = iq ik^T, (c, nk) each; kl_rows_kernel turns each row into its KL(T || S) and the
// gradient G = (S - T) / n in place of S; then dWq += (G ik)^T q_pre and dWk += (iq^T G) k_pre.
// fp32 throughout (no TF32), row sums in double, like the CPU path; deterministic.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"

namespace purbo::cuda {

// Host arrays, rows contiguous. Only the used query rows are given (train/indexer-loss.h:
// positions >= min_position).
struct IndexerLossInputs {
    const float* q_pre = nullptr;       // (nq, d)
    const float* q_post = nullptr;      // (nq, d)
    const float* k_pre = nullptr;       // (nk, d)
    const float* k_post = nullptr;      // (nk, d)
    const int32_t* positions = nullptr;  // (nq,) ascending, each < nk
    const float* wq = nullptr;          // (r, d)
    const float* wk = nullptr;          // (r, d)
    int64_t nq = 0;
    int64_t nk = 0;
    int d = 0;
    int r = 0;
    float scale = 0;       // the teacher's softmax scale
    int metric_stride = 0;  // used rows u with u % metric_stride == 0 return T and S; 0 = none
    int64_t chunk = 1024;   // query rows per block
};

struct IndexerLossOutputs {
    std::vector<double> row_kl;  // (nq,)
    std::vector<float> dwq;      // (r, d)
    std::vector<float> dwk;      // (r, d)
    // The sampled rows' normalised teacher and student distributions over their visible keys
    // (positions[u] + 1 of them), concatenated in row order.
    std::vector<float> sample_t;
    std::vector<float> sample_s;
};

class IndexerLoss {
public:
    // kUnsupported without a visible device.
    static Result<std::unique_ptr<IndexerLoss>> create();
    ~IndexerLoss();
    IndexerLoss(const IndexerLoss&) = delete;
    IndexerLoss& operator=(const IndexerLoss&) = delete;

    Status run(const IndexerLossInputs& in, IndexerLossOutputs& out);

private:
    IndexerLoss() = default;
    // A device buffer that only grows.
    struct Buffer {
        void* ptr = nullptr;
        size_t bytes = 0;
    };
    Result<float*> floats(Buffer& b, int64_t count);

    cudaStream_t stream_ = nullptr;
    cublasHandle_t blas_ = nullptr;
    Buffer inputs_;   // q_pre, q_post, k_pre, k_post, wq, wk, positions
    Buffer proj_;     // iq (nq, r), ik (nk, r)
    Buffer scores_;   // teacher and student (chunk, nk) each
    Buffer grads_;    // g_ik (chunk, r), iq_g (r, nk), dwq, dwk (r, d)
    Buffer row_kl_;   // (nq,) double
    Buffer samples_;  // sampled rows of a block: T and S (chunk / stride + 1, nk) each
};

}  // namespace purbo::cuda
