// Launchers of the CUDA kernels: raw device pointers and a params struct in, a cudaError_t
// out (the launch's own error, from cudaGetLastError). Shapes and dtypes are validated by the
// entry points in cuda-ops.cpp before a launcher runs; a launcher only checks what its kernel
// needs (divisibility, supported head dims) and returns cudaErrorInvalidValue otherwise.
// Includes nothing from core/ or above, so the device compiler stays lean.
//
// Letters as in backend.h: n tokens, k inputs, m outputs, h query heads, g KV heads,
// d head dim, c cache capacity, s sequence slots. bf16 buffers are passed as uint16_t bits.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace purbo::cuda {

// ---- conversions and copies (cuda-elementwise.cu) ---------------------------------------

// dst[i] = bf16(src[i]), round to nearest even; count elements.
cudaError_t launch_f32_to_bf16(const float* src, uint16_t* dst, int64_t count, cudaStream_t stream);
// dst[i] = f32(src[i]) (exact); count elements.
cudaError_t launch_bf16_to_f32(const uint16_t* src, float* dst, int64_t count, cudaStream_t stream);

// out[i, :] = table[ids[i], :]; table (v, k) bf16 or f32, out (n, k) f32; ids on the device.
cudaError_t launch_embedding_bf16(const uint16_t* table, const int32_t* ids, float* out, int64_t n,
                                  int64_t k, cudaStream_t stream);
cudaError_t launch_embedding_f32(const float* table, const int32_t* ids, float* out, int64_t n,
                                 int64_t k, cudaStream_t stream);

// out = x / sqrt(mean(x^2) + eps) * weight, per row of k; out may alias x.
cudaError_t launch_rms_norm(const float* x, const float* weight, float* out, int64_t rows, int64_t k,
                            float eps, cudaStream_t stream);

// x[r, j] += bias[j]; x (rows, m).
cudaError_t launch_add_bias(float* x, const float* bias, int64_t rows, int64_t m, cudaStream_t stream);

// out = silu(gate) * up; count elements.
cudaError_t launch_swiglu(const float* gate, const float* up, float* out, int64_t count,
                          cudaStream_t stream);

// out = a + b; count elements; out may alias a or b.
cudaError_t launch_add(const float* a, const float* b, float* out, int64_t count, cudaStream_t stream);

struct RopeArgs {
    float* x;                // (n, heads, d), rotated in place
    const int32_t* pos;      // (n,) on the device
    const float* inv_freq;   // (rotary_dim / 2,) on the device
    int64_t n;
    int64_t heads;
    int64_t d;
    int rotary_dim;
    float attn_factor;
};
cudaError_t launch_rope(const RopeArgs& args, cudaStream_t stream);

struct KvStoreArgs {
    const float* k;          // (n, g, d)
    const float* v;          // (n, g, d)
    const int32_t* seq;      // (n,) on the device
    const int32_t* pos;      // (n,) on the device
    const int32_t* slot;     // (g,) on the device: cache head of each KV head, -1 = not held
    void* cache_k;           // (s, gc, c, d) f32, bf16 when cache_bf16, f8 e4m3 when cache_f8
    void* cache_v;           // (s, gc, c, d)
    bool cache_bf16;
    bool cache_f8;  // an index-key cache in f8 e4m3 (rounded to nearest even, saturated)
    int64_t n;
    int64_t g;
    int64_t gc;
    int64_t c;
    int64_t d;
    int ring_sinks;          // -1: row = position; else the ring rule of backend.h
};
cudaError_t launch_kv_store(const KvStoreArgs& args, cudaStream_t stream);

// ---- attention (cuda-attention.cu) ------------------------------------------------------

