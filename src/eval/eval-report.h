// The results of `purbo eval`: model variants (dense, sparse, all-local, top-k) x tasks
// (passkey retrieval per context length, perplexity and KL vs dense), as one markdown table or
// a JSON document with every detail (per-depth accuracy, per-trial answers, timings).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "eval/passkey.h"
#include "eval/perplexity.h"

namespace purbo {

struct EvalVariantResult {
    std::string name;                    // "dense", "sparse", "local", "topk"
    std::string description;             // its settings in a few words ("W 1024, S 4")
    std::vector<PasskeyResult> passkey;  // one per EvalReport::lengths entry (empty: not run)
    std::vector<int> passkey_top_k;      // topk: the block budget K of each length
    std::optional<PerplexityResult> ppl;
    int ppl_top_k = 0;  // topk: K of the perplexity task
    // The KV cache of the variant's session at kv_ctx tokens, and a dense model's.
    size_t kv_bytes = 0;
    size_t dense_kv_bytes = 0;
    int kv_ctx = 0;
    double seconds = 0;  // every task of this variant
};

struct EvalReport {
    std::string model;     // file name
    std::string adapter;   // file name, or "" for none
    std::string settings;  // the adapter's W, S, p, B, r and retrieval heads in words
    std::string device;
    int threads = 0;
    std::string date;  // when the evaluation started, local time
    // Passkey task (empty lengths: not run).
    std::vector<int> lengths;
    int trials = 0;
    uint64_t seed = 0;
    std::string passkey_format;  // "plain" or "chat"
    std::string filler;          // where the filler text came from
    // Perplexity task (ppl_seqs 0: not run).
    int ppl_ctx = 0;
    int ppl_prefix = 0;
    int ppl_seqs = 0;
    std::vector<EvalVariantResult> variants;
};

// "2K" for multiples of 1024, else the number.
std::string eval_length_label(int n_tokens);

// A header line naming the model, adapter, settings and date, the table (rows = variants;
// columns = passkey accuracy per length, perplexity, KL vs dense, tokens attended per retrieval
// head, compute sparsity, KV cache, time) and notes on how the columns were measured.
std::string eval_report_markdown(const EvalReport& report);
// Everything, including per-depth accuracy and each trial's answer (indented JSON text).
std::string eval_report_json(const EvalReport& report);

}  // namespace purbo
