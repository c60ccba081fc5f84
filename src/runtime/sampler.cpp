#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace purbo {

int32_t sample_greedy(std::span<const float> logits) {
    int32_t best = 0;
    for (size_t i = 1; i < logits.size(); ++i) {
        if (logits[i] > logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(i);
    }
    return best;
}

int32_t Sampler::sample(std::span<const float> logits) {
    if (params_.temperature <= 0.0f || logits.size() <= 1) return sample_greedy(logits);

    // 1. top-k: keep the k largest logits (partial sort keeps this O(n log k)).
    cand_.clear();
    cand_.reserve(logits.size());
    for (size_t i = 0; i < logits.size(); ++i) {
        if (logits[i] > -INFINITY) cand_.push_back({static_cast<int32_t>(i), logits[i], 0.0f});
    }
    if (cand_.empty()) return 0;
    auto by_logit = [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    size_t keep = cand_.size();
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) keep = static_cast<size_t>(params_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(keep), cand_.end(), by_logit);
    cand_.resize(keep);

    // Probabilities at temperature 1 for the truncation rules.
    auto softmax = [&](float temperature) {
        const float max_logit = cand_.front().logit;
        double sum = 0;
        for (Candidate& c : cand_) {
            c.p = std::exp((c.logit - max_logit) / temperature);
            sum += c.p;
        }
        for (Candidate& c : cand_) c.p = static_cast<float>(c.p / sum);
    };
    softmax(1.0f);

    // 2. top-p: the smallest prefix whose mass reaches top_p.
    if (params_.top_p < 1.0f) {
        double cum = 0;
        size_t n = 0;
        while (n < cand_.size()) {
            cum += cand_[n].p;
            ++n;
            if (cum >= params_.top_p) break;
        }
        cand_.resize(std::max<size_t>(n, 1));
    }
    // 3. min-p: drop tokens less likely than min_p times the most likely one.
    if (params_.min_p > 0.0f) {
        const float threshold = params_.min_p * cand_.front().p;
        size_t n = 1;
        while (n < cand_.size() && cand_[n].p >= threshold) ++n;
        cand_.resize(n);
    }
    // 4. temperature, then draw.
    softmax(params_.temperature);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const double u = uniform(rng_);
    double cum = 0;
    for (const Candidate& c : cand_) {
        cum += c.p;
        if (u < cum) return c.id;
    }
    return cand_.back().id;
}

}  // namespace purbo
