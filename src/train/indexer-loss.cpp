#include "train/indexer-loss.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

namespace purbo {

Status indexer_loss_check(const HeadInputs& in, size_t wq_size, size_t wk_size, int rank) {
    const int d = in.q_pre.cols;
    const int64_t nq = static_cast<int64_t>(in.positions.size());
    if (d <= 0 || in.q_post.cols != d || in.k_pre.cols != d || in.k_post.cols != d)
        return error(StatusCode::kInvalidArgument,
                     "indexer loss: head dims differ (q_pre {}, q_post {}, k_pre {}, k_post {})", d,
                     in.q_post.cols, in.k_pre.cols, in.k_post.cols);
    if (in.q_pre.rows != nq || in.q_post.rows != nq)
        return error(StatusCode::kInvalidArgument,
                     "indexer loss: {} query positions for {} / {} query rows", nq, in.q_pre.rows,
                     in.q_post.rows);
    if (in.k_pre.rows != in.k_post.rows)
        return error(StatusCode::kInvalidArgument,
                     "indexer loss: {} pre-RoPE keys but {} post-RoPE keys", in.k_pre.rows,
                     in.k_post.rows);
    for (int64_t i = 0; i < nq; ++i) {
        const int32_t p = in.positions[static_cast<size_t>(i)];
        if (p < 0 || p >= in.k_pre.rows || (i > 0 && p <= in.positions[static_cast<size_t>(i - 1)]))
            return error(StatusCode::kInvalidArgument,
                         "indexer loss: query position {} (row {}) must ascend within [0, {})", p,
                         i, in.k_pre.rows);
    }
    const size_t want = static_cast<size_t>(rank) * static_cast<size_t>(d);
    if (rank <= 0 || wq_size != want || wk_size != want)
        return error(StatusCode::kInvalidArgument,
                     "indexer loss: wq has {} and wk {} values, rank {} x dim {} needs {}", wq_size,
                     wk_size, rank, d, want);
    return Status::ok();
}

int64_t IndexerLossOptions::first_used_row(std::span<const int32_t> positions) const {
    return std::lower_bound(positions.begin(), positions.end(), min_position) - positions.begin();
}

float IndexerLossOptions::teacher_scale(int d) const {
    return scale > 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(d));
}

namespace {

// One query row of the fast path: t, s hold the teacher's and the student's logits over keys
// [0, n_keys), of which [0, len) are visible. Returns the row's KL(T || S); leaves the
// gradient G = (S - T) * inv_n_queries in s (zero past len) and T in t.
double process_row(float* t, float* s, int64_t len, int64_t n_keys, float inv_n_queries,
                   bool recall, float top_p, TopPScratch& scratch, TopPRecall& recall_out) {
    float t_max = t[0], s_max = s[0];
    for (int64_t n = 1; n < len; ++n) {
        t_max = std::max(t_max, t[n]);
        s_max = std::max(s_max, s[n]);
    }
    // KL(T || S) = E_T[t - s] - (lse_t - lse_s). Sums in double: a row has up to N terms and
    // f32 accumulation would lose ~N ulps of the log-sum-exp, which is the loss's precision.
    double t_sum = 0, s_sum = 0, weighted_gap = 0;
    for (int64_t n = 0; n < len; ++n) {
        const float et = std::exp(t[n] - t_max);
        const float es = std::exp(s[n] - s_max);
        weighted_gap += static_cast<double>(et) * (static_cast<double>(t[n]) - s[n]);
        t_sum += et;
        s_sum += es;
        t[n] = et;
        s[n] = es;
    }
    const double kl = weighted_gap / t_sum - (t_max + std::log(t_sum)) + (s_max + std::log(s_sum));
    const float t_inv = static_cast<float>(1.0 / t_sum), s_inv = static_cast<float>(1.0 / s_sum);
    for (int64_t n = 0; n < len; ++n) {
        t[n] *= t_inv;
        s[n] *= s_inv;
    }
    if (recall) {
        recall_out = top_p_recall({t, static_cast<size_t>(len)}, {s, static_cast<size_t>(len)},
                                  top_p, scratch);
    }
    for (int64_t n = 0; n < len; ++n) s[n] = (s[n] - t[n]) * inv_n_queries;
    std::fill(s + len, s + n_keys, 0.0f);
    return kl;
}

}  // namespace

HeadInputs head_inputs(const AttentionRecord& record, int layer, int head, int n_gqa) {
    const size_t il = static_cast<size_t>(layer);
    PURBO_ASSERT(il < record.q_pre.size() && n_gqa > 0);
    return {head_rows(record.q_pre[il], head), head_rows(record.q_post[il], head),
            head_rows(record.k_pre[il], head / n_gqa), head_rows(record.k_post[il], head / n_gqa),
            record.query_positions};
}

