#include "train/stage1.h"

#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "backend/cpu/blas-threads.h"
#include "core/log.h"
#include "core/progress.h"
#include "core/timer.h"
#include "sparse/attention-record.h"
#include "sparse/indexer-init.h"
#include "train/adamw.h"
#include "train/grad-clip.h"
#include "train/indexer-loss.h"
#include "train/schedule.h"
#include "train/stage1-checkpoint.h"

namespace purbo {
namespace {

Status check_adapter(const Adapter& a, const ModelConfig& c) {
    if (a.n_layer != c.n_layer || a.n_head != c.n_head || a.n_head_kv != c.n_head_kv ||
        a.head_dim != c.head_dim)
        return error(StatusCode::kInvalidArgument,
                     "stage 1: the adapter is for {} layers x {} heads ({} KV, dim {}), the model "
                     "has {} x {} ({} KV, dim {})",
                     a.n_layer, a.n_head, a.n_head_kv, a.head_dim, c.n_layer, c.n_head, c.n_head_kv,
                     c.head_dim);
    if (a.retrieval.empty())
        return error(StatusCode::kInvalidArgument, "stage 1: the adapter has no retrieval heads");
    for (size_t i = 0; i < a.retrieval.size(); ++i) {
        const HeadId h = a.retrieval[i];
        const bool ascending =
            i == 0 || a.retrieval[i - 1].layer < h.layer ||
            (a.retrieval[i - 1].layer == h.layer && a.retrieval[i - 1].head < h.head);
        if (h.layer < 0 || h.layer >= c.n_layer || h.head < 0 || h.head >= c.n_head || !ascending)
            return error(
                StatusCode::kInvalidArgument,
                "stage 1: retrieval head {} (layer {}, head {}) is out of range or out of order", i,
                h.layer, h.head);
    }
    const int r = a.settings.rank;
    if (r < 1 || r > c.head_dim)
        return error(StatusCode::kInvalidArgument, "stage 1: rank {} is not in [1, {}]", r,
                     c.head_dim);
    if (a.has_indexer()) {
        const int64_t n = static_cast<int64_t>(a.retrieval.size());
        for (const Tensor* t : {&a.wq, &a.wk}) {
            if (t->dtype != DType::kF32 || t->ndim != 3 || t->dim(0) != n || t->dim(1) != r ||
                t->dim(2) != c.head_dim)
                return error(StatusCode::kInvalidArgument,
                             "stage 1: indexer tensor is {}, expected f32 ({}, {}, {})",
                             t->describe(), n, r, c.head_dim);
        }
    }
    return Status::ok();
}

// A writable copy (the adapter's tensors may be views of a read-only mapping).
Tensor owned_copy(const Tensor& t, const char* name) {
    Tensor c = tensor_cpu(
        DType::kF32, std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)), name);
    std::copy_n(t.f32(), t.numel(), c.f32());
    return c;
}

Result<std::vector<int32_t>> step_tokens(const TokenProvider& provider, int step,
                                         const Stage1Options& o, const Session& session) {
    Result<std::vector<int32_t>> tokens = provider(step);
    if (!tokens.is_ok())
        return tokens.status().with_context(fmt::format("stage 1: sequence of step {}", step));
    if (o.seq_len > 0 && tokens->size() > static_cast<size_t>(o.seq_len))
        tokens->resize(static_cast<size_t>(o.seq_len));
    const size_t min_tokens = static_cast<size_t>(std::max(o.min_position, 1)) + 1;
    if (tokens->size() < min_tokens)
        return error(StatusCode::kInvalidArgument,
                     "stage 1: the sequence of step {} has {} tokens, at least {} needed", step,
                     tokens->size(), min_tokens);
    if (tokens->size() > static_cast<size_t>(session.n_ctx()))
        return error(
            StatusCode::kInvalidArgument,
            "stage 1: the sequence of step {} has {} tokens, more than the session's context of {}",
            step, tokens->size(), session.n_ctx());
    return tokens;
}

Status initialise(Adapter& adapter, const AttentionRecord& first_record, const Stage1Options& o) {
    if (o.init == IndexerInit::kSvd) return adapter_init_indexer(adapter, first_record);
    const int r = adapter.settings.rank, d = adapter.head_dim;
    const int64_t n = static_cast<int64_t>(adapter.retrieval.size());
    adapter.wq = tensor_cpu(DType::kF32, {n, r, d}, "wq");
    adapter.wk = tensor_cpu(DType::kF32, {n, r, d}, "wk");
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int64_t i = 0; i < n; ++i) {
        const HeadIndexerInit init =
            indexer_init_random(r, d, scale, o.seed + static_cast<uint64_t>(i));
        std::copy(init.wq.begin(), init.wq.end(), adapter.wq.f32() + i * r * d);
        std::copy(init.wk.begin(), init.wk.end(), adapter.wk.f32() + i * r * d);
    }
    return Status::ok();
}

