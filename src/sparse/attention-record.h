// Records the attention inputs of a dense run: for every layer, the queries and keys before
// and after RoPE, as host f32 tensors. Calibration (head scores) and indexer training read
// the model's real attention from these records; the backbone is frozen, so one record
// serves every training step that revisits the sequence.
#pragma once

#include <span>
#include <vector>

#include "core/tensor.h"
#include "runtime/session.h"

namespace purbo {

struct RecordOptions {
    bool q_pre = true;   // queries before RoPE (after the q/k norm where the model has one)
    bool k_pre = true;   // keys before RoPE
    bool q_post = true;  // queries after RoPE (what attention sees)
    bool k_post = true;  // keys after RoPE
    // Positions whose queries are kept (ascending); empty = every position. Keys are always
    // kept for every position.
    std::vector<int32_t> query_positions;
};

// Layer-major: entry il of each vector is layer il; absent kinds are empty tensors.
struct AttentionRecord {
    int n_tokens = 0;
    std::vector<int32_t> query_positions;  // (nq,) positions of the recorded query rows
    std::vector<Tensor> q_pre;   // per layer (nq, h, d)
    std::vector<Tensor> k_pre;   // per layer (N, g, d)
    std::vector<Tensor> q_post;  // per layer (nq, h, d)
    std::vector<Tensor> k_post;  // per layer (N, g, d)
};

// Runs `tokens` through sequence slot 0 of `session` from an empty cache (the slot is cleared
// before and after) and records what `options` asks for.
Result<AttentionRecord> record_attention(Session& session, std::span<const int32_t> tokens,
                                         const RecordOptions& options = {});

}  // namespace purbo