// Memory of one call: ik (N, r) and iq (nq, r), then per block two (query_chunk, N) f32
// score matrices and (r, N) for the key gradient. At N = 32K, query_chunk = 256, r = 16:
// 2 x 32 MiB + 2 MiB + 2 x 2 MiB ~ 70 MiB per head computed concurrently.
Result<IndexerLossResult> indexer_loss(const HeadInputs& in, std::span<const float> wq,
                                       std::span<const float> wk, int rank,
                                       const IndexerLossOptions& options) {
    PURBO_TRY(indexer_loss_check(in, wq.size(), wk.size(), rank));
    if (options.query_chunk <= 0)
        return error(StatusCode::kInvalidArgument, "indexer loss: query chunk {} must be positive",
                     options.query_chunk);
    const int d = in.q_pre.cols, r = rank;
    const float scale = options.teacher_scale(d);
    const int64_t first = options.first_used_row(in.positions);
    const int64_t n_used = static_cast<int64_t>(in.positions.size()) - first;
    IndexerLossResult out;
    out.dwq.assign(static_cast<size_t>(r * d), 0.0f);
    out.dwk.assign(static_cast<size_t>(r * d), 0.0f);
    out.n_queries = n_used;
    if (n_used == 0) return out;
    const int64_t n_keys = in.positions.back() + 1;

    // ik (n_keys, r) = kpre Wk^T;  iq (n_used, r) = qpre Wq^T
    std::vector<float> ik(static_cast<size_t>(n_keys * r)), iq(static_cast<size_t>(n_used * r));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_keys), r, d, 1.0f,
                in.k_pre.data, static_cast<int>(in.k_pre.stride), wk.data(), d, 0.0f, ik.data(), r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_used), r, d, 1.0f,
                in.q_pre.row(first), static_cast<int>(in.q_pre.stride), wq.data(), d, 0.0f,
                iq.data(), r);

    const int64_t chunk = std::min<int64_t>(options.query_chunk, n_used);
    std::vector<float> teacher(static_cast<size_t>(chunk * n_keys));  // (chunk, nk) logits, then T
    std::vector<float> student(static_cast<size_t>(chunk * n_keys));  // (chunk, nk) logits, then G
    std::vector<float> g_ik(static_cast<size_t>(chunk * r));          // (chunk, r) G ik
    std::vector<float> iq_g(static_cast<size_t>(r * n_keys));         // (r, nk) iq^T G
    // Per-row results, summed in row order afterwards so the total does not depend on threads.
    std::vector<double> row_kl(static_cast<size_t>(n_used));
    std::vector<TopPRecall> row_recall(static_cast<size_t>(n_used));
    const float inv_n = 1.0f / static_cast<float>(n_used);

    for (int64_t c0 = 0; c0 < n_used; c0 += chunk) {
        const int64_t nc = std::min(chunk, n_used - c0);
        const int64_t nk = in.positions[static_cast<size_t>(first + c0 + nc - 1)] + 1;
        const int ldk = static_cast<int>(nk);
        // teacher (nc, nk) = scale qpost_c kpost^T;  student (nc, nk) = iq_c ik^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nc), ldk, d, scale,
                    in.q_post.row(first + c0), static_cast<int>(in.q_post.stride), in.k_post.data,
                    static_cast<int>(in.k_post.stride), 0.0f, teacher.data(), ldk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nc), ldk, r, 1.0f,
                    iq.data() + c0 * r, r, ik.data(), r, 0.0f, student.data(), ldk);
#pragma omp parallel
        {
            TopPScratch scratch;
#pragma omp for schedule(dynamic, 4)
            for (int64_t i = 0; i < nc; ++i) {
                const int64_t u = c0 + i;
                const int64_t len = in.positions[static_cast<size_t>(first + u)] + 1;
                row_kl[static_cast<size_t>(u)] =
                    process_row(teacher.data() + i * nk, student.data() + i * nk, len, nk, inv_n,
                                options.samples(u), options.top_p, scratch,
                                row_recall[static_cast<size_t>(u)]);
            }
        }
        // dWq (r, d) += (G ik)^T qpre_c
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nc), r, ldk, 1.0f,
                    student.data(), ldk, ik.data(), r, 0.0f, g_ik.data(), r);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, d, static_cast<int>(nc), 1.0f,
                    g_ik.data(), r, in.q_pre.row(first + c0), static_cast<int>(in.q_pre.stride),
                    1.0f, out.dwq.data(), d);
        // dWk (r, d) += (iq_c^T G) kpre
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, ldk, static_cast<int>(nc), 1.0f,
                    iq.data() + c0 * r, r, student.data(), ldk, 0.0f, iq_g.data(), ldk);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, d, ldk, 1.0f, iq_g.data(), ldk,
                    in.k_pre.data, static_cast<int>(in.k_pre.stride), 1.0f, out.dwk.data(), d);
    }

    for (int64_t u = 0; u < n_used; ++u) {
        out.metrics.kl_sum += row_kl[static_cast<size_t>(u)];
        if (options.samples(u)) out.metrics.add_recall(row_recall[static_cast<size_t>(u)]);
    }
    out.metrics.n_kl = n_used;
    out.loss = out.metrics.kl();
    return out;
}

