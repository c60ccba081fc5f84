// The op interface. The forward pass is written once against it; each backend (cpu-ref, the
// fp32 oracle; cpu, BLAS + OpenMP; cuda) implements every op with the same meaning.
//
// Conventions for every op:
//  - Activations are f32 on CPU backends. Weights may be any dtype the backend accepts from
//    prepare_weight (quantised types are read block by block).
//  - Shapes are outermost first. Letters: n = tokens in the batch, k = input features,
//    m = output features, h = query heads, g = KV heads, d = head dim, c = cache capacity,
//    s = sequence slots in the KV cache.
//  - Inputs come first, the output tensor last; outputs are preallocated by the caller.
//  - A wrong shape or dtype is an input error (Status), never undefined behaviour.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace purbo {

// Rotary position embedding in the rotate-half (GPT-NeoX / Hugging Face) layout: dimension i
// of the first half is paired with dimension i + rotary_dim / 2.
struct RopeParams {
    std::span<const float> inv_freq;  // (rotary_dim / 2,) angle per position per pair
    int rotary_dim = 0;               // leading dims that rotate; the rest pass through
    float attn_factor = 1.0f;         // scales cos and sin (YaRN's mscale); 1 otherwise
};

// The blocks of keys a retrieval head attends to in one step (method.md section 4): written
// by select_blocks (the plan), read by attention (the run). Keys [b * block_size,
// (b + 1) * block_size) form block b.
struct BlockSelection {
    int block_size = 64;
    // (h,) row of each query head in `blocks` and `counts`, or -1: the head is not restricted.
    std::span<const int32_t> head_row;
    Tensor blocks;  // (n, hr, max_blocks) i32 on the backend: selected block ids, ascending
    Tensor counts;  // (n, hr) i32 on the backend: how many entries of `blocks` are used
    // true: the tokens of a query group (select_query_groups with query_block, or block_size
    // where it is 0) have the same list, as a per_query_block selection gives them, and that
    // list holds every block of the group's tokens. A backend may then attend with a group's
    // tokens together (cuda: as tiles of its tensor-core prefill kernel, or as items of
    // cuDNN's paged attention).
    bool shared_by_query_group = false;
    int query_block = 0;  // tokens per query group, a multiple of block_size; 0: block_size
};

// Which keys a query at position p of its sequence may see: causal, optionally restricted to
// the first n_sink positions plus the last `window` positions (p - window < j <= p).
// With head classes (the method's local and retrieval heads) the window applies only to the
// local heads; retrieval heads see every causal key, or only the blocks selected for them.
struct AttentionParams {
    float scale = 1.0f;  // applied to q.k, usually 1 / sqrt(d)
    int window = 0;      // 0 = unlimited
    int n_sink = 0;      // only meaningful with a window
    // (h,) nonzero = local head (window + sinks), zero = retrieval head (no window).
    // Empty: the window applies to every head.
    std::span<const uint8_t> local_heads = {};
    // Block selection of the retrieval heads; null = they attend densely.
    const BlockSelection* selection = nullptr;
};

