// Top-p block selection (method.md section 4) with the histogram of block masses of
// select-bins.h:
//  1. block_mass_kernel, one warp per (token, retrieval head, key block): the block's scores
//     z_t = scale * log2(e) * iq . k_t (fp32), reduced to the running max m_b and sum
//     l_b = sum 2^(z - m_b) (merged across lanes as in an online softmax), stored as the
//     block's log2 mass a_b = m_b + log2(l_b).
//  2. The 256-bin histogram of the masses 2^(a_b - A) relative to the heaviest block
//     A = max a_b (integer atomics in shared memory, in a few copies merged in a fixed order).
//  3. select_row_kernel, one CTA per (token, retrieval head): the scan for the boundary bin,
//     its exact resolution, and the ascending list of kept blocks.
// Rows are few and long in decode (a token's retrieval heads, 16K blocks each at 1M keys): one
// CTA per row would leave the GPU idle and run for tens of microseconds, so step 1 also
// records each row's A (one atomic max per CTA and row), block_hist_kernel builds step 2 over
// chunks of 2048 blocks in parallel (storing each block's bin), and the row's CTA (1024
// threads) sums the chunks' histograms and walks only the stored bins. Prefill chunks have
// thousands of rows: there the row's CTA (256 threads) does steps 2 and 3 itself. Each thread
// walks a segment of consecutive blocks, so that compactions take two barriers whatever the
// row's length.
//
// One selection per query group (per_query_block, block-sparse prefill): the tokens whose
// distributions the groups average (all, or query_block_samples per group) have their index
// queries gathered, and step 1 runs over them into a sample-row buffer; row_lse_kernel gives
// each sample row its log2 total; group_mean_kernel averages a group's normalised masses per
// block (in double, like the cpu backend) into one row per (group, head), stored as log2
// masses; steps 2 and 3 run on those rows as on tokens' (a group row is a row whose position
// is the group's); broadcast_kernel copies each group row's blocks to its tokens' rows.
//
// The index keys are f32 or bf16 (as the KV cache) or f8 e4m3 (SparseRunOptions::
// index_key_type): the selection is bound by reading them, 16 values per key and retrieval
// head; bf16 halves that, f8 halves it again.
//
// Kernel boundaries rather than the paper's last-CTA-done counter: the per-row pass needs every
// block's mass of that row, and a kernel boundary is the simplest correct barrier; the extra
// launches cost little inside a CUDA graph.
//
// Exact resolution of the boundary bin without a sort: while it holds more than a few hundred
// blocks (flat masses over a long context: 16K blocks of 64 keys at 1M tokens may share one
// eighth of an octave) its range is split into 256 finer bins and the boundary found again,
// up to three levels (1/8, 1/2048, 1/524288 octave). The remaining blocks are listed in
// ascending id order (an ordered compaction, so the result does not depend on scheduling), and
// each one counts the blocks of the list that come before it in the selection order (heavier,
// or as heavy with a lower id) and sums their masses. Block x is taken when the kept mass plus
// that sum is still below the target, exactly the sequential rule of cpu-select.cpp; the
// number of taken blocks then keeps the blocks of ranks below it. Quadratic in the final
// blocks only.
//
// A block budget (max_kept, BlockSelectParams::max_blocks) is a second stopping rule on the
// same passes: the histograms also count each bin's blocks, a boundary is the first bin where
// either the mass target or the budget is reached, and the exact resolution takes a boundary
// block only while both its mass prefix and its rank stay below them. With top_p = 1 the mass
// target is infinite: the plain top-K blocks by mass. Cost note: a budget can put the boundary
// in the last bin (K above the number of blocks within 32 octaves of the heaviest, e.g. a
// sharply peaked row), which refinement cannot split; that bin is then ordered pairwise.
//
// Sums that decide the boundary are exact: each block's mass relative to the heaviest is
// rounded once to a fixed-point integer of 2^-40 (far below the fp32 error of the block
// masses), and integer sums do not depend on the order of the atomics or of the scans, so the
// result does not depend on scheduling. The cpu backend sums the same masses in double; the two
// can differ only where a comparison at the boundary is within 2^-40 of the heaviest block.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"
#include "backend/select-bins.h"
#include "core/env.h"

