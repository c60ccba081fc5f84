// Initial indexer matrices of a retrieval head (method.md section 3, [ours]): an untrained
// indexer that already ranks keys like the head's own (pre-RoPE) attention, so stage 1 starts
// from a usable point instead of from noise.
//
// The indexer score is q^T M k with M = Wq^T Wk (d x d, rank r). We want it close to the
// head's own bilinear form scale * q^T k (scale = 1/sqrt(d)) on the head's data: minimise
//   E[(q^T (scale I - M) k)^2]  over rank-r M,  q ~ queries, k ~ keys (independently).
// With Cq = E[q q^T] = Lq Lq^T and Ck = E[k k^T] = Lk Lk^T (Cholesky) this expectation is
// ||Lq^T (scale I - M) Lk||_F^2, so (Eckart-Young) Lq^T M Lk is the rank-r truncation of
// scale Lq^T Lk = U S V^T, i.e.
//   Wq = S_r^{1/2} U_r^T Lq^{-1},   Wk = S_r^{1/2} V_r^T Lk^{-1}    (r x d each),
// and the remaining error is sum_{i > r} s_i^2.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "sparse/adapter.h"
#include "sparse/attention-record.h"
#include "sparse/head-rows.h"

namespace purbo {

struct IndexerInitOptions {
    // Ridge added to both covariances, relative to their mean eigenvalue (trace / d): keeps the
    // Cholesky factors invertible when a direction never occurs in the data (e.g. a dead
    // channel), at a relative bias of this size on the rest.
    double ridge = 1e-6;
};

struct HeadIndexerInit {
    std::vector<float> wq;  // (r, d)
    std::vector<float> wk;  // (r, d)
    // (d,) singular values of scale Lq^T Lk, descending: the error of the rank-r form is the
    // sum of the squares past r.
    std::vector<double> singular_values;
};

// The SVD initialisation of one head from its pre-RoPE queries q (nq, d) and the pre-RoPE keys
// of its KV group k (N, d).
Result<HeadIndexerInit> indexer_init_svd(const RowsView& q, const RowsView& k, int rank,
                                         float scale, const IndexerInitOptions& options = {});

// A baseline without data: one shared Johnson-Lindenstrauss projection P (r, d) with entries
// N(0, 1/r), Wq = Wk = sqrt(scale) P, so E[(Wq q) . (Wk k)] = scale q . k.
HeadIndexerInit indexer_init_random(int rank, int head_dim, float scale, uint64_t seed);

// Initialises every retrieval head of `adapter` by SVD from the record of one sequence
// (pre-RoPE queries and keys): allocates adapter.wq and adapter.wk (n_retrieval, r, d).
Status adapter_init_indexer(Adapter& adapter, const AttentionRecord& record,
                            const IndexerInitOptions& options = {});

}  // namespace purbo
