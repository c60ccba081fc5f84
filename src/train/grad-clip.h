// Global gradient-norm clipping (Pascanu et al. 2013), as torch.nn.utils.clip_grad_norm_:
// one L2 norm over every parameter tensor together, all scaled by the same factor.
#pragma once

#include <span>

namespace purbo {

// L2 norm of all `grads` together, summed in double.
double grad_global_norm(std::span<const std::span<float>> grads);

// Scales every gradient by min(1, max_norm / (norm + 1e-6)) and returns the norm before
// clipping. max_norm <= 0 disables clipping (the norm is still returned).
double grad_clip_global_norm(std::span<const std::span<float>> grads, double max_norm);

}  // namespace purbo
