// cpu backend: rope and kv_store.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu-backend.h"
#include "backend/op-checks.h"
#include "core/fp16.h"
#include "core/fp8.h"

namespace purbo {

// Same arithmetic as cpu-ref (f32 angle, std::cos/std::sin, then the rotation), with the
// cos/sin table computed once per token instead of once per head.
Status CpuBackend::rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params) {
    PURBO_TRY(check_rope(x, pos, params));
    // x (n, heads, d)
    const int64_t n = x.dim(0), heads = x.dim(1), d = x.dim(2), half = params.rotary_dim / 2;
#pragma omp parallel num_threads(n_threads_) if (n > 1)
    {
        std::vector<float> cos_t(static_cast<size_t>(half)),
            sin_t(static_cast<size_t>(half));  // (half,)
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; ++i) {
            for (int64_t r = 0; r < half; ++r) {
                const float angle = static_cast<float>(pos[i]) * params.inv_freq[r];
                cos_t[r] = std::cos(angle) * params.attn_factor;
                sin_t[r] = std::sin(angle) * params.attn_factor;
            }
            for (int64_t hd = 0; hd < heads; ++hd) {
                float* v = x.f32() + (i * heads + hd) * d;
#pragma omp simd
                for (int64_t r = 0; r < half; ++r) {
                    const float a = v[r], b = v[r + half];
                    v[r] = a * cos_t[r] - b * sin_t[r];
                    v[r + half] = a * sin_t[r] + b * cos_t[r];
                }
            }
        }
    }
    return Status::ok();
}

Status CpuBackend::kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                            const KvCacheView& cache) {
    PURBO_TRY(check_kv_store(k, v, place, cache, index_key_dtypes()));
    // k, v (n, g, d); cache (s, gc, c, d)
    const int64_t n = k.dim(0), g = k.dim(1), d = k.dim(2), gc = cache.k.dim(1), c = cache.k.dim(2);
    const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
    const bool bf16 = cache.k.dtype == DType::kBF16;
    const bool f8 = cache.k.dtype == DType::kF8E4M3;  // an index-key cache
    for (int64_t i = 0; i < n; ++i) {
        for (int64_t kv = 0; kv < g; ++kv) {
            const int64_t slot = kv_view_index(cache, kv);
            if (slot < 0) continue;
            const int64_t dst = ((place.seq[i] * gc + slot) * c + kv_cache_row(cache, place.pos[i])) * d;
            const int64_t src = (i * g + kv) * d;
            if (bf16) {  // round to nearest even, as the cuda backend's kv_store
                for (int64_t e = 0; e < d; ++e) {
                    cache.k.ptr<uint16_t>()[dst + e] = f32_to_bf16(k.f32()[src + e]);
                    cache.v.ptr<uint16_t>()[dst + e] = f32_to_bf16(v.f32()[src + e]);
                }
            } else if (f8) {  // round to nearest even, saturate, as the cuda backend's kv_store
                for (int64_t e = 0; e < d; ++e) {
                    cache.k.ptr<uint8_t>()[dst + e] = f32_to_f8e4m3(k.f32()[src + e]);
                    cache.v.ptr<uint8_t>()[dst + e] = f32_to_f8e4m3(v.f32()[src + e]);
                }
            } else {
                std::memcpy(cache.k.f32() + dst, k.f32() + src, row_bytes);
                std::memcpy(cache.v.f32() + dst, v.f32() + src, row_bytes);
            }
        }
    }
    return Status::ok();
}

}  // namespace purbo