namespace purbo::cuda {
namespace {

constexpr int kMassWarps = 8;  // key blocks per CTA of block_mass_kernel, one warp each
// select_row_kernel: one CTA per (token, retrieval head). Decode has a few rows of up to tens
// of thousands of blocks: their histograms are built by block_hist_kernel over many CTAs
// first, and the row CTAs (1024 threads) only resolve the boundary. Prefill chunks have
// thousands of rows and take 256-thread row CTAs that do everything (more CTAs per SM).
constexpr int kRowThreadsWide = 1024;
constexpr int kRowThreadsNarrow = 256;
constexpr int kHistThreads = 256;
constexpr int kHistChunk = 2048;  // blocks per CTA of block_hist_kernel
constexpr int kHistCopies = 8;    // copies of a CTA's histogram, each shared by a few warps

// Block masses relative to the heaviest block, 2^(a_b - A) in (0, 1], as fixed-point integers
// of 2^-40: sums of them are exact and do not depend on the order of the additions (the
// histogram's atomics, the scans). (Speed is no reason: sm_90 runs 64-bit shared-memory
// atomicAdd as a compare-and-swap loop, integer or double; the runs of BinRun keep them few.)
// Rows of up to 2^23 blocks sum below 2^63; a block under 2^-40 of the heaviest counts as 0
// (its bin is past any boundary top_p < 1 can reach).
using Mass = unsigned long long;
constexpr int kMaxRowBlocks = 1 << 23;
__device__ __forceinline__ Mass fixed_mass(float a, float heaviest) {
    return static_cast<Mass>(exp2(static_cast<double>(a) - heaviest) * 0x1p40 + 0.5);
}

// One chunk's histogram (block_hist_kernel), summed by the row's CTA in chunk order.
struct HistPart {
    Mass mass[kSelectBins];
    int count[kSelectBins];
    Mass total;  // every block of the chunk
    Mass kept;   // the always-kept blocks among them (not in the bins)
};

// The kernels' view of the scratch (select_blocks_scratch_bytes), per row of u blocks.
struct SelectState {
    SelectBlocksArgs args;
    float* log2_mass;     // (rows, u) each block's unnormalised log2 mass
    int32_t* candidates;  // (rows, u) the boundary bin's blocks, ascending
    int32_t* ranks;       // (rows, u) a boundary block's rank in its bin, by id
    uint16_t* states;     // (rows, state_stride) block states (kKeep, kDrop or a level-0 bin)
    int state_stride;     // u rounded up to 8: rows of whole 16-byte vectors
    int staged_bytes;     // > 0: the row's CTA keeps its states in shared memory
    // Split path (few rows) only, else null:
    uint32_t* row_max;    // (rows,) the heaviest block's log2 mass, order-preserving bits
    HistPart* parts;      // (rows, n_chunks)
    int n_chunks;
};

// A block's state during its row's selection: the level-0 bin (0 .. 255) while undecided,
// then kKeep or kDrop. The always-kept blocks start as kKeep; blocks of bins before the
// boundary are kept and after it dropped without a state change; the boundary bin's blocks
// are decided by the refinement levels and the exact resolution.
constexpr uint16_t kKeep = kSelectBins;
constexpr uint16_t kDrop = kSelectBins + 1;
constexpr int kMaxStagedBytes = 96 * 1024;  // states in shared memory up to 48K blocks per row

// float <-> unsigned with the same order, so that atomicMax on the bits is a float max.
__device__ __forceinline__ uint32_t ordered_bits(float f) {
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_ordered_bits(uint32_t u) {
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__nv_fp8_e4m3 v) {
    return static_cast<float>(v);
}

// kR: the indexer dimension when it is 8 or 16 (keys read 4 elements at a time, q held in
// registers), 0 for any other r (a plain loop). Key: float, __nv_bfloat16 or
// __nv_fp8_e4m3, the type of the cached index keys. One warp per (token, retrieval head, key block),
// lane l taking keys l, l + 32, ... of the block; kMassWarps blocks per CTA (with one 64-thread
// CTA per block, the 80K CTAs of a 1M-token row cost more to schedule than to compute).
template <int kR, class Key>
__global__ void __launch_bounds__(kMassWarps * 32) block_mass_kernel(SelectState st) {
    const SelectBlocksArgs& args = st.args;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t unit = int64_t{blockIdx.x} * kMassWarps + warp;  // row * u + b
    const int64_t row = unit / args.n_used_max;  // token * hr + head
    const int b = static_cast<int>(unit % args.n_used_max);
    const int64_t i = row / args.hr, j = row % args.hr;
    // Warp-uniform: a unit past the last row, or a block past the token's position.
    const bool valid = unit < args.n * args.hr * args.n_used_max && b <= args.pos[min(i, args.n - 1)] / args.block_size;
    float log2_mass = -INFINITY;
    if (valid) {
        const int p = args.pos[i];
        const float* q = args.iq + row * args.r;  // (r,)
        const Key* keys = static_cast<const Key*>(args.index_keys) +
                          (int64_t{args.seq[i]} * args.hr + j) * args.c * args.r;  // (c, r)
        const float q_scale = args.scale * kSelectLog2e;
        const int t_begin = b * args.block_size;
        const int t_end = min(t_begin + args.block_size, p + 1);

        float qr[kR > 0 ? kR : 1];
        if constexpr (kR > 0) {
#pragma unroll
            for (int e = 0; e < kR; ++e) qr[e] = q[e] * q_scale;
        }
        float m = -INFINITY, l = 0.0f;
#pragma unroll 2
        for (int t = t_begin + lane; t < t_end; t += 32) {
            const Key* k = keys + int64_t{t} * args.r;
            float z = 0.0f;
            if constexpr (kR > 0) {
#pragma unroll
                for (int e = 0; e < kR; e += 4) {
                    const float4 kv = load4(k + e);
                    z += qr[e] * kv.x + qr[e + 1] * kv.y + qr[e + 2] * kv.z + qr[e + 3] * kv.w;
                }
            } else {
                for (int64_t e = 0; e < args.r; ++e) z += (q[e] * q_scale) * to_f32(k[e]);
            }
            if (z > m) {
                l = l * exp2f(m - z) + 1.0f;  // exp2f(-inf) = 0 on the lane's first key
                m = z;
            } else {
                l += exp2f(z - m);
            }
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float m2 = __shfl_xor_sync(kFullMask, m, offset);
            const float l2 = __shfl_xor_sync(kFullMask, l, offset);
            merge_softmax_state(m, l, m2, l2);
        }
        log2_mass = m + log2f(l);  // l >= 1: the max key gives 2^0
        if (lane == 0) st.log2_mass[row * args.n_used_max + b] = log2_mass;
    }
    if (st.row_max == nullptr) return;  // CTA-uniform
    // The CTA's blocks lie in at most two rows: the heaviest of each row's blocks, one atomic
    // per row and CTA (not per block: thousands of blocks of a row share its address).
    __shared__ float warp_mass[kMassWarps];
    __shared__ int64_t warp_row[kMassWarps];
    if (lane == 0) {
        warp_mass[warp] = log2_mass;
        warp_row[warp] = valid ? row : -1;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 0; w < kMassWarps;) {
            const int64_t r = warp_row[w];
            float heaviest = warp_mass[w];
            int next = w + 1;
            for (; next < kMassWarps && warp_row[next] == r; ++next) heaviest = fmaxf(heaviest, warp_mass[next]);
            if (r >= 0) atomicMax(st.row_max + r, ordered_bits(heaviest));
            w = next;
        }
    }
}

// ---- block-wide helpers of select_row_kernel (every thread of the CTA must call them) -----

// The part of [0, count) a thread walks in the passes over a row: consecutive elements (so
// that consecutive blocks of one bin are summed in registers), an odd number of them per thread
// (so that the threads of a warp, reading one element each at a stride of `per`, hit 32
// different shared-memory banks).
struct Segment {
    int begin, end;
};
template <int kThreads>
__device__ __forceinline__ Segment thread_segment(int count) {
    const int per = ((count + kThreads - 1) / kThreads) | 1;
    const int begin = min(count, static_cast<int>(threadIdx.x) * per);
    return {begin, min(count, begin + per)};
}

// op-reduction of v over the CTA, the same value in every thread; `shared` has kThreads / 32
// entries. Warps combine in a fixed order, so the result does not depend on scheduling.
template <int kThreads, class T, class Op>
__device__ T block_reduce(T v, Op op, T* shared) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = op(v, __shfl_xor_sync(kFullMask, v, offset));
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    T result = shared[0];
    for (int w = 1; w < kThreads / 32; ++w) result = op(result, shared[w]);
    __syncthreads();  // `shared` may be reused right away
    return result;
}

// Calls emit(x, index) for every x in [0, count) with flag(x), index = the number of flagged
// x' < x (an ordered compaction); returns the number flagged, the same in every thread. Each
// thread counts the flags of its segment, one exclusive scan over the threads gives its first
// index, and a second walk of the segment emits: two barriers, whatever the count.
// `warp_base` has kThreads / 32 + 1 entries.
template <int kThreads, class Flag, class Emit>
__device__ int block_compact(int count, Flag flag, Emit emit, int* warp_base) {
    constexpr int kWarps = kThreads / 32;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const Segment seg = thread_segment<kThreads>(count);
    int mine = 0;
    for (int x = seg.begin; x < seg.end; ++x) mine += flag(x) ? 1 : 0;
    int inclusive = mine;  // over the lanes of the warp
    for (int offset = 1; offset < 32; offset <<= 1) {
        const int v = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= offset) inclusive += v;
    }
    if (lane == 31) warp_base[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {  // the warps' totals to exclusive bases, and the grand total
        const int total = lane < kWarps ? warp_base[lane] : 0;
        int scan = total;
        for (int offset = 1; offset < 32; offset <<= 1) {
            const int v = __shfl_up_sync(kFullMask, scan, offset);
            if (lane >= offset) scan += v;
        }
        if (lane < kWarps) warp_base[lane] = scan - total;
        if (lane == 31) warp_base[kWarps] = scan;
    }
    __syncthreads();
    int index = warp_base[warp] + inclusive - mine;
    for (int x = seg.begin; x < seg.end; ++x) {
        if (flag(x)) emit(x, index++);
    }
    const int flagged = warp_base[kWarps];
    __syncthreads();  // warp_base may be reused right away
    return flagged;
}

// ---- histograms of block masses -----------------------------------------------------------

// kHistCopies copies of a 256-bin histogram (masses and block counts) in shared memory; warp w
// adds to copy w % kHistCopies, so lanes of a warp contend for a bin but few warps do (with
// flat masses thousands of blocks fall into a handful of bins). Merged in a fixed order.
struct HistCopies {
    Mass (*mass)[kSelectBins];
    int (*count)[kSelectBins];
};

template <int kThreads>
__device__ void clear_copies(HistCopies h) {
    for (int k = threadIdx.x; k < kHistCopies * kSelectBins; k += kThreads) {
        (&h.mass[0][0])[k] = 0;
        (&h.count[0][0])[k] = 0;
    }
    __syncthreads();
}

// mass[k], count[k] = the sums of the copies' bin k (called by every thread).
template <int kThreads>
__device__ void merge_copies(HistCopies h, Mass* mass, int* count) {
    __syncthreads();
    for (int k = threadIdx.x; k < kSelectBins; k += kThreads) {
        Mass sum = 0;
        int blocks = 0;
        for (int c = 0; c < kHistCopies; ++c) {
            sum += h.mass[c][k];
            blocks += h.count[c][k];
        }
        mass[k] = sum;
        count[k] = blocks;
    }
    __syncthreads();
}

// A thread adds its blocks to a bin in runs: consecutive blocks of its segment that share a
// bin are summed in registers and added with one atomic.
struct BinRun {
    int bin = -1;
    Mass mass = 0;
    int count = 0;
    __device__ void flush(HistCopies h) {
        if (count > 0) {
            const int c = (threadIdx.x / 32) % kHistCopies;
            atomicAdd(&h.mass[c][bin], mass);
            atomicAdd(&h.count[c][bin], count);
        }
        *this = BinRun{};
    }
    __device__ void add(HistCopies h, int b, Mass w) {
        if (b != bin) {
            flush(h);
            bin = b;
        }
        mass += w;
        ++count;
    }
};

// The histogram of one chunk of kHistChunk blocks of a row (split path): CTA (chunk, row).
// Also writes each block's state (its level-0 bin, or kKeep), so that the row's CTA reads
// two bytes per block instead of recomputing bins from the masses.
__global__ void __launch_bounds__(kHistThreads) block_hist_kernel(SelectState st) {
    const SelectBlocksArgs& args = st.args;
    const int64_t row = blockIdx.y;
    const int n_used = args.pos[row / args.hr] / args.block_size + 1, last = n_used - 1;
    const int begin = blockIdx.x * kHistChunk;
    if (begin >= n_used) return;  // CTA-uniform: the row's chunks are fewer
    const int count = min(kHistChunk, n_used - begin);
    __shared__ Mass copy_mass[kHistCopies][kSelectBins];
    __shared__ int copy_count[kHistCopies][kSelectBins];
    __shared__ Mass reduce_m[kHistThreads / 32];
    const HistCopies copies{copy_mass, copy_count};
    clear_copies<kHistThreads>(copies);

    const float heaviest = from_ordered_bits(st.row_max[row]);
    const float* a = st.log2_mass + row * args.n_used_max;
    uint16_t* states = st.states + row * st.state_stride;
    const Segment seg = thread_segment<kHistThreads>(count);
    Mass total = 0, kept = 0;
    BinRun run;
    for (int x = seg.begin; x < seg.end; ++x) {
        const int b = begin + x;
        const int bin = select_mass_bin(heaviest - a[b]);
        const Mass w = fixed_mass(a[b], heaviest);
        total += w;
        if (b == 0 || b == last) {
            kept += w;
            states[b] = kKeep;
        } else {
            run.add(copies, bin, w);
            states[b] = static_cast<uint16_t>(bin);
        }
    }
    run.flush(copies);
    HistPart& part = st.parts[row * st.n_chunks + blockIdx.x];
    merge_copies<kHistThreads>(copies, part.mass, part.count);
    auto add_m = [](Mass x, Mass y) { return x + y; };
    total = block_reduce<kHistThreads>(total, add_m, reduce_m);
    kept = block_reduce<kHistThreads>(kept, add_m, reduce_m);
    if (threadIdx.x == 0) {
        part.total = total;
        part.kept = kept;
    }
}

// ---- the selection of a row ---------------------------------------------------------------

// One CTA of kThreads per (token, retrieval head). Split path (st.parts): the histogram, the
// heaviest block and each block's level-0 bin come from block_mass_kernel and
// block_hist_kernel; else this CTA computes them from the row's masses.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) select_row_kernel(SelectState st) {
    const SelectBlocksArgs& args = st.args;
    constexpr int kWarps = kThreads / 32;
    static_assert(kThreads % 32 == 0 && kWarps % kHistCopies == 0 && kWarps <= 32 && kThreads >= kSelectBins,
                  "whole warps, a thread per bin");
    const int64_t row = blockIdx.x;  // token * hr + head
    const int p = args.pos[row / args.hr];
    const int n_used = p / args.block_size + 1, last = n_used - 1;
    int32_t* out = args.blocks + row * args.max_blocks;  // (max_blocks,)
    const int tid = threadIdx.x;

