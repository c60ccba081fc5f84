// A session runs one model on one backend with a KV cache of n_seq sequence slots.
// It splits long prompts into micro-batches (chunked prefill), tracks each slot's length
// and keeps llama.cpp-style timings.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/kv-cache.h"

namespace purbo {

struct SessionOptions {
    std::string backend = "cpu";  // cpu | cpu-ref | cuda
    int n_threads = 0;            // 0 = all cores
    int n_ctx = 4096;             // tokens per sequence slot
    int n_batch = 512;            // micro-batch size for prefill
    int n_seq = 1;                // sequence slots
    // cpu backend decode GEMV: exact fp32 (default) or q8 activations (llama.cpp's numerics).
    ActivationPrecision gemv_activations = ActivationPrecision::kF32;
    // KV cache element type; nullopt = the backend's preferred one (f32 on CPU, bf16 on cuda).
    std::optional<DType> cache_type;
    // cuda: decode steps replayed as CUDA graphs (BackendOptions::step_graphs).
    bool step_graphs = true;
};

struct SessionTimings {
    double prompt_ms = 0;
    int64_t prompt_tokens = 0;
    double eval_ms = 0;
    int64_t eval_tokens = 0;
    void reset() { *this = SessionTimings{}; }
};

// One token of a batched decode step: sequence slot and the token appended to it.
struct DecodeItem {
    int seq;
    int32_t token;
};

// Makes the attention policy of a sparse model once the session's backend exists (the
// policy keeps state on it: indexer weights and cached index keys).
using AttentionPolicyFactory = std::function<Result<std::unique_ptr<AttentionPolicy>>(
    Backend& backend, const ModelConfig& config, const SessionOptions& options, int max_batch)>;

class Session {
public:
    // Without a policy factory every head attends densely.
    static Result<std::unique_ptr<Session>> create(const ModelConfig& config, const ModelWeights& weights,
                                                   const SessionOptions& options,
                                                   const AttentionPolicyFactory& policy = {});

    // Appends `tokens` to slot `seq` and returns the logits after the last one (n_vocab,).
    Status prefill(int seq, std::span<const int32_t> tokens, std::vector<float>& last_logits);
    // Appends one token to each listed slot in one forward pass; logits (items, n_vocab) row-major.
    Status decode(std::span<const DecodeItem> items, std::vector<float>& logits);
    // Logits after every token of `tokens` appended to slot `seq` (perplexity, tests): (n, n_vocab).
    Status evaluate_all(int seq, std::span<const int32_t> tokens, std::vector<float>& logits);

    void clear(int seq);
    int length(int seq) const { return lengths_.at(static_cast<size_t>(seq)); }
    int n_ctx() const { return options_.n_ctx; }
    int n_vocab() const { return forward_->config().n_vocab; }

    Forward& forward() { return *forward_; }
    Backend& backend() { return *backend_; }
    SessionTimings& timings() { return timings_; }
    AttentionPolicy* policy() { return policy_.get(); }
    const KvCache& cache() const { return cache_; }
    // The KV cache and what the attention policy keeps per position beside it (index keys).
    size_t kv_bytes() const { return cache_.nbytes() + (policy_ ? policy_->cache_bytes() : 0); }
    const SessionOptions& options() const { return options_; }

private:
    Session() = default;
    Status check_room(int seq, size_t n_new) const;
    // Runs tokens of one slot in micro-batches; logits for the rows selected by `all_rows`.
    Status run_sequence(int seq, std::span<const int32_t> tokens, bool all_rows, std::vector<float>& logits);

    SessionOptions options_;
    std::unique_ptr<Backend> backend_;
    std::unique_ptr<Forward> forward_;
    std::unique_ptr<AttentionPolicy> policy_;
    KvCache cache_;
    std::vector<int> lengths_;
    SessionTimings timings_;
};

}  // namespace purbo