// The records of the last `capacity` sequences, most recent last.
class RecordCache {
  public:
    explicit RecordCache(int capacity) : capacity_(static_cast<size_t>(std::max(capacity, 0))) {}

    Result<std::shared_ptr<const AttentionRecord>> get(Session& session, const Adapter& adapter,
                                                       const std::vector<int32_t>& tokens) {
        for (size_t i = 0; i < entries_.size(); ++i) {
            if (entries_[i].first == tokens) {
                std::rotate(entries_.begin() + static_cast<int64_t>(i),
                            entries_.begin() + static_cast<int64_t>(i) + 1, entries_.end());
                return entries_.back().second;
            }
        }
        PURBO_ASSIGN_OR_RETURN(AttentionRecord record, stage1_record(session, adapter, tokens));
        auto shared = std::make_shared<const AttentionRecord>(std::move(record));
        if (capacity_ > 0) {
            if (entries_.size() == capacity_) entries_.erase(entries_.begin());
            entries_.emplace_back(tokens, shared);
        }
        return shared;
    }

  private:
    size_t capacity_;
    std::vector<std::pair<std::vector<int32_t>, std::shared_ptr<const AttentionRecord>>> entries_;
};

// The CSV log: a fresh file with a header, or on resume the existing rows of steps before
// `first_step` (rows a crashed run wrote after its last checkpoint are dropped).
Result<FILE*> open_log(const std::string& path, int first_step) {
    static constexpr const char* kHeader =
        "step,lr,loss,grad_norm,recall,set_recall,teacher_mass,seconds\n";
    std::string kept = kHeader;
    if (first_step > 0) {
        std::ifstream in(path);
        std::string line;
        bool header = true;
        while (std::getline(in, line)) {
            if (header) {
                header = false;
                continue;
            }
            int step = -1;
            if (std::sscanf(line.c_str(), "%d,", &step) == 1 && step < first_step)
                kept += line + "\n";
        }
    }
    FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr) return error(StatusCode::kIoError, "stage 1: cannot write the log {}", path);
    std::fputs(kept.c_str(), f);
    std::fflush(f);
    return f;
}

void log_row(FILE* f, const Stage1StepStats& s) {
    if (f == nullptr) return;
    std::fprintf(f, "%d,%.6g,%.6f,%.6f,%.5f,%.5f,%.5f,%.3f\n", s.step, static_cast<double>(s.lr),
                 s.loss, s.grad_norm, s.metrics.mass_recall(), s.metrics.set_recall(),
                 s.metrics.teacher_mass(), s.seconds);
    std::fflush(f);
}

std::span<float> span_of(const Tensor& t) {
    return {t.f32(), static_cast<size_t>(t.numel())};
}

}  // namespace

Result<AttentionRecord> stage1_record(Session& session, const Adapter& adapter,
                                      std::span<const int32_t> tokens) {
    PURBO_TRY(check_adapter(adapter, session.forward().config()));
    PURBO_ASSIGN_OR_RETURN(AttentionRecord record, record_attention(session, tokens));
    std::vector<bool> wanted(static_cast<size_t>(adapter.n_layer), false);
    for (const HeadId& h : adapter.retrieval) wanted[static_cast<size_t>(h.layer)] = true;
    for (size_t il = 0; il < wanted.size(); ++il) {
        if (wanted[il]) continue;
        record.q_pre[il] = record.k_pre[il] = record.q_post[il] = record.k_post[il] = Tensor{};
    }
    return record;
}

Result<Stage1StepStats> stage1_evaluate(Session& session, const Adapter& adapter,
                                        std::span<const int32_t> tokens,
                                        const Stage1Options& options) {
    PURBO_ASSIGN_OR_RETURN(const AttentionRecord record, stage1_record(session, adapter, tokens));
    return stage1_evaluate(record, adapter, options);
}