    __shared__ Mass hist[kSelectBins];
    __shared__ int hist_count[kSelectBins];  // blocks per bin, for the block budget
    __shared__ Mass copy_mass[kHistCopies][kSelectBins];
    __shared__ int copy_count[kHistCopies][kSelectBins];
    __shared__ Mass reduce_m[kWarps];
    __shared__ Mass scan_mass[kSelectBins / 32];  // find_boundary: the bins' warp totals
    __shared__ int scan_count[kSelectBins / 32];
    __shared__ float reduce_f[kWarps];
    __shared__ int reduce_i[kWarps + 1];
    __shared__ int s_boundary, s_taken;
    __shared__ Mass s_kept;
    const HistCopies copies{copy_mass, copy_count};

    const bool limited = args.max_kept > 0 && args.max_kept < n_used;
    if (args.top_p >= 1.0f && !limited) {  // every block, whatever the masses
        for (int b = tid; b < args.max_blocks; b += kThreads) out[b] = b < n_used ? b : -1;
        if (tid == 0) args.counts[row] = n_used;
        return;
    }

    const float* a = st.log2_mass + row * args.n_used_max;  // (n_used,)
    // The row's block states: in shared memory where they fit (the passes below read each
    // block's state once or twice, which from L2 would cost a round trip per block and thread).
    extern __shared__ __align__(16) unsigned char select_states_smem[];
    uint16_t* const global_states = st.states + row * st.state_stride;
    uint16_t* const states = st.staged_bytes > 0 ? reinterpret_cast<uint16_t*>(select_states_smem) : global_states;
    if (st.parts && st.staged_bytes > 0) {  // made by block_hist_kernel: one 16-byte copy per 8 blocks
        const int vectors = (n_used + 7) / 8;
        for (int v = tid; v < vectors; v += kThreads)
            reinterpret_cast<uint4*>(states)[v] = reinterpret_cast<const uint4*>(global_states)[v];
    }
    int32_t* candidates = st.candidates + row * args.n_used_max;
    int32_t* ranks = st.ranks + row * args.n_used_max;
    auto always_kept = [last](int b) { return b == 0 || b == last; };
    auto add_m = [](Mass x, Mass y) { return x + y; };

