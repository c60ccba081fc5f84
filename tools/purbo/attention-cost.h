// The work of one attention op, for benchmark rates: how many (query, key) pairs the mask of
// AttentionParams lets through (causal, or sliding window + sinks), the FLOPs they cost and
// the bytes the op must at least move.
#pragma once

#include <algorithm>
#include <cstdint>

namespace purbo::cli {

// Keys a query at position p sees: (p - window, p] clipped at 0, plus the sinks [0, n_sink)
// below that window; every key up to p when window is 0 (the rule of AttentionParams).
inline int64_t attention_visible_keys(int64_t p, int64_t window, int64_t n_sink) {
    if (window <= 0) return p + 1;
    const int64_t in_window = std::min(window, p + 1);
    const int64_t below_window = p + 1 - in_window;
    return in_window + std::min(n_sink, below_window);
}

// sum over t = 1..t_max of min(t, cap); 0 when t_max <= 0.
inline int64_t sum_of_min(int64_t t_max, int64_t cap) {
    if (t_max <= 0) return 0;
    const int64_t m = std::min(t_max, cap);
    return m * (m + 1) / 2 + (t_max - m) * cap;
}

// Visible pairs when queries at positions 0..n-1 attend to the same n keys (a prefill): the
// sum of attention_visible_keys(p) over p, in closed form.
inline int64_t attention_prefill_pairs(int64_t n, int64_t window, int64_t n_sink) {
    if (window <= 0) return n * (n + 1) / 2;
    // min(window, p + 1) summed, then min(n_sink, p + 1 - window) for the p past the window.
    return sum_of_min(n, window) + sum_of_min(n - window, n_sink);
}

struct AttentionShape {
    int64_t heads = 0;     // h, query heads
    int64_t kv_heads = 0;  // g
    int64_t head_dim = 0;  // d
};

struct AttentionWork {
    int64_t pairs = 0;  // visible (query, key) pairs of one query head
    double flops = 0;   // q.k (2d) and p.v (2d) per pair and query head
    double bytes = 0;   // K and V of the distinct keys read once, q read and out written once
};

// Prefill: n queries at positions 0..n-1 over n cached keys (each key is seen by its own query,
// so all n are read). kv_bytes / q_bytes: bytes per element of the cache and of q and out.
inline AttentionWork attention_prefill_work(const AttentionShape& s, int64_t n, int64_t window,
                                            int64_t n_sink, int64_t kv_bytes, int64_t q_bytes) {
    AttentionWork w;
    w.pairs = attention_prefill_pairs(n, window, n_sink);
    w.flops = 4.0 * static_cast<double>(s.head_dim * s.heads) * static_cast<double>(w.pairs);
    w.bytes = 2.0 * static_cast<double>(n * s.kv_heads * s.head_dim * kv_bytes) +
              2.0 * static_cast<double>(n * s.heads * s.head_dim * q_bytes);
    return w;
}

// Decode: one query at position n - 1 over n cached keys; only its visible keys are read.
inline AttentionWork attention_decode_work(const AttentionShape& s, int64_t n, int64_t window,
                                           int64_t n_sink, int64_t kv_bytes, int64_t q_bytes) {
    AttentionWork w;
    w.pairs = attention_visible_keys(n - 1, window, n_sink);
    w.flops = 4.0 * static_cast<double>(s.head_dim * s.heads) * static_cast<double>(w.pairs);
    w.bytes = 2.0 * static_cast<double>(w.pairs * s.kv_heads * s.head_dim * kv_bytes) +
              2.0 * static_cast<double>(s.heads * s.head_dim * q_bytes);
    return w;
}

}  // namespace purbo::cli
