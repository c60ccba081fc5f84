// The sparse model at run time (method.md sections 2 to 5): an AttentionPolicy built from an
// adapter. Local heads attend to sinks + window, and KV heads whose query heads are all local
// keep only those rows (a ring). Retrieval heads attend densely in prefill (the paper) or,
// with block_sparse_prefill, to the blocks their indexer selects for each query block of the
// prompt (ours); in decode they attend to the top-p blocks their indexer selects per token.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "model/attention-policy.h"
#include "model/model-config.h"
#include "runtime/session.h"
#include "sparse/adapter.h"

namespace purbo {

struct SparseRunOptions {
    bool block_sparse_prefill = false;  // indexer selection for prefill tokens too (method.md section 5)
    // Block-sparse prefill: one selection per query block of B prompt tokens, from the mean of
    // their index distributions (method.md section 5, the default), or one per token.
    bool prefill_per_query_block = true;
    float prefill_top_p = 0;  // block-sparse prefill's p; 0 = decode's (top_p, else the adapter's)
    // Per query block: > 0 averages the distributions of this many of the block's tokens
    // (BlockSelectParams::query_block_samples); 0 = all.
    int prefill_samples = 0;
    // Per query block: its tokens, a multiple of the selection's block
    // (BlockSelectParams::query_block); 0 = the block.
    int prefill_query_block = 0;
    bool rings = true;                  // all-local KV heads in a ring of sinks + window rows
    float top_p = 0;                    // 0 = the adapter's
    // > 0: retrieval heads keep this many blocks per decode step, the heaviest by index mass
    // (top-k instead of top-p: the fixed-budget baseline the method is compared with).
    int top_k_blocks = 0;
    // Count attended tokens (SparsityStats); reads the selection counts back every layer,
    // which costs a device synchronisation per layer on a GPU.
    bool collect_stats = true;
    // Element type of the cached index keys (one of the backend's index_key_dtypes()); nullopt:
    // default_index_key_type's. f8 e4m3 halves bf16's selection reads in decode, a quarter of
    // f32's.
    std::optional<DType> index_key_type;
};

// The cached index keys' type when none is asked for: bf16 where the backend keeps it, else the
// KV cache's. bf16 keys halve what the decode selection reads from memory against f32 ones, at
// the same accuracy (docs/evaluation.md: the same passkey answers, ppl and KL on the default
// model); f8 halves it again at a small KL cost, so it stays a choice.
DType default_index_key_type(const Backend& backend, DType kv_cache_type);

// What the sparse model did, summed over the steps since the last reset.
struct SparsityStats {
    int64_t decode_tokens = 0;
    // Key tokens attended by retrieval heads in decode with a selection, and what dense
    // attention would have read for them (the query's position + 1 each).
    int64_t retrieval_attended = 0;
    int64_t retrieval_dense = 0;
    int64_t retrieval_head_steps = 0;  // (token, retrieval head) pairs behind the sums
    int64_t retrieval_blocks = 0;      // blocks those pairs selected
    // All heads of all layers in decode: keys attended and keys dense attention reads.
    int64_t all_attended = 0;
    int64_t all_dense = 0;
    // Block-sparse prefill: blocks the retrieval heads' (token, head) rows kept, and the
    // blocks those rows could see (the query position's block and all before it).
    int64_t prefill_blocks_kept = 0;
    int64_t prefill_blocks_visible = 0;

    // Mean key tokens a retrieval head attends per decode step.
    double tokens_per_retrieval_head() const {
        return retrieval_head_steps ? static_cast<double>(retrieval_attended) / retrieval_head_steps : 0;
    }
    // Mean blocks a retrieval head selects per decode step.
    double blocks_per_retrieval_head() const {
        return retrieval_head_steps ? static_cast<double>(retrieval_blocks) / retrieval_head_steps : 0;
    }
    // Share of the visible blocks block-sparse prefill kept (0 without it).
    double prefill_kept_share() const {
        return prefill_blocks_visible
                   ? static_cast<double>(prefill_blocks_kept) / prefill_blocks_visible
                   : 0;
    }
    // 1 - attended / dense over every head in decode (method.md's compute sparsity).
    double compute_sparsity() const {
        return all_dense ? 1.0 - static_cast<double>(all_attended) / static_cast<double>(all_dense) : 0;
    }
};

class SparsePolicy : public AttentionPolicy {
public:
  // key_type: the session's KV cache type (nullopt: the backend's preferred one); the cached
  // index keys take options.index_key_type, else default_index_key_type's.
  static Result<std::unique_ptr<SparsePolicy>> create(Backend& backend, const ModelConfig& config,
                                                      const Adapter& adapter, int n_seq, int n_ctx,
                                                      int max_batch,
                                                      const SparseRunOptions& options,
                                                      std::optional<DType> key_type = std::nullopt);

  KvLayout kv_layout() const override;
  size_t cache_bytes() const override;  // the cached index keys
  Status plan_layer(int il, const Tensor& q_pre, const Tensor& k_pre, const TokenPlacement& place,
                    AttentionParams& params) override;
  // Adds the decode step's layers to the statistics (reads the selections' counts back).
  Status end_batch(const TokenPlacement& place) override;

  const SparsityStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  const SparseSettings& settings() const { return settings_; }
  int n_retrieval() const { return n_retrieval_; }
  bool has_indexer() const { return has_indexer_; }

private:
    SparsePolicy(Backend& backend, const ModelConfig& config) : backend_(backend), config_(config) {}
    Status prepare(const Adapter& adapter, int n_seq, int n_ctx, int max_batch, DType key_type);
    Status count(int il, const TokenPlacement& place, const Tensor& counts, bool selected);
    Status count_prefill(int il, const TokenPlacement& place, const Tensor& counts);

    // One layer's head classes and indexer state.
    struct Layer {
        std::vector<uint8_t> local;      // (h,) 1 = local head
        std::vector<int32_t> retrieval;  // query heads, ascending (hr,)
        std::vector<int32_t> head_row;   // (h,) row in the selection, or -1
        Tensor wq;                       // (hr * r, h * d) indexer query projections, block rows
        Tensor wk;                       // (hr * r, g * d) indexer key projections
        Tensor index_keys;               // (s, hr, c, r) cached Wk k of every position
                                         // (SparseRunOptions::index_key_type)
        Tensor blocks;                   // (max_batch, hr, max_blocks) i32
        Tensor counts;                   // (max_batch, hr) i32
        BlockSelection selection;
        // What end_batch counts of this batch: 1 = a decode step with dense retrieval heads,
        // 2 = a decode step with a selection, 3 = block-sparse prefill; 0 = nothing.
        uint8_t to_count = 0;
    };

    Backend& backend_;
    ModelConfig config_;
    SparseSettings settings_;
    SparseRunOptions options_;
    bool has_indexer_ = false;
    int n_retrieval_ = 0;
    int max_blocks_ = 0;
    std::vector<Layer> layers_;
    Tensor iq_;  // (max_batch, max hr * r) scratch
    Tensor ik_;  // (max_batch, max hr * r) scratch
    SparsityStats stats_;
};

// A factory for Session::create that builds a SparsePolicy from `adapter` (copied).
AttentionPolicyFactory sparse_policy_factory(const Adapter& adapter, const SparseRunOptions& options = {});

}  // namespace purbo