    // The heaviest block; the masses relative to it, their histogram, total and always-kept part.
    float heaviest;
    Mass total = 0, kept = 0;
    if (st.parts) {  // the chunks' histograms, summed in chunk order
        heaviest = from_ordered_bits(st.row_max[row]);
        const HistPart* parts = st.parts + row * st.n_chunks;
        const int n_chunks = (n_used + kHistChunk - 1) / kHistChunk;
        // A bin per thread, eight chunks' loads in flight at a time (8 chunks at 1M tokens in
        // blocks of 64).
        for (int k = tid; k < kSelectBins; k += kThreads) {
            Mass sum = 0;
            int blocks = 0;
#pragma unroll 8
            for (int c = 0; c < n_chunks; ++c) {
                sum += parts[c].mass[k];
                blocks += parts[c].count[k];
            }
            hist[k] = sum;
            hist_count[k] = blocks;
        }
        // The chunks' totals, a chunk per thread (integer sums: the order does not matter).
        // block_reduce's barriers also publish hist.
        Mass chunk_total = 0, chunk_kept = 0;
        for (int c = tid; c < n_chunks; c += kThreads) {
            chunk_total += parts[c].total;
            chunk_kept += parts[c].kept;
        }
        total = block_reduce<kThreads>(chunk_total, add_m, reduce_m);
        kept = block_reduce<kThreads>(chunk_kept, add_m, reduce_m);
    } else {
        const Segment seg = thread_segment<kThreads>(n_used);
        heaviest = -INFINITY;
        for (int b = seg.begin; b < seg.end; ++b) heaviest = fmaxf(heaviest, a[b]);
        heaviest = block_reduce<kThreads>(
            heaviest, [](float x, float y) { return fmaxf(x, y); }, reduce_f);
        clear_copies<kThreads>(copies);
        BinRun run;
        for (int b = seg.begin; b < seg.end; ++b) {
            const Mass w = fixed_mass(a[b], heaviest);
            total += w;
            if (always_kept(b)) {
                kept += w;
                states[b] = kKeep;
            } else {
                const int bin = select_mass_bin(heaviest - a[b]);
                run.add(copies, bin, w);
                states[b] = static_cast<uint16_t>(bin);
            }
        }
        run.flush(copies);
        merge_copies<kThreads>(copies, hist, hist_count);
        total = block_reduce<kThreads>(total, add_m, reduce_m);
        kept = block_reduce<kThreads>(kept, add_m, reduce_m);
    }
    // top_p of the mass outside the always-kept blocks (backend.h). top_p = 1 (only reached
    // with a budget) stops on the count alone: no mass target. The sums stay integers; only
    // this comparison is in double (rounding 2^-53 relative).
    const double target = args.top_p >= 1.0f
                              ? static_cast<double>(INFINITY)
                              : static_cast<double>(kept) + static_cast<double>(args.top_p) *
                                                                static_cast<double>(total - kept);
    auto reaches = [target](Mass m) { return static_cast<double>(m) >= target; };
    // Blocks the budget allows besides the always-kept ones (which it may not cut).
    const int n_always = last != 0 ? 2 : 1;
    const int extra_limit = limited ? max(0, args.max_kept - n_always) : INT_MAX;

