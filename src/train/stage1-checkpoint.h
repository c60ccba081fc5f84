// Checkpoint of stage-1 training: everything a resumed run needs to continue bit-exactly
// (indexer weights, AdamW moments, the step), as one safetensors file written atomically.
//   tensors: wq, wk, adamw.m.wq, adamw.v.wq, adamw.m.wk, adamw.v.wk  all (n_retrieval, r, d) f32
//   metadata: format, step, retrieval ("layer:head,..."), the schedule it was trained with and
//             the metrics of the untrained indexer (initial.*, eval_initial.*: for the summary)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "sparse/adapter.h"
#include "train/adamw.h"
#include "train/indexer-metrics.h"

namespace purbo {

struct Stage1Checkpoint {
    int64_t step = 0;  // completed steps; a resumed run starts at this one
    std::vector<HeadId> retrieval;
    Tensor wq;  // (n_retrieval, r, d) host f32, owned
    Tensor wk;  // (n_retrieval, r, d)
    AdamWMoments wq_moments;
    AdamWMoments wk_moments;
    // The schedule of the run that wrote it (a resumed run with another one is warned about).
    int total_steps = 0;
    int warmup_steps = 0;
    float lr = 0.0f;
    IndexerMetrics initial;  // the untrained indexer on the first sequence
    // The untrained indexer on the held-out sequence (Stage1Options::eval_tokens), if any.
    bool has_eval_initial = false;
    IndexerMetrics eval_initial;
};

Status stage1_checkpoint_save(const std::string& path, const Stage1Checkpoint& checkpoint);
Result<Stage1Checkpoint> stage1_checkpoint_load(const std::string& path);

}  // namespace purbo