Result<Stage1StepStats> stage1_evaluate(const AttentionRecord& record, const Adapter& adapter,
                                        const Stage1Options& o, std::vector<float>* grad_wq,
                                        std::vector<float>* grad_wk) {
    if (!adapter.has_indexer())
        return error(StatusCode::kInvalidArgument, "stage 1: the adapter has no indexer");
    if (record.q_pre.size() != static_cast<size_t>(adapter.n_layer))
        return error(StatusCode::kInvalidArgument,
                     "stage 1: the record has {} layers, the adapter {}", record.q_pre.size(),
                     adapter.n_layer);
    for (const HeadId& h : adapter.retrieval) {
        const size_t il = static_cast<size_t>(h.layer);
        if (record.q_pre[il].empty() || record.k_pre[il].empty() || record.q_post[il].empty() ||
            record.k_post[il].empty())
            return error(StatusCode::kInvalidArgument, "stage 1: the record lacks layer {}",
                         h.layer);
    }
    const int r = adapter.settings.rank, d = adapter.head_dim;
    const int n_ret = static_cast<int>(adapter.retrieval.size());
    const size_t head_size = static_cast<size_t>(r * d);
    IndexerLossOptions lo;
    lo.min_position = o.min_position;
    lo.query_chunk = o.query_chunk;
    lo.metric_stride = o.metric_stride;
    lo.top_p = adapter.settings.top_p;

    std::vector<std::optional<Result<IndexerLossResult>>> results(static_cast<size_t>(n_ret));
    const auto run_head = [&](int i) {
        const HeadId h = adapter.retrieval[static_cast<size_t>(i)];
        const std::span<const float> wq(adapter.wq.f32() + i * head_size, head_size);
        const std::span<const float> wk(adapter.wk.f32() + i * head_size, head_size);
        const HeadInputs in = head_inputs(record, h.layer, h.head, adapter.n_head / adapter.n_head_kv);
        results[static_cast<size_t>(i)] =
            o.loss_device ? o.loss_device->run(in, wq, wk, r, lo) : indexer_loss(in, wq, wk, r, lo);
    };
    // Heads in parallel (one BLAS thread each) when there are enough of them to fill the
    // cores; otherwise one at a time, each using every core. Either way the result only
    // depends on the thread count, so a resumed run repeats a straight one. A device runs
    // one head at a time (deterministic too).
    if (o.loss_device == nullptr && n_ret >= omp_get_max_threads()) {
        ScopedBlasThreads blas(1);
#pragma omp parallel for schedule(dynamic, 1)
        for (int i = 0; i < n_ret; ++i) run_head(i);
    } else {
        for (int i = 0; i < n_ret; ++i) run_head(i);
    }

    Stage1StepStats stats;
    if (grad_wq != nullptr) grad_wq->resize(head_size * static_cast<size_t>(n_ret));
    if (grad_wk != nullptr) grad_wk->resize(head_size * static_cast<size_t>(n_ret));
    for (int i = 0; i < n_ret; ++i) {
        const Result<IndexerLossResult>& res = *results[static_cast<size_t>(i)];
        const HeadId h = adapter.retrieval[static_cast<size_t>(i)];
        if (!res.is_ok())
            return res.status().with_context(fmt::format("layer {} head {}", h.layer, h.head));
        stats.loss += res->loss / n_ret;
        stats.metrics.merge(res->metrics);
        if (grad_wq != nullptr)
            std::copy(res->dwq.begin(), res->dwq.end(),
                      grad_wq->begin() + static_cast<int64_t>(i * head_size));
        if (grad_wk != nullptr)
            std::copy(res->dwk.begin(), res->dwk.end(),
                      grad_wk->begin() + static_cast<int64_t>(i * head_size));
    }
    return stats;
}

