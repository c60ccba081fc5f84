#include "train/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace purbo {

float LrSchedule::at(int step) const {
    if (step < warmup_steps)
        return lr * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
    const int decay_steps = total_steps - warmup_steps;
    if (decay_steps <= 0) return lr;
    const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / decay_steps);
    const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    return static_cast<float>(lr * (min_ratio + (1.0 - min_ratio) * cosine));
}

}  // namespace purbo
