#include "sparse/attention-record.h"

#include <algorithm>
#include <string_view>

namespace purbo {
namespace {

// Copies rows of a tapped (n, heads, d) backend tensor into the record tensor (N, heads, d):
// batch row i (position offset + i) goes to record row dst_row(offset + i), or nowhere (-1).
template <class RowOf>
Status copy_rows(Backend& backend, const Tensor& tapped, int offset, const Tensor& record, RowOf dst_row) {
    const int64_t n = tapped.dim(0), heads = tapped.dim(1), d = tapped.dim(2);
    Tensor host = tensor_cpu(DType::kF32, {n, heads, d});
    PURBO_TRY(backend.to_host(tapped, host));
    const size_t row_floats = static_cast<size_t>(heads * d);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = dst_row(offset + static_cast<int>(i));
        if (r < 0) continue;
        std::copy_n(host.f32() + i * static_cast<int64_t>(row_floats), row_floats,
                    record.f32() + r * static_cast<int64_t>(row_floats));
    }
    return Status::ok();
}

}  // namespace

Result<AttentionRecord> record_attention(Session& session, std::span<const int32_t> tokens,
                                         const RecordOptions& options) {
    const ModelConfig& c = session.forward().config();
    const int N = static_cast<int>(tokens.size());
    if (N == 0) return error(StatusCode::kInvalidArgument, "record_attention: no tokens");
    AttentionRecord rec;
    rec.n_tokens = N;
    if (options.query_positions.empty()) {
        rec.query_positions.resize(static_cast<size_t>(N));
        for (int i = 0; i < N; ++i) rec.query_positions[static_cast<size_t>(i)] = i;
    } else {
        rec.query_positions = options.query_positions;
        for (size_t i = 0; i < rec.query_positions.size(); ++i) {
            const int32_t p = rec.query_positions[i];
            if (p < 0 || p >= N || (i > 0 && p <= rec.query_positions[i - 1]))
                return error(StatusCode::kInvalidArgument,
                             "record_attention: query position {} (index {}) must ascend within [0, {})", p,
                             i, N);
        }
    }
    const int64_t nq = static_cast<int64_t>(rec.query_positions.size());
    // Record row of each position's query, or -1.
    std::vector<int32_t> query_row(static_cast<size_t>(N), -1);
    for (size_t i = 0; i < rec.query_positions.size(); ++i)
        query_row[static_cast<size_t>(rec.query_positions[i])] = static_cast<int32_t>(i);

    const auto per_layer = [&](bool wanted, int64_t rows, int heads) {
        std::vector<Tensor> v(static_cast<size_t>(c.n_layer));
        if (wanted) {
            for (Tensor& t : v) {
                t = tensor_cpu(DType::kF32, {rows, heads, c.head_dim});
                if (t.empty()) return std::vector<Tensor>{};
            }
        }
        return v;
    };
    rec.q_pre = per_layer(options.q_pre, nq, c.n_head);
    rec.k_pre = per_layer(options.k_pre, N, c.n_head_kv);
    rec.q_post = per_layer(options.q_post, nq, c.n_head);
    rec.k_post = per_layer(options.k_post, N, c.n_head_kv);
    for (const auto* v : {&rec.q_pre, &rec.k_pre, &rec.q_post, &rec.k_post}) {
        if (v->empty())
            return error(StatusCode::kOutOfMemory, "record_attention: cannot hold {} tokens x {} layers", N,
                         c.n_layer);
    }

    // Taps arrive micro-batch by micro-batch in position order; the embedding tap opens one.
    Backend& backend = session.backend();
    int offset = 0, batch_rows = 0;
    Status status = Status::ok();
    const auto key_row = [](int p) { return static_cast<int64_t>(p); };
    const auto q_row = [&](int p) { return static_cast<int64_t>(query_row[static_cast<size_t>(p)]); };
    session.forward().set_tap([&](std::string_view name, int layer, const Tensor& t) {
        if (!status.is_ok()) return;
        if (name == "embedding") {
            offset += batch_rows;
            batch_rows = static_cast<int>(t.dim(0));
            return;
        }
        const size_t il = static_cast<size_t>(layer);
        if (name == "q_pre_rope" && options.q_pre) status = copy_rows(backend, t, offset, rec.q_pre[il], q_row);
        else if (name == "k_pre_rope" && options.k_pre) status = copy_rows(backend, t, offset, rec.k_pre[il], key_row);
        else if (name == "q" && options.q_post) status = copy_rows(backend, t, offset, rec.q_post[il], q_row);
        else if (name == "k" && options.k_post) status = copy_rows(backend, t, offset, rec.k_post[il], key_row);
    });
    session.clear(0);
    std::vector<float> logits;
    const Status run = session.prefill(0, tokens, logits);
    session.forward().set_tap(nullptr);
    session.clear(0);
    PURBO_TRY(run);
    PURBO_TRY(status);
    return rec;
}

}  // namespace purbo
