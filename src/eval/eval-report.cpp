#include "eval/eval-report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace purbo {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// The decode steps behind a variant's sparsity columns: the perplexity task's (thousands of
// steps over the whole context) when it ran, else the passkey answers' of every length.
SparsityStats table_sparsity(const EvalVariantResult& v, const char** source) {
    if (v.ppl) {
        *source = "ppl";
        return v.ppl->sparsity;
    }
    *source = "passkey";
    SparsityStats sum;
    for (const PasskeyResult& p : v.passkey) {
        const SparsityStats& s = p.sparsity;
        sum.decode_tokens += s.decode_tokens;
        sum.retrieval_attended += s.retrieval_attended;
        sum.retrieval_dense += s.retrieval_dense;
        sum.retrieval_head_steps += s.retrieval_head_steps;
        sum.retrieval_blocks += s.retrieval_blocks;
        sum.all_attended += s.all_attended;
        sum.all_dense += s.all_dense;
        sum.prefill_blocks_kept += s.prefill_blocks_kept;
        sum.prefill_blocks_visible += s.prefill_blocks_visible;
    }
    return sum;
}

nlohmann::json sparsity_json(const SparsityStats& s) {
    return {
        {"decode_tokens", s.decode_tokens},
        {"retrieval_head_steps", s.retrieval_head_steps},
        {"tokens_per_retrieval_head", s.tokens_per_retrieval_head()},
        {"dense_tokens_per_retrieval_head",
         s.retrieval_head_steps ? static_cast<double>(s.retrieval_dense) / s.retrieval_head_steps
                                : 0.0},
        {"blocks_per_retrieval_head", s.blocks_per_retrieval_head()},
        {"compute_sparsity", s.compute_sparsity()},
        {"prefill_blocks_kept", s.prefill_blocks_kept},
        {"prefill_blocks_visible", s.prefill_blocks_visible}};
}

}  // namespace

std::string eval_length_label(int n_tokens) {
    return n_tokens % 1024 == 0 ? fmt::format("{}K", n_tokens / 1024) : fmt::format("{}", n_tokens);
}

std::string eval_report_markdown(const EvalReport& r) {
    std::string out = fmt::format("**purbo eval** {}; adapter {}", r.model,
                                  r.adapter.empty() ? "none" : r.adapter);
    if (!r.settings.empty()) out += fmt::format(" ({})", r.settings);
    if (!r.lengths.empty())
        out += fmt::format("; passkey {} trials per length, {} prompt, seed {}", r.trials,
                           r.passkey_format, r.seed);
    if (r.ppl_seqs > 0)
        out += fmt::format("; ppl {} x {} held-out tokens, {} prefilled", r.ppl_seqs, r.ppl_ctx,
                           r.ppl_prefix);
    out += fmt::format("; {}, {} thread{}; {}\n\n", r.device, r.threads, r.threads == 1 ? "" : "s",
                       r.date);

    out += "| variant |";
    std::string rule = "|---|";
    for (int n : r.lengths) {
        out += fmt::format(" passkey {} |", eval_length_label(n));
        rule += "---:|";
    }
    if (r.ppl_seqs > 0) {
        out += " ppl | KL vs dense |";
        rule += "---:|---:|";
    }
    out += " tokens / retrieval head | compute sparsity | KV cache MiB | time s |\n";
    rule += "---:|---:|---:|---:|\n";
    out += rule;
    const char* source = "ppl";
    for (const EvalVariantResult& v : r.variants) {
        out += fmt::format("| {}{} |", v.name,
                           v.description.empty() ? "" : fmt::format(" ({})", v.description));
        for (size_t i = 0; i < r.lengths.size(); ++i) {
            if (i < v.passkey.size()) {
                const PasskeyResult& p = v.passkey[i];
                out += fmt::format(" {:.1f}% ({}/{}) |", 100.0 * p.accuracy(), p.n_correct,
                                   p.trials.size());
            } else {
                out += " - |";
            }
        }
        if (r.ppl_seqs > 0) {
            if (v.ppl) {
                out += fmt::format(" {:.3f} | {} |", v.ppl->perplexity(),
                                   v.ppl->has_kl ? fmt::format("{:.4f}", v.ppl->mean_kl()) : "-");
            } else {
                out += " - | - |";
            }
        }
        const SparsityStats s = table_sparsity(v, &source);
        out += s.retrieval_head_steps > 0
                   ? fmt::format(" {:.0f} of {:.0f} |", s.tokens_per_retrieval_head(),
                                 static_cast<double>(s.retrieval_dense) / s.retrieval_head_steps)
                   : " - |";
        out += fmt::format(" {:.1f}% |", 100.0 * s.compute_sparsity());
        out += v.dense_kv_bytes > 0
                   ? fmt::format(" {:.1f} ({:.0f}%) |", v.kv_bytes / kMiB,
                                 100.0 * v.kv_bytes / static_cast<double>(v.dense_kv_bytes))
                   : " - |";
        out += fmt::format(" {:.0f} |\n", v.seconds);
    }
    out += fmt::format(
        "\nPasskey: share of answers holding the key (greedy); filler {}. Tokens / retrieval head "
        "and "
        "compute sparsity: decode steps of the {} task (keys read of those dense decode reads). KV "
        "cache (with the sparse model's index keys) at {} tokens (share of dense).",
        r.filler.empty() ? "-" : r.filler, source,
        r.variants.empty() ? 0 : r.variants.front().kv_ctx);
    for (const EvalVariantResult& v : r.variants) {
        const SparsityStats s = table_sparsity(v, &source);
        if (s.prefill_blocks_visible > 0)
            out += fmt::format(
                " {}: block-sparse prefill kept {:.1f}% of the blocks its retrieval heads' "
                "prompt tokens could see ({} task).",
                v.name, 100.0 * s.prefill_kept_share(), source);
    }
    for (const EvalVariantResult& v : r.variants) {
        if (v.passkey_top_k.empty() && v.ppl_top_k == 0) continue;
        std::vector<std::string> ks;
        for (size_t i = 0; i < v.passkey_top_k.size() && i < r.lengths.size(); ++i)
            ks.push_back(fmt::format("passkey {} K = {}", eval_length_label(r.lengths[i]),
                                     v.passkey_top_k[i]));
        if (v.ppl_top_k > 0) ks.push_back(fmt::format("ppl K = {}", v.ppl_top_k));
        out += fmt::format(" {}: {} blocks, the sparse model's mean per retrieval head per step.",
                           v.name, fmt::join(ks, ", "));
    }
    out += "\n";
    return out;
}

