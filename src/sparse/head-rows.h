// One head's rows inside a recorded (n, heads, d) tensor, without copying: the indexer's
// initialisation and training read a head's queries and keys out of an AttentionRecord.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/tensor.h"

namespace purbo {

// A (rows, cols) f32 matrix whose row i starts at data + i * stride.
struct RowsView {
    const float* data = nullptr;
    int64_t rows = 0;
    int64_t stride = 0;
    int cols = 0;

    const float* row(int64_t i) const { return data + i * stride; }
};

// Head `head` of a host f32 (n, heads, d) tensor: the (n, d) rows of that head.
inline RowsView head_rows(const Tensor& t, int head) {
    PURBO_ASSERT(t.ndim == 3 && head >= 0 && head < t.dim(1), "head {} of {}", head, t.describe());
    const int64_t d = t.dim(2);
    return {t.f32() + head * d, t.dim(0), t.dim(1) * d, static_cast<int>(d)};
}

}  // namespace purbo
