// cuda: the stage-1 indexer loss of one query head (cuda-indexer-loss.h).
#include "backend/cuda/cuda-indexer-loss.h"

#include <algorithm>
#include <cstring>

#include "backend/cuda/cuda-check.h"
#include "backend/cuda/cuda-kernels.h"

namespace purbo::cuda {
namespace {

// Row-major C (m, n) = alpha op(A) op(B) + beta C with cuBLAS (column-major): the column-major
// view of a row-major matrix is its transpose, so this is C^T = op(B)^T op(A)^T, i.e. cuBLAS
// with the operands swapped and the same transpose flags.
cublasStatus_t gemm_rm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                       int64_t k, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                       float beta, float* c, int64_t ldc) {
    return cublasSgemm(h, tb, ta, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b,
                       static_cast<int>(ldb), a, static_cast<int>(lda), &beta, c, static_cast<int>(ldc));
}

constexpr cublasOperation_t N = CUBLAS_OP_N, T = CUBLAS_OP_T;

}  // namespace

Result<std::unique_ptr<IndexerLoss>> IndexerLoss::create() {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        (void)cudaGetLastError();
        return error(StatusCode::kUnsupported, "indexer loss on cuda: no CUDA device is visible");
    }
    std::unique_ptr<IndexerLoss> loss(new IndexerLoss());
    PURBO_CUDA_TRY(cudaStreamCreateWithFlags(&loss->stream_, cudaStreamNonBlocking));
    PURBO_CUBLAS_TRY(cublasCreate(&loss->blas_));
    PURBO_CUBLAS_TRY(cublasSetStream(loss->blas_, loss->stream_));
    // fp32 products as on the CPU: no TF32 (the default math mode, said explicitly).
    PURBO_CUBLAS_TRY(cublasSetMathMode(loss->blas_, CUBLAS_DEFAULT_MATH));
    return loss;
}

IndexerLoss::~IndexerLoss() {
    if (stream_) (void)cudaStreamSynchronize(stream_);
    if (blas_) (void)cublasDestroy(blas_);
    for (Buffer* b : {&inputs_, &proj_, &scores_, &grads_, &row_kl_, &samples_}) {
        if (b->ptr) (void)cudaFree(b->ptr);
    }
    if (stream_) (void)cudaStreamDestroy(stream_);
}

Result<float*> IndexerLoss::floats(Buffer& b, int64_t count) {
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(float);
    if (bytes > b.bytes) {
        if (b.ptr) PURBO_CUDA_TRY(cudaFree(b.ptr));  // waits for work still reading it
        b.ptr = nullptr;
        b.bytes = 0;
        PURBO_CUDA_TRY(cudaMalloc(&b.ptr, bytes));
        b.bytes = bytes;
    }
    return static_cast<float*>(b.ptr);
}

