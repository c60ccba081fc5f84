// cpu: the fast CPU backend. OpenBLAS sgemm for batched matmuls, quantised integer dot
// products for decode-sized matmuls, OpenMP over rows / tokens / heads for everything else.
// Every op is checked against cpu-ref by tests/backend/test-backend-ops.cpp.
//
// Weights (prepare_weight): every dtype dequantize_row reads is kept as it is, zero copy from
// the mapped file. f32/f16/bf16/q4_0/q4_1/q8_0 have dedicated GEMV kernels; the others (q5_x,
// K-quants) are dequantised row by row on the fly (correct, not fast). With q8 activations,
// q4_1 matrices also get a decode copy repacked 8 rows at a time (packed-weights.h).
//
// Threads: every op uses n_threads OpenMP threads (options.n_threads, 0 = all cores). matmul
// sets OpenBLAS's global thread count for the duration of a call, so one backend's ops must
// not run concurrently from several host threads.
#pragma once

#include "backend/cpu-ref/cpu-ref-backend.h"
#include "backend/cpu/packed-weights.h"

namespace purbo {

class CpuBackend final : public CpuRefBackend {
  public:
    explicit CpuBackend(const BackendOptions& options);

    BackendKind kind() const override { return BackendKind::kCpu; }
    std::string_view name() const override { return "cpu"; }
    // f32 first (exact attention, as cpu-ref); bf16 halves the bytes decode reads at depth.
    std::vector<DType> kv_cache_dtypes() const override { return {DType::kF32, DType::kBF16}; }

    // With q8 activations, q4_1 matrices also get the interleaved decode copy of
    // packed-weights.h; the returned tensor is the weight itself, as in cpu-ref.
    Result<Tensor> prepare_weight(const Tensor& host_weight) override;

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

    int n_threads() const { return n_threads_; }

  private:
    int n_threads_;
    ActivationPrecision gemv_activations_;
    PackedWeights packed_;
};

// The two matmul paths, exposed so that tests and benchmarks can run each one on any n.
// x (n, k) f32, w (m, k), out (n, m) f32; arguments already checked.
void cpu_matmul_gemv(const Tensor& x, const Tensor& w, const Tensor& out, int n_threads,
                     ActivationPrecision activations = ActivationPrecision::kF32);
void cpu_matmul_gemm(const Tensor& x, const Tensor& w, const Tensor& out, int n_threads);
// One token against a q4_1 weight of m rows (a multiple of 8) and k columns in the packed
// layout: x (1, k), out (1, m); x quantised to q8_1 as cpu_matmul_gemv does with kQ8.
void cpu_matmul_gemv_packed_q4_1(const Tensor& x, const BlockQ4_1x8* w, int64_t m, const Tensor& out,
                                 int n_threads);

}  // namespace purbo
