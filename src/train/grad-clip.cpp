#include "train/grad-clip.h"

#include <cmath>

namespace purbo {

double grad_global_norm(std::span<const std::span<float>> grads) {
    double sum = 0;
    for (std::span<float> g : grads)
        for (float x : g) sum += static_cast<double>(x) * x;
    return std::sqrt(sum);
}

double grad_clip_global_norm(std::span<const std::span<float>> grads, double max_norm) {
    const double norm = grad_global_norm(grads);
    // PyTorch's 1e-6 keeps the factor finite for a zero gradient and makes a norm of exactly
    // max_norm scale by a hair under 1, like the reference recipes.
    const double coef = max_norm / (norm + 1e-6);
    if (max_norm > 0 && coef < 1.0) {
        const float c = static_cast<float>(coef);
        for (std::span<float> g : grads)
            for (float& x : g) x *= c;
    }
    return norm;
}

}  // namespace purbo
