// cpu backend: construction, embedding, rms_norm and the elementwise ops.
#include "backend/cpu/cpu-backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/vec-exp.h"
#include "backend/op-checks.h"
#include "core/quants.h"

namespace purbo {

CpuBackend::CpuBackend(const BackendOptions& options)
    : CpuRefBackend(options),
      n_threads_(options.n_threads > 0 ? options.n_threads : omp_get_num_procs()),
      gemv_activations_(options.gemv_activations) {}

Result<Tensor> CpuBackend::prepare_weight(const Tensor& host_weight) {
    PURBO_ASSIGN_OR_RETURN(Tensor weight, CpuRefBackend::prepare_weight(host_weight));
    if (gemv_activations_ == ActivationPrecision::kQ8) packed_.add(weight);
    return weight;
}

std::unique_ptr<Backend> backend_create_cpu(const BackendOptions& options) {
    return std::make_unique<CpuBackend>(options);
}

Status CpuBackend::embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) {
    PURBO_TRY(check_embedding(table, ids, out));
    // table (v, k), out (n, k)
    const int64_t k = table.dim(1), n = static_cast<int64_t>(ids.size());
#pragma omp parallel for num_threads(n_threads_) if (n > 1)
    for (int64_t i = 0; i < n; ++i)
        dequantize_row(table.dtype, table.row_ptr(ids[i]), out.f32() + i * k, k);
    return Status::ok();
}

Status CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) {
    PURBO_TRY(check_rms_norm(x, weight, eps, out));
    // x, out (rows, k); weight (k,)
    const int64_t k = x.row_size(), rows = x.n_rows();
    const float* w = weight.f32();
#pragma omp parallel for num_threads(n_threads_) if (rows > 1)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x.f32() + r * k;
        float* yr = out.f32() + r * k;
        float sum_sq = 0;
#pragma omp simd reduction(+ : sum_sq)
        for (int64_t i = 0; i < k; ++i) sum_sq += xr[i] * xr[i];
        const float inv_rms = 1.0f / std::sqrt(sum_sq / static_cast<float>(k) + eps);
#pragma omp simd
        for (int64_t i = 0; i < k; ++i) yr[i] = xr[i] * inv_rms * w[i];
    }
    return Status::ok();
}

Status CpuBackend::add_bias(const Tensor& x, const Tensor& bias) {
    PURBO_TRY(check_add_bias(x, bias));
    const int64_t m = x.row_size(), rows = x.n_rows();
    const float* b = bias.f32();
#pragma omp parallel for num_threads(n_threads_) if (rows * m > (1 << 16))
    for (int64_t r = 0; r < rows; ++r) {
        float* xr = x.f32() + r * m;
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) xr[j] += b[j];
    }
    return Status::ok();
}

// Elementwise ops are memory bound; threads only pay off past a few hundred KB.
constexpr int64_t kParallelElements = 1 << 16;

Status CpuBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
    const Tensor* operands[] = {&gate, &up, &out};
    PURBO_TRY(check_same_shape_f32("swiglu", operands));
    const int64_t n = gate.numel();
    const float* g = gate.f32();
    const float* u = up.f32();
    float* y = out.f32();
    // Chunks of whole vectors per thread (the exp is vectorised in silu_mul).
    constexpr int64_t kChunk = 4096;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(n_threads_) if (n > kParallelElements)
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = c * kChunk;
        silu_mul(g + begin, u + begin, y + begin, std::min(kChunk, n - begin));
    }
    return Status::ok();
}

Status CpuBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
    const Tensor* operands[] = {&a, &b, &out};
    PURBO_TRY(check_same_shape_f32("add", operands));
    const int64_t n = a.numel();
    const float* pa = a.f32();
    const float* pb = b.f32();
    float* y = out.f32();
#pragma omp parallel for simd num_threads(n_threads_) if (n > kParallelElements)
    for (int64_t i = 0; i < n; ++i) y[i] = pa[i] + pb[i];
    return Status::ok();
}

}  // namespace purbo