Status IndexerLoss::run(const IndexerLossInputs& in, IndexerLossOutputs& out) {
    const int64_t nq = in.nq, nk = in.nk, d = in.d, r = in.r;
    out.row_kl.assign(static_cast<size_t>(nq), 0.0);
    out.dwq.assign(static_cast<size_t>(r * d), 0.0f);
    out.dwk.assign(static_cast<size_t>(r * d), 0.0f);
    out.sample_t.clear();
    out.sample_s.clear();
    if (nq == 0) return Status::ok();
    if (d <= 0 || r <= 0 || nk <= 0 || in.chunk <= 0 || nk > INT32_MAX || nq > INT32_MAX)
        return error(StatusCode::kInvalidArgument, "indexer loss on cuda: nq {}, nk {}, d {}, r {}, chunk {}", nq, nk,
                     d, r, in.chunk);
    const int64_t chunk = std::min(in.chunk, nq);

    // Inputs: q_pre, q_post (nq, d); k_pre, k_post (nk, d); wq, wk (r, d); positions (nq,).
    PURBO_ASSIGN_OR_RETURN(float* inputs, floats(inputs_, 2 * nq * d + 2 * nk * d + 2 * r * d + nq));
    float* q_pre = inputs;
    float* q_post = q_pre + nq * d;
    float* k_pre = q_post + nq * d;
    float* k_post = k_pre + nk * d;
    float* wq = k_post + nk * d;
    float* wk = wq + r * d;
    auto* positions = reinterpret_cast<int32_t*>(wk + r * d);
    const std::pair<float*, const void*> uploads[] = {{q_pre, in.q_pre}, {q_post, in.q_post}, {k_pre, in.k_pre},
                                                      {k_post, in.k_post}, {wq, in.wq}, {wk, in.wk}};
    const int64_t counts[] = {nq * d, nq * d, nk * d, nk * d, r * d, r * d};
    for (size_t i = 0; i < std::size(uploads); ++i) {
        PURBO_CUDA_TRY(cudaMemcpyAsync(uploads[i].first, uploads[i].second, static_cast<size_t>(counts[i]) * 4,
                                       cudaMemcpyHostToDevice, stream_));
    }
    PURBO_CUDA_TRY(cudaMemcpyAsync(positions, in.positions, static_cast<size_t>(nq) * 4, cudaMemcpyHostToDevice,
                                   stream_));

    // iq (nq, r) = q_pre wq^T;  ik (nk, r) = k_pre wk^T
    PURBO_ASSIGN_OR_RETURN(float* iq, floats(proj_, (nq + nk) * r));
    float* ik = iq + nq * r;
    PURBO_CUBLAS_TRY(gemm_rm(blas_, N, T, nq, r, d, 1.0f, q_pre, d, wq, d, 0.0f, iq, r));
    PURBO_CUBLAS_TRY(gemm_rm(blas_, N, T, nk, r, d, 1.0f, k_pre, d, wk, d, 0.0f, ik, r));

    PURBO_ASSIGN_OR_RETURN(float* teacher, floats(scores_, 2 * chunk * nk));
    float* student = teacher + chunk * nk;
    PURBO_ASSIGN_OR_RETURN(float* g_ik, floats(grads_, chunk * r + r * nk + 2 * r * d));
    float* iq_g = g_ik + chunk * r;
    float* dwq = iq_g + r * nk;
    float* dwk = dwq + r * d;
    PURBO_CUDA_TRY(cudaMemsetAsync(dwq, 0, static_cast<size_t>(2 * r * d) * 4, stream_));
    PURBO_ASSIGN_OR_RETURN(float* row_kl_f, floats(row_kl_, 2 * nq));
    auto* row_kl = reinterpret_cast<double*>(row_kl_f);
    const int stride = in.metric_stride;
    const int64_t samples_per_chunk = stride > 0 ? chunk / stride + 1 : 0;
    PURBO_ASSIGN_OR_RETURN(float* sample_t, floats(samples_, 2 * samples_per_chunk * nk));
    float* sample_s = sample_t + samples_per_chunk * nk;
    std::vector<float> host_t, host_s;

    for (int64_t c0 = 0; c0 < nq; c0 += chunk) {
        const int64_t nc = std::min(chunk, nq - c0);
        const int64_t nkc = int64_t{in.positions[c0 + nc - 1]} + 1;  // keys the block's last row sees
        // teacher (nc, nkc) = scale q_post_c k_post^T;  student (nc, nkc) = iq_c ik^T
        PURBO_CUBLAS_TRY(gemm_rm(blas_, N, T, nc, nkc, d, in.scale, q_post + c0 * d, d, k_post, d, 0.0f, teacher, nkc));
        PURBO_CUBLAS_TRY(gemm_rm(blas_, N, T, nc, nkc, r, 1.0f, iq + c0 * r, r, ik, r, 0.0f, student, nkc));
        KlRowsArgs args{};
        args.t = teacher;
        args.s = student;
        args.positions = positions;
        args.row_kl = row_kl;
        args.sample_t = stride > 0 ? sample_t : nullptr;
        args.sample_s = stride > 0 ? sample_s : nullptr;
        args.nc = nc;
        args.nk = nkc;
        args.u0 = c0;
        args.sample0 = stride > 0 ? (c0 + stride - 1) / stride : 0;
        args.inv_n = 1.0f / static_cast<float>(nq);
        args.metric_stride = stride;
        PURBO_CUDA_TRY(launch_kl_rows(args, stream_));
        // dWq (r, d) += (G ik)^T q_pre_c
        PURBO_CUBLAS_TRY(gemm_rm(blas_, N, N, nc, r, nkc, 1.0f, student, nkc, ik, r, 0.0f, g_ik, r));
        PURBO_CUBLAS_TRY(gemm_rm(blas_, T, N, r, d, nc, 1.0f, g_ik, r, q_pre + c0 * d, d, 1.0f, dwq, d));
        // dWk (r, d) += (iq_c^T G) k_pre
        PURBO_CUBLAS_TRY(gemm_rm(blas_, T, N, r, nkc, nc, 1.0f, iq + c0 * r, r, student, nkc, 0.0f, iq_g, nkc));
        PURBO_CUBLAS_TRY(gemm_rm(blas_, N, N, r, d, nkc, 1.0f, iq_g, nkc, k_pre, d, 1.0f, dwk, d));

        if (stride > 0) {
            // The block's sampled rows, each over its own visible keys.
            const int64_t first = args.sample0, last = (c0 + nc - 1) / stride;
            if (last >= first) {
                const int64_t rows = last - first + 1;
                host_t.resize(static_cast<size_t>(rows * nkc));
                host_s.resize(static_cast<size_t>(rows * nkc));
                PURBO_CUDA_TRY(cudaMemcpyAsync(host_t.data(), sample_t, host_t.size() * 4, cudaMemcpyDeviceToHost, stream_));
                PURBO_CUDA_TRY(cudaMemcpyAsync(host_s.data(), sample_s, host_s.size() * 4, cudaMemcpyDeviceToHost, stream_));
                PURBO_CUDA_TRY(cudaStreamSynchronize(stream_));  // the buffers are reused by the next block
                for (int64_t k = 0; k < rows; ++k) {
                    const int64_t u = (first + k) * stride;
                    const int64_t len = int64_t{in.positions[u]} + 1;
                    const float* t_row = host_t.data() + k * nkc;
                    const float* s_row = host_s.data() + k * nkc;
                    out.sample_t.insert(out.sample_t.end(), t_row, t_row + len);
                    out.sample_s.insert(out.sample_s.end(), s_row, s_row + len);
                }
            }
        }
    }
    PURBO_CUDA_TRY(cudaMemcpyAsync(out.row_kl.data(), row_kl, static_cast<size_t>(nq) * 8, cudaMemcpyDeviceToHost,
                                   stream_));
    PURBO_CUDA_TRY(cudaMemcpyAsync(out.dwq.data(), dwq, static_cast<size_t>(r * d) * 4, cudaMemcpyDeviceToHost, stream_));
    PURBO_CUDA_TRY(cudaMemcpyAsync(out.dwk.data(), dwk, static_cast<size_t>(r * d) * 4, cudaMemcpyDeviceToHost, stream_));
    PURBO_CUDA_TRY(cudaStreamSynchronize(stream_));
    return Status::ok();
}

}  // namespace purbo::cuda
