// cpu-ref: embedding, rms_norm, matmul and the elementwise ops.
#include <cmath>
#include <vector>

#include "backend/cpu-ref/cpu-ref-backend.h"
#include "backend/op-checks.h"
#include "core/quants.h"

namespace purbo {

Status CpuRefBackend::embedding(const Tensor& table, std::span<const int32_t> ids,
                                const Tensor& out) {
    PURBO_TRY(check_embedding(table, ids, out));
    // table (v, k), out (n, k)
    const int64_t k = table.dim(1);
    for (size_t i = 0; i < ids.size(); ++i)
        dequantize_row(table.dtype, table.row_ptr(ids[i]), out.f32() + i * k, k);
    return Status::ok();
}

Status CpuRefBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps,
                               const Tensor& out) {
    PURBO_TRY(check_rms_norm(x, weight, eps, out));
    // x, out (rows, k); weight (k,)
    const int64_t k = x.row_size();
    for (int64_t r = 0; r < x.n_rows(); ++r) {
        const float* xr = x.f32() + r * k;
        float* yr = out.f32() + r * k;
        double sum_sq = 0;
        for (int64_t i = 0; i < k; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
        const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(k) + eps);
        for (int64_t i = 0; i < k; ++i)
            yr[i] = static_cast<float>(xr[i] * inv_rms * weight.f32()[i]);
    }
    return Status::ok();
}

// out[i, j] = sum_l x[i, l] * w[j, l]. Each weight row is dequantised once into a scratch row
// (the one definition of the weight's values); the dot products accumulate in double.
Status CpuRefBackend::matmul(const Tensor& x, const Tensor& w, const Tensor& out) {
    PURBO_TRY(check_matmul(x, w, out));
    // x (n, k), w (m, k), out (n, m)
    const int64_t n = x.dim(0), k = x.dim(1), m = w.dim(0);
    std::vector<float> w_row(static_cast<size_t>(k));  // (k,)
    for (int64_t j = 0; j < m; ++j) {
        dequantize_row(w.dtype, w.row_ptr(j), w_row.data(), k);
        for (int64_t i = 0; i < n; ++i) {
            const float* xi = x.f32() + i * k;
            double acc = 0;
            for (int64_t l = 0; l < k; ++l)
                acc += static_cast<double>(xi[l]) * w_row[static_cast<size_t>(l)];
            out.f32()[i * m + j] = static_cast<float>(acc);
        }
    }
    return Status::ok();
}

Status CpuRefBackend::add_bias(const Tensor& x, const Tensor& bias) {
    PURBO_TRY(check_add_bias(x, bias));
    const int64_t m = x.row_size();
    for (int64_t r = 0; r < x.n_rows(); ++r) {
        for (int64_t j = 0; j < m; ++j) x.f32()[r * m + j] += bias.f32()[j];
    }
    return Status::ok();
}

// silu(g) = g * sigmoid(g) = g / (1 + exp(-g)).
Status CpuRefBackend::swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) {
    const Tensor* operands[] = {&gate, &up, &out};
    PURBO_TRY(check_same_shape_f32("swiglu", operands));
    for (int64_t i = 0; i < gate.numel(); ++i) {
        const double g = gate.f32()[i];
        out.f32()[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up.f32()[i]);
    }
    return Status::ok();
}

Status CpuRefBackend::add(const Tensor& a, const Tensor& b, const Tensor& out) {
    const Tensor* operands[] = {&a, &b, &out};
    PURBO_TRY(check_same_shape_f32("add", operands));
    for (int64_t i = 0; i < a.numel(); ++i) out.f32()[i] = a.f32()[i] + b.f32()[i];
    return Status::ok();
}

}  // namespace purbo
