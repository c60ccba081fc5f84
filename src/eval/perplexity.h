// Perplexity on long held-out text and the KL divergence of a model from a reference (the
// dense model), token by token.
//
// Protocol, the same for every model compared (dense included): the first n_prefix tokens of a
// sequence are prefilled in one call; every later token is fed by its own decode step. Token t
// (n_prefix <= t < N) is scored by the logits after token t - 1: the prefill's last logits for
// t = n_prefix, then those of each decode step. Why decode steps and not one evaluate_all pass:
// a sparse model's retrieval heads attend densely in prefill (the paper) and select top-p
// blocks only in decode, so only decode steps measure the selection.
//
//   NLL_t = -log softmax(logits_{t-1})[x_t]         perplexity = exp(mean over scored t of NLL_t)
//   KL_t  = sum_v p_t(v) (log p_t(v) - log q_t(v))  p = reference, q = the model; mean over t
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/session.h"
#include "sparse/corpus.h"
#include "sparse/sparse-policy.h"

namespace purbo {

// A model's next-token log-probabilities at every scored token of every sequence: the
// reference distribution that later models are compared with. Sequence i holds
// (n_scored_i, n_vocab) floats: 4 bytes x 49152 per token for SmolLM2 (600 MB for 3072 tokens).
struct ReferenceLogProbs {
    int n_vocab = 0;
    std::vector<std::vector<float>> sequences;
};

struct PerplexityOptions {
    int n_prefix = 1024;  // tokens prefilled before the scored ones (>= 1)
};

struct PerplexityResult {
    int64_t n_scored = 0;  // tokens scored, over all sequences
    double nll_sum = 0;    // sum of NLL_t (nats)
    double kl_sum = 0;     // sum of KL_t (nats); 0 without a reference
    bool has_kl = false;
    double seconds = 0;
    SparsityStats sparsity;  // the decode steps (zero for a dense model)

    double mean_nll() const { return n_scored ? nll_sum / static_cast<double>(n_scored) : 0; }
    double perplexity() const;
    double mean_kl() const { return n_scored ? kl_sum / static_cast<double>(n_scored) : 0; }
};

// Called after each scored token: sequence index, tokens scored in it so far, its total.
using PerplexityProgress = std::function<void(int sequence, int scored, int total)>;

// Scores `sequences` (each longer than n_prefix and within the session's context) on slot 0 of
// `session`. With `reference` (from an earlier call on the same sequences and options), KL_t is
// summed; with `record`, this model's log-probabilities are stored there to serve as a
// reference. The two may not be the same object.
Result<PerplexityResult> perplexity_evaluate(Session& session,
                                             std::span<const TokenSequence> sequences,
                                             const PerplexityOptions& options,
                                             const ReferenceLogProbs* reference = nullptr,
                                             ReferenceLogProbs* record = nullptr,
                                             const PerplexityProgress& progress = {});

// log softmax(logits) in double, stored as floats: (n_vocab,) -> out (n_vocab,).
void log_softmax(std::span<const float> logits, std::span<float> out);
// sum_v exp(p[v]) (p[v] - q[v]) over two log-probability rows, in double.
double kl_divergence(std::span<const float> log_p, std::span<const float> log_q);

}  // namespace purbo
