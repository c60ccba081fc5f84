// purbo calibrate: score every query head by needle retrieval on the machine's licence texts,
// choose the retrieval heads and write an adapter without an indexer (method.md section 1).
// With --from, the heads are chosen again from an adapter's stored scores (another ratio or
// mode, other settings) without running the model.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common.h"
#include "core/timer.h"
#include "eval/heatmap-svg.h"
#include "sparse/adapter.h"
#include "sparse/calibration.h"
#include "sparse/corpus.h"
#include "sparse/head-selection.h"

namespace purbo::cli {
namespace {

struct CalibrateFlags {
    ModelFlags model;
    std::string output;
    std::string svg;
    float ratio = 0.15f;
    bool kv_groups = false;
    int docs = 4;
    int depths = 2;
    SparseSettings settings;
    std::string import_headwise;  // rtp-llm config.json: head classes from it, no calibration run
    std::string from;             // adapter whose stored scores are reused, no calibration run
};

// Shortest sequence worth calibrating on: the needles sit at 10-20% and 80-95% depth and are
// a few dozen tokens long; below this they would nearly touch.
constexpr int kMinCalibrationTokens = 256;

// Tokens after which a needle may start: those whose text ends a line.
std::vector<int32_t> line_break_tokens(const Tokenizer& tok) {
    std::vector<int32_t> ids;
    for (int32_t id = 0; id < tok.n_vocab(); ++id) {
        if (tok.is_special(id)) continue;
        const std::string piece = tok.token_to_piece(id);
        if (!piece.empty() && piece.back() == '\n') ids.push_back(id);
    }
    return ids;
}

double percent(double x) {
    return 100.0 * x;
}

// Score at quantile q of ascending `sorted` (nearest rank).
double quantile(const std::vector<double>& sorted, double q) {
    const size_t i = static_cast<size_t>(std::lround(q * static_cast<double>(sorted.size() - 1)));
    return sorted[i];
}

// The attention shape the summary needs (a model's config or an adapter's copy of it).
struct HeadShape {
    int n_layer = 0, n_head = 0, n_head_kv = 0;
    int n_gqa() const { return n_head / n_head_kv; }
};

void print_summary(const HeadShape& c, const std::vector<float>& scores, const HeadSelection& sel,
                   const CalibrateFlags& f) {
    const auto score = [&](const HeadId& id) {
        return scores[static_cast<size_t>(id.layer * c.n_head + id.head)];
    };
    const std::vector<HeadId> ranked = rank_heads(scores, c.n_layer, c.n_head);
    std::printf("\ntop heads (score = attention mass on the earlier needle):\n");
    std::printf("  %4s  %5s  %4s  %7s  %8s  %s\n", "rank", "layer", "head", "kv head", "score",
                "class");
    for (size_t i = 0; i < std::min<size_t>(10, ranked.size()); ++i) {
        const HeadId& id = ranked[i];
        const bool retrieval =
            std::find(sel.retrieval.begin(), sel.retrieval.end(), id) != sel.retrieval.end();
        std::printf("  %4zu  %5d  %4d  %7d  %8.4f  %s\n", i + 1, id.layer, id.head,
                    id.head / c.n_gqa(), score(id), retrieval ? "retrieval" : "local");
    }
    const int n_heads = c.n_layer * c.n_head;
    std::printf("\nretrieval heads:  %zu of %d query heads (%.1f%%; ratio %.3g, budget %d%s)\n",
                sel.retrieval.size(), n_heads,
                percent(static_cast<double>(sel.retrieval.size()) / n_heads),
                static_cast<double>(f.ratio), sel.budget, f.kv_groups ? ", whole KV groups" : "");
    std::printf(
        "local KV heads:   %d of %d entirely local (%.1f%%): their caches shrink to %d sinks + %d "
        "window\n",
        sel.n_local_kv_heads, sel.n_kv_heads,
        percent(static_cast<double>(sel.n_local_kv_heads) / sel.n_kv_heads), f.settings.n_sink,
        f.settings.window);
    if (!sel.retrieval.empty()) {
        double lowest = 1.0;
        for (const HeadId& id : sel.retrieval)
            lowest = std::min(lowest, static_cast<double>(score(id)));
        std::printf("lowest retrieval: %.4f\n", lowest);
    }
    std::vector<double> sorted(scores.begin(), scores.end());
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (double s : sorted) mean += s;
    mean /= static_cast<double>(sorted.size());
    std::printf(
        "scores:           min %.4f  p25 %.4f  median %.4f  p75 %.4f  p90 %.4f  max %.4f  mean "
        "%.4f\n",
        sorted.front(), quantile(sorted, 0.25), quantile(sorted, 0.5), quantile(sorted, 0.75),
        quantile(sorted, 0.9), sorted.back(), mean);
    // Counts per score band: the bands a sqrt-scaled map distinguishes.
    const double edges[] = {0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0};
    std::printf("histogram:       ");
    for (size_t b = 0; b + 1 < std::size(edges); ++b) {
        const bool last = b + 2 == std::size(edges);
        const auto n = std::count_if(sorted.begin(), sorted.end(), [&](double s) {
            return s >= edges[b] && (last ? s <= edges[b + 1] : s < edges[b + 1]);
        });
        std::printf(" [%g, %g%s %ld", edges[b], edges[b + 1], last ? "]" : ")",
                    static_cast<long>(n));
    }
    std::printf("\n");
}

// --from: the retrieval heads chosen again from the scores stored in an adapter, with --ratio
// and --kv-groups; its settings kept except those given on the command line. The indexer is
// kept only when the heads and the rank stay the same (its rows belong to those heads).
int choose_again_from(const CalibrateFlags& f, const OptionSet& set) {
    for (const char* flag : {"--import-headwise", "--docs", "--depths", "--ctx-size", "--model"}) {
        if (set.was_given(flag))
            return report_error("calibrate",
                                error(StatusCode::kInvalidArgument,
                                      "{}: not used with --from (no calibration runs)", flag));
    }
    Result<Adapter> loaded = adapter_load(f.from);
    if (!loaded.is_ok()) return report_error("calibrate", loaded.status());
    Adapter a = std::move(*loaded);
    const bool had_indexer = a.has_indexer();
    SparseSettings settings = a.settings;
    if (set.was_given("--window")) settings.window = f.settings.window;
    if (set.was_given("--sinks")) settings.n_sink = f.settings.n_sink;
    if (set.was_given("--top-p")) settings.top_p = f.settings.top_p;
    if (set.was_given("--block")) settings.block_size = f.settings.block_size;
    if (set.was_given("--rank")) settings.rank = f.settings.rank;
    if (settings.rank > a.head_dim)
        return report_error("calibrate", error(StatusCode::kInvalidArgument,
                                               "--rank: {} exceeds the model's head_dim {}",
                                               settings.rank, a.head_dim));

    const HeadSelectionMode mode =
        f.kv_groups ? HeadSelectionMode::kKvGroups : HeadSelectionMode::kQueryHeads;
    Result<HeadSelection> sel =
        select_retrieval_heads(a.scores, a.n_layer, a.n_head, a.n_head_kv, f.ratio, mode);
    if (!sel.is_ok()) return report_error("calibrate", sel.status());
    const bool keep_indexer =
        a.has_indexer() && sel->retrieval == a.retrieval && settings.rank == a.settings.rank;
    if (a.has_indexer() && !keep_indexer) {
        a.wq = Tensor();
        a.wk = Tensor();
        a.training_info.clear();
    }
    a.settings = settings;
    a.retrieval = sel->retrieval;
    // The provenance of the scores stays; the choice made from them is replaced.
    const size_t choice = a.calibration_info.find("; retrieval heads:");
    a.calibration_info =
        fmt::format("{}; retrieval heads: ratio {:g}{} (chosen again from stored scores)",
                    a.calibration_info.substr(0, choice), f.ratio,
                    f.kv_groups ? " in whole KV groups" : " by query head");
    if (Status st = adapter_save(f.output, a); !st.is_ok()) return report_error("calibrate", st);

    std::printf("purbo calibrate: retrieval heads chosen again from the scores in %s\n",
                f.from.c_str());
    const HeadShape shape{a.n_layer, a.n_head, a.n_head_kv};
    print_summary(shape, a.scores, *sel, f);
    if (had_indexer)
        std::printf("indexer:          %s\n",
                    keep_indexer
                        ? "kept (same heads and rank)"
                        : "dropped (other heads or rank): train it again with purbo train-indexer");
    if (!f.svg.empty()) {
        HeatmapSvgOptions ho;
        ho.title = "retrieval head scores";
        ho.subtitle =
            fmt::format("{}; {} retrieval heads (ratio {:g}{}), outlined", a.calibration_info,
                        sel->retrieval.size(), f.ratio, f.kv_groups ? ", whole KV groups" : "");
        ho.n_head_kv = a.n_head_kv;
        if (Status st = heatmap_svg_write(f.svg, a.scores, a.n_layer, a.n_head, sel->retrieval, ho);
            !st.is_ok())
            return report_error("calibrate", st);
        std::printf("heat map:         %s\n", f.svg.c_str());
    }
    std::printf("adapter:          %s\n", f.output.c_str());
    return 0;
}

}  // namespace

int cmd_calibrate(int argc, char** argv) {
    CalibrateFlags f;
    OptionSet set;
    set.usage = "purbo calibrate [options] -o ADAPTER.safetensors";
    set.description =
        "Scores every query head by how much attention it pays, from a second copy of a needle "
        "sentence, to the first copy (licence texts of this machine, several documents and "
        "depths), chooses the top heads as retrieval heads and writes an adapter (no indexer yet).";
    add_model_flags(set, f.model);
    set.options.push_back({"--output", "-o", "FILE", "adapter to write (.safetensors)", &f.output});
    set.options.push_back({"--ratio", "", "R",
                           "share of query heads that become retrieval heads (default 0.15)",
                           &f.ratio});
    set.options.push_back({"--kv-groups", "", "",
                           "choose whole KV groups, so the other KV heads become entirely local",
                           &f.kv_groups});
    set.options.push_back({"--svg", "", "FILE", "also write a heat map of the scores", &f.svg});
    set.options.push_back({"--docs", "", "N", "calibration documents (default 4)", &f.docs});
    set.options.push_back(
        {"--depths", "", "N", "needle depth pairs per document (default 2)", &f.depths});
    set.options.push_back(
        {"--window", "", "W", "stored setting: local window (default 1024)", &f.settings.window});
    set.options.push_back(
        {"--sinks", "", "S", "stored setting: sink tokens (default 4)", &f.settings.n_sink});
    set.options.push_back(
        {"--top-p", "", "P", "stored setting: decode top-p mass (default 0.9)", &f.settings.top_p});
    set.options.push_back({"--block", "", "B", "stored setting: selection block size (default 64)",
                           &f.settings.block_size});
    set.options.push_back(
        {"--rank", "", "R", "stored setting: indexer dimension (default 16)", &f.settings.rank});
    set.options.push_back({"--import-headwise", "", "CONFIG",
                           "take the head classes from an rtp-llm config.json (headwise_config) instead of "
                           "calibrating; writes them as an adapter for the model",
                           &f.import_headwise});
    set.options.push_back({"--from", "", "ADAPTER",
                           "choose the retrieval heads again from this adapter's stored scores "
                           "(--ratio, --kv-groups) "
                           "without calibrating; its settings are kept except those given",
                           &f.from});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok())
        return report_error("calibrate", st);
    if (help) return 0;
    const auto bad = [](const Status& st) { return report_error("calibrate", st); };
    constexpr StatusCode kBad = StatusCode::kInvalidArgument;
    if (f.output.empty()) return bad(error(kBad, "give the adapter to write with -o FILE"));
    if (!(f.ratio >= 0.0f && f.ratio <= 1.0f))
        return bad(error(kBad, "--ratio: {} is not in [0, 1]", f.ratio));
    if (f.docs < 1) return bad(error(kBad, "--docs: {} (at least 1)", f.docs));
    if (f.depths < 1) return bad(error(kBad, "--depths: {} (at least 1)", f.depths));
    if (f.model.ctx < kMinCalibrationTokens)
        return bad(error(kBad, "--ctx-size: {} (at least {})", f.model.ctx, kMinCalibrationTokens));
    if (Status st = f.settings.validate("settings (--window, --sinks, --top-p, --block, --rank)");
        !st.is_ok())
        return report_error("calibrate", st);
    if (!f.from.empty()) return choose_again_from(f, set);

