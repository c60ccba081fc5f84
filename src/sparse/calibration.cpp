#include "sparse/calibration.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/timer.h"
#include "sparse/attention-record.h"

namespace purbo {
namespace {

// Needle copies move at most this fraction of the sequence to reach a line break: far less
// than the 10% between neighbouring depths, so the depth pairs stay distinct.
constexpr double kBreakSearchFraction = 0.02;

// The document offset nearest to `offset` (within `radius`, inside [lo, hi]) right after a
// break token; `offset` itself when there is none.
int snap_to_break(std::span<const int32_t> doc, int offset, int radius, int lo, int hi,
                  std::span<const int32_t> breaks) {
    const auto is_break_before = [&](int o) {
        if (o <= 0) return true;  // the start of the document is a boundary too
        const int32_t t = doc[static_cast<size_t>(o - 1)];
        return std::find(breaks.begin(), breaks.end(), t) != breaks.end();
    };
    for (int delta = 0; delta <= radius; ++delta) {
        for (int o : {offset - delta, offset + delta}) {
            if (o >= lo && o <= hi && is_break_before(o)) return o;
        }
    }
    return offset;
}

}  // namespace

Result<std::vector<int32_t>> needle_sequence(std::span<const int32_t> document,
                                             std::span<const int32_t> needle, int n_tokens,
                                             double early_depth, double late_depth,
                                             std::span<const int32_t> breaks,
                                             NeedlePlacement* placement) {
    const int L = static_cast<int>(needle.size());
    if (L == 0)
        return error(StatusCode::kInvalidArgument, "needle calibration: the needle has no tokens");
    if (!(0.0 <= early_depth && early_depth < late_depth && late_depth <= 1.0))
        return error(StatusCode::kInvalidArgument,
                     "needle calibration: depths {} and {} must satisfy 0 <= early < late <= 1",
                     early_depth, late_depth);
    const int n_doc = n_tokens - 2 * L;  // document tokens in the sequence
    if (n_doc < 2)
        return error(StatusCode::kInvalidArgument,
                     "needle calibration: {} tokens cannot hold two needles of {} tokens", n_tokens,
                     L);
    if (static_cast<int>(document.size()) < n_doc)
        return error(
            StatusCode::kInvalidArgument,
            "needle calibration: the document has {} tokens, {} needed for {}-token sequences",
            document.size(), n_doc, n_tokens);
    // Document offsets where the needles go: the earlier copy at sequence position a, the
    // later at b + L (one copy of the needle precedes it).
    const int radius = static_cast<int>(kBreakSearchFraction * n_tokens);
    int a = std::clamp(static_cast<int>(std::lround(early_depth * n_tokens)), 0, n_doc);
    int b = std::clamp(static_cast<int>(std::lround(late_depth * n_tokens)) - L, a, n_doc);
    if (!breaks.empty()) {
        a = snap_to_break(document, a, radius, 0, n_doc, breaks);
        b = snap_to_break(document, b, radius, a, n_doc, breaks);
    }
    std::vector<int32_t> seq;  // (n_tokens,)
    seq.reserve(static_cast<size_t>(n_tokens));
    const auto doc_range = [&](int from, int to) {
        seq.insert(seq.end(), document.begin() + from, document.begin() + to);
    };
    doc_range(0, a);
    seq.insert(seq.end(), needle.begin(), needle.end());
    doc_range(a, b);
    seq.insert(seq.end(), needle.begin(), needle.end());
    doc_range(b, n_doc);
    PURBO_ASSERT(static_cast<int>(seq.size()) == n_tokens);
    if (placement != nullptr) *placement = {a, b + L, L};
    return seq;
}

std::vector<std::pair<double, double>> needle_depths(int n_depths) {
    std::vector<std::pair<double, double>> out;
    for (int i = 0; i < n_depths; ++i) {
        const double f = n_depths == 1 ? 0.5 : static_cast<double>(i) / (n_depths - 1);
        out.emplace_back(0.10 + 0.10 * f, 0.95 - 0.15 * f);
    }
    return out;
}

Result<std::vector<double>> needle_head_scores(const Tensor& q,
                                               std::span<const int32_t> query_positions,
                                               const Tensor& k, int span_begin, int span_end) {
    if (q.empty() || k.empty() || q.device != Device::kCpu || k.device != Device::kCpu ||
        q.ndim != 3 || k.ndim != 3 || q.dtype != DType::kF32 || k.dtype != DType::kF32 ||
        q.dim(2) != k.dim(2) || k.dim(1) == 0 || q.dim(1) % k.dim(1) != 0 ||
        q.dim(0) != static_cast<int64_t>(query_positions.size()))
        return error(
            StatusCode::kInvalidArgument,
            "needle scores: host f32 q (nq, n_head, d) and k (N, n_head_kv, d) with n_head a "
            "multiple of n_head_kv and nq = {} query positions expected",
            query_positions.size());
    const int64_t nq = q.dim(0), n_head = q.dim(1), d = q.dim(2);
    const int64_t N = k.dim(0), n_head_kv = k.dim(1);
    const int64_t group = n_head / n_head_kv;  // query heads per KV head
    if (span_begin < 0 || span_end > N || span_begin >= span_end)
        return error(StatusCode::kInvalidArgument,
                     "needle scores: span [{}, {}) is not inside [0, {})", span_begin, span_end, N);
    for (int32_t t : query_positions)
        if (t < 0 || t >= N)
            return error(StatusCode::kInvalidArgument,
                         "needle scores: query position {} not in [0, {})", t, N);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    std::vector<double> mass(static_cast<size_t>(nq * n_head));  // (nq, n_head)
#pragma omp parallel for schedule(dynamic)
    for (int64_t ih = 0; ih < nq * n_head; ++ih) {
        const int64_t i = ih / n_head, h = ih % n_head;
        const float* qr = q.f32() + (i * n_head + h) * d;
        std::vector<double> qd(qr, qr + d);
        const int64_t t = query_positions[static_cast<size_t>(i)];
        // Online softmax (running max m, sums l over all keys and l_span over the span) so
        // that every logit is computed once and nothing overflows.
        double m = -std::numeric_limits<double>::infinity(), l = 0, l_span = 0;
        for (int64_t j = 0; j <= t; ++j) {
            const float* kr = k.f32() + (j * n_head_kv + h / group) * d;
            double s = 0;
            for (int64_t e = 0; e < d; ++e) s += qd[static_cast<size_t>(e)] * kr[e];
            s *= scale;
            if (s > m) {
                const double r = std::exp(m - s);
                l *= r;
                l_span *= r;
                m = s;
            }
            const double p = std::exp(s - m);
            l += p;
            if (j >= span_begin && j < span_end) l_span += p;
        }
        mass[static_cast<size_t>(ih)] = l_span / l;
    }
    std::vector<double> scores(static_cast<size_t>(n_head), 0.0);
    for (int64_t i = 0; i < nq; ++i)
        for (int64_t h = 0; h < n_head; ++h)
            scores[static_cast<size_t>(h)] += mass[static_cast<size_t>(i * n_head + h)];
    for (double& s : scores) s /= static_cast<double>(nq);
    return scores;
}

std::string CalibrationResult::info() const {
    std::string names;
    for (const std::string& n : document_names) names += (names.empty() ? "" : ", ") + n;
    return fmt::format(
        "needle calibration: {} documents ({}) x {} depths, {} tokens each, needle {} tokens",
        n_documents, names, n_depths, n_tokens, needle_len);
}

Result<CalibrationResult> calibrate_heads(Session& session,
                                          std::span<const CalibrationDocument> documents,
                                          std::span<const int32_t> needle,
                                          const CalibrationOptions& options) {
    const ModelConfig& c = session.forward().config();
    if (documents.empty())
        return error(StatusCode::kInvalidArgument, "needle calibration: no documents");
    if (options.n_depths < 1)
        return error(StatusCode::kInvalidArgument, "needle calibration: {} depths (at least 1)",
                     options.n_depths);
    if (options.n_tokens > session.n_ctx())
        return error(
            StatusCode::kInvalidArgument,
            "needle calibration: {}-token sequences do not fit the session's context of {}",
            options.n_tokens, session.n_ctx());
    const double t_start = time_now_ms();
    CalibrationResult out;
    out.n_layer = c.n_layer;
    out.n_head = c.n_head;
    out.scores.assign(static_cast<size_t>(c.n_layer * c.n_head), 0.0);
    out.n_documents = static_cast<int>(documents.size());
    out.n_depths = options.n_depths;
    out.n_tokens = options.n_tokens;
    out.needle_len = static_cast<int>(needle.size());
    const auto depths = needle_depths(options.n_depths);
    for (size_t di = 0; di < documents.size(); ++di) {
        const CalibrationDocument& doc = documents[di];
        out.document_names.push_back(doc.name);
        for (size_t pi = 0; pi < depths.size(); ++pi) {
            const double t0 = time_now_ms();
            NeedlePlacement place;
            Result<std::vector<int32_t>> seq =
                needle_sequence(doc.tokens, needle, options.n_tokens, depths[pi].first,
                                depths[pi].second, options.breaks, &place);
            if (!seq.is_ok())
                return seq.status().with_context(fmt::format("document '{}'", doc.name));
            // Only the later needle's queries and the post-RoPE keys are needed.
            RecordOptions ro;
            ro.q_pre = ro.k_pre = false;
            for (int p = place.late_begin; p < place.late_begin + place.needle_len; ++p)
                ro.query_positions.push_back(p);
            // Causal attention: tokens after the later needle cannot change its queries' scores,
            // so the run stops there (saves 5-20% of the forward pass).
            const std::span<const int32_t> run = std::span<const int32_t>(*seq).first(
                static_cast<size_t>(place.late_begin + place.needle_len));
            Result<AttentionRecord> rec = record_attention(session, run, ro);
            if (!rec.is_ok())
                return rec.status().with_context(fmt::format("document '{}'", doc.name));
            CalibrationProgress progress{static_cast<int>(di), static_cast<int>(pi),
                                         out.n_documents, out.n_depths, place};
            progress.record_seconds = (time_now_ms() - t0) / 1e3;
            double sum = 0;
            for (int il = 0; il < c.n_layer; ++il) {
                const size_t l = static_cast<size_t>(il);
                Result<std::vector<double>> s =
                    needle_head_scores(rec->q_post[l], rec->query_positions, rec->k_post[l],
                                       place.early_begin, place.early_begin + place.needle_len);
                if (!s.is_ok()) return s.status().with_context(fmt::format("layer {}", il));
                for (int h = 0; h < c.n_head; ++h) {
                    const double v = (*s)[static_cast<size_t>(h)];
                    out.scores[l * static_cast<size_t>(c.n_head) + static_cast<size_t>(h)] += v;
                    sum += v;
                    progress.max_score = std::max(progress.max_score, v);
                }
            }
            out.tokens_processed += static_cast<int64_t>(run.size());
            progress.mean_score = sum / (c.n_layer * c.n_head);
            progress.seconds = (time_now_ms() - t0) / 1e3;
            if (options.on_progress) options.on_progress(progress);
        }
    }
    const double runs = static_cast<double>(documents.size() * depths.size());
    for (double& s : out.scores) s /= runs;
    out.seconds = (time_now_ms() - t_start) / 1e3;
    return out;
}

}  // namespace purbo