    // The boundary bin: the first bin k whose mass takes the kept mass to the target
    // (kept_so_far + the bins 0..k >= target) or whose blocks reach the budget. Thread k holds
    // bin k's inclusive prefix sums (a scan over the first kSelectBins threads: integer sums,
    // so the same as a sequential scan); both conditions only grow with k, so the boundary is
    // the smallest k that meets one. None (kSelectBins) when the whole histogram stays short
    // of the target (every block kept): then the kept mass takes every bin.
    auto find_boundary = [&](Mass kept_so_far, int taken_so_far) {
        const int lane = tid % 32, warp = tid / 32;
        Mass mass = 0;
        int count = 0;
        if (tid < kSelectBins) {
            mass = hist[tid];
            count = hist_count[tid];
            for (int offset = 1; offset < 32; offset <<= 1) {
                const Mass m = __shfl_up_sync(kFullMask, mass, offset);
                const int c = __shfl_up_sync(kFullMask, count, offset);
                if (lane >= offset) {
                    mass += m;
                    count += c;
                }
            }
            if (lane == 31) {
                scan_mass[warp] = mass;
                scan_count[warp] = count;
            }
        }
        if (tid == 0) s_boundary = kSelectBins;
        __syncthreads();
        if (tid < kSelectBins) {
            for (int w = 0; w < warp; ++w) {
                mass += scan_mass[w];
                count += scan_count[w];
            }
            const bool hit = reaches(kept_so_far + mass) || taken_so_far + count >= extra_limit;
            if (hit && (tid == 0 || !(reaches(kept_so_far + mass - hist[tid]) ||
                                      taken_so_far + count - hist_count[tid] >= extra_limit)))
                s_boundary = tid;  // the first bin that meets a condition: one thread at most
        }
        __syncthreads();
        const int boundary = s_boundary;
        // The kept mass and count before the boundary bin (after every bin when none).
        if (tid == min(boundary, kSelectBins - 1)) {
            const bool none = boundary == kSelectBins;
            s_kept = kept_so_far + mass - (none ? 0 : hist[tid]);
            s_taken = taken_so_far + count - (none ? 0 : hist_count[tid]);
        }
        __syncthreads();
    };
    find_boundary(kept, 0);

    // Refinement: while the boundary bin holds many blocks (flat masses over a long context),
    // split its range into kSelectBins finer bins (each level 256 times narrower, the same
    // monotone mapping) and find the boundary among those, so that the exact resolution below
    // only orders a few blocks. Level L's key of block b: the bins of levels 0..L.
    // fine_below(b, L) = ((scaled - k0) * 256 - k1) * 256 ... with scaled = below * 8: monotone
    // in below, so the bins still follow the mass order.
    constexpr int kLevels = 3;
    constexpr int kQuadraticMax = 512;  // boundary blocks ordered pairwise at most
    int bounds[kLevels];
    bounds[0] = s_boundary;
    Mass kept_before = s_kept;
    int taken_before = s_taken;
    int levels = 1;
    // The bins of block b at levels 0..levels-1 (-1 for the always-kept blocks).
    auto bins_of = [&](int b, int (&out_bins)[kLevels], int n_levels) {
        if (always_kept(b)) {
            for (int L = 0; L < n_levels; ++L) out_bins[L] = -1;
            return;
        }
        float scaled = (heaviest - a[b]) * static_cast<float>(kSelectBinsPerOctave);
        for (int L = 0; L < n_levels; ++L) {
            const int k = scaled < static_cast<float>(kSelectBins - 1) ? static_cast<int>(scaled) : kSelectBins - 1;
            out_bins[L] = k;
            scaled = (scaled - static_cast<float>(k)) * static_cast<float>(kSelectBins);
        }
    };
    // No boundary at level 0 (rounding left the histogram short of the target): every block
    // is kept, and no state equals bounds[0] = kSelectBins = kKeep by mistake.
    int n_candidates = 0;
    if (bounds[0] < kSelectBins) {
        n_candidates = block_compact<kThreads>(
            n_used, [&](int b) { return states[b] == bounds[0]; }, [&](int b, int index) { candidates[index] = b; },
            reduce_i);
    }
    while (n_candidates > kQuadraticMax && levels < kLevels && bounds[levels - 1] < kSelectBins - 1) {
        clear_copies<kThreads>(copies);
        BinRun run;
        const Segment cand_seg = thread_segment<kThreads>(n_candidates);
        for (int x = cand_seg.begin; x < cand_seg.end; ++x) {
            const int b = candidates[x];
            int bins[kLevels];
            bins_of(b, bins, levels + 1);
            run.add(copies, bins[levels], fixed_mass(a[b], heaviest));
        }
        run.flush(copies);
        merge_copies<kThreads>(copies, hist, hist_count);
        find_boundary(kept_before, taken_before);
        bounds[levels] = s_boundary;
        kept_before = s_kept;
        taken_before = s_taken;
        ++levels;
        // The candidates off this level's boundary bin are decided by it: earlier (heavier)
        // bins kept, later ones dropped. With no boundary at this level (rounding: the
        // histogram stayed short, bounds = kSelectBins) every candidate is kept.
        n_candidates = block_compact<kThreads>(
            n_candidates,
            [&](int x) {
                const int b = candidates[x];
                int bins[kLevels];
                bins_of(b, bins, levels);
                const int k = bins[levels - 1];
                if (k == bounds[levels - 1]) return true;
                states[b] = k < bounds[levels - 1] ? kKeep : kDrop;  // the same in both walks
                return false;
            },
            [&](int x, int index) { ranks[index] = candidates[x]; }, reduce_i);
        for (int x = tid; x < n_candidates; x += kThreads) candidates[x] = ranks[x];
        __syncthreads();
    }

