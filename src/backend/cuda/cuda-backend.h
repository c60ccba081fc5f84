// cuda: the GPU backend. One device (the current one), one stream owned by the backend, one
// cuBLAS handle bound to it; every op is enqueued on that stream and returns at once, so
// results are visible to the host after to_host (which waits) or synchronize().
//
// Dtypes and layouts:
//  - Activations, norm weights and biases: f32 device tensors, row-major, shapes as in
//    backend.h. The KV cache k, v (s, g, c, d): bf16 (preferred) or f32.
//  - Matrices from prepare_weight: bf16 device tensors (any host dtype dequantised with
//    dequantize_row, then rounded to nearest even). matmul and embedding also take f32
//    device matrices (alloc + from_host), used for tiny test models.
//  - Host spans (ids, positions, placements, rope frequencies) are copied on the stream into
//    device scratch buffers that grow on demand.
//
// Every op validates with op-checks.h first (the same Status as cpu-ref for a wrong call),
// then requires device tensors; every CUDA/cuBLAS call and launch is checked (cuda-check.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda-check.h"
#include "backend/cuda/cuda-cudnn.h"
#include "backend/cuda/cuda-gemm-lt.h"
#include "backend/cuda/cuda-step-graph.h"

namespace purbo {

// Devices the CUDA runtime sees; 0 when there is no device or no driver.
int cuda_device_count();

class CudaBackend final : public Backend {
public:
    static Result<std::unique_ptr<CudaBackend>> create(const BackendOptions& options);
    ~CudaBackend() override;
    CudaBackend(const CudaBackend&) = delete;
    CudaBackend& operator=(const CudaBackend&) = delete;

    BackendKind kind() const override { return BackendKind::kCuda; }
    std::string_view name() const override { return "cuda"; }
    // bf16 first: half the bytes per cached token, and what the tensor-core kernels read.
    std::vector<DType> kv_cache_dtypes() const override { return {DType::kBF16, DType::kF32}; }

    Tensor alloc(DType dtype, std::initializer_list<int64_t> shape, std::string name = {}) override;
    // 1-D tensors (norm weights, biases) become f32; every other tensor a bf16 matrix.
    Result<Tensor> prepare_weight(const Tensor& host_weight) override;
    // Device f32 or bf16 <-> host f32 of the same shape; device i32 <-> host i32.
    Status to_host(const Tensor& src, const Tensor& host_dst) override;
    Status from_host(const Tensor& host_src, const Tensor& dst) override;
    void synchronize() override;

    bool begin_graph_step(uint64_t shape) override { return graph_->begin(shape); }
    Result<bool> end_graph_step(bool ops_ok) override { return graph_->end(ops_ok); }
    const cuda::StepGraph& step_graph() const { return *graph_; }

    Status embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) override;
    Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) override;
    Status matmul(const Tensor& x, const Tensor& w, const Tensor& out) override;
    Status add_bias(const Tensor& x, const Tensor& bias) override;
    Status rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params) override;
    Status kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                    const KvCacheView& cache) override;
    Status attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                     const AttentionParams& params, const Tensor& out) override;
    Status select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                         const BlockSelectParams& params, const Tensor& blocks,
                         const Tensor& counts) override;
    Status swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) override;
    Status add(const Tensor& a, const Tensor& b, const Tensor& out) override;

    cudaStream_t stream() const { return stream_; }

