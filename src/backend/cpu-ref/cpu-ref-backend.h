// cpu-ref: the oracle. Plain loops that read like the math, fp32 storage, double accumulators
// for every reduction (dot products, sums of squares, softmax sums) so that its own rounding
// error is far below any backend it judges. Never optimised.
#pragma once

#include "backend/backend.h"

namespace purbo {

class CpuRefBackend : public Backend {
  public:
    explicit CpuRefBackend(const BackendOptions& options) : options_(options) {}

    BackendKind kind() const override { return BackendKind::kCpuRef; }
    std::string_view name() const override { return "cpu-ref"; }

    // Memory: plain heap tensors (tensor_cpu); shared by the cpu backend, which derives from
    // this class only for these four functions and overrides every op.
    Tensor alloc(DType dtype, std::initializer_list<int64_t> shape, std::string name = {}) override;
    // Keeps the weight as it is (any dtype dequantize_row reads); zero copy.
    Result<Tensor> prepare_weight(const Tensor& host_weight) override;
    Status to_host(const Tensor& src, const Tensor& host_dst) override;
    Status from_host(const Tensor& host_src, const Tensor& dst) override;

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

  protected:
    BackendOptions options_;
};

}  // namespace purbo
