// cuDNN's fused flash attention for prefill chunks (backend/cuda/cudnn/, built only where
// CMake found cuDNN and the cudnn-frontend headers: PURBO_HAVE_CUDNN). This header includes
// nothing from cuDNN, so the rest of the backend compiles the same either way.
//
// One call: n queries of one sequence at positions pos0 .. pos0 + n - 1 attend causally (and
// within the window, if any) to the keys 0 .. pos0 + n - 1 of a bf16 cache. The graph is
// built for padded extents, n rounded up to a power of two and the cache's full capacity,
// with the true lengths passed at run time (cuDNN's padding mask, bottom-right aligned), so a
// handful of graphs serve every chunk of every prompt.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "core/status.h"

namespace purbo::cuda {

struct CudnnPrefill {
    // Queries: heads [0, hq) of this call are q + j * d within each token row of q_row
    // elements (the call may take a slice of a wider buffer); rows n .. n_pad - 1 are read but
    // do not matter. bf16.
    const uint16_t* q = nullptr;
    int64_t q_row = 0;
    const void* k = nullptr;  // hk cache heads of c rows (head stride c * d), bf16
    const void* v = nullptr;
    uint16_t* out = nullptr;  // as q (same row width); rows past n are written with junk
    // Optional (hq, n_pad) f32, packed: each row's log-sum-exp (natural log) of its scaled
    // visible scores, to merge further keys into the result.
    float* lse = nullptr;
    int n = 0;
    int n_pad = 0;            // cudnn_padded_rows(n)
    int hq = 0, hk = 0, d = 0;
    int64_t c = 0;            // cache rows per head
    int pos0 = 0;
    float scale = 1.0f;
    int window = 0;           // 0: causal only
};

// Block-sparse prefill's selected heads as cuDNN paged attention: an item is one (selected
// head, query group) pair, its "pages" the group's selected key blocks (page = block), in
// ascending order with the blocks of the group's own positions last, so that the causal
// diagonal aligned to the bottom right of the item's keys masks exactly those blocks' later
// keys. The cache is one container of pages: every KV head of the sequence, c / page pages
// each.
struct CudnnPagedPrefill {
    const uint16_t* q = nullptr;  // (b, rows, d) bf16: item i's rows at q + i * rows * d
    const void* k = nullptr;      // (pages, page, d) bf16
    const void* v = nullptr;
    const int32_t* page_table = nullptr;  // (b, max_pages): container pages, valid everywhere
    const int32_t* seq_q = nullptr;       // (b,): the item's query rows, 1 .. rows
    const int32_t* seq_kv = nullptr;      // (b,): its keys, 1 .. max_pages * page
    uint16_t* out = nullptr;              // as q
    int b = 0, rows = 0, page = 0, max_pages = 0, d = 0;
    int64_t pages = 0;
    float scale = 1.0f;
};

// The padded query extent a graph is built for: the next power of two >= max(n, 64).
int cudnn_padded_rows(int n);

class CudnnAttention {
public:
    // nullptr (and the reason logged once at info level) when cuDNN cannot start here.
    static std::unique_ptr<CudnnAttention> create(cudaStream_t stream);
    virtual ~CudnnAttention() = default;
    // kUnsupported when cuDNN has no engine for this shape (the caller then uses its own
    // kernel); other codes are real failures.
    virtual Status prefill(const CudnnPrefill& call) = 0;
    // kUnsupported as above (no engine for paged caches of this shape).
    virtual Status paged_prefill(const CudnnPagedPrefill& call) = 0;
};

}  // namespace purbo::cuda
