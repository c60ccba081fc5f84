#include "train/adamw.h"

#include <cmath>

#include "core/status.h"

namespace purbo {

void adamw_update(std::span<float> params, std::span<const float> grads, AdamWMoments& moments,
                  int64_t t, float lr, const AdamWOptions& o) {
    PURBO_ASSERT(params.size() == grads.size() && t >= 1, "{} params, {} grads, step {}",
                 params.size(), grads.size(), t);
    if (moments.m.size() != params.size()) moments.reset(params.size());
    // Bias corrections in double: 1 - 0.999^t is 1e-3 at t = 1 and must not lose digits.
    const double c1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(t));
    const double c2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(t));
    const float step = static_cast<float>(lr / c1);
    const float inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
    const float decay = 1.0f - lr * o.weight_decay;
    for (size_t i = 0; i < params.size(); ++i) {
        const float g = grads[i];
        float& m = moments.m[i];
        float& v = moments.v[i];
        m = o.beta1 * m + (1.0f - o.beta1) * g;
        v = o.beta2 * v + (1.0f - o.beta2) * g * g;
        params[i] = params[i] * decay - step * m / (std::sqrt(v) * inv_sqrt_c2 + o.eps);
    }
}

}  // namespace purbo
