#include "common.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/log.h"
#include "core/timer.h"

namespace purbo::cli {

std::string default_model_path() {
    namespace fs = std::filesystem;
    if (const char* env = std::getenv("PURBO_MODEL"); env != nullptr && *env != '\0') return env;
    const fs::path name = fs::path("models") / "SmolLM2-135M-Instruct.Q4_1.gguf";
    const fs::path in_source = fs::path(PURBO_SOURCE_DIR) / name;
    std::error_code ec;
    if (fs::exists(in_source, ec)) return in_source.string();
    return name.string();
}

void add_model_flags(OptionSet& set, ModelFlags& flags) {
    set.options.push_back({"--model", "-m", "PATH", "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct)", &flags.model});
    set.options.push_back({"--device", "", "NAME", "cpu (default), cpu-ref (fp32 oracle, slow) or cuda", &flags.device});
    set.options.push_back({"--threads", "-t", "N", "CPU threads (default: all cores)", &flags.threads});
    set.options.push_back({"--ctx-size", "-c", "N", "context size in tokens (default 4096)", &flags.ctx});
    set.options.push_back({"--batch-size", "-b", "N", "prompt tokens per forward pass (default 512)", &flags.batch});
    set.options.push_back({"--q8-activations", "", "",
                           "cpu decode: quantise activations to 8 bits (faster, llama.cpp's numerics; "
                           "default: exact fp32)", &flags.q8_activations});
    set.options.push_back({"--no-graphs", "", "",
                           "cuda: launch every op of a decode step on its own instead of replaying "
                           "the step as a CUDA graph", &flags.no_graphs});
    set.options.push_back({"--cache-type", "-ctk", "TYPE",
                           "KV cache element type: f32 or bf16 (default: bf16 on cuda, f32 on cpu)",
                           &flags.cache_type});
    set.options.push_back({"--verbose", "-v", "", "log loading and timing details", &flags.verbose});
}

namespace {

// --cache-type as a DType; nullopt for "" (the backend decides).
Result<std::optional<DType>> parse_cache_type(std::string_view name) {
    if (name.empty()) return std::optional<DType>{};
    if (name == "f32") return std::optional<DType>{DType::kF32};
    if (name == "bf16") return std::optional<DType>{DType::kBF16};
    return error(StatusCode::kInvalidArgument, "--cache-type '{}': expected f32 or bf16", name);
}

}  // namespace

SessionOptions session_options(const ModelFlags& flags) {
    SessionOptions o;
    o.backend = flags.device;
    o.n_threads = flags.threads;
    o.n_ctx = flags.ctx;
    o.n_batch = flags.batch;
    o.gemv_activations = flags.q8_activations ? ActivationPrecision::kQ8 : ActivationPrecision::kF32;
    o.step_graphs = !flags.no_graphs;
    Result<std::optional<DType>> cache_type = parse_cache_type(flags.cache_type);
    if (cache_type.is_ok()) o.cache_type = *cache_type;  // load_model has reported a bad one
    return o;
}

Result<Model> load_model(ModelFlags& flags, double* load_ms) {
    if (flags.verbose) log_set_level(LogLevel::kInfo);
    // Every subcommand loads the model before its session: flags are checked here, before
    // anything slow happens.
    PURBO_TRY(parse_cache_type(flags.cache_type).status());
    if (flags.model.empty()) flags.model = default_model_path();
    const double t0 = time_now_ms();
    Result<Model> m = model_load(flags.model);
    if (!m.is_ok() && m.status().code() == StatusCode::kNotFound && flags.model == default_model_path()) {
        return error(StatusCode::kNotFound, "{} (fetch the default model with scripts/fetch-model.sh, or pass -m)",
                     m.status().message());
    }
    if (load_ms != nullptr) *load_ms = time_now_ms() - t0;
    return m;
}

std::string default_adapter_path() {
    namespace fs = std::filesystem;
    const fs::path name = fs::path("adapters") / "SmolLM2-135M-Instruct.adapter.safetensors";
    const fs::path in_source = fs::path(PURBO_SOURCE_DIR) / name;
    std::error_code ec;
    if (fs::exists(in_source, ec)) return in_source.string();
    return name.string();
}

void add_sparse_flags(OptionSet& set, SparseFlags& flags) {
    set.options.push_back({"--adapter", "", "FILE", "run the sparse model of this adapter (purbo calibrate / train-indexer)",
                           &flags.adapter});
    set.options.push_back({"--sparse", "", "", "run the sparse model with the default model's committed adapter",
                           &flags.sparse});
    set.options.push_back({"--sparse-top-p", "", "P", "index mass retrieval heads keep in decode (default: the adapter's)",
                           &flags.sparse_top_p});
    set.options.push_back({"--block-sparse-prefill", "", "",
                           "retrieval heads attend to indexer-selected blocks in prefill too (default: dense)",
                           &flags.block_sparse_prefill});
    set.options.push_back(
        {"--prefill-select", "", "MODE",
         "block-sparse prefill: block = one selection per query block of B tokens, from the mean of "
         "their index distributions (default); token = one per token",
         &flags.prefill_select});
    set.options.push_back(
        {"--prefill-top-p", "", "P",
         "index mass retrieval heads keep in block-sparse prefill (default: decode's)",
         &flags.prefill_top_p});
    set.options.push_back(
        {"--prefill-samples", "", "K",
         "block-sparse prefill per query block: average the index distributions of K evenly "
         "spaced tokens of each block, not all (default 0: all)",
         &flags.prefill_samples});
    set.options.push_back(
        {"--prefill-query-block", "", "N",
         "block-sparse prefill: tokens per query block, a multiple of the selection's block "
         "(default: the block, 64)",
         &flags.prefill_query_block});
    set.options.push_back({"--no-rings", "", "", "keep every KV head for the whole context (no ring buffers)",
                           &flags.no_rings});
    set.options.push_back(
        {"--index-keys", "", "TYPE",
         "element type of the cached index keys: f32, bf16 or f8 (e4m3, 1 byte per value; "
         "default: bf16 where the backend keeps it, else the KV cache's type)",
         &flags.index_keys});
}

Result<std::optional<DType>> parse_index_key_type(std::string_view name) {
    if (name.empty()) return std::optional<DType>{};
    if (name == "f32") return std::optional<DType>{DType::kF32};
    if (name == "bf16") return std::optional<DType>{DType::kBF16};
    if (name == "f8" || name == "f8_e4m3") return std::optional<DType>{DType::kF8E4M3};
    return error(StatusCode::kInvalidArgument, "--index-keys '{}': expected f32, bf16 or f8", name);
}

Status check_prefill_selection_flags(const std::string& select, int samples, int query_block) {
    if (select != "block" && select != "token")
        return error(StatusCode::kInvalidArgument, "--prefill-select: '{}' is not block or token", select);
    if (samples < 0)
        return error(StatusCode::kInvalidArgument, "--prefill-samples: {} must be 0 (all) or positive", samples);
    if (samples > 0 && select != "block")
        return error(StatusCode::kInvalidArgument, "--prefill-samples applies to --prefill-select block only");
    if (query_block < 0)
        return error(StatusCode::kInvalidArgument,
                     "--prefill-query-block: {} must be 0 (the block) or positive", query_block);
    if (query_block > 0 && select != "block")
        return error(StatusCode::kInvalidArgument,
                     "--prefill-query-block applies to --prefill-select block only");
    return Status::ok();
}

Result<SparseRunOptions> sparse_run_options(const SparseFlags& flags) {
    if (flags.sparse_top_p != 0 && !(flags.sparse_top_p > 0 && flags.sparse_top_p <= 1))
        return error(StatusCode::kInvalidArgument, "--sparse-top-p: {} is not in (0, 1]",
                     flags.sparse_top_p);
    if (flags.prefill_top_p != 0 && !(flags.prefill_top_p > 0 && flags.prefill_top_p <= 1))
        return error(StatusCode::kInvalidArgument, "--prefill-top-p: {} is not in (0, 1]",
                     flags.prefill_top_p);
    PURBO_TRY(check_prefill_selection_flags(flags.prefill_select, flags.prefill_samples,
                                            flags.prefill_query_block));
    PURBO_ASSIGN_OR_RETURN(std::optional<DType> index_key_type,
                           parse_index_key_type(flags.index_keys));
    SparseRunOptions options;
    options.index_key_type = index_key_type;
    options.block_sparse_prefill = flags.block_sparse_prefill;
    options.prefill_samples = flags.prefill_samples;
    options.prefill_query_block = flags.prefill_query_block;
    options.prefill_per_query_block = flags.prefill_select == "block";
    options.prefill_top_p = flags.prefill_top_p;
    options.rings = !flags.no_rings;
    options.top_p = flags.sparse_top_p;
    options.collect_stats = flags.collect_stats;
    return options;
}

Result<AttentionPolicyFactory> sparse_policy_from_flags(const SparseFlags& flags, const Model& model,
                                                        Adapter* adapter_out) {
    if (!flags.enabled()) return AttentionPolicyFactory{};
    if (flags.sparse && !flags.adapter.empty())
        return error(StatusCode::kInvalidArgument, "give --sparse or --adapter, not both");
    PURBO_ASSIGN_OR_RETURN(SparseRunOptions options, sparse_run_options(flags));
    const std::string path = flags.sparse ? default_adapter_path() : flags.adapter;
    PURBO_ASSIGN_OR_RETURN(Adapter adapter, adapter_load(path));
    PURBO_TRY(
        adapter.check_model(model.config, model_fingerprint(model.config, model.weights), path));
    if (adapter_out != nullptr) *adapter_out = adapter;
    return sparse_policy_factory(adapter, options);
}

void print_sparsity(Session& session, const Adapter& adapter) {
    auto* policy = dynamic_cast<SparsePolicy*>(session.policy());
    if (policy == nullptr) return;
    const int heads = adapter.n_layer * adapter.n_head;
    const KvLayout layout = policy->kv_layout();
    int ring_heads = 0;
    for (const auto& l : layout.ring_heads) ring_heads += static_cast<int>(l.size());
    const KvCache& cache = session.cache();
    const double mib = 1024.0 * 1024.0;
    std::fprintf(stderr, "purbo: %16s = %d retrieval heads of %d (%.1f%%), %d of %d KV heads local-only (ring)\n",
                 "sparse heads", policy->n_retrieval(), heads, 100.0 * policy->n_retrieval() / heads, ring_heads,
                 adapter.n_layer * adapter.n_head_kv);
    // Memory sparsity counts the index keys with the keys and values they stand beside.
    const double kept = static_cast<double>(session.kv_bytes()),
                 dense = static_cast<double>(cache.dense_nbytes());
    std::fprintf(stderr,
                 "purbo: %16s = %.2f MiB + %.2f MiB of index keys (dense %.2f MiB, memory sparsity "
                 "%.1f%%)\n",
                 "KV cache", static_cast<double>(cache.nbytes()) / mib,
                 static_cast<double>(policy->cache_bytes()) / mib, dense / mib,
                 100.0 * (1.0 - kept / dense));
    const SparsityStats& st = policy->stats();
    if (st.decode_tokens == 0) return;
    const SparseSettings& ss = policy->settings();
    std::fprintf(stderr, "purbo: %16s = W %d, S %d, p %.2f, B %d, r %d%s\n", "sparse settings", ss.window, ss.n_sink,
                 ss.top_p, ss.block_size, ss.rank, policy->has_indexer() ? "" : " (no indexer: retrieval heads dense)");
    if (st.retrieval_head_steps > 0) {
        std::fprintf(stderr, "purbo: %16s = %.1f tokens per retrieval head per step (of %.1f dense, %.1f%% kept)\n",
                     "top-p selection", st.tokens_per_retrieval_head(),
                     static_cast<double>(st.retrieval_dense) / static_cast<double>(st.retrieval_head_steps),
                     100.0 * static_cast<double>(st.retrieval_attended) / static_cast<double>(st.retrieval_dense));
    }
    std::fprintf(stderr, "purbo: %16s = %.1f%% of the keys dense decode reads were skipped\n", "compute sparsity",
                 100.0 * st.compute_sparsity());
    if (st.prefill_blocks_visible > 0)
        std::fprintf(
            stderr,
            "purbo: %16s = %.1f%% of the blocks retrieval heads could see in prefill kept\n",
            "block-sparse", 100.0 * st.prefill_kept_share());
}

int report_error(const char* command, const Status& status) {
    std::fprintf(stderr, "purbo %s: %s\n", command, status.to_string().c_str());
    return 1;
}

}  // namespace purbo::cli