Result<Stage1Summary> stage1_train(Session& session, Adapter& adapter,
                                   const TokenProvider& provider, const Stage1Options& o) {
    const double start_ms = time_now_ms();
    PURBO_TRY(check_adapter(adapter, session.forward().config()));
    if (o.steps < 1) return error(StatusCode::kInvalidArgument, "stage 1: {} steps", o.steps);
    if (o.checkpoint_every < 1)
        return error(StatusCode::kInvalidArgument, "stage 1: checkpoint every {} steps",
                     o.checkpoint_every);

    Stage1Summary summary;
    summary.steps = o.steps;
    AdamWMoments wq_moments, wk_moments;
    int first_step = 0;
    bool eval_initial_known = true;  // false when resumed from a checkpoint without it
    const bool resuming =
        o.resume && !o.checkpoint.empty() && std::filesystem::exists(o.checkpoint);
    if (resuming) {
        PURBO_ASSIGN_OR_RETURN(Stage1Checkpoint c, stage1_checkpoint_load(o.checkpoint));
        if (c.retrieval != adapter.retrieval || c.wq.dim(1) != adapter.settings.rank ||
            c.wq.dim(2) != adapter.head_dim)
            return error(
                StatusCode::kInvalidArgument,
                "stage 1: checkpoint {} has other retrieval heads or rank than the adapter",
                o.checkpoint);
        if (c.total_steps != o.steps || c.warmup_steps != o.warmup || c.lr != o.lr)
            PURBO_LOG_WARN(
                "stage 1: checkpoint {} was written with {} steps, warmup {}, lr {}; resuming with "
                "{}, {}, {}",
                o.checkpoint, c.total_steps, c.warmup_steps, c.lr, o.steps, o.warmup, o.lr);
        first_step = static_cast<int>(c.step);
        adapter.wq = std::move(c.wq);
        adapter.wk = std::move(c.wk);
        wq_moments = std::move(c.wq_moments);
        wk_moments = std::move(c.wk_moments);
        summary.initial = c.initial;
        summary.eval_initial = c.eval_initial;
        eval_initial_known = c.has_eval_initial;
        if (!o.eval_tokens.empty() && !c.has_eval_initial)
            PURBO_LOG_WARN(
                "stage 1: checkpoint {} has no held-out measure of the untrained indexer",
                o.checkpoint);
        PURBO_LOG_INFO("stage 1: resuming from {} at step {}", o.checkpoint, first_step);
    } else if (o.resume) {
        PURBO_LOG_INFO("stage 1: no checkpoint at '{}', starting from step 0", o.checkpoint);
    }
    summary.first_step = first_step;

    // Step 0's sequence initialises the indexer and measures it before and after training;
    // its record stays cached when the cache has room.
    RecordCache records(o.record_cache);
    PURBO_ASSIGN_OR_RETURN(const std::vector<int32_t> first_tokens,
                           step_tokens(provider, 0, o, session));
    std::shared_ptr<const AttentionRecord> first_record;
    if (!adapter.has_indexer()) {
        PURBO_ASSIGN_OR_RETURN(first_record, records.get(session, adapter, first_tokens));
        PURBO_TRY(initialise(adapter, *first_record, o));
    } else if (!resuming) {
        adapter.wq = owned_copy(adapter.wq, "wq");
        adapter.wk = owned_copy(adapter.wk, "wk");
    }
    // The held-out sequence, measured now (unless resumed: the checkpoint has that measure) and
    // after training.
    std::vector<int32_t> eval_tokens = o.eval_tokens;
    if (o.seq_len > 0 && eval_tokens.size() > static_cast<size_t>(o.seq_len))
        eval_tokens.resize(static_cast<size_t>(o.seq_len));
    const auto evaluate_held_out = [&]() -> Result<IndexerMetrics> {
        PURBO_ASSIGN_OR_RETURN(const AttentionRecord record,
                               stage1_record(session, adapter, eval_tokens));
        Result<Stage1StepStats> stats = stage1_evaluate(record, adapter, o);
        if (!stats.is_ok()) return stats.status().with_context("stage 1: held-out evaluation");
        return stats->metrics;
    };
    summary.has_eval = !eval_tokens.empty();
    if (summary.has_eval && eval_tokens.size() > static_cast<size_t>(session.n_ctx()))
        return error(StatusCode::kInvalidArgument,
                     "stage 1: the held-out sequence has {} tokens, more than the session's "
                     "context of {}",
                     eval_tokens.size(), session.n_ctx());
    if (summary.has_eval && !resuming) {
        PURBO_ASSIGN_OR_RETURN(summary.eval_initial, evaluate_held_out());
    }

    wq_moments.m.resize(static_cast<size_t>(adapter.wq.numel()));  // no-op when resumed
    wq_moments.v.resize(static_cast<size_t>(adapter.wq.numel()));
    wk_moments.m.resize(static_cast<size_t>(adapter.wk.numel()));
    wk_moments.v.resize(static_cast<size_t>(adapter.wk.numel()));

    FILE* log_file = nullptr;
    if (!o.log_csv.empty()) {
        PURBO_ASSIGN_OR_RETURN(log_file, open_log(o.log_csv, first_step));
    }
    struct CloseLog {
        FILE* f;
        ~CloseLog() {
            if (f != nullptr) std::fclose(f);
        }
    } close_log{log_file};

    const LrSchedule schedule{o.lr, o.warmup, o.steps, o.min_lr_ratio};
    const AdamWOptions adamw{0.9f, 0.999f, 1e-8f, o.weight_decay};
    std::optional<ProgressLine> progress;
    if (o.progress) progress.emplace("stage 1", o.steps, first_step);
    const auto save_checkpoint = [&](int done) -> Status {
        Stage1Checkpoint c;
        c.step = done;
        c.retrieval = adapter.retrieval;
        c.wq = adapter.wq;
        c.wk = adapter.wk;
        c.wq_moments = wq_moments;
        c.wk_moments = wk_moments;
        c.total_steps = o.steps;
        c.warmup_steps = o.warmup;
        c.lr = o.lr;
        c.initial = summary.initial;
        c.has_eval_initial = summary.has_eval && eval_initial_known;
        c.eval_initial = summary.eval_initial;
        return stage1_checkpoint_save(o.checkpoint, c);
    };

    const int end_step = o.stop_after > 0 ? std::min(o.steps, first_step + o.stop_after) : o.steps;
    std::vector<float> grad_wq, grad_wk;
    for (int step = first_step; step < end_step; ++step) {
        const double step_ms = time_now_ms();
        std::shared_ptr<const AttentionRecord> record;
        if (step == 0 && first_record) {
            record = std::move(first_record);  // the init's record, not kept beyond the cache
        } else {
            PURBO_ASSIGN_OR_RETURN(const std::vector<int32_t> tokens,
                                   step == 0 ? Result<std::vector<int32_t>>(first_tokens)
                                             : step_tokens(provider, step, o, session));
            PURBO_ASSIGN_OR_RETURN(record, records.get(session, adapter, tokens));
        }
        Result<Stage1StepStats> stats = stage1_evaluate(*record, adapter, o, &grad_wq, &grad_wk);
        record.reset();
        if (!stats.is_ok())
            return stats.status().with_context(fmt::format("stage 1 step {}", step));
        if (step == 0) summary.initial = stats->metrics;

        // Heads share no parameters: each head's gradient is that of its own mean KL, i.e. the
        // objective is the sum over heads (a mean would shrink every head's step as heads are
        // added); the logged loss is the mean over heads, comparable across head counts.
        const std::span<float> grads[] = {grad_wq, grad_wk};
        stats->grad_norm = grad_clip_global_norm(grads, o.clip);
        if (!std::isfinite(stats->grad_norm) || !std::isfinite(stats->loss))
            return error(StatusCode::kInternal,
                         "stage 1 step {}: loss {} and gradient norm {} are not finite", step,
                         stats->loss, stats->grad_norm);
        stats->step = step;
        stats->lr = schedule.at(step);
        adamw_update(span_of(adapter.wq), grad_wq, wq_moments, step + 1, stats->lr, adamw);
        adamw_update(span_of(adapter.wk), grad_wk, wk_moments, step + 1, stats->lr, adamw);
        stats->seconds = (time_now_ms() - step_ms) * 1e-3;
        log_row(log_file, *stats);
        summary.last = *stats;
        if (progress)
            progress->update(
                step + 1, fmt::format("loss {:.4f} recall {:.3f} |g| {:.3g} lr {:.2e}", stats->loss,
                                      stats->metrics.mass_recall(), stats->grad_norm, stats->lr));
        const int done = step + 1;
        if (!o.checkpoint.empty() && (done % o.checkpoint_every == 0 || done == end_step))
            PURBO_TRY(save_checkpoint(done));
    }
    if (progress) progress->finish();

    if (o.final_eval) {
        PURBO_ASSIGN_OR_RETURN(const std::shared_ptr<const AttentionRecord> record,
                               records.get(session, adapter, first_tokens));
        Result<Stage1StepStats> final_stats = stage1_evaluate(*record, adapter, o);
        if (!final_stats.is_ok())
            return final_stats.status().with_context("stage 1: final evaluation");
        summary.final = final_stats->metrics;
    }
    if (summary.has_eval) {
        PURBO_ASSIGN_OR_RETURN(summary.eval_final, evaluate_held_out());
    }
    summary.seconds = (time_now_ms() - start_ms) * 1e-3;
    // The provenance the adapter keeps: the held-out measure when there is one.
    const bool held_out = summary.has_eval && eval_initial_known;
    const IndexerMetrics& before = held_out ? summary.eval_initial : summary.initial;
    const IndexerMetrics& after =
        held_out ? summary.eval_final : (o.final_eval ? summary.final : summary.last.metrics);
    adapter.training_info = fmt::format(
        "stage 1: {} steps x {} tokens, lr {} (warmup {}, cosine), weight decay {}, clip {}; "
        "{}: KL {:.4f} -> {:.4f}, top-{} recall {:.3f} -> {:.3f}",
        o.steps, first_tokens.size(), o.lr, o.warmup, o.weight_decay, o.clip,
        held_out ? "held-out" : "first sequence", before.kl(), after.kl(), adapter.settings.top_p,
        before.mass_recall(), after.mass_recall());
    return summary;
}

}  // namespace purbo
