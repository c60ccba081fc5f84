// Which query heads become retrieval heads, given every head's calibration score
// (method.md section 1). Scores are (n_layer, n_head) row-major, as Adapter::scores stores
// them, so the choice can be remade from an adapter with another ratio.
#pragma once

#include <span>
#include <vector>

#include "core/status.h"
#include "sparse/adapter.h"

namespace purbo {

enum class HeadSelectionMode {
    // [paper] The top round(ratio * n_layer * n_head) query heads by score.
    kQueryHeads,
    // [ours] Whole KV groups (the query heads that share one KV head), best group first, until
    // the budget of query heads is reached; the last group may overshoot it by fewer than
    // n_head / n_head_kv heads. Every other KV head is entirely local and its cache can
    // shrink to sinks + window.
    kKvGroups,
};

struct HeadSelection {
    std::vector<HeadId> retrieval;  // ascending (layer, head)
    int budget = 0;                 // round(ratio * n_layer * n_head)
    int n_kv_heads = 0;             // n_layer * n_head_kv
    int n_local_kv_heads = 0;       // KV heads none of whose query heads is a retrieval head
};

// Every (layer, head) by descending score; equal scores: lower layer first, then lower head.
std::vector<HeadId> rank_heads(std::span<const float> scores, int n_layer, int n_head);

// KV heads (layer, kv head) all of whose query heads are outside `retrieval`.
int count_local_kv_heads(std::span<const HeadId> retrieval, int n_layer, int n_head, int n_head_kv);

// Picks the retrieval heads. Errors: scores not (n_layer * n_head,), a ratio outside [0, 1],
// n_head not a multiple of n_head_kv.
Result<HeadSelection> select_retrieval_heads(std::span<const float> scores, int n_layer, int n_head,
                                             int n_head_kv, double ratio, HeadSelectionMode mode);

}  // namespace purbo
