// Top-p block selection (method.md section 4) with the histogram of block masses of
// select-bins.h, in two kernels:
//  1. block_mass_kernel, one warp per (token, retrieval head, key block): the block's scores
//     z_t = scale * log2(e) * iq . k_t (fp32), reduced to the running max m_b and sum
//     l_b = sum 2^(z - m_b) (merged across lanes as in an online softmax), stored as the
//     block's log2 mass a_b = m_b + log2(l_b).
//  2. select_row_kernel, one CTA per (token, retrieval head): the heaviest block A = max a_b,
//     the 256-bin histogram of the masses 2^(a_b - A) (double atomics in shared memory), the
//     scan for the boundary bin, its exact resolution, and the ascending list of kept blocks.
//     The bins are summed in a few copies, each shared by a few warps, and the copies merged
//     in a fixed order. Each thread walks a segment of consecutive blocks, so that compactions
//     take two barriers whatever the row's length. A decode step has few rows of many blocks
//     (16K at 1M keys): its CTAs have 1024 threads and first copy the row's masses into shared
//     memory; prefill chunks have many rows and take 256-thread CTAs.
//
// The index keys are f32 or bf16, as the KV cache (the selection is bound by reading them:
// 16 values per key and retrieval head; bf16 halves that).
//
// A second kernel rather than the paper's last-CTA-done counter: the per-row pass needs every
// block's (m_b, l_b) of that row, and a kernel boundary is the simplest correct barrier. The
// counter needs a zeroed counter per row (a memset, or a reset that must itself be ordered),
// a __threadfence before each CTA's increment, and the last CTA of a row, sized for one
// block's keys, doing the row's work; it saves one launch, which a CUDA graph makes cheap.
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
// Sums that decide the boundary are in double (one value per block: cheap) so that they round
// far below the fp32 error of the block masses; the histogram's atomics add in any order, which
// moves a bin's sum by a few double ulps at most.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"
#include "backend/select-bins.h"

