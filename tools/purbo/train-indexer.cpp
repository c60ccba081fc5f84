// purbo train-indexer: stage 1 (method.md section 6). Reads an adapter (from purbo calibrate:
// head classes, maybe an indexer), distils each retrieval head's indexer from the dense
// attention of the model on a text, and writes the adapter with the trained indexer.
#include <algorithm>
#include <cstdio>

#include "common.h"
#include "core/mapped-file.h"
#include "core/timer.h"
#include "sparse/corpus.h"
#include "train/stage1.h"

namespace purbo::cli {
namespace {

struct TrainFlags {
    ModelFlags model;
    std::string adapter_in;
    std::string out;
    std::string data;
    std::string eval_data;
    bool no_eval = false;
    int steps = 600;
    float lr = 1e-3f;
    int warmup = 100;
    float min_lr_ratio = 0.0f;
    float weight_decay = 0.01f;
    float clip = 1.0f;
    int rank = 0;
    std::string init = "svd";
    int seed = 0;
    int min_position = 1;
    int query_chunk = 256;
    int metric_stride = 16;
    int record_cache = 0;
    std::string log_csv;
    std::string checkpoint;
    int checkpoint_every = 100;
    bool resume = false;
    int stop_after = 0;
    bool no_progress = false;
    bool cpu_loss = false;
};

// Training sequences and an optional held-out one, each seq_len tokens led by the model's BOS
// token when it uses one (as in normal use, where that token is the attention sink).
struct TrainingData {
    std::vector<std::vector<int32_t>> train;
    std::vector<int32_t> held_out;  // empty = none
    std::string source;             // for the log line
};

// Up to `max_count` consecutive sequences of the documents' stream (fewer when it is shorter).
Result<std::vector<std::vector<int32_t>>> cut_sequences(const std::vector<TokenizedDocument>& docs,
                                                        const Tokenizer& tok, int seq_len,
                                                        int max_count) {
    const std::vector<int32_t> separator = corpus_separator(tok);
    const int32_t bos = tok.add_bos() ? tok.bos_id() : -1;
    size_t stream = 0;
    for (const TokenizedDocument& d : docs) stream += d.tokens.size();
    if (!docs.empty()) stream += separator.size() * (docs.size() - 1);
    const size_t body = static_cast<size_t>(seq_len - (bos >= 0 ? 1 : 0));
    // At least 1, so a stream too short for one sequence gets corpus_sequences' error.
    const int count = static_cast<int>(
        std::clamp<size_t>(stream / body, 1, static_cast<size_t>(std::max(max_count, 1))));
    PURBO_ASSIGN_OR_RETURN(std::vector<TokenSequence> seqs,
                           corpus_sequences(docs, separator, seq_len, count, bos));
    std::vector<std::vector<int32_t>> out;
    for (TokenSequence& s : seqs) out.push_back(std::move(s.tokens));
    return out;
}

Result<std::vector<TokenizedDocument>> file_document(const std::string& path,
                                                     const Tokenizer& tok) {
    PURBO_ASSIGN_OR_RETURN(const std::string text, read_text_file(path));
    return std::vector<TokenizedDocument>{{path, tok.encode(text, false, false)}};
}

// --data FILE (and --eval-data FILE), or else the machine's text corpus: its training split for
// training, the first sequence of its held-out split for the before/after measure.
Result<TrainingData> training_data(const TrainFlags& f, const Tokenizer& tok, int seq_len) {
    TrainingData d;
    if (!f.data.empty()) {
        PURBO_ASSIGN_OR_RETURN(const auto docs, file_document(f.data, tok));
        Result<std::vector<std::vector<int32_t>>> seqs = cut_sequences(docs, tok, seq_len, f.steps);
        if (!seqs.is_ok()) return seqs.status().with_context("--data " + f.data);
        d.train = std::move(*seqs);
        d.source = f.data;
    } else {
        CorpusOptions co;
        co.split = CorpusSplit::kTrain;
        PURBO_ASSIGN_OR_RETURN(const std::vector<TextDocument> texts, corpus_documents(co));
        Result<std::vector<std::vector<int32_t>>> seqs =
            cut_sequences(corpus_tokenize(tok, texts), tok, seq_len, f.steps);
        if (!seqs.is_ok()) return seqs.status().with_context("text corpus (training split)");
        d.train = std::move(*seqs);
        d.source = fmt::format("the text corpus ({} documents)", texts.size());
        if (!f.no_eval && f.eval_data.empty()) {
            Result<std::vector<TokenSequence>> held =
                corpus_token_sequences(tok, CorpusSplit::kHeldOut, seq_len, 1);
            if (held.is_ok()) {
                d.held_out = std::move((*held)[0].tokens);
            } else {
                std::fprintf(stderr, "purbo train-indexer: no held-out measure: %s\n",
                             held.status().message().c_str());
            }
        }
    }
    if (!f.eval_data.empty() && !f.no_eval) {
        PURBO_ASSIGN_OR_RETURN(const auto docs, file_document(f.eval_data, tok));
        Result<std::vector<std::vector<int32_t>>> seqs = cut_sequences(docs, tok, seq_len, 1);
        if (!seqs.is_ok()) return seqs.status().with_context("--eval-data " + f.eval_data);
        d.held_out = std::move((*seqs)[0]);
    }
    return d;
}

Status check_flags(const TrainFlags& f) {
    if (f.adapter_in.empty())
        return error(StatusCode::kInvalidArgument, "--adapter: the adapter to train is required");
    if (f.out.empty())
        return error(StatusCode::kInvalidArgument, "-o: the output adapter path is required");
    if (f.steps < 1)
        return error(StatusCode::kInvalidArgument, "--steps: {} is not positive", f.steps);
    if (!(f.lr > 0)) return error(StatusCode::kInvalidArgument, "--lr: {} is not positive", f.lr);
    if (f.warmup < 0)
        return error(StatusCode::kInvalidArgument, "--warmup: {} is negative", f.warmup);
    if (f.min_lr_ratio < 0 || f.min_lr_ratio > 1)
        return error(StatusCode::kInvalidArgument, "--min-lr-ratio: {} is not in [0, 1]",
                     f.min_lr_ratio);
    if (f.init != "svd" && f.init != "random")
        return error(StatusCode::kInvalidArgument, "--init: '{}' is not svd or random", f.init);
    if (f.model.ctx < 16)
        return error(StatusCode::kInvalidArgument, "--ctx-size: {} tokens is too short",
                     f.model.ctx);
    if (f.checkpoint_every < 1)
        return error(StatusCode::kInvalidArgument, "--checkpoint-every: {} is not positive",
                     f.checkpoint_every);
    if (f.resume && f.checkpoint.empty())
        return error(StatusCode::kInvalidArgument, "--resume needs --checkpoint FILE");
    if (f.query_chunk < 1)
        return error(StatusCode::kInvalidArgument, "--query-chunk: {} is not positive",
                     f.query_chunk);
    return Status::ok();
}

void print_measure(const char* what, const IndexerMetrics& before, const IndexerMetrics& after) {
    std::fprintf(stderr,
                 "purbo: %16s = KL %.4f -> %.4f nats, recall %.3f -> %.3f (set recall %.3f -> "
                 "%.3f, set size %.2f -> %.2f)\n",
                 what, before.kl(), after.kl(), before.mass_recall(), after.mass_recall(),
                 before.set_recall(), after.set_recall(), before.set_size_ratio(),
                 after.set_size_ratio());
}

// Untrained -> trained. Recall: the share of the dense attention's top-p mass that the
// indexer's top-p set covers; set size: the indexer's top-p set over the dense one's.
void print_summary(const Stage1Summary& s, bool final_eval) {
    std::fprintf(stderr, "purbo: %16s = %d steps (from step %d) in %.1f s\n", "stage 1", s.steps,
                 s.first_step, s.seconds);
    print_measure("first sequence", s.initial, final_eval ? s.final : s.last.metrics);
    if (s.has_eval) print_measure("held-out", s.eval_initial, s.eval_final);
}

}  // namespace

int cmd_train_indexer(int argc, char** argv) {
    TrainFlags f;
    OptionSet set;
    set.usage = "purbo train-indexer --adapter IN -o OUT [--data FILE] [options]";
    set.description =
        "Stage 1: trains the token indexer of every retrieval head of an adapter to match the "
        "model's own dense attention (KL), backbone frozen, and writes the adapter with the "
        "trained indexer. Sequences of -c tokens are cut from the text of --data, or else from "
        "the machine's text corpus (licence texts), whose held-out split measures the indexer "
        "before and after training.";
    add_model_flags(set, f.model);
    set.options.push_back(
        {"--adapter", "", "FILE", "adapter to train (from purbo calibrate)", &f.adapter_in});
    set.options.push_back({"--output", "-o", "FILE", "where to write the trained adapter", &f.out});
    set.options.push_back({"--data", "", "FILE",
                           "training text (UTF-8), tokenised and cut into sequences (default: "
                           "the text corpus)",
                           &f.data});
    set.options.push_back({"--eval-data", "", "FILE",
                           "held-out text measured before and after training (default with the "
                           "corpus: its held-out split)",
                           &f.eval_data});
    set.options.push_back(
        {"--no-eval", "", "", "no held-out measure (saves two dense runs)", &f.no_eval});
    set.options.push_back(
        {"--steps", "", "N", "training steps, one sequence each (default 600)", &f.steps});
    set.options.push_back({"--lr", "", "LR", "peak learning rate (default 1e-3)", &f.lr});
    set.options.push_back({"--warmup", "", "N",
                           "linear warmup steps before the cosine decay (default 100)", &f.warmup});
    set.options.push_back({"--min-lr-ratio", "", "R",
                           "floor of the cosine as a fraction of --lr (default 0)",
                           &f.min_lr_ratio});
    set.options.push_back({"--weight-decay", "", "W", "AdamW decoupled weight decay (default 0.01)",
                           &f.weight_decay});
    set.options.push_back(
        {"--clip", "", "NORM", "global gradient-norm clip (default 1; 0 = off)", &f.clip});
    set.options.push_back(
        {"--rank", "", "R",
         "indexer rank when the adapter has no indexer yet (default: the adapter's)", &f.rank});
    set.options.push_back({"--init", "", "KIND",
                           "svd (default) or random, when the adapter has no indexer yet",
                           &f.init});
    set.options.push_back({"--seed", "", "N", "seed of --init random (default 0)", &f.seed});
    set.options.push_back({"--min-position", "", "N",
                           "leave out queries at earlier positions (default 1)", &f.min_position});
    set.options.push_back({"--query-chunk", "", "N",
                           "query rows per block of the loss (default 256; memory only)",
                           &f.query_chunk});
    set.options.push_back({"--metric-stride", "", "N",
                           "top-p recall on every N-th query (default 16; 0 = off)",
                           &f.metric_stride});
    set.options.push_back({"--record-cache", "", "N",
                           "keep the dense records of N sequences for reuse (default 0)",
                           &f.record_cache});
    set.options.push_back(
        {"--log", "", "FILE", "CSV row per step: step,lr,loss,grad_norm,recall,...", &f.log_csv});
    set.options.push_back({"--checkpoint", "", "FILE",
                           "training state (indexer, AdamW moments, step)", &f.checkpoint});
    set.options.push_back({"--checkpoint-every", "", "N",
                           "write the checkpoint every N steps (default 100)",
                           &f.checkpoint_every});
    set.options.push_back(
        {"--resume", "", "", "continue from --checkpoint when it exists", &f.resume});
    set.options.push_back(
        {"--stop-after", "", "N", "stop after N steps of this run (resume later)", &f.stop_after});
    set.options.push_back({"--no-progress", "", "", "no progress line on stderr", &f.no_progress});
    set.options.push_back({"--cpu-loss", "", "",
                           "with --device cuda: compute the loss and its gradient on the CPU (the "
                           "dense runs stay on the GPU)",
                           &f.cpu_loss});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok())
        return report_error("train-indexer", st);
    if (help) return 0;
    if (Status st = check_flags(f); !st.is_ok()) return report_error("train-indexer", st);

