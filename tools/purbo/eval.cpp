// purbo eval: long-context accuracy (passkey retrieval), perplexity and KL vs dense of the
// dense model and its sparse variants, as one table (src/eval).
//
// Variants, each a policy factory for Session::create:
//   dense   no policy;
//   sparse  the adapter: local heads window + sinks, retrieval heads top-p blocks in decode;
//   local   every head local (StreamingLLM): the adapter's window and sinks, no retrieval head;
//   topk    retrieval heads keep a fixed K blocks per decode step, K = the mean number the
//           sparse variant kept per retrieval head per step in the same task and length (the
//           same average budget: top-p against top-k, as in the paper's RULER comparison).
// They run in that order whatever --variants says (topk needs the sparse variant's counts, KL
// needs the dense log-probs); a variant that is needed but not asked for runs without a row.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>
#include <thread>

#include "common.h"
#include "core/mapped-file.h"
#include "core/timer.h"
#include "eval/eval-report.h"
#include "sparse/corpus.h"

namespace purbo::cli {
namespace {

struct EvalFlags {
    ModelFlags model;
    SparseFlags sparse;
    std::string tasks = "passkey,ppl";
    std::string variants;  // default: dense,sparse,local,topk with an adapter, dense,local without
    std::string lengths = "2K,4K,8K";
    int trials = 50;
    int seed = 0;
    bool chat = false;
    int ppl_ctx = 4096;
    int ppl_prefix = 1024;
    int ppl_seqs = 1;
    int window = SparseSettings{}.window;
    int sinks = SparseSettings{}.n_sink;
    std::string format = "md";
    std::string out;
};

constexpr StatusCode kBad = StatusCode::kInvalidArgument;
constexpr const char* kVariantOrder[] = {"dense", "sparse", "local", "topk"};

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream ss(text);
    for (std::string item; std::getline(ss, item, ',');) {
        if (!item.empty()) items.push_back(item);
    }
    return items;
}

// "2K" = 2048, "512" = 512.
Result<int> parse_length(const std::string& text) {
    std::string digits = text;
    int unit = 1;
    if (!digits.empty() && (digits.back() == 'K' || digits.back() == 'k')) {
        digits.pop_back();
        unit = 1024;
    }
    if (digits.empty() || digits.size() > 6 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return error(kBad, "--lengths: '{}' is not a token count (2048, 2K)", text);
    const int n = std::stoi(digits) * unit;
    if (n < 1) return error(kBad, "--lengths: '{}' is not a token count (2048, 2K)", text);
    return n;
}

struct Plan {
    bool passkey = false;
    bool ppl = false;
    std::vector<int> lengths;
    std::vector<std::string> shown;  // variants with a row, in kVariantOrder order
};

bool contains(const std::vector<std::string>& list, std::string_view item) {
    return std::find(list.begin(), list.end(), item) != list.end();
}

// Checks every flag that needs no model.
Result<Plan> check_flags(const EvalFlags& f) {
    Plan plan;
    const std::vector<std::string> tasks = split_list(f.tasks);
    if (tasks.empty()) return error(kBad, "--tasks: empty (passkey, ppl)");
    for (const std::string& t : tasks) {
        if (t == "passkey") {
            plan.passkey = true;
        } else if (t == "ppl") {
            plan.ppl = true;
        } else {
            return error(kBad, "--tasks: unknown task '{}' (passkey, ppl)", t);
        }
    }
    const std::vector<std::string> variants =
        split_list(!f.variants.empty()  ? f.variants
                   : f.sparse.enabled() ? "dense,sparse,local,topk"
                                        : "dense,local");
    if (variants.empty()) return error(kBad, "--variants: empty (dense, sparse, local, topk)");
    for (const std::string& v : variants) {
        if (!contains({std::begin(kVariantOrder), std::end(kVariantOrder)}, v))
            return error(kBad, "--variants: unknown variant '{}' (dense, sparse, local, topk)", v);
        if ((v == "sparse" || v == "topk") && !f.sparse.enabled())
            return error(kBad, "--variants: {} needs an adapter (--adapter FILE or --sparse)", v);
    }
    for (const char* v : kVariantOrder) {
        if (contains(variants, v)) plan.shown.push_back(v);
    }
    if (plan.passkey) {
        for (const std::string& item : split_list(f.lengths)) {
            PURBO_ASSIGN_OR_RETURN(int n, parse_length(item));
            plan.lengths.push_back(n);
        }
        if (plan.lengths.empty()) return error(kBad, "--lengths: empty (e.g. 2K,4K,8K)");
        if (f.trials < 1) return error(kBad, "--trials: {} (at least 1)", f.trials);
    }
    if (plan.ppl) {
        if (f.ppl_prefix < 1) return error(kBad, "--ppl-prefix: {} (at least 1)", f.ppl_prefix);
        if (f.ppl_ctx <= f.ppl_prefix)
            return error(kBad, "--ppl-ctx: {} leaves nothing to score after --ppl-prefix {}",
                         f.ppl_ctx, f.ppl_prefix);
        if (f.ppl_seqs < 1) return error(kBad, "--ppl-seqs: {} (at least 1)", f.ppl_seqs);
    }
    if (f.window < 1 || f.sinks < 0)
        return error(kBad, "--window {} / --sinks {}: window >= 1, sinks >= 0", f.window, f.sinks);
    if (f.format != "md" && f.format != "json")
        return error(kBad, "-o: '{}' (md or json)", f.format);
    return plan;
}

// The all-local (StreamingLLM) adapter: the given adapter's settings, or --window / --sinks,
// and no retrieval head.
Adapter local_adapter(const Model& model, const Adapter* base, const EvalFlags& f) {
    SparseSettings settings;
    if (base != nullptr) {
        settings = base->settings;
    } else {
        settings.window = f.window;
        settings.n_sink = f.sinks;
    }
    Adapter a = adapter_for_model(model.config, settings);
    a.base_fingerprint = base != nullptr ? base->base_fingerprint : model_fingerprint(model.config, model.weights);
    return a;
}

std::string now_text() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm);
    return buf;
}

