#include "sparse/head-selection.h"

#include <algorithm>
#include <cmath>

namespace purbo {
namespace {

// A KV group: the query heads of one layer that read one KV head.
struct KvGroup {
    int layer = 0;
    int kv = 0;
    float max_score = 0;
    float sum_score = 0;
};

}  // namespace

std::vector<HeadId> rank_heads(std::span<const float> scores, int n_layer, int n_head) {
    std::vector<HeadId> heads;
    heads.reserve(static_cast<size_t>(n_layer * n_head));
    for (int l = 0; l < n_layer; ++l)
        for (int h = 0; h < n_head; ++h) heads.push_back({l, h});
    const auto score = [&](const HeadId& id) {
        return scores[static_cast<size_t>(id.layer * n_head + id.head)];
    };
    // Stable sort of a (layer, head)-ascending list: equal scores keep that order.
    std::stable_sort(heads.begin(), heads.end(),
                     [&](const HeadId& a, const HeadId& b) { return score(a) > score(b); });
    return heads;
}

int count_local_kv_heads(std::span<const HeadId> retrieval, int n_layer, int n_head,
                         int n_head_kv) {
    const int group = n_head / n_head_kv;
    std::vector<bool> has_retrieval(static_cast<size_t>(n_layer * n_head_kv), false);
    for (const HeadId& id : retrieval)
        has_retrieval[static_cast<size_t>(id.layer * n_head_kv + id.head / group)] = true;
    return static_cast<int>(std::count(has_retrieval.begin(), has_retrieval.end(), false));
}

Result<HeadSelection> select_retrieval_heads(std::span<const float> scores, int n_layer, int n_head,
                                             int n_head_kv, double ratio, HeadSelectionMode mode) {
    if (n_layer < 1 || n_head < 1 || n_head_kv < 1 || n_head % n_head_kv != 0)
        return error(
            StatusCode::kInvalidArgument,
            "head selection: {} layers x {} query heads over {} KV heads is not a valid shape",
            n_layer, n_head, n_head_kv);
    if (scores.size() != static_cast<size_t>(n_layer * n_head))
        return error(StatusCode::kInvalidArgument,
                     "head selection: {} scores for {} layers x {} heads", scores.size(), n_layer,
                     n_head);
    if (!(ratio >= 0.0 && ratio <= 1.0))
        return error(StatusCode::kInvalidArgument, "head selection: ratio {} is not in [0, 1]",
                     ratio);
    for (size_t i = 0; i < scores.size(); ++i)
        if (!std::isfinite(scores[i]))
            return error(StatusCode::kInvalidArgument,
                         "head selection: score {} of layer {} head {} is not finite", scores[i],
                         static_cast<int>(i) / n_head, static_cast<int>(i) % n_head);

    HeadSelection sel;
    sel.budget = static_cast<int>(std::lround(ratio * n_layer * n_head));
    sel.n_kv_heads = n_layer * n_head_kv;
    if (mode == HeadSelectionMode::kQueryHeads) {
        const std::vector<HeadId> ranked = rank_heads(scores, n_layer, n_head);
        sel.retrieval.assign(ranked.begin(), ranked.begin() + sel.budget);
    } else {
        // Group score = the best query head's score, not the sum. Retrieval ability sits in a
        // few heads with scores far above the rest (a heavy tail): the max makes the choice
        // equal to walking the global head ranking and taking each new head's whole group, so
        // the strongest retrieval heads are never made local to favour a group of several
        // mediocre ones (which the sum would do). The sum only breaks ties.
        const int group = n_head / n_head_kv;
        std::vector<KvGroup> groups;
        for (int l = 0; l < n_layer; ++l) {
            for (int g = 0; g < n_head_kv; ++g) {
                KvGroup kg{l, g, scores[static_cast<size_t>(l * n_head + g * group)], 0.0f};
                for (int h = g * group; h < (g + 1) * group; ++h) {
                    const float s = scores[static_cast<size_t>(l * n_head + h)];
                    kg.max_score = std::max(kg.max_score, s);
                    kg.sum_score += s;
                }
                groups.push_back(kg);
            }
        }
        std::stable_sort(groups.begin(), groups.end(), [](const KvGroup& a, const KvGroup& b) {
            if (a.max_score != b.max_score) return a.max_score > b.max_score;
            return a.sum_score > b.sum_score;
        });
        // Whole groups while the budget is not yet reached: the last one may overshoot it by at
        // most group - 1 heads (a budget of 0 takes nothing).
        for (const KvGroup& g : groups) {
            if (static_cast<int>(sel.retrieval.size()) >= sel.budget) break;
            for (int h = g.kv * group; h < (g.kv + 1) * group; ++h)
                sel.retrieval.push_back({g.layer, h});
        }
    }
    std::sort(sel.retrieval.begin(), sel.retrieval.end(), [](const HeadId& a, const HeadId& b) {
        return a.layer != b.layer ? a.layer < b.layer : a.head < b.head;
    });
    sel.n_local_kv_heads = count_local_kv_heads(sel.retrieval, n_layer, n_head, n_head_kv);
    return sel;
}

}  // namespace purbo
