// Learning-rate schedule of stage 1 (method.md section 6): linear warmup, then cosine decay
// to min_ratio * lr (0 by default) at the end of training.
#pragma once

namespace purbo {

struct LrSchedule {
    float lr = 1e-3f;  // peak, reached at the end of warmup
    int warmup_steps = 100;
    int total_steps = 600;
    float min_ratio = 0.0f;  // floor of the cosine, as a fraction of lr

    // The rate of step `step` (0-based). Warmup: lr * (step + 1) / warmup_steps, so the first
    // step already moves (HF's schedule spends step 0 at lr 0). Then
    //   lr * (min + (1 - min) * 0.5 * (1 + cos(pi * progress))),
    //   progress = (step - warmup_steps) / (total_steps - warmup_steps) in [0, 1),
    // which is lr at the first step after warmup and would reach the floor at step total_steps.
    float at(int step) const;
};

}  // namespace purbo