// K for the topk variant: the sparse variant's mean blocks per retrieval head per step, rounded.
Result<int> top_k_from(const SparsityStats& s, const std::string& what) {
    if (s.retrieval_head_steps == 0)
        return error(kBad,
                     "topk: the sparse variant selected no blocks in {} (an adapter without an "
                     "indexer keeps "
                     "retrieval heads dense; train one with purbo train-indexer)",
                     what);
    return std::max(1, static_cast<int>(std::lround(s.blocks_per_retrieval_head())));
}

// One evaluation: the model, the inputs of both tasks and the variants run so far.
class Evaluation {
  public:
    Evaluation(const EvalFlags& f, const Plan& plan, const Model& model, const Adapter* adapter)
        : f_(f), plan_(plan), model_(model), adapter_(adapter) {}

    Status prepare_inputs(EvalReport& report);
    // Runs variant `name` (kVariantOrder order); adds its row when the plan shows it.
    Status run_variant(const std::string& name, EvalReport& report,
                       const AttentionPolicyFactory& sparse_factory);

  private:
    Result<std::unique_ptr<Session>> session(const AttentionPolicyFactory& factory) const;
    Status run_passkey(Session& s, const std::string& name, size_t length_index,
                       EvalVariantResult& v);
    Status run_ppl(Session& s, const std::string& name, EvalVariantResult& v);

    const EvalFlags& f_;
    const Plan& plan_;
    const Model& model_;
    const Adapter* adapter_;
    int n_ctx_ = 0;
    PasskeyFiller filler_;
    std::vector<TokenSequence> ppl_sequences_;
    PerplexityOptions ppl_options_;
    ReferenceLogProbs reference_;
    std::optional<EvalVariantResult> sparse_;  // for topk's K
};