    // Exact resolution: each boundary block's rank in the selection order (heavier first, ties
    // lower id first) and whether the sequential rule takes it (mass before it below the
    // target and blocks before it below the budget).
    // The usual case (at most kQuadraticMax candidates) works on a shared copy of their ids,
    // masses and weights, so that the pairwise loop neither reloads nor recomputes 2^(a - A).
    __shared__ int cand_id[kQuadraticMax];
    __shared__ float cand_a[kQuadraticMax];
    __shared__ Mass cand_w[kQuadraticMax];
    const bool staged = n_candidates <= kQuadraticMax;
    if (staged) {
        for (int x = tid; x < n_candidates; x += kThreads) {
            const int b = candidates[x];
            cand_id[x] = b;
            cand_a[x] = a[b];
            cand_w[x] = fixed_mass(a[b], heaviest);
        }
        __syncthreads();
    }
    // A team of `team` consecutive lanes per candidate x (as many as the CTA has threads for,
    // up to a warp) splits the loop over the other candidates and sums with shuffles.
    int taken = 0;
    int team = 1;
    while (team < 32 && n_candidates * team * 2 <= kThreads) team *= 2;
    const int per_round = kThreads / team, member = tid % team;
    for (int round = 0; round * per_round < n_candidates; ++round) {  // uniform over the CTA
        const int x_index = round * per_round + tid / team;
        const bool valid = x_index < n_candidates;
        const int x = !valid ? -1 : staged ? cand_id[x_index] : candidates[x_index];
        const float ax = valid ? a[x] : 0.0f;
        Mass before_mass = 0;  // the masses of the blocks that come before x
        int rank = 0;
        for (int y_index = member; valid && y_index < n_candidates; y_index += team) {
            const int y = staged ? cand_id[y_index] : candidates[y_index];
            const float ay = staged ? cand_a[y_index] : a[y];
            if (ay > ax || (ay == ax && y < x)) {
                before_mass += staged ? cand_w[y_index] : fixed_mass(ay, heaviest);
                ++rank;
            }
        }
        for (int offset = team / 2; offset > 0; offset >>= 1) {  // teams are aligned lane groups
            before_mass += __shfl_xor_sync(kFullMask, before_mass, offset);
            rank += __shfl_xor_sync(kFullMask, rank, offset);
        }
        if (valid && member == 0) {
            ranks[x] = rank;
            taken += !reaches(kept_before + before_mass) && taken_before + rank < extra_limit ? 1 : 0;
        }
    }
    // Its barriers also publish `ranks` to the whole CTA. In exact arithmetic the taken blocks
    // are the first n_taken of the order; keeping the ranks below n_taken keeps the set a
    // prefix of the order whatever the rounding. A last level without a boundary keeps them all.
    const int n_taken = block_reduce<kThreads>(
        taken, [](int x, int y) { return x + y; }, reduce_i);
    const bool keep_all = bounds[levels - 1] == kSelectBins;
    for (int x_index = tid; x_index < n_candidates; x_index += kThreads) {
        const int x = staged ? cand_id[x_index] : candidates[x_index];
        states[x] = keep_all || ranks[x] < n_taken ? kKeep : kDrop;
    }
    __syncthreads();

    // Kept, ascending: the decided kKeep blocks and every block of a bin before the boundary.
    const int count = block_compact<kThreads>(
        n_used,
        [&](int b) {
            const uint16_t v = states[b];
            return v == kKeep || v < bounds[0];
        },
        [&](int b, int index) { out[index] = b; }, reduce_i);
    for (int k = count + tid; k < args.max_blocks; k += kThreads) out[k] = -1;
    if (tid == 0) args.counts[row] = count;
}

// ---- one selection per query group ---------------------------------------------------------

// The group stage's view of the scratch.
struct GroupState {
    SelectBlocksArgs args;        // the tokens' (n tokens)
    SelectBlocksArgs sampled;     // the sampled tokens' (n = S; iq, seq, pos theirs)
    float* sample_iq;             // (S, hr, r) their index queries, gathered
    const float* sample_mass;     // (S * hr, u) each sample row's log2 masses (block_mass_kernel)
    double* sample_lse;           // (S * hr,) log2 of each sample row's total
    float* group_mass;            // (n_groups * hr, u) the group rows' log2 mean masses
    uint32_t* group_row_max;      // (n_groups * hr,) their heaviest block (split path), or null
    const int32_t* group_blocks;  // (n_groups * hr, max_blocks) the group rows' selection
    const int32_t* group_counts;  // (n_groups * hr,)
};

// One CTA per sampled token: its (hr, r) index queries.
__global__ void __launch_bounds__(128) gather_queries_kernel(GroupState gs) {
    const int64_t s = blockIdx.x, width = gs.args.hr * gs.args.r;
    const float* from = gs.args.iq + int64_t{gs.args.sample_token[s]} * width;
    for (int64_t e = threadIdx.x; e < width; e += blockDim.x) gs.sample_iq[s * width + e] = from[e];
}

constexpr int kLseWarps = 8;

// One warp per sample row: lse = log2 sum_b 2^(a_b) over the token's blocks, in double.
__global__ void __launch_bounds__(kLseWarps * 32) row_lse_kernel(GroupState gs) {
    const SelectBlocksArgs& args = gs.sampled;
    const int lane = threadIdx.x % 32;
    const int64_t row = int64_t{blockIdx.x} * kLseWarps + threadIdx.x / 32;  // sample * hr + head
    if (row >= args.n * args.hr) return;                                     // warp-uniform
    const int n_used = args.pos[row / args.hr] / args.block_size + 1;
    const float* a = gs.sample_mass + row * args.n_used_max;
    float heaviest = -INFINITY;
    for (int b = lane; b < n_used; b += 32) heaviest = fmaxf(heaviest, a[b]);
    heaviest = warp_max(heaviest);
    double total = 0;
    for (int b = lane; b < n_used; b += 32) total += exp2(static_cast<double>(a[b]) - heaviest);
    for (int offset = 16; offset > 0; offset >>= 1)
        total += __shfl_xor_sync(kFullMask, total, offset);
    if (lane == 0) gs.sample_lse[row] = heaviest + log2(total);
}

constexpr int kMeanThreads = 256;

// One thread per (group row, block): the mean over the group's sampled tokens of their
// normalised masses 2^(a_b - lse), summed in token order (so equal inputs give equal means:
// exact ties stay ties), stored as a log2 mass (-inf: none). On the split path each warp also
// raises its group row's heaviest block. Grid (n_groups * hr, blocks of kMeanThreads).
__global__ void __launch_bounds__(kMeanThreads) group_mean_kernel(GroupState gs) {
    const SelectBlocksArgs& args = gs.args;
    const int64_t grow = blockIdx.x;  // group * hr + head
    const int64_t g = grow / args.hr, j = grow % args.hr;
    const int b = static_cast<int>(blockIdx.y) * kMeanThreads + static_cast<int>(threadIdx.x);
    const int n_used = args.group_pos[g] / args.block_size + 1;
    const int first = args.sample_start[g], end = args.sample_start[g + 1];
    float log2_mean = -INFINITY;
    if (b < n_used) {
        double sum = 0;
        for (int s = first; s < end; ++s) {
            const int64_t row = int64_t{s} * args.hr + j;
            sum += exp2(static_cast<double>(gs.sample_mass[row * args.n_used_max + b]) -
                        gs.sample_lse[row]);
        }
        log2_mean = static_cast<float>(log2(sum / (end - first)));
        gs.group_mass[grow * args.n_used_max + b] = log2_mean;
    }
    if (gs.group_row_max == nullptr) return;  // grid-uniform
    const float heaviest = warp_max(log2_mean);
    if (threadIdx.x % 32 == 0 && heaviest != -INFINITY)
        atomicMax(gs.group_row_max + grow, ordered_bits(heaviest));
}

