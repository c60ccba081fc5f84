// Token sampling from logits: greedy, or top-k -> top-p -> min-p -> temperature -> draw,
// the order llama.cpp's default chain uses. Deterministic for a given seed.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace purbo {

struct SamplerParams {
    float temperature = 0.8f;  // <= 0: greedy (argmax)
    int top_k = 40;            // <= 0: off
    float top_p = 0.95f;       // >= 1: off
    float min_p = 0.05f;       // <= 0: off; keeps tokens with p >= min_p * p_max
    uint64_t seed = 0xC0FFEE;
};

class Sampler {
public:
    explicit Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {}

    // Picks a token id from logits (n_vocab,). Never returns a token with -inf logit unless
    // every logit is -inf (then argmax = 0).
    int32_t sample(std::span<const float> logits);

    const SamplerParams& params() const { return params_; }

private:
    struct Candidate {
        int32_t id;
        float logit;
        float p;
    };
    SamplerParams params_;
    std::mt19937_64 rng_;
    std::vector<Candidate> cand_;  // reused between calls
};

// Index of the largest logit; ties go to the lowest id (as torch.argmax).
int32_t sample_greedy(std::span<const float> logits);

}  // namespace purbo