Status Evaluation::prepare_inputs(EvalReport& report) {
    const Tokenizer& tok = *model_.tokenizer;
    const int max_ctx = model_.config.n_ctx_train > 0 ? model_.config.n_ctx_train : INT32_MAX;
    // Held-out text for both tasks: the filler of the passkey prompts and the perplexity text.
    CorpusOptions co;
    co.split = CorpusSplit::kHeldOut;
    PURBO_ASSIGN_OR_RETURN(std::vector<TextDocument> docs, corpus_documents(co));
    const std::vector<TokenizedDocument> tokenized = corpus_tokenize(tok, docs);
    const std::vector<int32_t> separator = corpus_separator(tok);
    if (plan_.passkey) {
        for (int n : plan_.lengths) {
            if (n > max_ctx)
                return error(kBad, "--lengths: {} exceeds the model's context of {} tokens",
                             eval_length_label(n), max_ctx);
            n_ctx_ = std::max(n_ctx_, n);
        }
        PURBO_ASSIGN_OR_RETURN(filler_, passkey_corpus_filler(tok, CorpusSplit::kHeldOut));
        report.filler = fmt::format("{} ({} tokens)", filler_.name, filler_.tokens.size());
    }
    if (plan_.ppl) {
        int ctx = std::min(f_.ppl_ctx, max_ctx);
        if (ctx < f_.ppl_ctx)
            std::fprintf(stderr, "purbo eval: --ppl-ctx %d exceeds the model's context; using %d\n",
                         f_.ppl_ctx, ctx);
        // What the split allows: the stream of its documents, cut into sequences of ctx tokens.
        const int32_t bos = tok.add_bos() ? tok.bos_id() : -1;
        int64_t stream = 0;
        for (const TokenizedDocument& d : tokenized)
            stream += static_cast<int64_t>(d.tokens.size()) +
                      (stream > 0 ? static_cast<int64_t>(separator.size()) : 0);
        const int64_t per_seq_extra = bos >= 0 ? 1 : 0;
        if (stream + per_seq_extra < ctx) {
            ctx = static_cast<int>(stream + per_seq_extra);
            std::fprintf(
                stderr,
                "purbo eval: the held-out text holds %lld tokens; --ppl-ctx lowered to %d\n",
                static_cast<long long>(stream), ctx);
        }
        if (ctx <= f_.ppl_prefix)
            return error(kBad,
                         "--ppl-prefix: {} leaves nothing to score in {} tokens of held-out text",
                         f_.ppl_prefix, ctx);
        int seqs = f_.ppl_seqs;
        const int64_t fit = stream / (ctx - per_seq_extra);
        if (fit < seqs) {
            std::fprintf(stderr,
                         "purbo eval: the held-out text holds %lld sequences of %d tokens; "
                         "--ppl-seqs lowered to %lld\n",
                         static_cast<long long>(fit), ctx, static_cast<long long>(fit));
            seqs = static_cast<int>(fit);
        }
        PURBO_ASSIGN_OR_RETURN(ppl_sequences_,
                               corpus_sequences(tokenized, separator, ctx, seqs, bos));
        ppl_options_.n_prefix = f_.ppl_prefix;
        report.ppl_ctx = ctx;
        report.ppl_prefix = f_.ppl_prefix;
        report.ppl_seqs = seqs;
        n_ctx_ = std::max(n_ctx_, ctx);
    }
    return Status::ok();
}

Result<std::unique_ptr<Session>> Evaluation::session(const AttentionPolicyFactory& factory) const {
    SessionOptions so = session_options(f_.model);
    so.n_ctx = n_ctx_;
    return Session::create(model_.config, model_.weights, so, factory);
}

Status Evaluation::run_passkey(Session& s, const std::string& name, size_t length_index,
                               EvalVariantResult& v) {
    PasskeyOptions o;
    o.n_tokens = plan_.lengths[length_index];
    o.n_trials = f_.trials;
    o.seed = static_cast<uint64_t>(f_.seed);
    o.format = f_.chat ? PasskeyFormat::kChat : PasskeyFormat::kPlain;
    const std::string label = eval_length_label(o.n_tokens);
    const ChatTemplate* chat = model_.chat_template ? &*model_.chat_template : nullptr;
    PURBO_ASSIGN_OR_RETURN(
        PasskeyResult r,
        passkey_run(s, *model_.tokenizer, chat, filler_, o,
                    [&](const PasskeyTrialResult& t, int done, int total) {
                        std::fprintf(stderr,
                                     "purbo eval: %-6s passkey %-4s [%3d/%d] depth %.2f key %s: "
                                     "%-12s %s (%.1f s)\n",
                                     name.c_str(), label.c_str(), done, total, t.depth,
                                     t.trial.key.c_str(), fmt::format("'{}'", t.answer).c_str(),
                                     t.correct ? "ok" : "MISS", t.seconds);
                    }));
    std::fprintf(stderr, "purbo eval: %-6s passkey %-4s %d/%zu correct (%.1f s)\n", name.c_str(),
                 label.c_str(), r.n_correct, r.trials.size(), r.seconds);
    v.passkey.push_back(std::move(r));
    return Status::ok();
}

