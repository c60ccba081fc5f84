// The adapter: what turns a dense model into a sparse one (method.md). One safetensors file
// holds the indexer matrices of every retrieval head; its metadata holds the settings, every
// head's calibration score, the retrieval head list and a fingerprint of the base model.
// File layout: docs/file-formats.md ("Adapter").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/model-config.h"
#include "model/weights.h"

namespace purbo {

// The method's knobs (method.md notation). Defaults are the starting points of method.md
// section 8 for the default model; the paper's are W = 8192, r = 16.
struct SparseSettings {
    int window = 1024;    // W: keys a local head sees besides the sinks
    int n_sink = 4;       // S: first tokens every local head sees
    float top_p = 0.9f;   // p: index mass a retrieval head keeps in decode
    int block_size = 64;  // B: tokens per selection block
    int rank = 16;        // r: indexer dimension

    Status validate(const std::string& source) const;
};

// A query head of the model.
struct HeadId {
    int layer = 0;
    int head = 0;
    friend bool operator==(const HeadId&, const HeadId&) = default;
};

struct Adapter {
    SparseSettings settings;
    // Shape of the base model's attention.
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    std::string base_fingerprint;  // model_fingerprint() of the base model
    std::vector<float> scores;     // (n_layer * n_head,) calibration score of each query head
    std::vector<HeadId> retrieval;  // retrieval heads, ascending (layer, head); the rest are local
    // Indexer of retrieval head i (in `retrieval` order): wq[i], wk[i] are (r, d) f32 rows of
    // wq (n_retrieval, r, d) and wk (n_retrieval, r, d), host tensors. Empty before training
    // and initialisation: such an adapter only has head classes (decode is then dense for
    // retrieval heads).
    Tensor wq;
    Tensor wk;
    // Free-text provenance shown by `purbo inspect`: how the scores were measured and how the
    // indexer was trained (e.g. "needle calibration, 4 documents x 3 depths, 8192 tokens").
    std::string calibration_info;
    std::string training_info;

    bool has_indexer() const { return !wq.empty(); }
    bool is_retrieval(int layer, int head) const;
    float score(int layer, int head) const { return scores[static_cast<size_t>(layer * n_head + head)]; }
    // Index of (layer, head) in `retrieval`, or -1.
    int retrieval_index(int layer, int head) const;
    // Checks internal consistency (sizes, ranges, ordering); `source` names the file.
    Status validate(const std::string& source) const;
    // The part of validate() that needs no tensors: settings, shape, fingerprint, provenance and
    // the retrieval list (what a file's metadata holds, checked before its tensors are read).
    Status validate_fields(const std::string& source) const;
    // Checks that the adapter was made for a model of this shape and fingerprint.
    Status check_model(const ModelConfig& config, const std::string& fingerprint,
                       const std::string& source) const;
};

// An adapter for a model of this shape: the settings, the attention shape taken from the
// config, every head's score 0, no retrieval heads, no indexer, no fingerprint.
Adapter adapter_for_model(const ModelConfig& config, const SparseSettings& settings = {});

// A stable hash (hex) of the model's attention shape and of the bytes of a few of its tensors
// (embedding rows and the first layer's attention weights): detects an adapter used with
// another model, without reading the whole file.
std::string model_fingerprint(const ModelConfig& config, const ModelWeights& weights);

// Reads and validates an adapter file; errors name the file, the field and the value.
Result<Adapter> adapter_load(const std::string& path);
// The same from bytes in memory (fuzzing, embedded adapters); `source` names them in errors.
Result<Adapter> adapter_parse(std::span<const uint8_t> bytes, const std::string& source);
// Writes an adapter to `path` atomically (temporary name, then rename).
Status adapter_save(const std::string& path, const Adapter& adapter);

// rtp-llm's `headwise_config` (inside a model's config.json: one list of 0/1 head flags per
// layer key "0", "1", ..., 1 = retrieval head, plus sink_token_num and swa_token_num; a plain
// list of per-layer lists is read too). Import gives an adapter with head classes and no indexer;
// export writes a JSON object holding `headwise_config` (and the settings it has names for),
// into an existing config.json without touching its other keys.
Result<Adapter> adapter_from_headwise_config(const std::string& config_json_path,
                                             const ModelConfig& config);
Status adapter_export_headwise_config(const Adapter& adapter, const std::string& path);

}  // namespace purbo