// One CTA per token row: its group row's blocks and count.
__global__ void __launch_bounds__(128) broadcast_kernel(GroupState gs) {
    const SelectBlocksArgs& args = gs.args;
    const int64_t row = blockIdx.x;  // token * hr + head
    const int64_t grow = int64_t{args.group_of[row / args.hr]} * args.hr + row % args.hr;
    const int32_t* from = gs.group_blocks + grow * args.max_blocks;
    int32_t* to = args.blocks + row * args.max_blocks;
    for (int k = threadIdx.x; k < args.max_blocks; k += blockDim.x) to[k] = from[k];
    if (threadIdx.x == 0) args.counts[row] = gs.group_counts[grow];
}

}  // namespace

namespace {

// Few rows (decode: a token's retrieval heads) take the split path: histograms over many CTAs.
bool split_rows(int64_t rows) {
    int device = 0, n_sm = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return rows <= 2 * static_cast<int64_t>(n_sm);
}

// Carves 256-byte aligned pieces off a scratch buffer, front to back; with a null base it only
// counts (the size select_blocks_scratch_bytes reserves).
struct ScratchCarver {
    unsigned char* base;
    size_t at = 0;
    void* take(size_t bytes) {
        void* p = base ? base + at : nullptr;
        at += (bytes + 255) / 256 * 256;
        return p;
    }
};

int state_stride(int64_t n_used_max) { return static_cast<int>((n_used_max + 7) / 8 * 8); }

// The scratch, in this order: log2 masses, candidates, ranks, states, and on the split path
// row maxima and chunk histograms. Returns its size; fills `st` when given.
size_t layout(const SelectBlocksArgs& args, int64_t rows, int64_t n_used_max, bool split, SelectState* st) {
    const size_t cells = static_cast<size_t>(rows) * static_cast<size_t>(n_used_max);
    const int stride = state_stride(n_used_max);
    const int n_chunks = static_cast<int>((n_used_max + kHistChunk - 1) / kHistChunk);
    ScratchCarver carve{static_cast<unsigned char*>(args.scratch)};
    void* log2_mass = carve.take(cells * sizeof(float));
    void* candidates = carve.take(cells * sizeof(int32_t));
    void* ranks = carve.take(cells * sizeof(int32_t));
    void* states =
        carve.take(static_cast<size_t>(rows) * static_cast<size_t>(stride) * sizeof(uint16_t));
    void* row_max = split ? carve.take(static_cast<size_t>(rows) * sizeof(uint32_t)) : nullptr;
    void* parts = split ? carve.take(static_cast<size_t>(rows) * static_cast<size_t>(n_chunks) *
                                     sizeof(HistPart))
                        : nullptr;
    if (st != nullptr) {
        *st = SelectState{};
        st->args = args;
        st->log2_mass = static_cast<float*>(log2_mass);
        st->candidates = static_cast<int32_t*>(candidates);
        st->ranks = static_cast<int32_t*>(ranks);
        st->states = static_cast<uint16_t*>(states);
        st->state_stride = stride;
        const size_t state_bytes = static_cast<size_t>(stride) * sizeof(uint16_t);
        st->staged_bytes = state_bytes <= static_cast<size_t>(kMaxStagedBytes) ? static_cast<int>(state_bytes) : 0;
        st->row_max = static_cast<uint32_t*>(row_max);
        st->parts = static_cast<HistPart*>(parts);
        st->n_chunks = n_chunks;
    }
    return carve.at;
}

// The grouped path's scratch: the sampled tokens' queries, masses and totals, the group rows'
// selection, then the group rows' selection scratch (layout). Returns its size; fills `gs`
// and `st` when given.
size_t grouped_layout(const SelectBlocksArgs& args, bool split, GroupState* gs, SelectState* st) {
    const size_t sample_rows = static_cast<size_t>(args.n_samples * args.hr);
    const size_t group_rows = static_cast<size_t>(args.n_groups * args.hr);
    ScratchCarver carve{static_cast<unsigned char*>(args.scratch)};
    void* sample_iq = carve.take(sample_rows * static_cast<size_t>(args.r) * sizeof(float));
    void* sample_mass =
        carve.take(sample_rows * static_cast<size_t>(args.n_used_max) * sizeof(float));
    void* sample_lse = carve.take(sample_rows * sizeof(double));
    void* group_blocks =
        carve.take(group_rows * static_cast<size_t>(args.max_blocks) * sizeof(int32_t));
    void* group_counts = carve.take(group_rows * sizeof(int32_t));
    // The group rows select like tokens at their group's position.
    SelectBlocksArgs group_args = args;
    group_args.scratch = carve.base ? carve.base + carve.at : nullptr;
    group_args.n = args.n_groups;
    group_args.pos = args.group_pos;
    group_args.blocks = static_cast<int32_t*>(group_blocks);
    group_args.counts = static_cast<int32_t*>(group_counts);
    carve.at += layout(group_args, static_cast<int64_t>(group_rows), args.n_used_max, split, st);
    if (gs != nullptr) {
        *gs = GroupState{};
        gs->args = args;
        gs->sampled = args;
        gs->sampled.n = args.n_samples;
        gs->sampled.iq = static_cast<float*>(sample_iq);
        gs->sampled.seq = args.sample_seq;
        gs->sampled.pos = args.sample_pos;
        gs->sample_iq = static_cast<float*>(sample_iq);
        gs->sample_mass = static_cast<float*>(sample_mass);
        gs->sample_lse = static_cast<double*>(sample_lse);
        gs->group_mass = st->log2_mass;
        gs->group_row_max = st->row_max;
        gs->group_blocks = static_cast<int32_t*>(group_blocks);
        gs->group_counts = static_cast<int32_t*>(group_counts);
    }
    return carve.at;
}

// Step 1 over the token rows of st.args, into st.log2_mass (and st.row_max where set). Many
// rows without row maxima (prefill) go to the tensor-core kernel of cuda-select-mass-tc.cu.
cudaError_t launch_block_mass(const SelectState& st, cudaStream_t stream) {
    const SelectBlocksArgs& args = st.args;
    if (st.row_max == nullptr && block_mass_tc_supported(args) && !env_flag("PURBO_NO_TC_SELECT"))
        return launch_block_mass_tc(args, st.log2_mass, stream);
    const int64_t rows = args.n * args.hr;
    // One warp per key block, kMassWarps per CTA.
    constexpr int mass_threads = kMassWarps * 32;
    const unsigned mass_ctas = static_cast<unsigned>((rows * args.n_used_max + kMassWarps - 1) / kMassWarps);
    // The unrolled bodies read 4 key elements at once: rows of r in {8, 16} and a base aligned
    // for a 16-byte (f32), 8-byte (bf16) or 4-byte (f8) load.
    const uintptr_t base = reinterpret_cast<uintptr_t>(args.index_keys);
    const uintptr_t align = args.keys_f8 ? 4 : args.keys_bf16 ? 8 : 16;
    const int kr =
        base % align == 0 && (args.r == 8 || args.r == 16) ? static_cast<int>(args.r) : 0;
    auto launch_mass = [&](auto key_tag) {
        using Key = decltype(key_tag);
        switch (kr) {
            case 16: block_mass_kernel<16, Key><<<mass_ctas, mass_threads, 0, stream>>>(st); break;
            case 8: block_mass_kernel<8, Key><<<mass_ctas, mass_threads, 0, stream>>>(st); break;
            default: block_mass_kernel<0, Key><<<mass_ctas, mass_threads, 0, stream>>>(st); break;
        }
    };
    if (args.keys_bf16) {
        launch_mass(__nv_bfloat16{});
    } else if (args.keys_f8) {
        launch_mass(__nv_fp8_e4m3{});
    } else {
        launch_mass(float{});
    }
    return cudaGetLastError();
}

// Steps 2 and 3 over the rows of st.args, whose log2 masses (and on the split path row
// maxima) are in place.
cudaError_t launch_row_selection(const SelectState& st, bool split, cudaStream_t stream) {
    const int64_t rows = st.args.n * st.args.hr;
    cudaError_t err = cudaSuccess;
    // Shared memory for the row's states, beyond the 48 KB a kernel gets without asking.
    auto launch_rows = [&](auto kernel, int threads) {
        if (st.staged_bytes > 0 &&
            (err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxStagedBytes)) != cudaSuccess)
            return err;
        kernel<<<static_cast<unsigned>(rows), threads, st.staged_bytes, stream>>>(st);
        return cudaGetLastError();
    };
    if (split) {
        const dim3 hist_grid(static_cast<unsigned>(st.n_chunks), static_cast<unsigned>(rows));
        block_hist_kernel<<<hist_grid, kHistThreads, 0, stream>>>(st);
        if ((err = cudaGetLastError()) != cudaSuccess) return err;
        return launch_rows(select_row_kernel<kRowThreadsWide>, kRowThreadsWide);
    }
    return launch_rows(select_row_kernel<kRowThreadsNarrow>, kRowThreadsNarrow);
}