Result<IndexerLossRefResult> indexer_loss_ref(const HeadInputs& in, std::span<const double> wq,
                                              std::span<const double> wk, int rank,
                                              const IndexerLossOptions& options) {
    PURBO_TRY(indexer_loss_check(in, wq.size(), wk.size(), rank));
    const int d = in.q_pre.cols, r = rank;
    const double scale = options.teacher_scale(d);
    const int64_t first = options.first_used_row(in.positions);
    const int64_t n_used = static_cast<int64_t>(in.positions.size()) - first;
    IndexerLossRefResult out;
    out.dwq.assign(static_cast<size_t>(r * d), 0.0);
    out.dwk.assign(static_cast<size_t>(r * d), 0.0);
    out.n_queries = n_used;
    if (n_used == 0) return out;
    const int64_t n_keys = in.positions.back() + 1;

    // ik_n = Wk kpre_n  (n_keys, r)
    std::vector<double> ik(static_cast<size_t>(n_keys * r), 0.0);
    for (int64_t n = 0; n < n_keys; ++n)
        for (int a = 0; a < r; ++a)
            for (int j = 0; j < d; ++j)
                ik[static_cast<size_t>(n * r + a)] +=
                    wk[static_cast<size_t>(a * d + j)] * in.k_pre.row(n)[j];

    std::vector<double> iq(static_cast<size_t>(r)), t(static_cast<size_t>(n_keys)),
        s(static_cast<size_t>(n_keys));
    std::vector<float> t_f32, s_f32;
    TopPScratch scratch;
    for (int64_t u = 0; u < n_used; ++u) {
        const int64_t row = first + u;
        const int64_t len = in.positions[static_cast<size_t>(row)] + 1;
        std::fill(iq.begin(), iq.end(), 0.0);
        for (int a = 0; a < r; ++a)
            for (int j = 0; j < d; ++j)
                iq[static_cast<size_t>(a)] +=
                    wq[static_cast<size_t>(a * d + j)] * in.q_pre.row(row)[j];
        double t_max = -INFINITY, s_max = -INFINITY;
        for (int64_t n = 0; n < len; ++n) {
            double dot = 0;
            for (int j = 0; j < d; ++j)
                dot += static_cast<double>(in.q_post.row(row)[j]) * in.k_post.row(n)[j];
            double score = 0;
            for (int a = 0; a < r; ++a)
                score += iq[static_cast<size_t>(a)] * ik[static_cast<size_t>(n * r + a)];
            t[static_cast<size_t>(n)] = scale * dot;
            s[static_cast<size_t>(n)] = score;
            t_max = std::max(t_max, scale * dot);
            s_max = std::max(s_max, score);
        }
        double t_sum = 0, s_sum = 0;
        for (int64_t n = 0; n < len; ++n) {
            t_sum += std::exp(t[static_cast<size_t>(n)] - t_max);
            s_sum += std::exp(s[static_cast<size_t>(n)] - s_max);
        }
        const double t_lse = t_max + std::log(t_sum), s_lse = s_max + std::log(s_sum);
        double kl = 0;
        for (int64_t n = 0; n < len; ++n) {
            const double log_t = t[static_cast<size_t>(n)] - t_lse,
                         log_s = s[static_cast<size_t>(n)] - s_lse;
            kl += std::exp(log_t) * (log_t - log_s);
            t[static_cast<size_t>(n)] = std::exp(log_t);  // now T
            s[static_cast<size_t>(n)] = std::exp(log_s);  // now S
        }
        out.metrics.kl_sum += kl;
        if (options.samples(u)) {
            t_f32.assign(t.begin(), t.begin() + len);
            s_f32.assign(s.begin(), s.begin() + len);
            out.metrics.add_recall(top_p_recall(t_f32, s_f32, options.top_p, scratch));
        }
        for (int64_t n = 0; n < len; ++n) {
            const double g = (s[static_cast<size_t>(n)] - t[static_cast<size_t>(n)]) /
                             static_cast<double>(n_used);
            for (int a = 0; a < r; ++a) {
                // dWq[a] += g ik_n[a] qpre_m;  dWk[a] += g iq[a] kpre_n
                const double gq = g * ik[static_cast<size_t>(n * r + a)],
                             gk = g * iq[static_cast<size_t>(a)];
                for (int j = 0; j < d; ++j) {
                    out.dwq[static_cast<size_t>(a * d + j)] += gq * in.q_pre.row(row)[j];
                    out.dwk[static_cast<size_t>(a * d + j)] += gk * in.k_pre.row(n)[j];
                }
            }
        }
    }
    out.metrics.n_kl = n_used;
    out.loss = out.metrics.kl();
    return out;
}

}  // namespace purbo
