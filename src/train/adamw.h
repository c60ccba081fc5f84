// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), as PyTorch's
// torch.optim.AdamW computes it, so hyperparameters carry over from the paper's recipes:
//   p <- p - lr * wd * p
//   m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace purbo {

struct AdamWOptions {
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
    float weight_decay = 0.01f;
};

// First and second moments of one parameter tensor, same length as it.
struct AdamWMoments {
    std::vector<float> m;
    std::vector<float> v;

    void reset(size_t n) {
        m.assign(n, 0.0f);
        v.assign(n, 0.0f);
    }
};

// One update of `params` with gradient `grads` as the t-th step (t >= 1, for the bias
// corrections); moments are sized on first use.
void adamw_update(std::span<float> params, std::span<const float> grads, AdamWMoments& moments,
                  int64_t t, float lr, const AdamWOptions& options);

}  // namespace purbo