    double load_ms = 0;
    Result<Model> model = load_model(f.model, &load_ms);
    if (!model.is_ok()) return report_error("calibrate", model.status());
    const ModelConfig& c = model->config;
    if (!f.import_headwise.empty()) {
        Result<Adapter> imported = adapter_from_headwise_config(f.import_headwise, c);
        if (!imported.is_ok()) return report_error("calibrate", imported.status());
        imported->base_fingerprint = model_fingerprint(c, model->weights);
        if (Status st = adapter_save(f.output, *imported); !st.is_ok()) return report_error("calibrate", st);
        std::printf("purbo calibrate: %zu retrieval heads of %d from %s written to %s\n", imported->retrieval.size(),
                    c.n_layer * c.n_head, f.import_headwise.c_str(), f.output.c_str());
        return 0;
    }
    if (!model->tokenizer) return bad(error(kBad, "{}: the model has no tokenizer", model->path));
    const Tokenizer& tok = *model->tokenizer;
    // Checked now, not when the adapter is saved after the whole calibration.
    if (f.settings.rank > c.head_dim)
        return bad(
            error(kBad, "--rank: {} exceeds the model's head_dim {}", f.settings.rank, c.head_dim));
    int n_tokens = f.model.ctx;
    if (c.n_ctx_train > 0 && n_tokens > c.n_ctx_train) {
        std::fprintf(stderr,
                     "purbo calibrate: -c %d exceeds the model's training context; using %d\n",
                     n_tokens, c.n_ctx_train);
        n_tokens = c.n_ctx_train;
    }

