// purbo bench --attention --retrieval R: one layer of the sparse model (method.md) with the
// paper's head classes: a share R of the query heads are retrieval heads, the rest local
// heads (window + sinks). Prefill: retrieval heads dense, local heads windowed (the paper's
// prefill). Decode: for each selected-block fraction f, the top-p block selection over cached
// index keys drawn so that f of the blocks hold 0.95 of the index mass (a trained indexer's
// peaked distribution; the share the selection then kept is reported), and attention over f
// of the blocks, timed apart and together, next to dense decode on the same cache. With
// block_sparse_prefill, prefill also runs in the indexer-driven mode (method.md section 5): per
// chunk of queries, the selection over the cached index keys (one per query block of B tokens,
// or one per token), then attention over it; the fractions set each retrieval head's block budget
// there (a fixed top-K by index mass, K = fraction x the context's blocks, so that the kept share
// does not depend on the random index keys).
#pragma once

#include <string>
#include <vector>

#include "attention-cost.h"
#include "backend/backend.h"

namespace purbo::cli {

struct SparseBenchConfig {
    std::string shape_name, device, output;  // output: md or json
    // The tables' shape column: the preset's name, or heads/KV heads/head dim where flags
    // changed them (the JSON rows keep the name and give the three numbers).
    std::string shape_label;
    AttentionShape shape;
    std::vector<int64_t> prefill, decode;
    std::vector<double> fractions;      // share of blocks each retrieval head keeps, (0, 1]
    bool block_sparse_prefill = false;  // also time prefill with selected blocks, per fraction
    // Block-sparse prefill: one indexer query for every token (they all select the same blocks,
    // the best case for tiles over the union of a query block's selections); default: an
    // independent random query per token (unrelated selections, the worst case).
    bool shared_index_query = false;
    // Block-sparse prefill: one selection per query block of `block` tokens (the model's
    // default, method.md section 5), or one per token.
    bool per_query_block = true;
    // Per query block: average this many tokens' distributions (0: all).
    int query_block_samples = 0;
    // Per query block: its tokens, a multiple of `block` (0: block).
    int query_block = 0;
    // Block-sparse prefill: the selection's scratch per chunk call, which sets the chunk.
    int64_t select_memory_mib = 4096;
    double retrieval = 0.15;        // share of query heads that are retrieval heads
    int window = 8192, sinks = 4, block = 64, rank = 16;
    float top_p = 0.9f;
    int reps = 3;
    int64_t chunk = 65536;
    double max_seconds = 60;
    double deadline = 0;  // seconds from the start after which no case starts (0: none)
    DType cache_type = DType::kF32;      // of the KV cache
    DType index_key_type = DType::kF32;  // of the retrieval heads' index keys
    bool cold_cache = false;             // cpu: every call timed alone after evict_cpu_caches()
};

int run_sparse_attention_bench(Backend& be, const SparseBenchConfig& config);

}  // namespace purbo::cli
