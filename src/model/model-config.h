// Hyperparameters of a decoder-only transformer, independent of the file it came from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace purbo {

// Families differ only in switches below: Llama (and SmolLM2, Mistral) = plain;
// Qwen2 = q/k/v biases; Qwen3 = per-head RMSNorm of q and k before RoPE, explicit head_dim.
enum class Arch { kLlama, kMistral, kQwen2, kQwen3 };
const char* arch_name(Arch arch);

enum class RopeScaling { kNone, kLinear, kLlama3, kYarn };
const char* rope_scaling_name(RopeScaling scaling);

struct RopeConfig {
    float theta = 10000.0f;  // base
    int rotary_dim = 0;      // = head_dim unless partial_rotary_factor < 1
    RopeScaling scaling = RopeScaling::kNone;
    float factor = 1.0f;                    // linear, llama3, yarn
    float low_freq_factor = 1.0f;           // llama3
    float high_freq_factor = 4.0f;          // llama3
    int original_max_position = 0;          // llama3, yarn
    float beta_fast = 32.0f;                // yarn
    float beta_slow = 1.0f;                 // yarn
    float attention_factor = 0.0f;          // yarn; 0 = derived from factor (0.1 ln(factor) + 1)
    float mscale = 0.0f;                    // yarn (DeepSeek spelling); 0 = unset
    float mscale_all_dim = 0.0f;            // yarn (DeepSeek spelling); 0 = unset
    bool truncate = true;                   // yarn: round the correction range to integers
    // Per-pair divisors of the frequencies (rotary_dim / 2,), as llama.cpp's converter stores
    // Llama-3.1 scaling in GGUF (tensor rope_freqs.weight); empty = none.
    std::vector<float> freq_factors;
};

struct ModelConfig {
    Arch arch = Arch::kLlama;
    std::string name;  // human-readable, from the file's metadata
    int n_layer = 0;
    int n_embd = 0;     // hidden size
    int n_head = 0;     // query heads
    int n_head_kv = 0;  // key/value heads (grouped-query attention)
    int head_dim = 0;
    int n_ff = 0;  // MLP intermediate size
    int n_vocab = 0;
    int n_ctx_train = 0;  // max_position_embeddings
    float rms_eps = 1e-6f;
    RopeConfig rope;
    bool attn_qkv_bias = false;  // Qwen2
    bool attn_qk_norm = false;   // Qwen3
    // Llama/Qwen3 `attention_bias`: o_proj has a bias too. The forward pass has no o bias, so
    // the loader accepts it only when it is all zeros.
    bool attn_o_bias = false;
    bool tied_embeddings = false;
    int sliding_window = 0;  // Mistral/Qwen config value; recorded, not applied by dense mode

    int n_gqa() const { return n_head_kv == 0 ? 0 : n_head / n_head_kv; }
    // Checks every field for consistency; `source` names the file in the message.
    Status validate(const std::string& source) const;
};

// Per-pair rotation frequencies after scaling, as Hugging Face computes them in fp32:
// inv_freq (rotary_dim / 2,) and the factor that scales cos/sin (YaRN; 1 otherwise).
struct RopeTables {
    std::vector<float> inv_freq;
    float attn_factor = 1.0f;
};
RopeTables rope_tables(const RopeConfig& rope);

}  // namespace purbo
