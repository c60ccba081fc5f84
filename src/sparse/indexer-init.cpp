#include "sparse/indexer-init.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "sparse/small-linalg.h"

namespace purbo {
namespace {

// Cholesky factor of the ridge-regularised second moment E[x x^T] of the rows of x (n, d).
Result<std::vector<double>> moment_cholesky(const RowsView& x, double ridge, const char* what) {
    const int d = x.cols;
    std::vector<double> c(static_cast<size_t>(d) * d, 0.0);
    std::vector<double> row(static_cast<size_t>(d));
    for (int64_t t = 0; t < x.rows; ++t) {
        const float* xr = x.row(t);
        for (int i = 0; i < d; ++i) row[static_cast<size_t>(i)] = xr[i];
        for (int i = 0; i < d; ++i) {
            const double xi = row[static_cast<size_t>(i)];
            double* ci = c.data() + static_cast<size_t>(i) * d;
            for (int j = 0; j <= i; ++j) ci[j] += xi * row[static_cast<size_t>(j)];
        }
    }
    double trace = 0;
    for (int i = 0; i < d; ++i) trace += c[static_cast<size_t>(i) * d + i];
    if (!(trace > 0.0) || !std::isfinite(trace))
        return error(StatusCode::kInvalidArgument,
                     "indexer init: the {} are all zero or not finite", what);
    const double inv_n = 1.0 / static_cast<double>(x.rows);
    const double add = ridge * trace * inv_n / d;
    for (int i = 0; i < d; ++i) {
        for (int j = 0; j <= i; ++j) {
            double& cij = c[static_cast<size_t>(i) * d + j];
            cij *= inv_n;
            c[static_cast<size_t>(j) * d + i] = cij;
        }
        c[static_cast<size_t>(i) * d + i] += add;
    }
    Result<std::vector<double>> l = cholesky_lower(c, d);
    if (!l.is_ok()) return l.status().with_context(fmt::format("indexer init: {}", what));
    return l;
}

}  // namespace

Result<HeadIndexerInit> indexer_init_svd(const RowsView& q, const RowsView& k, int rank,
                                         float scale, const IndexerInitOptions& options) {
    const int d = q.cols;
    if (k.cols != d)
        return error(StatusCode::kInvalidArgument, "indexer init: query dim {} != key dim {}", d,
                     k.cols);
    if (rank < 1 || rank > d)
        return error(StatusCode::kInvalidArgument, "indexer init: rank {} is not in [1, {}]", rank,
                     d);
    if (q.rows == 0 || k.rows == 0)
        return error(StatusCode::kInvalidArgument, "indexer init: no queries ({}) or keys ({})",
                     q.rows, k.rows);
    PURBO_ASSIGN_OR_RETURN(std::vector<double> lq, moment_cholesky(q, options.ridge, "queries"));
    PURBO_ASSIGN_OR_RETURN(std::vector<double> lk, moment_cholesky(k, options.ridge, "keys"));

    // a = scale Lq^T Lk  (d, d)
    std::vector<double> a(static_cast<size_t>(d) * d, 0.0);
    for (int t = 0; t < d; ++t) {
        for (int i = 0; i < d; ++i) {
            const double lti = lq[static_cast<size_t>(t) * d + i];
            if (lti == 0.0) continue;
            for (int j = 0; j < d; ++j)
                a[static_cast<size_t>(i) * d + j] += lti * lk[static_cast<size_t>(t) * d + j];
        }
    }
    for (double& x : a) x *= scale;
    const Svd svd = svd_jacobi(a, d);

    HeadIndexerInit out;
    out.singular_values = svd.s;
    out.wq.assign(static_cast<size_t>(rank) * d, 0.0f);
    out.wk.assign(static_cast<size_t>(rank) * d, 0.0f);
    std::vector<double> col(static_cast<size_t>(d));
    for (int i = 0; i < rank; ++i) {
        const double root_s = std::sqrt(svd.s[static_cast<size_t>(i)]);
        // Row i of Wq = sqrt(s_i) (Lq^{-T} u_i)^T; of Wk = sqrt(s_i) (Lk^{-T} v_i)^T.
        for (int j = 0; j < d; ++j)
            col[static_cast<size_t>(j)] = svd.u[static_cast<size_t>(j) * d + i];
        const std::vector<double> xq = solve_lower_transposed(lq, d, col);
        for (int j = 0; j < d; ++j)
            col[static_cast<size_t>(j)] = svd.v[static_cast<size_t>(j) * d + i];
        const std::vector<double> xk = solve_lower_transposed(lk, d, col);
        for (int j = 0; j < d; ++j) {
            out.wq[static_cast<size_t>(i) * d + j] =
                static_cast<float>(root_s * xq[static_cast<size_t>(j)]);
            out.wk[static_cast<size_t>(i) * d + j] =
                static_cast<float>(root_s * xk[static_cast<size_t>(j)]);
        }
    }
    return out;
}

HeadIndexerInit indexer_init_random(int rank, int head_dim, float scale, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0 / std::sqrt(static_cast<double>(rank)));
    HeadIndexerInit out;
    out.wq.resize(static_cast<size_t>(rank) * head_dim);
    const double root_scale = std::sqrt(static_cast<double>(scale));
    for (float& w : out.wq) w = static_cast<float>(root_scale * normal(rng));
    out.wk = out.wq;
    return out;
}

Status adapter_init_indexer(Adapter& adapter, const AttentionRecord& record,
                            const IndexerInitOptions& options) {
    const int r = adapter.settings.rank, d = adapter.head_dim;
    if (adapter.n_head_kv <= 0 || adapter.n_head % adapter.n_head_kv != 0)
        return error(StatusCode::kInvalidArgument, "indexer init: {} query heads over {} KV heads",
                     adapter.n_head, adapter.n_head_kv);
    if (record.q_pre.size() != static_cast<size_t>(adapter.n_layer) ||
        record.k_pre.size() != static_cast<size_t>(adapter.n_layer))
        return error(StatusCode::kInvalidArgument,
                     "indexer init: the record has {} layers, the adapter {}", record.q_pre.size(),
                     adapter.n_layer);
    const int64_t n_ret = static_cast<int64_t>(adapter.retrieval.size());
    Tensor wq = tensor_cpu(DType::kF32, {n_ret, r, d}, "wq");
    Tensor wk = tensor_cpu(DType::kF32, {n_ret, r, d}, "wk");
    const int n_gqa = adapter.n_head / adapter.n_head_kv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int64_t i = 0; i < n_ret; ++i) {
        const HeadId h = adapter.retrieval[static_cast<size_t>(i)];
        const Tensor& q = record.q_pre[static_cast<size_t>(h.layer)];
        const Tensor& k = record.k_pre[static_cast<size_t>(h.layer)];
        if (q.empty() || k.empty() || q.dim(2) != d)
            return error(
                StatusCode::kInvalidArgument,
                "indexer init: layer {} has no pre-RoPE queries and keys of dim {} in the record",
                h.layer, d);
        Result<HeadIndexerInit> init =
            indexer_init_svd(head_rows(q, h.head), head_rows(k, h.head / n_gqa), r, scale, options);
        if (!init.is_ok())
            return init.status().with_context(fmt::format("layer {} head {}", h.layer, h.head));
        std::copy(init->wq.begin(), init->wq.end(), wq.f32() + i * r * d);
        std::copy(init->wk.begin(), init->wk.end(), wk.f32() + i * r * d);
    }
    adapter.wq = std::move(wq);
    adapter.wk = std::move(wk);
    return Status::ok();
}

}  // namespace purbo