// Top-p block selection (method.md section 4): for query token i and retrieval head j, the
// index scores scale * iq[i, j] . ik[seq_i, j, t] over the keys t <= pos[i] form a softmax
// distribution. Block 0 (the sinks) and the block holding pos[i] (with per_query_block every
// block holding a token of the group) are always kept; the other
// blocks are added by decreasing share of the distribution (ties: lower block id first) until
// they hold top_p of the mass outside the always-kept blocks, or until max_blocks blocks are
// kept (a fixed budget: with top_p = 1 and max_blocks = K the selection is the plain top-K
// blocks by mass, the baseline the method's top-p is measured against).
//
// Why p applies to the rest of the mass and not to the whole: the always-kept blocks cost
// nothing to choose, and they often hold most of the index mass (attention sinks; the current
// block). Counted towards p, a row whose sinks and current block hold 0.9 would keep no other
// block at all, and one where they hold 0.7 only the heaviest 0.2 of the context. With p of the
// rest the kept share is m + p (1 - m) >= p (m: the always-kept share), and the context's
// heaviest blocks are kept in every row. On the default model this keeps more blocks at the
// same p and reaches a lower KL vs dense at the same mean number of blocks (bench/NOTES.md).
struct BlockSelectParams {
    int block_size = 64;  // B
    float top_p = 0.9f;   // p in (0, 1]; 1 keeps every block
    float scale = 1.0f;   // multiplies the index scores before the softmax
    // 0 = no limit; K > 0: at most K blocks in all, the always-kept ones included (which are
    // kept even when K is smaller than their number).
    int max_blocks = 0;
    // false: one selection per token (the decode rule). true: one per query block (method.md
    // section 5, block-sparse prefill): the tokens of a query group (select_query_groups)
    // share one selection, made by the rule above from the MEAN over them of each token's
    // block distribution (normalised per token; zero past a token's position), with block 0
    // and the blocks of their positions always kept; each token's row receives it. The mean
    // of their distributions, not of their queries: a block one token of the group needs
    // keeps its weight (bench/NOTES.md).
    bool per_query_block = false;
    // With per_query_block: tokens per query group, a multiple of block_size (0: block_size).
    // A group of 128 over blocks of 64 selects blocks of 64 keys for 128 queries at a time:
    // half the selections, and attention tiles of 128 queries (bench/NOTES.md).
    int query_block = 0;
    // With per_query_block, k > 0: the mean takes the distributions of at most k of a group's
    // tokens (select_group_samples), not all of them. The distributions are the selection's
    // cost (an exp per token and key), so k = 8 of 64 costs an eighth; its accuracy is
    // measured in bench/NOTES.md. 0: every token of the group.
    int query_block_samples = 0;
};

// Per-token placement in the KV cache: token i belongs to sequence slot seq[i] at position pos[i].
struct TokenPlacement {
    std::span<const int32_t> seq;  // (n,)
    std::span<const int32_t> pos;  // (n,)
};

// Tokens per query group of a per_query_block selection.
inline int query_group_tokens(const BlockSelectParams& params) {
    return params.query_block > 0 ? params.query_block : params.block_size;
}

// The query groups of a batch under per_query_block: maximal runs of consecutive tokens of
// one sequence whose positions lie in the same span of group_tokens positions (a prefill
// chunk's tokens, 64 at a time; a run cut by a chunk boundary is a smaller group). Returns
// the groups' first tokens followed by n: group k is tokens [starts[k], starts[k + 1]).
// Without per_query_block every token is its own group.
inline std::vector<int64_t> select_query_groups(const TokenPlacement& place, int group_tokens,
                                                bool per_query_block) {
    const int64_t n = static_cast<int64_t>(place.pos.size());
    std::vector<int64_t> starts;
    for (int64_t i = 0; i < n; ++i) {
        const bool joins = per_query_block && i > 0 && place.seq[i] == place.seq[i - 1] &&
                           place.pos[i] / group_tokens == place.pos[i - 1] / group_tokens;
        if (!joins) starts.push_back(i);
    }
    starts.push_back(n);
    return starts;
}

// The tokens of query group [first, end) whose distributions its mean takes: all of them, or
// with k in (0, end - first) the k tokens first + floor((m + 1) (end - first) / k) - 1,
// m = 0 .. k - 1: evenly spaced, the group's last token among them.
inline std::vector<int64_t> select_group_samples(int64_t first, int64_t end, int k) {
    const int64_t size = end - first;
    std::vector<int64_t> tokens;
    if (k <= 0 || k >= size) {
        for (int64_t i = first; i < end; ++i) tokens.push_back(i);
        return tokens;
    }
    for (int64_t m = 0; m < k; ++m) tokens.push_back(first + (m + 1) * size / k - 1);
    return tokens;
}

