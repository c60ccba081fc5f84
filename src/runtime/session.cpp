#include "runtime/session.h"

#include <numeric>

#include "core/timer.h"

namespace purbo {

Result<std::unique_ptr<Session>> Session::create(const ModelConfig& config, const ModelWeights& weights,
                                                 const SessionOptions& options,
                                                 const AttentionPolicyFactory& policy) {
    if (options.n_ctx <= 0 || options.n_batch <= 0 || options.n_seq <= 0) {
        return error(StatusCode::kInvalidArgument, "session: n_ctx {}, n_batch {} and n_seq {} must be positive",
                     options.n_ctx, options.n_batch, options.n_seq);
    }
    std::unique_ptr<Session> s(new Session());
    s->options_ = options;
    BackendOptions backend_options;
    backend_options.n_threads = options.n_threads;
    backend_options.gemv_activations = options.gemv_activations;
    backend_options.step_graphs = options.step_graphs;
    PURBO_ASSIGN_OR_RETURN(s->backend_, backend_create(options.backend, backend_options));
    ForwardOptions forward_options;
    forward_options.max_batch = std::max(options.n_batch, options.n_seq);
    PURBO_ASSIGN_OR_RETURN(s->forward_, Forward::create(*s->backend_, config, weights, forward_options));
    KvLayout layout;
    if (policy) {
        PURBO_ASSIGN_OR_RETURN(s->policy_, policy(*s->backend_, config, options, forward_options.max_batch));
        s->forward_->set_policy(s->policy_.get());
        layout = s->policy_->kv_layout();
    }
    PURBO_ASSIGN_OR_RETURN(s->cache_, kv_cache_create(*s->backend_, config, options.n_seq, options.n_ctx, layout,
                                                      forward_options.max_batch, options.cache_type));
    s->lengths_.assign(static_cast<size_t>(options.n_seq), 0);
    return s;
}

void Session::clear(int seq) { lengths_.at(static_cast<size_t>(seq)) = 0; }

Status Session::check_room(int seq, size_t n_new) const {
    if (seq < 0 || seq >= options_.n_seq) {
        return error(StatusCode::kInvalidArgument, "session: sequence slot {} (have {})", seq, options_.n_seq);
    }
    const size_t len = static_cast<size_t>(lengths_[static_cast<size_t>(seq)]);
    if (len + n_new > static_cast<size_t>(options_.n_ctx)) {
        return error(StatusCode::kInvalidArgument,
                     "context full: {} tokens in the sequence + {} new exceed the context size {} (raise -c)", len,
                     n_new, options_.n_ctx);
    }
    return Status::ok();
}

Status Session::run_sequence(int seq, std::span<const int32_t> tokens, bool all_rows, std::vector<float>& logits) {
    if (tokens.empty()) return error(StatusCode::kInvalidArgument, "session: no tokens to evaluate");
    PURBO_TRY(check_room(seq, tokens.size()));
    const int n_vocab = forward_->config().n_vocab;
    const size_t n_batch = static_cast<size_t>(forward_->max_batch());
    logits.assign((all_rows ? tokens.size() : 1) * static_cast<size_t>(n_vocab), 0.0f);
    std::vector<int32_t> seq_ids, pos, rows;
    for (size_t begin = 0; begin < tokens.size(); begin += n_batch) {
        const size_t n = std::min(n_batch, tokens.size() - begin);
        const int start = lengths_[static_cast<size_t>(seq)];
        seq_ids.assign(n, seq);
        pos.resize(n);
        std::iota(pos.begin(), pos.end(), start);
        const bool last_chunk = begin + n == tokens.size();
        rows.clear();
        if (all_rows) {
            rows.resize(n);
            std::iota(rows.begin(), rows.end(), 0);
        } else if (last_chunk) {
            rows.push_back(static_cast<int32_t>(n - 1));
        }
        float* dst = logits.data() + (all_rows ? begin * static_cast<size_t>(n_vocab) : 0);
        const int64_t shape[] = {static_cast<int64_t>(rows.size()), n_vocab};
        const Tensor out = tensor_view(DType::kF32, shape, dst);
        ForwardBatch batch{tokens.subspan(begin, n), {seq_ids, pos}, rows};
        PURBO_TRY(forward_->run(batch, cache_, out));
        lengths_[static_cast<size_t>(seq)] += static_cast<int>(n);
    }
    return Status::ok();
}

Status Session::prefill(int seq, std::span<const int32_t> tokens, std::vector<float>& last_logits) {
    const double t0 = time_now_ms();
    PURBO_TRY(run_sequence(seq, tokens, false, last_logits));
    timings_.prompt_ms += time_now_ms() - t0;
    timings_.prompt_tokens += static_cast<int64_t>(tokens.size());
    return Status::ok();
}

Status Session::evaluate_all(int seq, std::span<const int32_t> tokens, std::vector<float>& logits) {
    const double t0 = time_now_ms();
    PURBO_TRY(run_sequence(seq, tokens, true, logits));
    timings_.prompt_ms += time_now_ms() - t0;
    timings_.prompt_tokens += static_cast<int64_t>(tokens.size());
    return Status::ok();
}

Status Session::decode(std::span<const DecodeItem> items, std::vector<float>& logits) {
    if (items.empty()) return error(StatusCode::kInvalidArgument, "session: empty decode step");
    if (items.size() > static_cast<size_t>(forward_->max_batch())) {
        return error(StatusCode::kInvalidArgument, "session: decode step of {} sequences exceeds the batch size {}",
                     items.size(), forward_->max_batch());
    }
    const double t0 = time_now_ms();
    std::vector<int32_t> tokens, seq_ids, pos, rows;
    for (size_t i = 0; i < items.size(); ++i) {
        PURBO_TRY(check_room(items[i].seq, 1));
        for (size_t j = 0; j < i; ++j) {
            if (items[j].seq == items[i].seq) {
                return error(StatusCode::kInvalidArgument, "session: sequence slot {} appears twice in one decode step",
                             items[i].seq);
            }
        }
        tokens.push_back(items[i].token);
        seq_ids.push_back(items[i].seq);
        pos.push_back(lengths_[static_cast<size_t>(items[i].seq)]);
        rows.push_back(static_cast<int32_t>(i));
    }
    const int n_vocab = forward_->config().n_vocab;
    logits.assign(items.size() * static_cast<size_t>(n_vocab), 0.0f);
    const int64_t shape[] = {static_cast<int64_t>(items.size()), n_vocab};
    ForwardBatch batch{tokens, {seq_ids, pos}, rows};
    PURBO_TRY(forward_->run(batch, cache_, tensor_view(DType::kF32, shape, logits.data())));
    for (const DecodeItem& item : items) lengths_[static_cast<size_t>(item.seq)] += 1;
    timings_.eval_ms += time_now_ms() - t0;
    timings_.eval_tokens += static_cast<int64_t>(items.size());
    return Status::ok();
}

}  // namespace purbo
