// purbo bench --attention --retrieval R: one layer of the sparse model (method.md) with the
// paper's head classes: a share R of the query heads are retrieval heads, the rest local
// heads (window + sinks). Prefill: retrieval heads dense, local heads windowed (the paper's
// prefill). Decode: for each selected-block fraction, the top-p block selection over the
// cached index keys and attention over the selected blocks, timed apart and together, next
// to dense decode on the same cache.
#pragma once

#include <string>
#include <vector>

#include "attention-cost.h"
#include "backend/backend.h"

namespace purbo::cli {

struct SparseBenchConfig {
    std::string shape_name, device, output;  // output: md or json
    AttentionShape shape;
    std::vector<int64_t> prefill, decode;
    std::vector<double> fractions;  // decode: share of blocks each retrieval head keeps, (0, 1]
    double retrieval = 0.15;        // share of query heads that are retrieval heads
    int window = 8192, sinks = 4, block = 64, rank = 16;
    float top_p = 0.9f;
    int reps = 3;
    int64_t chunk = 65536;
    double max_seconds = 60;
    double deadline = 0;  // seconds from the start after which no case starts (0: none)
    DType cache_type = DType::kF32;  // of the KV cache
};

int run_sparse_attention_bench(Backend& be, const SparseBenchConfig& config);

}  // namespace purbo::cli