    Result<Model> model = load_model(f.model, nullptr);
    if (!model.is_ok()) return report_error("train-indexer", model.status());
    Result<Adapter> adapter = adapter_load(f.adapter_in);
    if (!adapter.is_ok()) return report_error("train-indexer", adapter.status());
    if (Status st = adapter->check_model(
            model->config, model_fingerprint(model->config, model->weights), f.adapter_in);
        !st.is_ok())
        return report_error("train-indexer", st);
    if (f.rank != 0 && f.rank != adapter->settings.rank) {
        if (adapter->has_indexer())
            return report_error("train-indexer",
                                error(StatusCode::kInvalidArgument,
                                      "--rank {}: {} already has an indexer of rank {}", f.rank,
                                      f.adapter_in, adapter->settings.rank));
        adapter->settings.rank = f.rank;
        if (Status st = adapter->validate("--rank"); !st.is_ok())
            return report_error("train-indexer", st);
    }

    const int seq_len = std::min(f.model.ctx, std::max(model->config.n_ctx_train, 16));
    Result<TrainingData> data = training_data(f, *model->tokenizer, seq_len);
    if (!data.is_ok()) return report_error("train-indexer", data.status());
    std::fprintf(stderr,
                 "purbo: %16s = %zu sequence%s of %d tokens from %s%s; %zu retrieval heads, rank "
                 "%d\n",
                 "train-indexer", data->train.size(), data->train.size() == 1 ? "" : "s", seq_len,
                 data->source.c_str(), data->held_out.empty() ? "" : ", one held out",
                 adapter->retrieval.size(), adapter->settings.rank);