// Query rows a CTA holds: kAttnWarps warps x kAttnRowsPerWarp rows. A row is one (token,
// query head) pair; a CTA's rows are up to kAttnMaxRows / heads_per_cta consecutive tokens of
// one sequence times heads_per_cta query heads that share one KV head.
constexpr int kAttnWarps = 4;
constexpr int kAttnRowsPerWarp = 4;
constexpr int kAttnMaxRows = kAttnWarps * kAttnRowsPerWarp;
constexpr int kAttnKeysPerTile = 32;  // one key per lane in the score step

// A head group: query heads of one KV head that see the same keys (all local, all dense, or
// one head with a block selection), kAttnGroupInts int32 each: [cache head, local (0/1),
// selection row (-1 = none), head count, heads...].
constexpr int kAttnGroupInts = 4 + kAttnMaxRows;

// Cache row of position p: the ring rule of backend.h's kv_cache_row.
__host__ __device__ inline int64_t cache_row(int64_t p, int ring_sinks, int64_t c) {
    if (ring_sinks < 0 || p < ring_sinks) return p;
    return ring_sinks + (p - ring_sinks) % (c - ring_sinks);
}

struct AttentionArgs {
    const float* q;          // (n, h, d)
    const void* cache_k;     // (s, gc, c, d) f32, or bf16 when cache_bf16
    const void* cache_v;     // (s, gc, c, d)
    bool cache_bf16;
    const int32_t* seq;      // (n,) on the device
    const int32_t* pos;      // (n,) on the device
    const int32_t* blocks;   // (n_blocks, 2): first token, token count; one sequence each
    const int32_t* groups;   // (n_groups, kAttnGroupInts) head groups
    const int32_t* sel_blocks;  // (n, sel_hr, sel_max_blocks) selected block ids, or null
    const int32_t* sel_counts;  // (n, sel_hr)
    float* out;              // (n, h, d)
    float* partial_acc;      // (n, h, n_splits, d) when n_splits > 1, else unused
    float* partial_ml;       // (n, h, n_splits, 2): running max (log2 domain) and sum
    int64_t n;
    int64_t h;
    int64_t gc;              // cache heads of the view
    int64_t c;               // cache rows
    int d;
    int n_blocks;
    int n_groups;
    int max_group_heads;     // the most heads any group holds (head count of the groups table)
    int n_splits;            // key tiles of a block are divided over this many CTAs
    float scale;             // applied to q.k
    int window;              // local heads: 0 = unlimited
    int n_sink;
    int ring_sinks;          // -1: row = position; else the ring rule of backend.h
    int sel_hr;
    int sel_max_blocks;
    int sel_block_size;  // a multiple of kAttnKeysPerTile
};
// d must be 32, 64 or 128 (else cudaErrorInvalidValue); n_splits in [1, kAttnMaxSplits].
constexpr int kAttnMaxSplits = 256;
bool attention_head_dim_supported(int d);
cudaError_t launch_attention(const AttentionArgs& args, cudaStream_t stream);
// The launch attribute that makes a kernel a programmatic dependent of the one ahead of it
// (see cuda-device.cuh); off (a plain launch) with PURBO_NO_PDL=1, for comparisons.
cudaLaunchAttribute programmatic_dependent_attribute();

// The tensor-core kernel of cuda-attention-decode.cu, which launch_attention uses in place of
// the fp32 one where it applies: a bf16 cache, d 64 or 128, and no selection or one whose
// block size is a multiple of 64. Same plan, partials and combine pass.
bool attention_decode_supported(const AttentionArgs& args);
cudaError_t launch_attention_decode(const AttentionArgs& args, cudaStream_t stream);

// ---- tensor-core prefill attention (cuda-attention-tc.cu) --------------------------------

