// Needle calibration of retrieval heads (method.md section 1). The same needle span goes
// into a document twice, near the start and near the end; a query head's score is the mean,
// over the positions t of the later needle, of the dense attention mass that t puts on the
// earlier needle. Heads that look back to copy the earlier span score near 1; heads that
// attend locally score near 0. Scores are averaged over documents and needle depths.
//
// Everything here works on token ids: text -> tokens is the caller's job (the calibrate
// command), so models without a tokenizer calibrate too.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "runtime/session.h"

namespace purbo {

// The needle of the calibrate command: distinctive, out of place in any licence text, and a
// few dozen tokens long (44 with SmolLM2's tokenizer). Starts and ends with a line break so
// it reads as a paragraph of its own.
inline constexpr const char* kCalibrationNeedle =
    "\nThe lighthouse keeper of Marrow Island hides the spare key under the blue ceramic "
    "heron, next to seven jars of violet honey, and the door code is 4172-8093.\n";

// Where the two copies of the needle sit in a calibration sequence.
struct NeedlePlacement {
    int early_begin = 0;  // first position of the earlier needle
    int late_begin = 0;   // first position of the later needle
    int needle_len = 0;
};

// Builds a calibration sequence of exactly n_tokens tokens: `document` (cropped) with
// `needle` inserted at fractions early_depth and late_depth of the sequence (0 = start,
// 1 = end). When `breaks` is not empty, each copy moves to the nearest position right after a
// token of `breaks` (line breaks) within 2% of n_tokens, so it does not split a word. The
// later needle always ends before the sequence does. Error when the document is too short
// (it needs n_tokens - 2 * needle length tokens) or the depths are out of order.
Result<std::vector<int32_t>> needle_sequence(std::span<const int32_t> document,
                                             std::span<const int32_t> needle, int n_tokens,
                                             double early_depth, double late_depth,
                                             std::span<const int32_t> breaks,
                                             NeedlePlacement* placement);

// The depth pairs of `n_depths` calibration runs: pair i puts the earlier needle at
// 10% + 10% * f and the later at 95% - 15% * f, f = i / (n_depths - 1) (f = 0.5 for one
// run): the distance between the copies ranges from 85% down to 60% of the sequence.
std::vector<std::pair<double, double>> needle_depths(int n_depths);

// Per-head score of one layer in one sequence (double precision throughout):
//   score[h] = mean over rows i of sum_{j in [span_begin, span_end)} a_h(t_i, j),
//   a_h(t, j) = softmax_j over j <= t of scale * q[i, h] . k[j, h / (n_head / n_head_kv)],
// scale = 1 / sqrt(d). Keys of the span beyond t count nothing.
// q: (nq, n_head, d) post-RoPE queries at positions query_positions (nq,);
// k: (N, n_head_kv, d) post-RoPE keys; host f32 tensors. Returns (n_head,).
Result<std::vector<double>> needle_head_scores(const Tensor& q,
                                               std::span<const int32_t> query_positions,
                                               const Tensor& k, int span_begin, int span_end);

// One calibration sequence's progress (for a progress line per document).
struct CalibrationProgress {
    int document = 0;  // index into the documents
    int depth = 0;     // index into needle_depths
    int n_documents = 0;
    int n_depths = 0;
    NeedlePlacement placement;
    double seconds = 0;         // this sequence: forward pass, recording and scoring
    double record_seconds = 0;  // of which the dense forward pass and its record
    double mean_score = 0;      // over all heads, this sequence
    double max_score = 0;
};

struct CalibrationDocument {
    std::string name;
    std::vector<int32_t> tokens;  // at least n_tokens - 2 * needle length
};

struct CalibrationOptions {
    int n_tokens = 4096;          // length of every calibration sequence (<= the session's n_ctx)
    int n_depths = 3;             // needle depth pairs per document (needle_depths)
    std::vector<int32_t> breaks;  // tokens after which a needle may start (see needle_sequence)
    std::function<void(const CalibrationProgress&)> on_progress;
};

struct CalibrationResult {
    int n_layer = 0;
    int n_head = 0;
    std::vector<double> scores;  // (n_layer, n_head): mean over documents and depths
    int n_documents = 0;
    int n_depths = 0;
    int n_tokens = 0;  // length of each sequence
    int needle_len = 0;
    int64_t tokens_processed =
        0;  // tokens run through the model (each run ends with the later needle)
    std::vector<std::string> document_names;
    double seconds = 0;

    double score(int layer, int head) const {
        return scores[static_cast<size_t>(layer * n_head + head)];
    }
    // "needle calibration: 4 documents (GPL-3, ...) x 3 depths, 4096 tokens, needle 38 tokens"
    std::string info() const;
};

// Runs every document at every depth pair through `session` (dense) and averages the
// per-head needle scores. Each run stops after the later needle (causal attention: later
// tokens change nothing). The session's n_ctx must hold n_tokens.
Result<CalibrationResult> calibrate_heads(Session& session,
                                          std::span<const CalibrationDocument> documents,
                                          std::span<const int32_t> needle,
                                          const CalibrationOptions& options);

}  // namespace purbo