Status Evaluation::run_ppl(Session& s, const std::string& name, EvalVariantResult& v) {
    const bool is_reference = name == "dense";
    double t_last = time_now_ms();
    const double t0 = t_last;
    const auto progress = [&](int seq, int scored, int total) {
        const double now = time_now_ms();
        if (scored != total && now - t_last < 10e3) return;  // a line every 10 s
        t_last = now;
        std::fprintf(stderr, "purbo eval: %-6s ppl sequence %d/%zu: %d/%d tokens (%.0f s)\n",
                     name.c_str(), seq + 1, ppl_sequences_.size(), scored, total, (now - t0) / 1e3);
    };
    PURBO_ASSIGN_OR_RETURN(
        PerplexityResult r,
        perplexity_evaluate(s, ppl_sequences_, ppl_options_, is_reference ? nullptr : &reference_,
                            is_reference ? &reference_ : nullptr, progress));
    if (is_reference) {  // KL(dense || dense) = 0 (tests/eval/test-perplexity.cpp checks it)
        r.has_kl = true;
        r.kl_sum = 0;
    }
    std::fprintf(stderr, "purbo eval: %-6s ppl %.3f, KL vs dense %.4f over %lld tokens (%.1f s)\n",
                 name.c_str(), r.perplexity(), r.mean_kl(), static_cast<long long>(r.n_scored),
                 r.seconds);
    if (r.sparsity.retrieval_head_steps > 0)
        std::fprintf(stderr,
                     "purbo eval: %-6s ppl decode: %.1f blocks, %.0f tokens per retrieval head\n",
                     name.c_str(), r.sparsity.blocks_per_retrieval_head(),
                     r.sparsity.tokens_per_retrieval_head());
    v.ppl = r;
    return Status::ok();
}

Status Evaluation::run_variant(const std::string& name, EvalReport& report,
                               const AttentionPolicyFactory& sparse_factory) {
    const double t0 = time_now_ms();
    EvalVariantResult v;
    v.name = name;
    v.kv_ctx = n_ctx_;
    const bool wanted = contains(plan_.shown, name);
    // A variant that only serves another (dense for KL, sparse for K) runs only that task.
    const bool do_passkey =
        plan_.passkey && (wanted || (name == "sparse" && contains(plan_.shown, "topk")));
    const bool do_ppl = plan_.ppl;

    auto record_kv = [&](Session& s) {
        v.kv_bytes = s.kv_bytes();
        v.dense_kv_bytes = s.cache().dense_nbytes();
    };
    if (name == "topk") {
        if (!sparse_) return error(StatusCode::kInternal, "topk before the sparse variant");
        PURBO_ASSIGN_OR_RETURN(SparseRunOptions so, sparse_run_options(f_.sparse));
        for (size_t i = 0; do_passkey && i < plan_.lengths.size(); ++i) {
            PURBO_ASSIGN_OR_RETURN(
                so.top_k_blocks,
                top_k_from(sparse_->passkey[i].sparsity,
                           fmt::format("passkey {}", eval_length_label(plan_.lengths[i]))));
            PURBO_ASSIGN_OR_RETURN(std::unique_ptr<Session> s,
                                   session(sparse_policy_factory(*adapter_, so)));
            v.passkey_top_k.push_back(so.top_k_blocks);
            std::fprintf(stderr,
                         "purbo eval: topk   passkey %s: K = %d (sparse kept %.2f blocks)\n",
                         eval_length_label(plan_.lengths[i]).c_str(), so.top_k_blocks,
                         sparse_->passkey[i].sparsity.blocks_per_retrieval_head());
            PURBO_TRY(run_passkey(*s, name, i, v));
            record_kv(*s);
        }
        if (do_ppl) {
            PURBO_ASSIGN_OR_RETURN(so.top_k_blocks, top_k_from(sparse_->ppl->sparsity, "ppl"));
            PURBO_ASSIGN_OR_RETURN(std::unique_ptr<Session> s,
                                   session(sparse_policy_factory(*adapter_, so)));
            v.ppl_top_k = so.top_k_blocks;
            std::fprintf(stderr, "purbo eval: topk   ppl: K = %d (sparse kept %.2f blocks)\n",
                         so.top_k_blocks, sparse_->ppl->sparsity.blocks_per_retrieval_head());
            PURBO_TRY(run_ppl(*s, name, v));
            record_kv(*s);
        }
        std::vector<int> ks = v.passkey_top_k;
        if (v.ppl_top_k > 0) ks.push_back(v.ppl_top_k);
        v.description = fmt::format("K {}", fmt::join(ks, "/"));
    } else {
        AttentionPolicyFactory factory;
        if (name == "sparse") {
            factory = sparse_factory;
            const SparseSettings& ss = adapter_->settings;
            v.description =
                adapter_->has_indexer()
                    ? fmt::format("p {:g}",
                                  f_.sparse.sparse_top_p != 0 ? f_.sparse.sparse_top_p : ss.top_p)
                    : "no indexer: retrieval heads dense";
        } else if (name == "local") {
            const Adapter local = local_adapter(model_, adapter_, f_);
            SparseRunOptions so;
            so.rings = !f_.sparse.no_rings;
            factory = sparse_policy_factory(local, so);
            v.description = fmt::format("W {}, S {}", local.settings.window, local.settings.n_sink);
        }
        PURBO_ASSIGN_OR_RETURN(std::unique_ptr<Session> s, session(factory));
        record_kv(*s);
        for (size_t i = 0; do_passkey && i < plan_.lengths.size(); ++i)
            PURBO_TRY(run_passkey(*s, name, i, v));
        if (do_ppl) PURBO_TRY(run_ppl(*s, name, v));
    }
    v.seconds = (time_now_ms() - t0) / 1e3;
    if (name == "sparse") sparse_ = v;
    if (wanted) report.variants.push_back(std::move(v));
    return Status::ok();
}

}  // namespace