// A prefill chunk: n consecutive tokens of one sequence at positions pos0, pos0 + 1, ... The
// cache must already hold their keys (as for launch_attention). Same mask and output as
// launch_attention, computed with bf16 operands on tensor cores (fp32 accumulation and
// softmax). A CTA takes kAttnTcBlockM tokens of one query head.
//
// Block-sparse prefill (heads with a selection row): the tokens of a CTA must share one list
// of selected blocks (BlockSelection::shared_by_query_group with a block size that is a
// multiple of kAttnTcBlockM), and the CTAs' rows must start at positions that are multiples of
// kAttnTcBlockM (row_shift = pos0 % kAttnTcBlockM), so that a CTA's tokens lie in one query
// group. The CTA then walks the key tiles of its first token's list, masked causally.
constexpr int kAttnTcBlockM = 64;     // query rows per CTA: 4 warps x 16 rows
constexpr int kAttnTcBlockN = 64;     // keys per tile
constexpr int kAttnTcMinTokens = 64;  // dispatch threshold (speed only): one full CTA of rows
constexpr int kAttnTcHeadInts = 4;    // ints per row of AttentionTcArgs::heads

struct AttentionTcArgs {
    const float* q;        // (n, h, d)
    const void* cache_k;   // (s, gc, c, d) f32, or bf16 when cache_bf16
    const void* cache_v;   // (s, gc, c, d)
    bool cache_bf16;
    // (hs, kAttnTcHeadInts) on the device, one row per CTA row (blockIdx.y) of the grid: query
    // head, its KV head's cache head, local (0/1), selection row (-1: none, attend densely).
    const int32_t* heads;
    int64_t hs;
    float* out;            // (n, h, d)
    int64_t n;
    int64_t h;
    int64_t gc;
    int64_t c;
    int d;
    int seq;      // the chunk's sequence slot
    int pos0;     // position of token 0; token i is at pos0 + i
    float scale;  // applied to q.k
    int window;   // local heads: 0 = unlimited
    int n_sink;
    int ring_sinks;  // -1: row = position; else the ring rule of backend.h
    // Token i is row i + row_shift of the grid's rows (0 .. kAttnTcBlockM - 1: CTAs start at
    // positions pos0 - row_shift + k kAttnTcBlockM).
    int row_shift;
    // The selection of the heads with a selection row (BlockSelection), else unused.
    const int32_t* sel_blocks;  // (n, sel_hr, sel_max_blocks) ascending block ids
    const int32_t* sel_counts;  // (n, sel_hr)
    int sel_hr;
    int sel_max_blocks;
    int sel_block_size;  // a multiple of kAttnTcBlockN
    // Key ranges of the selected heads (n_ranges > 1): CTA z of the grid's third dimension takes
    // the selected blocks with ids in [z range_blocks, (z + 1) range_blocks) and writes its
    // rows' partial states, which a second kernel merges into out. Grid order (query block,
    // head, range) then has the CTAs that run together read one range of one KV head, a few MB
    // that stay in L2, where each CTA walking its whole list reads the cache from HBM (the
    // selections of neighbouring query blocks need not overlap). Heads without a selection
    // take range 0 only. n_ranges = 1: every CTA writes out directly.
    int n_ranges;
    int range_blocks;
    float* partial_acc;  // (hs, n, n_ranges, d) when n_ranges > 1
    float* partial_ml;   // (hs, n, n_ranges, 2): running max (log2 domain) and sum
};
// d must be 64 or 128 (else cudaErrorInvalidValue).
bool attention_tc_head_dim_supported(int d);
cudaError_t launch_attention_tc(const AttentionTcArgs& args, cudaStream_t stream);

// ---- around cuDNN's prefill attention (cuda-cudnn-glue.cu) ---------------------------------

// A call table row per selected query head, (hs, 3) int32 on the device: query head, cache head
// of its KV head, local (0/1). Rows are in cuDNN call order.
// Rows of the bf16 copies are token-major, (n_pad, hs, d): row (i, j) at (i hs + j) d, for the
// dense calls; or head-major, (hs, n_pad, d): at (j n_pad + i) d, for the paged calls.
struct HeadRows {
    int64_t token_stride, head_stride;  // elements
};
// dst[row (i, j)] = bf16(q[i, table[j].head, :]) for tokens i < n; q (n, h, d).
cudaError_t launch_gather_heads_bf16(const float* q, const int32_t* table, uint16_t* dst,
                                     HeadRows rows, int64_t n, int64_t h, int64_t hs, int64_t d,
                                     cudaStream_t stream);