// One selection per query group: the sampled tokens' queries gathered, step 1 over them, the
// groups' mean rows, steps 2 and 3 on those, and the copy to the tokens.
cudaError_t launch_grouped(const SelectBlocksArgs& args, cudaStream_t stream) {
    const int64_t group_rows = args.n_groups * args.hr;
    const bool split = split_rows(group_rows);
    GroupState gs;
    SelectState st;
    (void)grouped_layout(args, split, &gs, &st);

    gather_queries_kernel<<<static_cast<unsigned>(args.n_samples), 128, 0, stream>>>(gs);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    SelectState sample_st{};  // step 1 into the sample rows, no row maxima
    sample_st.args = gs.sampled;
    sample_st.log2_mass = const_cast<float*>(gs.sample_mass);
    if ((err = launch_block_mass(sample_st, stream)) != cudaSuccess) return err;
    const int64_t sample_rows = args.n_samples * args.hr;
    row_lse_kernel<<<static_cast<unsigned>((sample_rows + kLseWarps - 1) / kLseWarps),
                     kLseWarps * 32, 0, stream>>>(gs);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if (split &&
        (err = cudaMemsetAsync(st.row_max, 0, static_cast<size_t>(group_rows) * sizeof(uint32_t),
                               stream)) != cudaSuccess)
        return err;
    const dim3 mean_grid(
        static_cast<unsigned>(group_rows),
        static_cast<unsigned>((args.n_used_max + kMeanThreads - 1) / kMeanThreads));
    group_mean_kernel<<<mean_grid, kMeanThreads, 0, stream>>>(gs);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if ((err = launch_row_selection(st, split, stream)) != cudaSuccess) return err;
    broadcast_kernel<<<static_cast<unsigned>(args.n * args.hr), 128, 0, stream>>>(gs);
    return cudaGetLastError();
}

}  // namespace

size_t select_blocks_scratch_bytes(const SelectBlocksArgs& args) {
    SelectBlocksArgs sizing = args;
    sizing.scratch = nullptr;
    if (args.n_groups > 0) {
        SelectState st;
        return grouped_layout(sizing, split_rows(args.n_groups * args.hr), nullptr, &st);
    }
    const int64_t rows = args.n * args.hr;
    return layout(sizing, rows, args.n_used_max, split_rows(rows), nullptr);
}

cudaError_t launch_select_blocks(const SelectBlocksArgs& args, cudaStream_t stream) {
    const int64_t rows = args.n * args.hr;
    if (rows == 0) return cudaSuccess;
    // Key indices and block ids are ints in the kernels.
    if (args.block_size <= 0 || args.n_used_max <= 0 || args.n_used_max > kMaxRowBlocks ||
        rows > INT_MAX || rows * args.n_used_max > INT_MAX || args.c + args.block_size > INT_MAX)
        return cudaErrorInvalidValue;
    if (args.n_groups > 0) return launch_grouped(args, stream);
    const bool split = split_rows(rows);
    SelectState st;
    (void)layout(args, rows, args.n_used_max, split, &st);
    cudaError_t err = cudaSuccess;
    // Below every float's bits: the row maxima start empty.
    if (split && (err = cudaMemsetAsync(st.row_max, 0, static_cast<size_t>(rows) * sizeof(uint32_t),
                                        stream)) != cudaSuccess)
        return err;
    if ((err = launch_block_mass(st, stream)) != cudaSuccess) return err;
    return launch_row_selection(st, split, stream);
}

}  // namespace purbo::cuda