    // Documents: the first --docs calibration texts, each from its start; a text shorter than
    // the context continues with the next ones.
    CorpusOptions co;
    co.calibration_only = true;
    co.min_documents = f.docs;
    Result<std::vector<TextDocument>> texts = corpus_documents(co);
    if (!texts.is_ok()) return report_error("calibrate", texts.status());
    const std::vector<TokenizedDocument> tokenized = corpus_tokenize(tok, *texts);
    const std::vector<int32_t> separator = corpus_separator(tok);
    const int32_t bos = tok.add_bos() ? tok.bos_id() : -1;
    std::vector<CalibrationDocument> docs;
    for (size_t i = 0; i < static_cast<size_t>(f.docs); ++i) {
        Result<TokenSequence> s = corpus_document_sequence(tokenized, i, separator, n_tokens, bos);
        if (!s.is_ok()) return report_error("calibrate", s.status());
        docs.push_back({s->name, std::move(s->tokens)});
    }
    const std::vector<int32_t> needle =
        tok.encode(kCalibrationNeedle, /*add_special=*/false, /*parse_special=*/false);

    SessionOptions so = session_options(f.model);
    so.n_ctx = n_tokens;
    Result<std::unique_ptr<Session>> session = Session::create(c, model->weights, so);
    if (!session.is_ok()) return report_error("calibrate", session.status());

