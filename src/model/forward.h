// The forward pass of a decoder-only transformer (Llama / Mistral / Qwen2 / Qwen3 families),
// written once against the op interface. Every intermediate has a name and can be observed
// through a tap (for comparison with Hugging Face activations, layer by layer).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "model/attention-policy.h"
#include "model/kv-cache.h"
#include "model/model-config.h"
#include "model/weights.h"

namespace purbo {

// Row-wise stacks of the projections that read the same input (see Forward::fused_).
struct FusedWeights {
    Tensor wqkv;       // (q + 2 kv, e)
    Tensor w_gate_up;  // (2 f, e)
};

// A batch of tokens from one or more sequences (a micro-batch: at most max_batch tokens).
struct ForwardBatch {
    std::span<const int32_t> tokens;       // (n,)
    TokenPlacement place;                   // where each token goes in the KV cache
    std::span<const int32_t> logit_rows;    // (r,) batch rows whose logits are wanted, ascending
};

// Observer of named intermediates: "embedding", "attn_norm", "q", "k", "v", "attn_out",
// "attn_proj", "ffn_inp", "ffn_norm", "ffn_out", "layer" (residual after the layer),
// "final_norm". `layer` is -1 outside the blocks. Tensors live on the backend.
using ForwardTap = std::function<void(std::string_view name, int layer, const Tensor& t)>;

struct ForwardOptions {
    int max_batch = 512;  // tokens per micro-batch; scratch buffers are sized for it
};

class Forward {
public:
    // Prepares the weights for `backend` (converting or uploading them) and allocates scratch.
    static Result<std::unique_ptr<Forward>> create(Backend& backend, const ModelConfig& config,
                                                   const ModelWeights& host_weights,
                                                   const ForwardOptions& options = {});

    // Runs the batch, appends its keys/values to `cache`, writes logits (r, n_vocab) f32
    // into `logits` (a host tensor) for the rows the batch asks for.
    Status run(const ForwardBatch& batch, const KvCache& cache, const Tensor& logits);

    void set_tap(ForwardTap tap) { tap_ = std::move(tap); }
    // Head classes and block selection of a sparse model (not owned); null = dense.
    void set_policy(AttentionPolicy* policy) { policy_ = policy; }
    AttentionPolicy* policy() const { return policy_; }
    const ModelConfig& config() const { return config_; }
    Backend& backend() { return backend_; }
    int max_batch() const { return options_.max_batch; }

private:
    Forward(Backend& backend, const ModelConfig& config, const ForwardOptions& options)
        : backend_(backend), config_(config), options_(options) {}
    Status prepare(const ModelWeights& host_weights);
    Status prepare_layer(const LayerWeights& host, LayerWeights& dst, FusedWeights& fused);
    Status run_layer(int il, int n, const ForwardBatch& batch, const KvCache& cache);
    // Every op of the batch on the backend, through the LM head of its first `logit_rows`
    // wanted rows (0: up to the final norm); nothing is read back.
    Status run_ops(const ForwardBatch& batch, const KvCache& cache, int logit_rows);
    // logits_ (rn, n_vocab) = LM head of the final-norm rows `rows` (rn <= picked_ rows).
    Status lm_head(std::span<const int32_t> rows);
    void tap(std::string_view name, int layer, const Tensor& t) const {
        if (tap_) tap_(name, layer, t);
    }

    Backend& backend_;
    ModelConfig config_;
    ForwardOptions options_;
    ModelWeights weights_;  // on the backend
    // Per layer: wq|wk|wv and w_gate|w_up stacked row-wise into one matrix each (empty when
    // the parts differ in dtype or row length). weights_'s wq, wk, ... are then row views of
    // them. A decode step (n = 1) runs one matmul per stack instead of one per part: fewer
    // parallel regions, more rows for each thread.
    std::vector<FusedWeights> fused_;
    RopeTables rope_;
    ForwardTap tap_;
    AttentionPolicy* policy_ = nullptr;

    // Scratch for one micro-batch of up to max_batch tokens (b), backend tensors:
    Tensor x_;         // (b, e) residual stream
    Tensor xn_;        // (b, e) normalised input of a sublayer
    Tensor q_;         // (b, h, d)
    Tensor k_;         // (b, g, d)
    Tensor v_;         // (b, g, d)
    Tensor attn_;      // (b, h, d)
    Tensor proj_;      // (b, e) output of the attention or MLP projection
    Tensor gate_;      // (b, f)
    Tensor up_;        // (b, f)
    Tensor act_;       // (b, f)
    Tensor qkv_;       // (1, q + 2 kv) fused q|k|v of one token
    Tensor gate_up_;   // (1, 2 f) fused gate|up of one token
    Tensor picked_;    // (b, e) final-norm rows whose logits are wanted
    Tensor logits_;    // (b, n_vocab) on the backend
};

}  // namespace purbo