// Block-sparse prefill's selected heads as cuDNN paged attention (cuda-cudnn.h): item
// j * groups + g is selected head j's query group g, the chunk's tokens [g G, (g + 1) G) (G =
// group tokens, a multiple of the page, the block size; the chunk starts at a multiple of G).
// From the group's list (its first token's row) the item's page table (the KV head's pages,
// slot * pages_per_head + id, the head's first page past the list), its query rows and keys:
// every key of the list's blocks before the group's own, then the own blocks' keys up to the
// group's last position. Items past the chunk get 1 row and 1 key. A list that is out of
// range or does not end with the blocks of the group's positions sets *mismatch (cuDNN's
// bottom-right diagonal would mask keys it keeps; the caller then falls back).
struct PagedSelectionArgs {
    const int32_t* sel_blocks;  // (n, sel_hr, max_blocks)
    const int32_t* sel_counts;  // (n, sel_hr)
    const int32_t* table;       // (hs, 3) as above: the cache slot of each head
    const int32_t* sel_rows;    // (hs,): each head's row in the selection
    int32_t* page_table;        // (hs * groups, max_blocks)
    int32_t* seq_q;             // (hs * groups,)
    int32_t* seq_kv;            // (hs * groups,)
    int32_t* mismatch;          // (1,), zeroed by the launch
    int64_t n, pages_per_head;
    int hs, groups, group_tokens, sel_hr, max_blocks, page, pos0;
};
cudaError_t launch_paged_selection(const PagedSelectionArgs& args, cudaStream_t stream);

struct CudnnFinishArgs {
    const uint16_t* o;  // bf16 rows (HeadRows o_rows): the calls' outputs, in table order
    HeadRows o_rows;
    const float* lse;        // (hs, n_pad): their rows' log-sum-exp (natural log), or null
    const int32_t* table;    // (hs, 3) as above
    const float* q;          // (n, h, d): the queries, for the scores of the sinks
    const void* cache_k;     // the sequence's cache heads, (gc, c, d) bf16
    const void* cache_v;
    float* out;              // (n, h, d): rows of the table's heads written, others untouched
    int64_t n, n_pad, h, hs, d, c;
    int pos0;
    float scale;
    int window;              // of the local heads
    int n_sink;              // merged into local heads' rows when lse is given
};
// d 64 or 128.
cudaError_t launch_cudnn_finish(const CudnnFinishArgs& args, cudaStream_t stream);

// ---- top-p block selection (cuda-select.cu) -----------------------------------------------