int cmd_eval(int argc, char** argv) {
    EvalFlags f;
    OptionSet set;
    set.usage = "purbo eval [options] [--adapter FILE | --sparse]";
    set.description =
        "Compares the dense model with its sparse variants on long-context passkey retrieval, "
        "perplexity and "
        "KL divergence from the dense model (held-out licence text of this machine), and prints "
        "one markdown "
        "table. Variants: dense; sparse (the adapter); local (every head local: the adapter's "
        "window and "
        "sinks, StreamingLLM); topk (retrieval heads keep a fixed K blocks per step, K = the "
        "sparse variant's "
        "mean).";
    add_model_flags(set, f.model);
    // The context is what the tasks need (the longest passkey length, --ppl-ctx).
    std::erase_if(set.options, [](const Option& o) { return o.long_name == "--ctx-size"; });
    add_sparse_flags(set, f.sparse);
    set.options.push_back({"--tasks", "", "LIST", "passkey, ppl (default: both)", &f.tasks});
    set.options.push_back(
        {"--variants", "", "LIST",
         "dense, sparse, local, topk (default: all four with an adapter, dense and local without)",
         &f.variants});
    set.options.push_back({"--lengths", "", "LIST",
                           "passkey context lengths in tokens (default 2K,4K,8K)", &f.lengths});
    set.options.push_back(
        {"--trials", "", "N", "passkey trials per length (default 50)", &f.trials});
    set.options.push_back(
        {"--seed", "", "N", "passkey keys and filler offsets (default 0)", &f.seed});
    set.options.push_back(
        {"--chat", "", "",
         "passkey prompts in the model's chat template (default: plain completion)", &f.chat});
    set.options.push_back({"--ppl-ctx", "", "N",
                           "tokens per perplexity sequence (default 4096, or what the held-out "
                           "text allows)",
                           &f.ppl_ctx});
    set.options.push_back(
        {"--ppl-prefix", "", "N",
         "tokens prefilled before the scored ones, which are decoded one by one (default 1024)",
         &f.ppl_prefix});
    set.options.push_back(
        {"--ppl-seqs", "", "N",
         "perplexity sequences (default 1; the dense log-probs are kept in memory: "
         "4 bytes x vocabulary per scored token)",
         &f.ppl_seqs});
    set.options.push_back({"--window", "", "W",
                           "local variant without an adapter: window (default 1024)", &f.window});
    set.options.push_back({"--sinks", "", "S",
                           "local variant without an adapter: sink tokens (default 4)", &f.sinks});
    set.options.push_back({"--output-format", "-o", "FMT", "md (default) or json", &f.format});
    set.options.push_back({"--out", "", "FILE",
                           "also write the results to FILE (JSON when it ends in .json)", &f.out});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok())
        return report_error("eval", st);
    if (help) return 0;
    Result<Plan> plan = check_flags(f);
    if (!plan.is_ok()) return report_error("eval", plan.status());

    EvalReport report;
    report.date = now_text();
    double load_ms = 0;
    Result<Model> model = load_model(f.model, &load_ms);
    if (!model.is_ok()) return report_error("eval", model.status());
    if (!model->tokenizer)
        return report_error("eval", error(kBad, "{}: the model has no tokenizer", model->path));
    if (f.chat && !model->chat_template) return report_error("eval", model->chat_template_status);
    Adapter adapter;
    Result<AttentionPolicyFactory> sparse_factory =
        sparse_policy_from_flags(f.sparse, *model, &adapter);
    if (!sparse_factory.is_ok()) return report_error("eval", sparse_factory.status());
    const bool has_adapter = f.sparse.enabled();
    if (contains(plan->shown, "topk") && !adapter.has_indexer()) {
        if (!f.variants.empty())
            return report_error(
                "eval", error(kBad,
                              "--variants topk: the adapter has no indexer (retrieval heads stay "
                              "dense in decode; train one with purbo train-indexer)"));
        std::erase(plan->shown, "topk");
        std::fprintf(stderr, "purbo eval: the adapter has no indexer: no topk variant\n");
    }

    report.model = std::filesystem::path(model->path).filename().string();
    if (has_adapter) {
        const std::string path = f.sparse.sparse ? default_adapter_path() : f.sparse.adapter;
        report.adapter = std::filesystem::path(path).filename().string();
        const SparseSettings& ss = adapter.settings;
        report.settings = fmt::format(
            "W {}, S {}, p {:g}, B {}, r {}; {} retrieval heads of {}{}", ss.window, ss.n_sink,
            f.sparse.sparse_top_p != 0 ? f.sparse.sparse_top_p : ss.top_p, ss.block_size, ss.rank,
            adapter.retrieval.size(), adapter.n_layer * adapter.n_head,
            adapter.has_indexer() ? "" : ", no indexer");
        if (f.sparse.block_sparse_prefill)
            report.settings += fmt::format(
                "; block-sparse prefill, one selection per {}, p {:g}",
                f.sparse.prefill_select != "block"
                    ? std::string("token")
                    : fmt::format(
                          "query block of {}{}",
                          f.sparse.prefill_query_block > 0 ? f.sparse.prefill_query_block
                                                           : ss.block_size,
                          f.sparse.prefill_samples > 0
                              ? fmt::format(" from {} of its tokens", f.sparse.prefill_samples)
                              : std::string()),
                f.sparse.prefill_top_p != 0  ? f.sparse.prefill_top_p
                : f.sparse.sparse_top_p != 0 ? f.sparse.sparse_top_p
                                             : ss.top_p);
    }
    report.device = f.model.device;
    report.threads = f.model.threads > 0 ? f.model.threads
                                         : static_cast<int>(std::thread::hardware_concurrency());
    report.lengths = plan->passkey ? plan->lengths : std::vector<int>{};
    report.trials = f.trials;
    report.seed = static_cast<uint64_t>(f.seed);
    report.passkey_format = f.chat ? "chat" : "plain";

    Evaluation evaluation(f, *plan, *model, has_adapter ? &adapter : nullptr);
    if (Status st = evaluation.prepare_inputs(report); !st.is_ok()) return report_error("eval", st);
    // Helpers that run without a row: dense for KL, sparse for topk's K.
    std::vector<std::string> order;
    for (const char* v : kVariantOrder) {
        const bool needed = contains(plan->shown, v) ||
                            (std::string_view(v) == "dense" && plan->ppl) ||
                            (std::string_view(v) == "sparse" && contains(plan->shown, "topk"));
        if (needed) order.push_back(v);
    }
    // The results file is rewritten after every variant: a long run that is stopped keeps the
    // rows it finished.
    const auto write_out = [&](const std::string& text) -> Status {
        if (f.out.empty()) return Status::ok();
        // A .json file gets the JSON whatever -o says: the table on screen, the details on disk.
        const bool json_file = f.out.ends_with(".json");
        const std::string file_text =
            json_file && f.format != "json" ? eval_report_json(report) : text;
        const auto* bytes = reinterpret_cast<const uint8_t*>(file_text.data());
        return write_file_atomic(f.out, {bytes, file_text.size()});
    };
    const auto render = [&] {
        return f.format == "json" ? eval_report_json(report) : eval_report_markdown(report);
    };
    for (const std::string& v : order) {
        if (Status st = evaluation.run_variant(v, report, *sparse_factory); !st.is_ok())
            return report_error("eval", st);
        if (Status st = write_out(render()); !st.is_ok()) return report_error("eval", st);
    }
    const std::string text = render();
    std::fputs(text.c_str(), stdout);
    if (!f.out.empty()) std::fprintf(stderr, "purbo eval: wrote %s\n", f.out.c_str());
    return 0;
}

}  // namespace purbo::cli