std::string eval_report_json(const EvalReport& r) {
    nlohmann::json j;
    j["model"] = r.model;
    j["adapter"] = r.adapter;
    j["settings"] = r.settings;
    j["device"] = r.device;
    j["threads"] = r.threads;
    j["date"] = r.date;
    if (!r.lengths.empty()) {
        j["passkey"] = {{"lengths", r.lengths},
                        {"trials", r.trials},
                        {"seed", r.seed},
                        {"format", r.passkey_format},
                        {"filler", r.filler}};
    }
    if (r.ppl_seqs > 0)
        j["ppl"] = {{"ctx", r.ppl_ctx}, {"prefix", r.ppl_prefix}, {"sequences", r.ppl_seqs}};
    nlohmann::json variants = nlohmann::json::array();
    for (const EvalVariantResult& v : r.variants) {
        nlohmann::json jv = {{"name", v.name},         {"description", v.description},
                             {"kv_bytes", v.kv_bytes}, {"dense_kv_bytes", v.dense_kv_bytes},
                             {"kv_ctx", v.kv_ctx},     {"seconds", v.seconds}};
        nlohmann::json passkey = nlohmann::json::array();
        for (size_t i = 0; i < v.passkey.size(); ++i) {
            const PasskeyResult& p = v.passkey[i];
            nlohmann::json buckets = nlohmann::json::array(), trials = nlohmann::json::array();
            for (const PasskeyDepthBucket& b : p.buckets)
                buckets.push_back(
                    {{"depth_lo", b.lo},
                     {"depth_hi", b.hi},
                     {"trials", b.n_trials},
                     {"correct", b.n_correct},
                     {"accuracy",
                      b.n_trials ? static_cast<double>(b.n_correct) / b.n_trials : 0.0}});
            for (const PasskeyTrialResult& t : p.trials)
                trials.push_back({{"key", t.trial.key},
                                  {"depth", t.trial.depth},
                                  {"needle_depth", t.depth},
                                  {"answer", t.answer},
                                  {"correct", t.correct},
                                  {"seconds", t.seconds}});
            nlohmann::json jp = {{"length", p.n_tokens},
                                 {"accuracy", p.accuracy()},
                                 {"correct", p.n_correct},
                                 {"trials", p.trials.size()},
                                 {"seconds", p.seconds},
                                 {"depths", buckets},
                                 {"sparsity", sparsity_json(p.sparsity)},
                                 {"answers", trials}};
            if (i < v.passkey_top_k.size()) jp["top_k_blocks"] = v.passkey_top_k[i];
            passkey.push_back(jp);
        }
        if (!passkey.empty()) jv["passkey"] = passkey;
        if (v.ppl) {
            jv["ppl"] = {{"perplexity", v.ppl->perplexity()},
                         {"mean_nll", v.ppl->mean_nll()},
                         {"kl_vs_dense",
                          v.ppl->has_kl ? nlohmann::json(v.ppl->mean_kl()) : nlohmann::json()},
                         {"scored_tokens", v.ppl->n_scored},
                         {"seconds", v.ppl->seconds},
                         {"sparsity", sparsity_json(v.ppl->sparsity)}};
            if (v.ppl_top_k > 0) jv["ppl"]["top_k_blocks"] = v.ppl_top_k;
        }
        variants.push_back(jv);
    }
    j["variants"] = variants;
    // Answers may hold invalid UTF-8 (a model that emits parts of characters): replaced by U+FFFD.
    return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace purbo