namespace purbo::cuda {
namespace {

constexpr int kMassWarps = 8;  // key blocks per CTA of block_mass_kernel, one warp each
// select_row_kernel: one CTA per (token, retrieval head). Decode has a few rows, each of up to
// tens of thousands of blocks, and takes the wide CTA with the row's masses staged in shared
// memory; prefill chunks have thousands of rows and take the narrow one (more CTAs per SM).
constexpr int kRowThreadsWide = 1024;
constexpr int kRowThreadsNarrow = 256;
constexpr int kHistCopies = 8;  // copies of the histogram, each shared by kWarps / kHistCopies warps
constexpr int kMaxStagedBytes = 160 * 1024;  // staged masses: 40K blocks (2.6M keys at B = 64)
extern __shared__ __align__(16) unsigned char select_dynamic_smem[];

// Merges the softmax state (m2, l2) into (m, l): l = sum 2^(z - m) over the union of the keys.
// An empty state has m = -inf and l = 0.
__device__ __forceinline__ void merge_state(float& m, float& l, float m2, float l2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2;
        l = l2;
        return;
    }
    const float m_new = fmaxf(m, m2);
    l = l * exp2f(m - m_new) + l2 * exp2f(m2 - m_new);
    m = m_new;
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// kR: the indexer dimension when it is 8 or 16 (keys read 4 elements at a time, q held in
// registers), 0 for any other r (a plain loop). Key: float or __nv_bfloat16, the type of the
// cached index keys (that of the KV cache). One warp per (token, retrieval head, key block),
// lane l taking keys l, l + 32, ... of the block; kMassWarps blocks per CTA (with one 64-thread
// CTA per block, the 80K CTAs of a 1M-token row cost more to schedule than to compute).
template <int kR, class Key>
__global__ void __launch_bounds__(kMassWarps * 32) block_mass_kernel(SelectBlocksArgs args) {
    const int lane = threadIdx.x % 32;
    const int64_t unit = int64_t{blockIdx.x} * kMassWarps + threadIdx.x / 32;  // row * u + b
    if (unit >= args.n * args.hr * args.n_used_max) return;  // warp-uniform
    const int64_t row = unit / args.n_used_max;  // token * hr + head
    const int b = static_cast<int>(unit % args.n_used_max);
    const int64_t i = row / args.hr, j = row % args.hr;
    const int p = args.pos[i];
    if (b > p / args.block_size) return;  // past the token's position: warp-uniform

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
        merge_state(m, l, m2, l2);
    }
    if (lane == 0) args.log2_mass[row * args.n_used_max + b] = m + log2f(l);  // l >= 1: the max key gives 2^0
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

// One CTA of kThreads per (token, retrieval head). With args.stage_masses the row's log2
// masses are first copied to dynamic shared memory (4 bytes per block), and every later pass
// reads them there.
template <int kThreads>
__global__ void __launch_bounds__(kThreads) select_row_kernel(SelectBlocksArgs args) {
    constexpr int kWarps = kThreads / 32;
    static_assert(kThreads % 32 == 0 && kWarps % kHistCopies == 0 && kWarps <= 32, "whole warps");
    const int64_t row = blockIdx.x;  // token * hr + head
    const int p = args.pos[row / args.hr];
    const int n_used = p / args.block_size + 1, last = n_used - 1;
    int32_t* out = args.blocks + row * args.max_blocks;  // (max_blocks,)
    const int tid = threadIdx.x;

    __shared__ double hist[kSelectBins];
    __shared__ int hist_count[kSelectBins];  // blocks per bin, for the block budget
    // Histogram copies, each shared by a few warps: lanes of one warp contend for a bin, warps
    // of different copies do not (with flat masses thousands of blocks fall into a handful of bins).
    __shared__ double copy_hist[kHistCopies][kSelectBins];
    __shared__ int copy_count[kHistCopies][kSelectBins];
    __shared__ double reduce_d[kWarps];
    __shared__ float reduce_f[kWarps];
    __shared__ int reduce_i[kWarps + 1];
    __shared__ int s_boundary, s_taken;
    __shared__ double s_kept;

    const bool limited = args.max_kept > 0 && args.max_kept < n_used;
    if (args.top_p >= 1.0f && !limited) {  // every block, whatever the masses
        for (int b = tid; b < args.max_blocks; b += kThreads) out[b] = b < n_used ? b : -1;
        if (tid == 0) args.counts[row] = n_used;
        return;
    }

    const float* a = args.log2_mass + row * args.n_used_max;  // (n_used,)
    if (args.stage_masses) {
        float* staged = reinterpret_cast<float*>(select_dynamic_smem);
        for (int b = tid; b < n_used; b += kThreads) staged[b] = a[b];
        __syncthreads();
        a = staged;
    }
    const Segment seg = thread_segment<kThreads>(n_used);
    int32_t* candidates = args.candidates + row * args.n_used_max;
    int32_t* ranks = args.ranks + row * args.n_used_max;
    auto always_kept = [last](int b) { return b == 0 || b == last; };

    // The heaviest block; the masses relative to it, their histogram, total and always-kept part.
    float heaviest = -INFINITY;
    for (int b = seg.begin; b < seg.end; ++b) heaviest = fmaxf(heaviest, a[b]);
    heaviest = block_reduce<kThreads>(
        heaviest, [](float x, float y) { return fmaxf(x, y); }, reduce_f);
    const int copy = (tid / 32) % kHistCopies;
    auto clear_warp_hists = [&] {
        for (int k = tid; k < kHistCopies * kSelectBins; k += kThreads) {
            (&copy_hist[0][0])[k] = 0.0;
            (&copy_count[0][0])[k] = 0;
        }
        __syncthreads();
    };
    // hist = the sum of the copies (a fixed order: no scheduling dependence between copies).
    auto merge_warp_hists = [&] {
        __syncthreads();
        for (int k = tid; k < kSelectBins; k += kThreads) {
            double sum = 0.0;
            int count = 0;
            for (int w = 0; w < kHistCopies; ++w) {
                sum += copy_hist[w][k];
                count += copy_count[w][k];
            }
            hist[k] = sum;
            hist_count[k] = count;
        }
        __syncthreads();
    };
    // A thread adds its blocks to a bin in runs: consecutive blocks of its segment that share a
    // bin are summed in registers and added with one atomic. With flat masses (thousands of
    // blocks in a few bins) the lanes of a warp would otherwise serialise on one address for
    // every block; with spread masses this costs nothing extra.
    struct BinRun {
        int bin = -1;
        double mass = 0.0;
        int count = 0;
    };
    auto flush_run = [&](BinRun& run) {
        if (run.count > 0) {
            atomicAdd(&copy_hist[copy][run.bin], run.mass);
            atomicAdd(&copy_count[copy][run.bin], run.count);
        }
        run = BinRun{};
    };
    auto add_to_run = [&](BinRun& run, int bin, double w) {
        if (bin != run.bin) {
            flush_run(run);
            run.bin = bin;
        }
        run.mass += w;
        ++run.count;
    };
    clear_warp_hists();
    double total = 0.0, kept = 0.0;
    {
        BinRun run;
        for (int b = seg.begin; b < seg.end; ++b) {
            const double w = exp2(static_cast<double>(a[b]) - heaviest);
            total += w;
            if (always_kept(b)) {
                kept += w;
            } else {
                add_to_run(run, select_mass_bin(heaviest - a[b]), w);
            }
        }
        flush_run(run);
    }
    merge_warp_hists();
    auto add_d = [](double x, double y) { return x + y; };
    total = block_reduce<kThreads>(total, add_d, reduce_d);
    kept = block_reduce<kThreads>(kept, add_d, reduce_d);  // its barriers also publish the histogram
    // top_p = 1 (only reached with a budget) stops on the count alone: no mass target.
    const double target =
        args.top_p >= 1.0f ? static_cast<double>(INFINITY) : static_cast<double>(args.top_p) * total;
    // Blocks the budget allows besides the always-kept ones (which it may not cut).
    const int n_always = last != 0 ? 2 : 1;
    const int extra_limit = limited ? max(0, args.max_kept - n_always) : INT_MAX;

    // The boundary bin: the first whose mass reaches the target or whose blocks reach the
    // budget (256 steps, one thread). None (kSelectBins) when rounding leaves the whole
    // histogram just short of the target: every block kept.
    auto find_boundary = [&](double kept_so_far, int taken_so_far) {
        if (tid == 0) {
            int boundary = kSelectBins;
            for (int k = 0; k < kSelectBins; ++k) {
                if (kept_so_far + hist[k] >= target || taken_so_far + hist_count[k] >= extra_limit) {
                    boundary = k;
                    break;
                }
                kept_so_far += hist[k];
                taken_so_far += hist_count[k];
            }
            s_boundary = boundary;
            s_kept = kept_so_far;
            s_taken = taken_so_far;
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
    double kept_before = s_kept;
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
    // Whether b lies in the boundary bin of every level so far.
    auto in_boundary = [&](int b, int n_levels) {
        int bins[kLevels];
        bins_of(b, bins, n_levels);
        for (int L = 0; L < n_levels; ++L)
            if (bins[L] != bounds[L]) return false;
        return true;
    };
    int n_candidates = block_compact<kThreads>(
        n_used, [&](int b) { return in_boundary(b, 1); }, [&](int b, int index) { candidates[index] = b; },
        reduce_i);
    while (n_candidates > kQuadraticMax && levels < kLevels && bounds[levels - 1] < kSelectBins - 1) {
        clear_warp_hists();
        BinRun run;
        const Segment cand_seg = thread_segment<kThreads>(n_candidates);
        for (int x = cand_seg.begin; x < cand_seg.end; ++x) {
            const int b = candidates[x];
            int bins[kLevels];
            bins_of(b, bins, levels + 1);
            add_to_run(run, bins[levels], exp2(static_cast<double>(a[b]) - heaviest));
        }
        flush_run(run);
        merge_warp_hists();
        find_boundary(kept_before, taken_before);
        bounds[levels] = s_boundary;
        kept_before = s_kept;
        taken_before = s_taken;
        ++levels;
        if (bounds[levels - 1] == kSelectBins) break;  // rounding: every candidate kept
        n_candidates = block_compact<kThreads>(
            n_candidates, [&](int x) { return in_boundary(candidates[x], levels); },
            [&](int x, int index) { ranks[index] = candidates[x]; }, reduce_i);
        for (int x = tid; x < n_candidates; x += kThreads) candidates[x] = ranks[x];
        __syncthreads();
    }
    const int boundary_last = bounds[levels - 1];

    // Exact resolution: each boundary block's rank in the selection order (heavier first, ties
    // lower id first) and whether the sequential rule takes it (mass before it below the
    // target and blocks before it below the budget).
    // The usual case (at most kQuadraticMax candidates) works on a shared copy of their ids,
    // masses and weights, so that the pairwise loop neither reloads nor recomputes 2^(a - A).
    __shared__ int cand_id[kQuadraticMax];
    __shared__ float cand_a[kQuadraticMax];
    __shared__ double cand_w[kQuadraticMax];
    const bool staged = n_candidates <= kQuadraticMax;
    if (staged) {
        for (int x = tid; x < n_candidates; x += kThreads) {
            const int b = candidates[x];
            cand_id[x] = b;
            cand_a[x] = a[b];
            cand_w[x] = exp2(static_cast<double>(a[b]) - heaviest);
        }
        __syncthreads();
    }
    int taken = 0;
    if (boundary_last < kSelectBins) {
        for (int x_index = tid; x_index < n_candidates; x_index += kThreads) {
            const int x = staged ? cand_id[x_index] : candidates[x_index];
            const float ax = a[x];
            double before_mass = 0.0;  // the masses of the blocks that come before x
            int rank = 0;
            for (int y_index = 0; y_index < n_candidates; ++y_index) {
                const int y = staged ? cand_id[y_index] : candidates[y_index];
                const float ay = staged ? cand_a[y_index] : a[y];
                if (ay > ax || (ay == ax && y < x)) {
                    before_mass += staged ? cand_w[y_index] : exp2(static_cast<double>(ay) - heaviest);
                    ++rank;
                }
            }
            ranks[x] = rank;
            taken += kept_before + before_mass < target && taken_before + rank < extra_limit ? 1 : 0;
        }
    }
    // Its barriers also publish `ranks` to the whole CTA.
    const int n_taken = block_reduce<kThreads>(
        taken, [](int x, int y) { return x + y; }, reduce_i);

    // Kept, ascending: the always-kept blocks, every bin before the boundary at some level
    // (with the earlier levels on their boundary), and the final boundary blocks of rank below
    // n_taken (in exact arithmetic the taken blocks are the first n_taken of the order;
    // counting them keeps the set a prefix of the order whatever the rounding). A level whose
    // boundary is kSelectBins (rounding left its histogram short) keeps all of its bins.
    const int count = block_compact<kThreads>(
        n_used,
        [&](int b) {
            if (always_kept(b)) return true;
            int bins[kLevels];
            bins_of(b, bins, levels);
            for (int L = 0; L < levels; ++L) {
                if (bins[L] < bounds[L]) return true;
                if (bins[L] > bounds[L]) return false;
            }
            return boundary_last == kSelectBins || ranks[b] < n_taken;
        },
        [&](int b, int index) { out[index] = b; }, reduce_i);
    for (int k = count + tid; k < args.max_blocks; k += kThreads) out[k] = -1;
    if (tid == 0) args.counts[row] = count;
}

}  // namespace

cudaError_t launch_select_blocks(const SelectBlocksArgs& args, cudaStream_t stream) {
    const int64_t rows = args.n * args.hr;
    if (rows == 0) return cudaSuccess;
    // Key indices and block ids are ints in the kernels.
    if (args.block_size <= 0 || args.n_used_max <= 0 || rows > INT_MAX ||
        rows * args.n_used_max > INT_MAX || args.c + args.block_size > INT_MAX)
        return cudaErrorInvalidValue;
    // One warp per key block, kMassWarps per CTA.
    constexpr int mass_threads = kMassWarps * 32;
    const unsigned mass_ctas = static_cast<unsigned>((rows * args.n_used_max + kMassWarps - 1) / kMassWarps);
    // The unrolled bodies read 4 key elements at once: rows of r in {8, 16} and a base aligned
    // for a 16-byte (f32) or 8-byte (bf16) load.
    const uintptr_t base = reinterpret_cast<uintptr_t>(args.index_keys);
    const int kr = base % (args.keys_bf16 ? 8 : 16) == 0 && (args.r == 8 || args.r == 16) ? static_cast<int>(args.r) : 0;
    auto launch_mass = [&](auto key_tag) {
        using Key = decltype(key_tag);
        switch (kr) {
            case 16: block_mass_kernel<16, Key><<<mass_ctas, mass_threads, 0, stream>>>(args); break;
            case 8: block_mass_kernel<8, Key><<<mass_ctas, mass_threads, 0, stream>>>(args); break;
            default: block_mass_kernel<0, Key><<<mass_ctas, mass_threads, 0, stream>>>(args); break;
        }
    };
    if (args.keys_bf16) {
        launch_mass(__nv_bfloat16{});
    } else {
        launch_mass(float{});
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;

    // Few rows (decode: a token's retrieval heads) get the wide CTA and staged masses, so that
    // each row's passes run on 1024 threads out of shared memory; many rows (prefill chunks)
    // fill the GPU with narrow CTAs.
    int device = 0, n_sm = 0;
    if ((err = cudaGetDevice(&device)) != cudaSuccess) return err;
    if ((err = cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) return err;
    if (rows <= 2 * static_cast<int64_t>(n_sm)) {
        SelectBlocksArgs wide = args;
        const size_t staged_bytes = static_cast<size_t>(args.n_used_max) * sizeof(float);
        wide.stage_masses = staged_bytes <= kMaxStagedBytes;
        const size_t dynamic_bytes = wide.stage_masses ? staged_bytes : 0;
        if (dynamic_bytes > 0) {
            err = cudaFuncSetAttribute(select_row_kernel<kRowThreadsWide>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxStagedBytes);
            if (err != cudaSuccess) return err;
        }
        select_row_kernel<kRowThreadsWide>
            <<<static_cast<unsigned>(rows), kRowThreadsWide, dynamic_bytes, stream>>>(wide);
    } else {
        SelectBlocksArgs narrow = args;
        narrow.stage_masses = false;
        select_row_kernel<kRowThreadsNarrow><<<static_cast<unsigned>(rows), kRowThreadsNarrow, 0, stream>>>(narrow);
    }
    return cudaGetLastError();
}

}  // namespace purbo::cuda
