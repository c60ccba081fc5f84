#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "core/timer.h"

namespace purbo {

double PerplexityResult::perplexity() const {
    return n_scored ? std::exp(mean_nll()) : 0;
}

void log_softmax(std::span<const float> logits, std::span<float> out) {
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
    const double log_sum = std::log(sum);
    for (size_t v = 0; v < logits.size(); ++v)
        out[v] = static_cast<float>(static_cast<double>(logits[v]) - max_logit - log_sum);
}

double kl_divergence(std::span<const float> log_p, std::span<const float> log_q) {
    double kl = 0;
    for (size_t v = 0; v < log_p.size(); ++v) {
        const double lp = log_p[v];
        // exp(lp) underflows to 0 for lp < -745: such tokens add nothing (p log p -> 0).
        kl += std::exp(lp) * (lp - static_cast<double>(log_q[v]));
    }
    return kl;
}

Result<PerplexityResult> perplexity_evaluate(Session& session,
                                             std::span<const TokenSequence> sequences,
                                             const PerplexityOptions& options,
                                             const ReferenceLogProbs* reference,
                                             ReferenceLogProbs* record,
                                             const PerplexityProgress& progress) {
    const int n_vocab = session.n_vocab();
    if (options.n_prefix < 1)
        return error(StatusCode::kInvalidArgument, "perplexity: prefix of {} tokens (at least 1)",
                     options.n_prefix);
    if (reference != nullptr && record != nullptr && reference == record)
        return error(StatusCode::kInvalidArgument,
                     "perplexity: the reference and the record are the same object");
    if (reference != nullptr &&
        (reference->n_vocab != n_vocab || reference->sequences.size() != sequences.size()))
        return error(StatusCode::kInvalidArgument,
                     "perplexity: reference of {} sequences x {} vocabulary, evaluating {} x {}",
                     reference->sequences.size(), reference->n_vocab, sequences.size(), n_vocab);
    for (size_t s = 0; s < sequences.size(); ++s) {
        const int64_t n = static_cast<int64_t>(sequences[s].tokens.size());
        if (n <= options.n_prefix || n > session.n_ctx())
            return error(StatusCode::kInvalidArgument,
                         "perplexity: sequence {} ({}) has {} tokens; it needs more than the "
                         "prefix of {} and at "
                         "most the context of {}",
                         s, sequences[s].name, n, options.n_prefix, session.n_ctx());
        for (int32_t id : sequences[s].tokens)
            if (id < 0 || id >= n_vocab)
                return error(
                    StatusCode::kInvalidArgument,
                    "perplexity: sequence {} ({}) holds token {} outside the vocabulary of {}", s,
                    sequences[s].name, id, n_vocab);
        const int64_t n_scored = n - options.n_prefix;
        if (reference != nullptr &&
            reference->sequences[s].size() != static_cast<size_t>(n_scored * n_vocab))
            return error(StatusCode::kInvalidArgument,
                         "perplexity: reference of sequence {} holds {} values, not {} x {}", s,
                         reference->sequences[s].size(), n_scored, n_vocab);
    }
    if (record != nullptr) {
        record->n_vocab = n_vocab;
        record->sequences.assign(sequences.size(), {});
    }
    auto* sparse = dynamic_cast<SparsePolicy*>(session.policy());
    if (sparse != nullptr) sparse->reset_stats();

    PerplexityResult result;
    result.has_kl = reference != nullptr;
    const double t0 = time_now_ms();
    std::vector<float> logits;                               // (n_vocab,)
    std::vector<float> log_q(static_cast<size_t>(n_vocab));  // (n_vocab,)
    for (size_t s = 0; s < sequences.size(); ++s) {
        const std::span<const int32_t> tokens(sequences[s].tokens);
        const int n_scored = static_cast<int>(tokens.size()) - options.n_prefix;
        if (record != nullptr) record->sequences[s].resize(static_cast<size_t>(n_scored) * n_vocab);
        session.clear(0);
        PURBO_TRY(session.prefill(0, tokens.first(static_cast<size_t>(options.n_prefix)), logits));
        for (int k = 0; k < n_scored; ++k) {
            const size_t t = static_cast<size_t>(options.n_prefix + k);  // the token scored
            if (k > 0) {
                const DecodeItem item{0, tokens[t - 1]};
                PURBO_TRY(session.decode({&item, 1}, logits));
            }
            log_softmax(logits, log_q);
            result.nll_sum -= log_q[static_cast<size_t>(tokens[t])];
            if (reference != nullptr) {
                const float* p = reference->sequences[s].data() + static_cast<size_t>(k) * n_vocab;
                result.kl_sum += kl_divergence({p, static_cast<size_t>(n_vocab)}, log_q);
            }
            if (record != nullptr)
                std::copy(log_q.begin(), log_q.end(),
                          record->sequences[s].begin() + static_cast<size_t>(k) * n_vocab);
            if (progress) progress(static_cast<int>(s), k + 1, n_scored);
        }
        result.n_scored += n_scored;
    }
    session.clear(0);
    result.seconds = (time_now_ms() - t0) / 1e3;
    if (sparse != nullptr) result.sparsity = sparse->stats();
    return result;
}

}  // namespace purbo
