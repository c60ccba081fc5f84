// Steps 2 and 3 of the top-p block selection (cuda-select.cu) for one row, as pieces shared by
// its two row kernels: select_row_kernel (one CTA per row, cuda-select.cu: prefill's thousands
// of rows) and select_row_cluster_kernel (a cluster of CTAs per row, cuda-select-cluster.cu:
// decode's few long rows). Included by those two .cu files only.
//
// Sums that decide the boundary are exact: each block's mass relative to the heaviest is
// rounded once to a fixed-point integer of 2^-40 (far below the fp32 error of the block
// masses), and integer sums do not depend on the order of the atomics or of the scans, so the
// result does not depend on scheduling or on how a row is cut into CTAs. The cpu backend sums
// the same masses in double; the two can differ only where a comparison at the boundary is
// within 2^-40 of the heaviest block.
#pragma once

#include <climits>
#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"
#include "backend/select-bins.h"

namespace purbo::cuda {

// The kernels' view of the scratch (select_blocks_scratch_bytes), per row of u blocks.
struct SelectState {
    SelectBlocksArgs args;
    float* log2_mass;     // (rows, u) each block's unnormalised log2 mass
    int32_t* candidates;  // (rows, u) the boundary bin's blocks, ascending
    int32_t* ranks;       // (rows, u) the rank of candidates[x] in the selection order
    // One CTA per row only:
    uint16_t* states;  // (rows, state_stride) block states (kKeep, kDrop or a level-0 bin)
    int state_stride;  // u rounded up to 8: rows of whole 16-byte vectors
    int staged_bytes;  // > 0: the row's CTA keeps its states in shared memory
    // A cluster per row only, else null and 0:
    uint32_t* row_max;  // (rows,) the heaviest block's log2 mass, order-preserving bits
    int cluster_chunk;  // blocks per CTA of a row's cluster (its shared memory is sized for it)
};

// A cluster of kClusterCtas CTAs per row (cuda-select-cluster.cu), each keeping the masses
// and states of up to kClusterMaxChunk consecutive blocks in shared memory.
constexpr int kClusterCtas = 8;
constexpr int kClusterMaxChunk = 16384;
constexpr int64_t kClusterMaxBlocks = int64_t{kClusterCtas} * kClusterMaxChunk;
// Steps 2 and 3 for the rows of st.args (st.row_max: each row's heaviest block, set by step 1),
// u <= kClusterMaxBlocks.
cudaError_t launch_select_rows_clustered(const SelectState& st, cudaStream_t stream);

namespace {

// Block masses relative to the heaviest block, 2^(a_b - A) in (0, 1], as fixed-point integers
// of 2^-40. (Speed is no reason: sm_90 runs 64-bit shared-memory atomicAdd as a
// compare-and-swap loop, integer or double; the runs of BinRun keep them few.) Rows of up to
// 2^23 blocks sum below 2^63; a block under 2^-40 of the heaviest counts as 0 (its bin is past
// any boundary top_p < 1 can reach).
using Mass = unsigned long long;
constexpr int kMaxRowBlocks = 1 << 23;
__device__ __forceinline__ Mass fixed_mass(float a, float heaviest) {
    return static_cast<Mass>(exp2(static_cast<double>(a) - heaviest) * 0x1p40 + 0.5);
}

// A block's state during its row's selection: the level-0 bin (0 .. 255) while undecided,
// then kKeep or kDrop (kCandidate: in the boundary bin of every level so far, for the kernels
// that mark candidates in place).
constexpr uint16_t kKeep = kSelectBins;
constexpr uint16_t kDrop = kSelectBins + 1;
constexpr uint16_t kCandidate = kSelectBins + 2;

// Refinement levels of the boundary bin and the most candidates ordered pairwise (see
// cuda-select.cu's header).
constexpr int kLevels = 3;
constexpr int kQuadraticMax = 512;

// float <-> unsigned with the same order, so that atomicMax on the bits is a float max.
__device__ __forceinline__ uint32_t ordered_bits(float f) {
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_ordered_bits(uint32_t u) {
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

// The bin of a block `below` octaves under the heaviest at refinement level `level`: level 0
// is select_mass_bin; each further level splits its parent's bin into kSelectBins (the same
// monotone mapping, 256 times narrower), so the bins of every level follow the mass order.
__device__ __forceinline__ int level_bin(float below, int level) {
    float scaled = below * static_cast<float>(kSelectBinsPerOctave);
    for (int L = 0;; ++L) {
        const int k = scaled < static_cast<float>(kSelectBins - 1) ? static_cast<int>(scaled)
                                                                   : kSelectBins - 1;
        if (L == level) return k;
        scaled = (scaled - static_cast<float>(k)) * static_cast<float>(kSelectBins);
    }
}

// ---- block-wide helpers (every thread of the CTA must call them) --------------------------

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

// Calls emit(x, base + index) for every x in [0, count) with flag(x), index = the number of
// flagged x' < x (an ordered compaction), base = base_of(flagged) (called once by every thread
// when the CTA's count is known: a cluster adds the counts of the CTAs before it); returns the
// number flagged, the same in every thread. Each thread counts the flags of its segment, one
// exclusive scan over the threads gives its first index, and a second walk of the segment
// emits: two barriers, whatever the count. `warp_base` has kThreads / 32 + 1 entries.
template <int kThreads, class Flag, class BaseOf, class Emit>
__device__ int block_compact_at(int count, Flag flag, BaseOf base_of, Emit emit, int* warp_base) {
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
    const int flagged = warp_base[kWarps];
    int index = base_of(flagged) + warp_base[warp] + inclusive - mine;
    for (int x = seg.begin; x < seg.end; ++x) {
        if (flag(x)) emit(x, index++);
    }
    __syncthreads();  // warp_base may be reused right away
    return flagged;
}

template <int kThreads, class Flag, class Emit>
__device__ int block_compact(int count, Flag flag, Emit emit, int* warp_base) {
    return block_compact_at<kThreads>(
        count, flag, [](int) { return 0; }, emit, warp_base);
}

// ---- histograms of block masses -----------------------------------------------------------

constexpr int kHistCopies = 8;  // copies of a CTA's histogram, each shared by a few warps

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

// ---- the boundary bin and its exact resolution --------------------------------------------

// What stops a row's selection (backend.h): top_p of the mass outside the always-kept blocks,
// and the block budget. top_p = 1 (only reached with a budget) stops on the count alone: no
// mass target. The sums stay integers; only this comparison is in double (rounding 2^-53
// relative).
struct RowRule {
    double target;    // the kept mass (fixed point) that reaches top_p; +inf: none
    int extra_limit;  // blocks the budget allows besides the always-kept ones; INT_MAX: none
    __device__ bool reaches(Mass m) const { return static_cast<double>(m) >= target; }
};
// The first of a row's last blocks that are always kept with block 0 (SelectBlocksArgs::
// keep_from): those of its query positions.
__device__ __forceinline__ int own_first_block(const SelectBlocksArgs& args, int64_t token, int p) {
    return args.keep_from != nullptr ? args.keep_from[token] : p / args.block_size;
}

// own: the row's first always-kept block past 0 (own_first_block).
__device__ __forceinline__ RowRule row_rule(const SelectBlocksArgs& args, Mass total, Mass kept,
                                            int n_used, int own) {
    RowRule rule;
    rule.target = args.top_p >= 1.0f
                      ? static_cast<double>(INFINITY)
                      : static_cast<double>(kept) +
                            static_cast<double>(args.top_p) * static_cast<double>(total - kept);
    const bool limited = args.max_kept > 0 && args.max_kept < n_used;
    // The budget may not cut the always-kept blocks: 0 and own .. n_used - 1.
    const int n_always = (own > 0 ? 1 : 0) + (n_used - own);
    rule.extra_limit = limited ? max(0, args.max_kept - n_always) : INT_MAX;
    return rule;
}

// A boundary bin, and the kept mass and block count before it (after every bin when none).
struct Boundary {
    int bin;  // kSelectBins: none (the whole histogram stays short of the target)
    Mass kept;
    int taken;
};

struct BoundaryScratch {
    Mass scan_mass[kSelectBins / 32];  // the bins' warp totals
    int scan_count[kSelectBins / 32];
    int bin;
    Mass kept;
    int taken;
};

// The boundary bin of the histogram (hist, hist_count) after kept_so_far mass and taken_so_far
// blocks: the first bin k whose mass takes the kept mass to the target (kept_so_far + the bins
// 0..k >= target) or whose blocks reach the budget. Thread k holds bin k's inclusive prefix
// sums (a scan over the first kSelectBins threads: integer sums, so the same as a sequential
// scan); both conditions only grow with k, so the boundary is the smallest k that meets one.
template <int kThreads>
__device__ Boundary find_boundary(const Mass* hist, const int* hist_count, Mass kept_so_far,
                                  int taken_so_far, const RowRule& rule, BoundaryScratch& s) {
    static_assert(kThreads >= kSelectBins, "a thread per bin");
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
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
            s.scan_mass[warp] = mass;
            s.scan_count[warp] = count;
        }
    }
    if (tid == 0) s.bin = kSelectBins;
    __syncthreads();
    if (tid < kSelectBins) {
        for (int w = 0; w < warp; ++w) {
            mass += s.scan_mass[w];
            count += s.scan_count[w];
        }
        const bool hit =
            rule.reaches(kept_so_far + mass) || taken_so_far + count >= rule.extra_limit;
        if (hit && (tid == 0 || !(rule.reaches(kept_so_far + mass - hist[tid]) ||
                                  taken_so_far + count - hist_count[tid] >= rule.extra_limit)))
            s.bin = tid;  // the first bin that meets a condition: one thread at most
    }
    __syncthreads();
    const int boundary = s.bin;
    if (tid == min(boundary, kSelectBins - 1)) {
        const bool none = boundary == kSelectBins;
        s.kept = kept_so_far + mass - (none ? 0 : hist[tid]);
        s.taken = taken_so_far + count - (none ? 0 : hist_count[tid]);
    }
    __syncthreads();
    const Boundary result{boundary, s.kept, s.taken};
    __syncthreads();  // `s` may be reused right away
    return result;
}

// The boundary's candidates, ascending ids: in shared memory (with their masses and weights)
// when they are at most kQuadraticMax, so that the pairwise loop neither reloads nor recomputes
// 2^(a - A); else read from the row's global list and masses.
struct CandidateList {
    int n;
    const int32_t* ids;  // (n,) global
    const float* a;      // the row's log2 masses, global
    float heaviest;
    bool staged;
    const int* s_id;  // (n,) shared, when staged
    const float* s_a;
    const Mass* s_w;
    __device__ int id(int i) const { return staged ? s_id[i] : ids[i]; }
    __device__ float mass(int i) const { return staged ? s_a[i] : a[ids[i]]; }
    __device__ Mass weight(int i) const {
        return staged ? s_w[i] : fixed_mass(a[ids[i]], heaviest);
    }
};

// Stages `list` in (s_id, s_a, s_w) (kQuadraticMax entries each) when it fits; every thread.
template <int kThreads>
__device__ CandidateList stage_candidates(CandidateList list, int* s_id, float* s_a, Mass* s_w) {
    list.staged = list.n <= kQuadraticMax;
    if (list.staged) {
        for (int x = threadIdx.x; x < list.n; x += kThreads) {
            const int b = list.ids[x];
            s_id[x] = b;
            s_a[x] = list.a[b];
            s_w[x] = fixed_mass(list.a[b], list.heaviest);
        }
        list.s_id = s_id;
        list.s_a = s_a;
        list.s_w = s_w;
        __syncthreads();
    }
    return list;
}

// Exact resolution of the candidates [first, end) of `list`: each one's rank in the selection
// order among all of the list (heavier first, ties lower id first) into ranks[x_index], and
// whether the sequential rule takes it (the mass before it below the target and the blocks
// before it below the budget). Returns how many of [first, end) are taken, in every thread
// (`reduce` has kThreads / 32 entries). In exact arithmetic the taken blocks are the first
// n_taken of the order; keeping the ranks below n_taken keeps the set a prefix of the order
// whatever the rounding. Quadratic in the candidates: a team of `team` consecutive lanes per
// candidate (as many as the CTA has threads for, up to a warp) splits the loop over the
// others and sums with shuffles.
template <int kThreads>
__device__ int rank_candidates(const CandidateList& list, int first, int end, const RowRule& rule,
                               Mass kept_before, int taken_before, int32_t* ranks, int* reduce) {
    const int n_mine = end - first;
    int taken = 0;
    int team = 1;
    while (team < 32 && n_mine * team * 2 <= kThreads) team *= 2;
    const int per_round = kThreads / team, member = threadIdx.x % team;
    for (int round = 0; round * per_round < n_mine; ++round) {  // uniform over the CTA
        const int x_index = first + round * per_round + static_cast<int>(threadIdx.x) / team;
        const bool valid = x_index < end;
        const int x = valid ? list.id(x_index) : -1;
        const float ax = valid ? list.mass(x_index) : 0.0f;
        Mass before_mass = 0;  // the masses of the blocks that come before x
        int rank = 0;
        for (int y_index = member; valid && y_index < list.n; y_index += team) {
            const int y = list.id(y_index);
            const float ay = list.mass(y_index);
            if (ay > ax || (ay == ax && y < x)) {
                before_mass += list.weight(y_index);
                ++rank;
            }
        }
        for (int offset = team / 2; offset > 0; offset >>= 1) {  // teams are aligned lane groups
            before_mass += __shfl_xor_sync(kFullMask, before_mass, offset);
            rank += __shfl_xor_sync(kFullMask, rank, offset);
        }
        if (valid && member == 0) {
            ranks[x_index] = rank;
            taken +=
                !rule.reaches(kept_before + before_mass) && taken_before + rank < rule.extra_limit
                    ? 1
                    : 0;
        }
    }
    // Its barriers also publish `ranks` to the whole CTA.
    return block_reduce<kThreads>(
        taken, [](int x, int y) { return x + y; }, reduce);
}

}  // namespace
}  // namespace purbo::cuda