// Letters: hr retrieval heads, r index dim, B block size, u = blocks of the largest position
// in the batch (max_i pos_i / B + 1), a row = one (token, retrieval head) pair.
struct SelectBlocksArgs {
    const float* iq;          // (n, hr, r)
    const void* index_keys;   // (s, hr, c, r) f32, bf16 with keys_bf16, f8 e4m3 with keys_f8
    const int32_t* seq;       // (n,) on the device
    const int32_t* pos;       // (n,) on the device
    void* scratch;            // select_blocks_scratch_bytes(args) bytes on the device
    int32_t* blocks;          // (n, hr, max_blocks) out: kept block ids ascending, then -1
    int32_t* counts;          // (n, hr) out
    int64_t n;
    int64_t hr;
    int64_t r;
    int64_t c;
    int block_size;           // B
    int n_used_max;           // u
    int max_blocks;
    float top_p;
    float scale;
    int max_kept;             // BlockSelectParams::max_blocks: 0 = no limit
    bool keys_bf16;           // index_keys in bf16
    bool keys_f8;             // index_keys in f8 e4m3 (neither flag: f32)
    int one_seq;              // the sequence slot of every token, or -1 when they differ
    // One selection per query group (BlockSelectParams::per_query_block): n_groups > 0 groups
    // of consecutive tokens, group g's last at group_pos[g]; group_of[i] = token i's group.
    // Their means take the distributions of S = n_samples tokens, group g's at sample rows
    // [sample_start[g], sample_start[g + 1]) (all its tokens, or query_block_samples of them).
    // 0: a selection per token (the pointers unused).
    int64_t n_groups;
    const int32_t* group_of;      // (n,) on the device
    const int32_t* group_pos;     // (n_groups,) on the device
    const int32_t* group_first_block;  // (n_groups,) the block of each group's first token
    int64_t n_samples;            // S
    const int32_t* sample_start;  // (n_groups + 1,) on the device
    const int32_t* sample_token;  // (S,) the sampled tokens, on the device
    const int32_t* sample_seq;    // (S,) their sequences, on the device
    const int32_t* sample_pos;    // (S,) their positions, on the device
    // (n,) on the device: the first block a row keeps whatever its masses (besides block 0),
    // every one after it kept too: a query group's first block; null: the block of pos.
    const int32_t* keep_from;
};
// The device scratch launch_select_blocks needs for args' n, hr, n_used_max, max_blocks and
// n_groups (the pointers are not read).
size_t select_blocks_scratch_bytes(const SelectBlocksArgs& args);
// cudaErrorInvalidValue when n * hr * u does not fit a grid or c + B an int.
cudaError_t launch_select_blocks(const SelectBlocksArgs& args, cudaStream_t stream);

// Step 1 of the selection (each row's block log2 masses, into log2_mass (n * hr, n_used_max))
// on tensor cores (cuda-select-mass-tc.cu), for many rows: r 8 or 16, B a power of two from 8
// to 4096, one sequence, index keys 16-byte aligned. Rows' masses of blocks past their
// position are not written. PURBO_NO_TC_SELECT=1 makes launch_select_blocks use the
// one-warp-per-block kernel instead (for comparisons).
bool block_mass_tc_supported(const SelectBlocksArgs& args);
cudaError_t launch_block_mass_tc(const SelectBlocksArgs& args, float* log2_mass,
                                 cudaStream_t stream);

// ---- decode matmul (cuda-gemv.cu) ------------------------------------------------------

// Token counts the GEMV kernel takes; more go to cuBLASLt.
constexpr int kGemvMaxTokens = 4;
// out (n, m) = x (n, k) f32 @ w (m, k)^T bf16 bits, fp32 sums. Needs n in [1, kGemvMaxTokens],
// k a multiple of 8 and x, w 16-byte aligned (else cudaErrorInvalidValue).
bool gemv_bf16_supported(const void* x, const void* w, int64_t n, int64_t k);
cudaError_t launch_gemv_bf16(const float* x, const uint16_t* w, float* out, int64_t n, int64_t k, int64_t m,
                             cudaStream_t stream);

// ---- stage-1 indexer loss (cuda-indexer-loss.cu, driven by cuda-indexer-loss.cpp) -------

// The row pass of a block (cuda-indexer-loss.cu): rows u0 .. u0 + nc - 1 of the used rows.
struct KlRowsArgs {
    float* t;                  // (nc, nk) teacher logits -> normalised T
    float* s;                  // (nc, nk) student logits -> G = (S - T) * inv_n, 0 past each row
    const int32_t* positions;  // (nq,) device
    double* row_kl;            // (nq,) device
    float* sample_t;           // (samples, nk) device, or null
    float* sample_s;
    int64_t nc;
    int64_t nk;
    int64_t u0;
    int64_t sample0;  // index of the block's first sampled row among all sampled rows
    float inv_n;
    int metric_stride;
};
cudaError_t launch_kl_rows(const KlRowsArgs& args, cudaStream_t stream);

}  // namespace purbo::cuda