// One layer's cache, or the part of it that holds some of its KV heads.
// k and v are (s, gc, c, d): gc cache heads of c rows each, in one of the element types the
// backend's kv_cache_dtypes() lists (f32 everywhere; bf16 on cuda, which halves the bytes
// decode reads). kv_store rounds to the cache's type; attention computes in f32.
struct KvCacheView {
    Tensor k;
    Tensor v;
    // Model KV head held by each of the gc cache heads, ascending; empty = every KV head in
    // order (gc = g). Attention through a view computes only the query heads of its KV heads.
    std::vector<int32_t> heads = {};
    int n_head_kv = 0;  // g of the model when `heads` is set (query head j reads KV head j / (h / g))
    // >= 0: the rows are a ring buffer for local heads (method.md section 2). Position p lives
    // in row p while p < ring_sinks, else in row ring_sinks + (p - ring_sinks) % (c - ring_sinks):
    // only the sinks and the last c - ring_sinks positions are kept. -1: row p holds position p.
    int ring_sinks = -1;
};

// The cache row that holds position `pos` of a sequence.
inline int64_t kv_cache_row(const KvCacheView& cache, int64_t pos) {
    if (cache.ring_sinks < 0 || pos < cache.ring_sinks) return pos;
    const int64_t span = cache.k.dim(2) - cache.ring_sinks;
    return cache.ring_sinks + (pos - cache.ring_sinks) % span;
}

enum class BackendKind { kCpuRef, kCpu, kCuda };

// How the quantised decode GEMV of the cpu backend treats activations.
enum class ActivationPrecision {
    kF32,  // exact: fp32 products with the dequantised weights (matches transformers)
    kQ8,   // activations quantised to 8 bits, integer dot products (llama.cpp's numerics)
};

struct BackendOptions {
    int n_threads = 0;  // 0 = all cores
    ActivationPrecision gemv_activations = ActivationPrecision::kF32;
    // cuda: replay decode steps as CUDA graphs (begin_graph_step). Off: every op is launched
    // on its own (for comparisons; also off when PURBO_NO_CUDA_GRAPHS is set).
    bool step_graphs = true;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual BackendKind kind() const = 0;
    virtual std::string_view name() const = 0;
    // Element types a KV cache may have on this backend, the preferred (default) one first.
    virtual std::vector<DType> kv_cache_dtypes() const { return {DType::kF32}; }
    // Element types cached index keys may have: a KV cache's, and f8 e4m3 (core/fp8.h), which
    // halves again the bytes decode selection reads (16 values per key and retrieval head).
    // kv_store writes them (rounding to nearest even, saturating at +-448); select_blocks reads
    // them.
    std::vector<DType> index_key_dtypes() const {
        std::vector<DType> types = kv_cache_dtypes();
        types.push_back(DType::kF8E4M3);
        return types;
    }

    // ---- memory -------------------------------------------------------------------------
    // Zero-filled activation buffer on the backend's device.
    virtual Tensor alloc(DType dtype, std::initializer_list<int64_t> shape, std::string name = {}) = 0;
    // Converts a host weight (e.g. a view into a mapped file) into the form the backend's
    // matmul/embedding consume. May return the same tensor, a copy or a converted tensor.
    virtual Result<Tensor> prepare_weight(const Tensor& host_weight) = 0;
    // Copies between host f32 tensors and backend tensors of the same shape (f32, or bf16 and
    // f8 e4m3: rounded to nearest even on the way in, widened exactly on the way out); i32 tensors
    // (block selections) copy to and from host i32 tensors.
    virtual Status to_host(const Tensor& src, const Tensor& host_dst) = 0;
    virtual Status from_host(const Tensor& host_src, const Tensor& dst) = 0;
    virtual void synchronize() {}