    std::printf(
        "purbo calibrate: %s, %d layers x %d query heads (%d KV heads), %d documents x %d depths "
        "of %d "
        "tokens, needle %zu tokens, %s\n",
        c.name.c_str(), c.n_layer, c.n_head, c.n_head_kv, f.docs, f.depths, n_tokens, needle.size(),
        f.model.device.c_str());
    std::fflush(stdout);
    CalibrationOptions options;
    options.n_tokens = n_tokens;
    options.n_depths = f.depths;
    options.breaks = line_break_tokens(tok);
    options.on_progress = [&](const CalibrationProgress& p) {
        const NeedlePlacement& n = p.placement;
        std::printf(
            "  [%2d/%d] %-28s needles at %5d and %5d (%2.0f%%, %2.0f%%)  %6.1f s (forward %6.1f s) "
            " "
            "mean %.4f  max %.4f\n",
            p.document * p.n_depths + p.depth + 1, p.n_documents * p.n_depths,
            docs[static_cast<size_t>(p.document)].name.c_str(), n.early_begin, n.late_begin,
            100.0 * n.early_begin / n_tokens, 100.0 * n.late_begin / n_tokens, p.seconds,
            p.record_seconds, p.mean_score, p.max_score);
        std::fflush(stdout);
    };
    Result<CalibrationResult> r = calibrate_heads(**session, docs, needle, options);
    if (!r.is_ok()) return report_error("calibrate", r.status());

    const std::vector<float> scores(r->scores.begin(), r->scores.end());
    const HeadSelectionMode mode =
        f.kv_groups ? HeadSelectionMode::kKvGroups : HeadSelectionMode::kQueryHeads;
    Result<HeadSelection> sel =
        select_retrieval_heads(scores, c.n_layer, c.n_head, c.n_head_kv, f.ratio, mode);
    if (!sel.is_ok()) return report_error("calibrate", sel.status());

    Adapter a = adapter_for_model(c, f.settings);
    a.base_fingerprint = model_fingerprint(c, model->weights);
    a.scores = scores;
    a.retrieval = sel->retrieval;
    a.calibration_info = fmt::format("{}; retrieval heads: ratio {:g}{}", r->info(), f.ratio,
                                     f.kv_groups ? " in whole KV groups" : " by query head");
    if (Status st = adapter_save(f.output, a); !st.is_ok()) return report_error("calibrate", st);

    print_summary({c.n_layer, c.n_head, c.n_head_kv}, scores, *sel, f);
    if (!f.svg.empty()) {
        HeatmapSvgOptions ho;
        ho.title = fmt::format("{}: retrieval head scores", c.name);
        ho.subtitle = fmt::format(
            "needle calibration, {} documents x {} depths, {} tokens; {} retrieval heads "
            "(ratio {:g}{}), outlined",
            r->n_documents, r->n_depths, r->n_tokens, sel->retrieval.size(), f.ratio,
            f.kv_groups ? ", whole KV groups" : "");
        ho.n_head_kv = c.n_head_kv;
        if (Status st = heatmap_svg_write(f.svg, scores, c.n_layer, c.n_head, sel->retrieval, ho);
            !st.is_ok())
            return report_error("calibrate", st);
        std::printf("heat map:         %s\n", f.svg.c_str());
    }
    std::printf("adapter:          %s\n", f.output.c_str());
    std::printf("time:             %.1f s calibration (%lld tokens, %.0f tokens/s), %.1f s load\n",
                r->seconds, static_cast<long long>(r->tokens_processed),
                static_cast<double>(r->tokens_processed) / r->seconds, load_ms / 1e3);
    return 0;
}

}  // namespace purbo::cli