private:
    CudaBackend() = default;

    // A device buffer that only grows; its contents belong to the op that staged them.
    struct Scratch {
        void* ptr = nullptr;
        size_t bytes = 0;
    };
    Result<void*> reserve(Scratch& scratch, size_t bytes);
    // Copies host bytes into the scratch on the stream, through a pinned host buffer (so the
    // host buffer may go away as soon as this returns). A pageable source would let the
    // runtime wait for the stream before the copy: a bubble between every op and the next.
    Result<void*> stage(Scratch& scratch, const void* host, size_t bytes);
    // Every kernel launch and cuBLASLt call of an op goes through here, so that a step graph
    // can record it or check it against its recording. `signature`: every argument the launch
    // depends on besides the stream (the call site's name is added). `issue` returns a
    // cudaError_t (a launcher) or a Status.
    template <class Issue, class... Values>
    Status enqueue(const char* what, Issue&& issue, const Values&... signature) {
        return graph_->launch(
            [&]() -> Status {
                if constexpr (std::is_same_v<decltype(issue()), cudaError_t>) {
                    const cudaError_t err = issue();
                    if (err != cudaSuccess) return cuda_error(what, __FILE__, __LINE__, err);
                    return Status::ok();
                } else {
                    return issue();
                }
            },
            what, signature...);
    }
    // Pinned host buffers used in turn by stage(); a buffer is refilled only after the copy
    // that last read it has completed (its event), which with kPinnedSlots of them in flight
    // is almost always already the case.
    struct PinnedSlot {
        void* ptr = nullptr;
        size_t bytes = 0;
        cudaEvent_t copied = nullptr;
    };
    static constexpr int kPinnedSlots = 16;
    // A zero-filled device tensor of the given shape; empty on failure (logged).
    Result<Tensor> alloc_shape(DType dtype, std::span<const int64_t> shape, std::string name);
    // A prefill chunk through cuDNN's flash attention where it applies (a bf16 cache whose
    // rows are positions, i.e. not a ring; any head classes, sinks merged after) and cuDNN is
    // built in and starts; false: the caller runs its own kernel. With a block selection it
    // computes only the heads that do not use it (the others' rows are left as they are).
    Result<bool> cudnn_prefill(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                               const AttentionParams& params, const Tensor& out);
    // The side stream of cudnn_prefill, started on first use; false where it cannot start or
    // PURBO_NO_CUDNN_OVERLAP is set (every call on the main stream, for comparisons).
    Result<bool> start_cudnn_side();
    // The selected heads of a block-sparse prefill chunk through cuDNN's paged attention (one
    // list per query group, cuDNN started by cudnn_prefill, the chunk starting at a multiple of
    // the block size); false: the caller runs its tensor-core kernel.
    Result<bool> cudnn_paged_prefill(const Tensor& q, const KvCacheView& cache,
                                     const TokenPlacement& place, const AttentionParams& params,
                                     const Tensor& out);

    int device_ = 0;
    int n_sms_ = 0;
    cudaStream_t stream_ = nullptr;
    std::unique_ptr<cuda::LtGemm> gemm_;  // every matmul
    std::unique_ptr<cuda::StepGraph> graph_;  // decode steps as CUDA graphs
    Scratch x_bf16_;       // matmul: x rounded to bf16, (n, k)
    Scratch indices_;      // ids, positions, placements, plans and rope tables of one op
    Scratch attn_partial_; // split-KV partial results
    Scratch attn_plan_;    // the attention kernel's last plan (seq, pos, blocks, groups)
    std::vector<int32_t> attn_plan_host_;  // what attn_plan_ holds
    Scratch select_;       // select_blocks: per-block log2 masses, boundary candidates, ranks
    Scratch cudnn_io_;     // cuDNN prefill: q and out in bf16 (n_pad, hs, d), log-sum-exp (hs, n_pad)
    Scratch cudnn_paged_;  // cuDNN paged prefill: q and out (hs, rows, d), page tables, lengths
    PinnedSlot pinned_[kPinnedSlots];
    int next_pinned_ = 0;
    // cuDNN attention, started on first use; off when PURBO_NO_CUDNN is set (own kernels
    // only, for comparisons) or when it cannot start.
    std::unique_ptr<cuda::CudnnAttention> cudnn_;
    bool cudnn_tried_ = false;
    // A chunk's dense heads' cuDNN calls when it has local heads too: on a stream of higher
    // priority, with a cuDNN instance of its own, while the local heads' calls run on stream_.
    // The block scheduler then gives the local calls' short CTAs only the SMs that the long
    // dense calls leave idle in their last wave and between two calls.
    struct CudnnSide {
        cudaStream_t stream = nullptr;
        cudaEvent_t fork = nullptr, join = nullptr;  // stream_ -> stream -> stream_
        std::unique_ptr<cuda::CudnnAttention> cudnn;
        bool tried = false;
    };
    CudnnSide side_;
};

// Shared by the op files: a Status unless t lives on the device.
Status require_device(std::string_view op, const Tensor& t, std::string_view role);

}  // namespace purbo