    // ---- step graphs ---------------------------------------------------------------------
    // A decode step issues the same few hundred ops every token. A backend that can record
    // them once and replay them as one unit (CUDA graphs) does so between these two calls:
    //   if (backend.begin_graph_step(shape)) {
    //       Status ops = <the step's ops>;
    //       bool done = backend.end_graph_step(ops.is_ok());   // false: run the ops again
    //   }
    // While a step is open the ops may be recorded or only checked against the recording
    // instead of running; end_graph_step runs the step. It returns false when the ops did not
    // run (a replay whose ops differ from the recording, a recording that failed, an op that
    // failed): the caller then issues them again outside a graph step. No host reads
    // (to_host, synchronize) inside a step. begin_graph_step returns false where there is
    // nothing to gain (CPU backends) or graphs are off. `shape` names the kind of step (steps
    // of one shape issue the same ops); a backend may keep one recording per shape.
    virtual bool begin_graph_step(uint64_t shape) {
        (void)shape;
        return false;
    }
    virtual Result<bool> end_graph_step(bool ops_ok) {
        (void)ops_ok;
        return false;
    }

    // ---- ops ----------------------------------------------------------------------------
    // out[i, :] = table[ids[i], :]; table (v, k) any weight dtype; out (n, k) f32.
    virtual Status embedding(const Tensor& table, std::span<const int32_t> ids, const Tensor& out) = 0;
    // out = x / sqrt(mean(x^2) + eps) * weight; x, out (n, k); weight (k,) f32.
    virtual Status rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out) = 0;
    // out = x @ w^T; x (n, k) f32; w (m, k) any weight dtype; out (n, m) f32.
    virtual Status matmul(const Tensor& x, const Tensor& w, const Tensor& out) = 0;
    // x[i, :] += bias; x (n, m); bias (m,) f32.
    virtual Status add_bias(const Tensor& x, const Tensor& bias) = 0;
    // In place on x (n, heads, d): rotates the first rotary_dim dims of every head by pos[i].
    virtual Status rope(const Tensor& x, std::span<const int32_t> pos, const RopeParams& params) = 0;
    // Writes k, v (n, g, d) into the cache at (seq[i], :, kv_cache_row(pos[i]), :): the KV
    // heads the view holds, each in its cache head. The cache may also be an index-key cache
    // in one of index_key_dtypes() (k and v then the same tensors).
    virtual Status kv_store(const Tensor& k, const Tensor& v, const TokenPlacement& place,
                            const KvCacheView& cache) = 0;
    // Grouped-query attention over the cache (which must already hold the batch's own keys).
    // q (n, h, d); query head j reads KV head j / (h / g); out (n, h, d). Only the query heads
    // whose KV head is in the view are written.
    virtual Status attention(const Tensor& q, const KvCacheView& cache, const TokenPlacement& place,
                             const AttentionParams& params, const Tensor& out) = 0;
    // Top-p block selection (BlockSelectParams). iq (n, hr, r) f32; index_keys (s, hr, c, r)
    // in one of index_key_dtypes(), the cached index keys of each sequence (stored by kv_store);
    // blocks (n, hr, max_blocks) i32 receives the kept block ids ascending (then -1), counts
    // (n, hr) i32 their number; max_blocks >= the blocks of c, or with a budget of K blocks
    // (params.max_blocks) >= min(the blocks of c, max(K, 2)): the most a row can keep.
    virtual Status select_blocks(const Tensor& iq, const Tensor& index_keys, const TokenPlacement& place,
                                 const BlockSelectParams& params, const Tensor& blocks,
                                 const Tensor& counts) = 0;
    // out = silu(gate) * up; all (n, f).
    virtual Status swiglu(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
    // out = a + b; same shapes (out may alias a).
    virtual Status add(const Tensor& a, const Tensor& b, const Tensor& out) = 0;
};

// "cpu-ref", "cpu" or "cuda".
Result<std::unique_ptr<Backend>> backend_create(std::string_view name, const BackendOptions& options = {});
// Backends that can run on this machine, oracle first.
std::vector<std::string> backend_available();

}  // namespace purbo