    // The teacher is the dense model: no adapter policy on this session.
    SessionOptions so = session_options(f.model);
    so.n_ctx = seq_len;
    Result<std::unique_ptr<Session>> session = Session::create(model->config, model->weights, so);
    if (!session.is_ok()) return report_error("train-indexer", session.status());

    Stage1Options o;
    o.steps = f.steps;
    o.lr = f.lr;
    o.warmup = f.warmup;
    o.min_lr_ratio = f.min_lr_ratio;
    o.weight_decay = f.weight_decay;
    o.clip = f.clip;
    o.seq_len = seq_len;
    o.query_chunk = f.query_chunk;
    o.min_position = f.min_position;
    o.metric_stride = f.metric_stride;
    o.record_cache = f.record_cache;
    o.init = f.init == "random" ? IndexerInit::kRandom : IndexerInit::kSvd;
    o.seed = static_cast<uint64_t>(f.seed);
    o.log_csv = f.log_csv;
    o.checkpoint = f.checkpoint;
    o.checkpoint_every = f.checkpoint_every;
    o.resume = f.resume;
    o.stop_after = f.stop_after;
    o.progress = !f.no_progress;
    o.eval_tokens = data->held_out;
    // On a cuda session the loss runs on the GPU as well (unless --cpu-loss).
    std::unique_ptr<IndexerLossDevice> loss_device;
    if ((*session)->backend().kind() == BackendKind::kCuda && !f.cpu_loss) {
        Result<std::unique_ptr<IndexerLossDevice>> device = indexer_loss_device_cuda();
        if (!device.is_ok()) return report_error("train-indexer", device.status());
        loss_device = std::move(device).value();
        o.loss_device = loss_device.get();
    }
    const std::vector<std::vector<int32_t>>& seqs = data->train;
    const TokenProvider provider = [&seqs](int step) -> Result<std::vector<int32_t>> {
        return seqs[static_cast<size_t>(step) % seqs.size()];
    };
    Result<Stage1Summary> summary = stage1_train(**session, *adapter, provider, o);
    if (!summary.is_ok()) return report_error("train-indexer", summary.status());
    if (Status st = adapter_save(f.out, *adapter); !st.is_ok())
        return report_error("train-indexer", st);
    print_summary(*summary, o.final_eval);
    std::fprintf(stderr, "purbo: %16s = %s\n", "wrote", f.out.c_str());
    return 0;
}

}  // namespace purbo::cli
