// cpu backend: decode copies of q4_1 weights in the 8-row interleaved layout of vec-dot.h
// (BlockQ4_1x8), made once when a weight is prepared (prepare_weight, with q8 activations) and
// found again by matmul for one-token GEMVs. The original blocks stay as they are: prefill,
// row views and the exact f32 path read them. Costs the weight's bytes once more.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "backend/cpu/vec-dot.h"
#include "core/tensor.h"

namespace purbo {

class PackedWeights {
  public:
    // Packs w when it is a q4_1 matrix with a multiple of 8 rows that owns its storage; other
    // tensors are left alone. A prepared weight is immutable from then on (as every backend
    // assumes), so the copy never goes stale.
    void add(const Tensor& w);
    // The packed copy of exactly w ((rows / 8, blocks per row) blocks), or null: w was not
    // packed, is a row view of a packed weight, or its storage was freed (an entry is tied to
    // the storage it was made from, so a new tensor at a reused address is not mistaken for it).
    const BlockQ4_1x8* find(const Tensor& w) const;

  private:
    struct Entry {
        std::weak_ptr<void> owner;
        int64_t rows = 0;
        int64_t cols = 0;
        std::vector<BlockQ4_1x8> blocks;
    };
    std::unordered_map<const void*, Entry> entries_;
};

}  // namespace purbo
