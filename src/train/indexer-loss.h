// Stage-1 loss of one retrieval head over one sequence (method.md section 6) and its gradient.
// Letters: N keys (positions 0..N-1), nq recorded query rows, d head dim, r indexer dim.
//
//   teacher T(m, n) = softmax_{n <= m}(scale * qpost_m . kpost_n)   the model's dense attention
//   student S(m, n) = softmax_{n <= m}((Wq qpre_m) . (Wk kpre_n))   the indexer (no scale, no RoPE)
//   loss = mean over the used queries m of KL(T_m || S_m)           forward KL
//
// With s(m, n) the student's logits, dL/ds(m, n) = G(m, n) = (S(m, n) - T(m, n)) / n_queries,
// and with iq_m = Wq qpre_m (r,), ik_n = Wk kpre_n (r,):
//   dWq = sum_m (sum_n G(m, n) ik_n) qpre_m^T,   dWk = sum_n (sum_m G(m, n) iq_m) kpre_n^T.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "sparse/attention-record.h"
#include "sparse/head-rows.h"
#include "train/indexer-metrics.h"

namespace purbo {

// What the loss reads of one query head: its queries and the keys of its KV group.
struct HeadInputs {
    RowsView q_pre;                      // (nq, d)
    RowsView q_post;                     // (nq, d)
    RowsView k_pre;                      // (N, d)
    RowsView k_post;                     // (N, d)
    std::span<const int32_t> positions;  // (nq,) position of each query row, ascending
};

// Query head `head` of layer `layer` in `record` (all four kinds recorded); its KV head is
// head / n_gqa.
HeadInputs head_inputs(const AttentionRecord& record, int layer, int head, int n_gqa);

struct IndexerLossOptions {
    float scale = 0.0f;  // the teacher's softmax scale; 0 = 1 / sqrt(d)
    // Queries at earlier positions are left out. Position 0 sees only itself (both
    // distributions are one-hot: KL 0, gradient 0), the next few see a handful of keys and
    // say little about long-range retrieval.
    int min_position = 1;
    // Query rows per block of the fast path: each block holds two (query_chunk, N) f32 score
    // matrices. Speed and memory only, not the result (beyond f32 rounding).
    int query_chunk = 256;
    // Top-p recall on every metric_stride-th used query (0 = none): a sort per query costs
    // O(N log N), more than the loss itself at long N.
    int metric_stride = 0;
    float top_p = 0.9f;

    // The softmax scale the teacher uses for head dim d.
    float teacher_scale(int d) const;
    // The first query row at a position >= min_position (rows ascend by position).
    int64_t first_used_row(std::span<const int32_t> positions) const;
    // Whether used query u (0-based among the used ones) is a recall sample.
    bool samples(int64_t used_index) const { return metric_stride > 0 && used_index % metric_stride == 0; }
};

// The checks every implementation makes: head dims agree, row counts match, positions ascend
// within the keys, wq and wk hold rank x d values.
Status indexer_loss_check(const HeadInputs& in, size_t wq_size, size_t wk_size, int rank);

struct IndexerLossResult {
    double loss = 0;         // mean KL over the used queries (nats)
    int64_t n_queries = 0;   // used queries
    std::vector<float> dwq;  // (r, d)
    std::vector<float> dwk;  // (r, d)
    IndexerMetrics metrics;  // KL sums over every used query; recall over the sampled ones
};

// Fast path: f32, OpenBLAS sgemm for the block products, OpenMP over query rows, stable
// log-sum-exp. Deterministic for a given BLAS thread count. wq, wk: (r, d).
Result<IndexerLossResult> indexer_loss(const HeadInputs& in, std::span<const float> wq,
                                       std::span<const float> wk, int rank,
                                       const IndexerLossOptions& options = {});

// The same on a GPU (cuda): f32 cuBLAS products, rows in double, recall samples sorted on the
// host. Keeps its device buffers between calls. Agrees with indexer_loss up to f32 rounding.
class IndexerLossDevice {
public:
    virtual ~IndexerLossDevice() = default;
    virtual Result<IndexerLossResult> run(const HeadInputs& in, std::span<const float> wq,
                                          std::span<const float> wk, int rank,
                                          const IndexerLossOptions& options) = 0;
};
// kUnsupported when this build has no CUDA backend or no device is visible.
Result<std::unique_ptr<IndexerLossDevice>> indexer_loss_device_cuda();

// The oracle: plain loops in double over one query at a time (O(N) memory). wq, wk: (r, d).
struct IndexerLossRefResult {
    double loss = 0;
    int64_t n_queries = 0;
    std::vector<double> dwq;  // (r, d)
    std::vector<double> dwk;  // (r, d)
    IndexerMetrics metrics;
};
Result<IndexerLossRefResult> indexer_loss_ref(const HeadInputs& in, std::span<const double> wq,
                                              std::span<const double> wk, int rank,
                                              const IndexerLossOptions& options = {});

}  // namespace purbo
