// Pieces shared by the attention benchmarks (bench-attention.cpp, bench-attention-sparse.cpp):
// size lists, device buffers filled with random values, and median timing of an op sequence.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attention-cost.h"
#include "backend/backend.h"

namespace purbo::cli {

constexpr int64_t kElemBytes = 4;       // q and out are f32 on every backend
// Longer calls run once, after a warm-up of their first chunk only (measure's warm_up).
constexpr double kLongCallSeconds = 2;

enum class Mode { kPrefill, kDecode };

// Comma-separated token counts with optional K (x1024) or M (x1024^2) suffixes; "" or "none"
// is an empty list.
Result<std::vector<int64_t>> parse_sizes(const std::string& flag, const std::string& text);
std::string size_label(int64_t n);
// The first m rows of t's outermost dim; shares storage.
Tensor leading(const Tensor& t, int64_t m);
// Copies the host block (rows, d) over dev, viewed as (numel / d, d), again and again.
Status fill_rows(Backend& be, const Tensor& dev, const Tensor& block);
// (65536, d) uniform random values in [-1, 1].
Tensor random_block(int64_t d, std::mt19937& rng);

// One case's device buffers: the cache holds n keys; q and out hold one chunk of queries.
struct CaseBuffers {
    KvCacheView cache;
    Tensor q, out;             // (m, h, d)
    std::vector<int32_t> seq;  // (m,) all slot 0
    std::vector<int32_t> pos;  // (queries,): 0..n-1 for prefill, n-1 for decode
};

// cache_type: the element type of the KV cache (one of be.kv_cache_dtypes()).
Result<CaseBuffers> make_buffers(Backend& be, const AttentionShape& s, Mode mode, int64_t n, int64_t chunk,
                                 DType cache_type, const Tensor& block_k, const Tensor& block_v);
// --cache-type as given ("" = the backend's preferred type), checked against the backend.
Result<DType> resolve_cache_type(const Backend& be, const std::string& flag);
// Bytes per cached element.
inline int64_t cache_elem_bytes(DType t) { return static_cast<int64_t>(dtype_traits(t).block_bytes); }
// The case's attention op sequence once: the queries in chunks of q's rows, each at its own
// positions. chunks > 0: only the first `chunks` chunks (a warm-up of the same shapes).
Status run_once(Backend& be, const CaseBuffers& b, const AttentionParams& params,
                int64_t chunks = 0);

struct Measured {
    double ms = 0;  // median per op sequence
    int reps = 0, inner = 1;
};

// Median milliseconds of `op` (short calls repeat within a sample); then reads a row of
// `out` back, which surfaces a kernel failure and a non-finite output. cold: every call runs
// after evict_cpu_caches(), which is not timed (cpu backends: their calls return when done).
// A long call runs once, untimed `warm_up` first: a cheap part of `op` with the same op shapes
// (its first chunk), so that one-time costs (cuDNN graphs built and tuned for a new cache size)
// are not timed, as short calls leave them to their warm-up call.
Result<Measured> measure(Backend& be, const std::function<Status()>& op, const Tensor& out,
                         int reps, bool long_call, bool cold = false,
                         const std::function<Status()>& warm_up = {});

// Writes and reads a buffer several times the size of the last-level cache on every thread,
// so that the next op finds none of its inputs in the CPU caches, as in a model's step where
// the other layers' weights and caches pass through them between two calls of a layer.
void evict_cpu_caches();

}  // namespace purbo::cli
