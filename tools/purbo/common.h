// Pieces shared by the subcommands: the default model path, model + session flags.
#pragma once

#include <string>

#include "model/model.h"
#include "options.h"
#include "runtime/session.h"
#include "sparse/adapter.h"
#include "sparse/sparse-policy.h"

namespace purbo::cli {

// $PURBO_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf next to the source tree the
// binary was built from, else in the current directory.
std::string default_model_path();

struct ModelFlags {
    std::string model;
    std::string device = "cpu";
    int threads = 0;
    int ctx = 4096;
    int batch = 512;
    bool verbose = false;
    bool q8_activations = false;
    bool no_graphs = false;
    std::string cache_type;  // --cache-type: "" (the backend's preferred), f32 or bf16
};

// The sparse model: an adapter (head classes and indexer) on top of the dense one.
struct SparseFlags {
    std::string adapter;          // --adapter FILE
    bool sparse = false;          // --sparse: the default adapter of the default model
    bool block_sparse_prefill = false;
    std::string prefill_select = "block";  // --prefill-select: block (per query block) or token
    float prefill_top_p = 0;               // --prefill-top-p; 0 = decode's p
    int prefill_samples = 0;               // --prefill-samples; 0 = every token of a query block
    int prefill_query_block = 0;           // --prefill-query-block; 0 = the selection's block
    float sparse_top_p = 0;       // 0 = the adapter's
    std::string index_keys;       // --index-keys: f32, bf16 or f8; "" = the KV cache's type
    bool no_rings = false;
    bool collect_stats = true;    // not a flag: benchmarks turn it off (a readback per layer)

    bool enabled() const { return sparse || !adapter.empty(); }
};

// The committed adapter for the default model (adapters/ next to the source tree).
std::string default_adapter_path();
void add_sparse_flags(OptionSet& set, SparseFlags& flags);
// --index-keys as a DType; nullopt for "" (the KV cache's type).
Result<std::optional<DType>> parse_index_key_type(std::string_view name);
// --prefill-select (block or token) and --prefill-samples (>= 0, block only), of any subcommand.
Status check_prefill_selection_flags(const std::string& select, int samples, int query_block);
// The run options the flags give (checked: a bad value names its flag).
Result<SparseRunOptions> sparse_run_options(const SparseFlags& flags);
// Loads the adapter the flags name and checks it against the model; the policy factory for
// Session::create (empty when the flags ask for the dense model). `adapter` receives it.
Result<AttentionPolicyFactory> sparse_policy_from_flags(const SparseFlags& flags, const Model& model,
                                                        Adapter* adapter = nullptr);
// Prints the sparse model's figures (head classes, KV bytes, decode sparsity) to stderr.
void print_sparsity(Session& session, const Adapter& adapter);

// Adds -m, --device, -t, -c, -b, --verbose to an option table.
void add_model_flags(OptionSet& set, ModelFlags& flags);
SessionOptions session_options(const ModelFlags& flags);
// Loads the model named by the flags (or the default one) and reports the time it took.
Result<Model> load_model(ModelFlags& flags, double* load_ms);

// Prints "purbo <cmd>: <status>" to stderr and returns the exit code for it.
int report_error(const char* command, const Status& status);

int cmd_run(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_calibrate(int argc, char** argv);
int cmd_eval(int argc, char** argv);
// purbo bench --attention (bench-attention.cpp): one attention layer's op alone.
int cmd_bench_attention(int argc, char** argv);
int cmd_train_indexer(int argc, char** argv);

}  // namespace purbo::cli
