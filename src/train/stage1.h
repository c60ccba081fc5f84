// Stage 1 (method.md section 6): distil each retrieval head's indexer from the model's own
// dense attention, backbone frozen. One sequence per step: record its attention with a dense
// run, then per retrieval head the KL loss and its closed-form gradient, global clipping,
// AdamW, warmup + cosine schedule.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "runtime/session.h"
#include "sparse/adapter.h"
#include "sparse/attention-record.h"
#include "train/indexer-loss.h"
#include "train/indexer-metrics.h"

namespace purbo {

// The token ids of training step `step` (0-based). The same step must give the same tokens
// for a resumed run to continue bit-exactly; step 0's sequence also initialises the indexer
// and measures it before and after training.
using TokenProvider = std::function<Result<std::vector<int32_t>>(int step)>;

enum class IndexerInit {
    kSvd,     // indexer_init_svd on the first sequence (method.md section 3, [ours])
    kRandom,  // indexer_init_random: a data-free baseline
};

struct Stage1Options {
    int steps = 600;
    float lr = 1e-3f;
    int warmup = 100;
    float min_lr_ratio = 0.0f;  // floor of the cosine, as a fraction of lr
    float weight_decay = 0.01f;
    float clip = 1.0f;  // global gradient norm over every head's Wq and Wk; <= 0 = off
    // Sequences longer than this are cut to their first seq_len tokens (0 = as given); the
    // session's context must hold them.
    int seq_len = 8192;
    int query_chunk = 256;  // IndexerLossOptions::query_chunk
    int min_position = 1;   // IndexerLossOptions::min_position
    // Recall on every metric_stride-th query: the sort per query costs more than the loss.
    int metric_stride = 16;
    IndexerInit init = IndexerInit::kSvd;  // when the adapter has no indexer yet
    uint64_t seed = 0;                     // of IndexerInit::kRandom
    // A row per step: step,lr,loss,grad_norm,recall,set_recall,teacher_mass,seconds.
    std::string log_csv;
    std::string checkpoint;      // stage1-checkpoint file; empty = none
    int checkpoint_every = 100;  // and after the last step
    bool resume = false;         // continue from `checkpoint` when it exists
    // Stop after this many steps of this run (0 = run to the end of the schedule), writing a
    // checkpoint there: a job split over several time-limited runs.
    int stop_after = 0;
    bool progress = true;  // a progress line on stderr
    // Measure the trained indexer again on step 0's sequence (one more dense run unless
    // cached) so the summary compares like with like.
    bool final_eval = true;
    // Records of this many recent sequences are kept and reused when a step's tokens repeat
    // one (the backbone is frozen, so its attention does not change): a corpus smaller than
    // the run then costs one dense run per sequence. A record holds only the layers with
    // retrieval heads: N x layers x (2 n_head + 2 n_head_kv) x d x 4 bytes (SmolLM2, 8K
    // tokens, 20 layers: 1 GiB).
    int record_cache = 0;
    // A held-out sequence (cut to seq_len): the indexer is measured on it before and after
    // training (two more dense runs). Empty = none.
    std::vector<int32_t> eval_tokens;
    // Where the loss and its gradient are computed: null = the CPU (OpenBLAS, heads in
    // parallel), else this device (indexer_loss_device_cuda; not owned), one head at a time.
    IndexerLossDevice* loss_device = nullptr;
};

// The measures of one step (or of an evaluation), over all retrieval heads.
struct Stage1StepStats {
    int step = 0;
    float lr = 0.0f;
    double loss = 0;       // mean over heads of the per-head mean KL
    double grad_norm = 0;  // global, before clipping
    IndexerMetrics metrics;
    double seconds = 0;
};

struct Stage1Summary {
    int first_step = 0;           // > 0 when resumed
    int steps = 0;                // total steps of the schedule
    IndexerMetrics initial;       // untrained indexer on step 0's sequence
    IndexerMetrics final;         // trained indexer on step 0's sequence (empty without final_eval)
    bool has_eval = false;        // eval_tokens were given
    IndexerMetrics eval_initial;  // untrained indexer on eval_tokens
    IndexerMetrics eval_final;    // trained indexer on eval_tokens
    Stage1StepStats last;         // the last step run
    double seconds = 0;
};

// Trains adapter.wq and adapter.wk in place (initialising them first when the adapter has
// none) and sets adapter.training_info. The session must run the adapter's base model.
Result<Stage1Summary> stage1_train(Session& session, Adapter& adapter,
                                   const TokenProvider& provider, const Stage1Options& options);

// The dense run of one sequence that stage 1 reads: record_attention, keeping only the
// layers that have retrieval heads (the others' tensors are left empty).
Result<AttentionRecord> stage1_record(Session& session, const Adapter& adapter,
                                      std::span<const int32_t> tokens);

// Loss, gradient and metrics of every retrieval head on one recorded sequence, without
// updating anything: the step's inner part, also used for evaluation. grad_wq, grad_wk
// (n_retrieval, r, d) are filled when non-null.
Result<Stage1StepStats> stage1_evaluate(const AttentionRecord& record, const Adapter& adapter,
                                        const Stage1Options& options,
                                        std::vector<float>* grad_wq = nullptr,
                                        std::vector<float>* grad_wk = nullptr);
// stage1_record, then stage1_evaluate.
Result<Stage1StepStats> stage1_evaluate(Session& session, const Adapter& adapter,
                                        std::span<const int32_t> tokens,
                                        const Stage1Options& options);

}  // namespace purbo
