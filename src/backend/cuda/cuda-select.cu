// Top-p block selection (method.md section 4) with the histogram of block masses of
// select-bins.h:
//  1. block_mass_kernel, 8 lanes per (token, retrieval head, key block): the block's scores
//     z_t = scale * log2(e) * iq . k_t (fp32), reduced to the running max m_b and sum
//     l_b = sum 2^(z - m_b) (merged across lanes as in an online softmax), stored as the
//     block's log2 mass a_b = m_b + log2(l_b). Prefill's many rows of one sequence take the
//     tensor-core kernel of cuda-select-mass-tc.cu instead.
//  2. The 256-bin histogram of the masses 2^(a_b - A) relative to the heaviest block
//     A = max a_b (integer atomics in shared memory, in a few copies merged in a fixed order).
//  3. The scan for the boundary bin, its exact resolution, and the ascending list of kept
//     blocks.
// Steps 2 and 3 run per row (token, retrieval head), in one of two kernels built from the
// pieces of cuda-select-row.cuh. Prefill chunks have thousands of rows: select_row_kernel, one
// 256-thread CTA per row, does both steps. Decode has a few rows of up to tens of thousands of
// blocks, where one CTA per row would leave the GPU idle and take tens of microseconds:
// select_row_cluster_kernel (cuda-select-cluster.cu) spreads each row over a cluster of CTAs
// that sum their histograms through distributed shared memory, and step 1 records each row's
// A (one atomic max per CTA and row). Each thread walks a segment of consecutive blocks, so
// that compactions take two barriers whatever the row's length.
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
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda-device.cuh"
#include "backend/cuda/cuda-kernels.h"
#include "backend/cuda/cuda-select-row.cuh"
#include "backend/select-bins.h"
#include "core/env.h"

namespace purbo::cuda {
namespace {

constexpr int kMassWarps = 8;                                 // warps per CTA of block_mass_kernel
constexpr int kMassWarpBlocks = 16;                           // key blocks per warp, 4 at a time
constexpr int kMassCtaBlocks = kMassWarps * kMassWarpBlocks;  // key blocks per CTA, one row
constexpr int kRowThreads = 256;            // select_row_kernel
constexpr int kMaxStagedBytes = 96 * 1024;  // states in shared memory up to 48K blocks per row

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__nv_fp8_e4m3 v) {
    return static_cast<float>(v);
}

// One index key of kR elements (kR * sizeof(Key) bytes, aligned to the smaller of that and
// 16) as f32, read with the widest loads: one 16-byte load per f8 key of 16 elements, two per
// bf16 key. load4's 4-byte f8 loads would take four instructions per key instead of one.
template <class Key>
__device__ __forceinline__ void word_to_f32(uint32_t w, float* out) {
    if constexpr (std::is_same_v<Key, __nv_fp8_e4m3>) {
        const float2 a = __half22float2(__half2(
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xFFFFu), __NV_E4M3)));
        const float2 b = __half22float2(__half2(
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), __NV_E4M3)));
        out[0] = a.x, out[1] = a.y, out[2] = b.x, out[3] = b.y;
    } else if constexpr (std::is_same_v<Key, __nv_bfloat16>) {
        out[0] = __uint_as_float(w << 16);  // bf16 is the top half of an f32
        out[1] = __uint_as_float(w & 0xFFFF0000u);
    } else {
        out[0] = __uint_as_float(w);
    }
}

template <int kR, class Key>
__device__ __forceinline__ void load_key(const Key* k, float (&out)[kR]) {
    constexpr int kBytes = kR * static_cast<int>(sizeof(Key)),
                  kPerWord = 4 / static_cast<int>(sizeof(Key));
    if constexpr (kBytes % 16 == 0) {
#pragma unroll
        for (int v = 0; v < kBytes / 16; ++v) {
            const uint4 w = reinterpret_cast<const uint4*>(k)[v];
            word_to_f32<Key>(w.x, out + (4 * v + 0) * kPerWord);
            word_to_f32<Key>(w.y, out + (4 * v + 1) * kPerWord);
            word_to_f32<Key>(w.z, out + (4 * v + 2) * kPerWord);
            word_to_f32<Key>(w.w, out + (4 * v + 3) * kPerWord);
        }
    } else {
        static_assert(kBytes == 8, "f8 keys of 8 elements");
        const uint2 w = *reinterpret_cast<const uint2*>(k);
        word_to_f32<Key>(w.x, out);
        word_to_f32<Key>(w.y, out + kPerWord);
    }
}

// Scaled score of key t: kR > 0 with the query in registers, else a plain loop over r.
template <int kR, class Key>
__device__ __forceinline__ float key_score(const Key* keys, int t,
                                           const float (&qr)[kR > 0 ? kR : 1], const float* q,
                                           float q_scale, int r) {
    float z = 0.0f;
    if constexpr (kR > 0) {
        float k[kR];
        load_key<kR>(keys + int64_t{t} * kR, k);
#pragma unroll
        for (int e = 0; e < kR; ++e) z += qr[e] * k[e];
    } else {
        const Key* k = keys + int64_t{t} * r;
        for (int e = 0; e < r; ++e) z += (q[e] * q_scale) * to_f32(k[e]);
    }
    return z;
}

// Max and sum over the 8 lanes of a group (lanes 8 g .. 8 g + 7).
__device__ __forceinline__ float group8_max(float v) {
    for (int offset = 4; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
    return v;
}
__device__ __forceinline__ float group8_sum(float v) {
    for (int offset = 4; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// kR: the indexer dimension when it is 8 or 16 (a key read with one or two wide loads, q held
// in registers), 0 for any other r (a plain loop). Key: float, __nv_bfloat16 or
// __nv_fp8_e4m3, the type of the cached index keys.
//
// A CTA takes kMassCtaBlocks consecutive blocks of one row (token, retrieval head), a warp
// kMassWarpBlocks of them, four at a time: the 8 lanes of a group share a block, lane s taking
// its keys s, s + 8, ... (each load instruction of the warp reads 4 runs of 8 consecutive
// keys, whole 128-byte lines for f8 keys of 16). The earlier layout, one warp per block, spent
// more instructions on its per-block setup and 32-lane merges than on 64 keys' scores (issue
// bound: 2.4 TB/s with bf16 keys on an H100); here they are paid once per warp and 8 lanes merge.
template <int kR, class Key>
__global__ void __launch_bounds__(kMassWarps * 32)
    block_mass_kernel(SelectState st, unsigned chunks_per_row) {
    const SelectBlocksArgs& args = st.args;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, group = lane / 8, sub = lane % 8;
    // rows * u fits an int (launch_select_blocks): 32-bit divisions, once per CTA.
    const unsigned row32 = blockIdx.x / chunks_per_row, hr = static_cast<unsigned>(args.hr);
    const unsigned chunk = blockIdx.x - row32 * chunks_per_row, token = row32 / hr;
    const int64_t row = row32;  // token * hr + head
    const int p = args.pos[token];
    const int n_used = p / args.block_size + 1;
    const int warp_first = static_cast<int>(chunk) * kMassCtaBlocks + warp * kMassWarpBlocks;
    if (static_cast<int>(chunk) * kMassCtaBlocks >= n_used)
        return;  // CTA-uniform: past the position

    const float* q = args.iq + row * args.r;  // (r,)
    const Key* keys =
        static_cast<const Key*>(args.index_keys) +
        (int64_t{args.seq[token]} * hr + (row32 - token * hr)) * args.c * args.r;  // (c, r)
    const float q_scale = args.scale * kSelectLog2e;
    float qr[kR > 0 ? kR : 1];
    if constexpr (kR > 0) {
#pragma unroll
        for (int e = 0; e < kR; ++e) qr[e] = q[e] * q_scale;
    }

    float heaviest = -INFINITY;  // the warp's heaviest block (row_max)
    for (int first = warp_first; first < min(warp_first + kMassWarpBlocks, n_used);
         first += 4) {  // warp-uniform
        const int b = first + group;
        float m = -INFINITY, l = 0.0f;
        if (b < n_used) {  // group-uniform
            const int t_begin = b * args.block_size;
            const int t_end = min(t_begin + args.block_size, p + 1);
            constexpr int kBatch = 4;  // keys per lane between rescales
            for (int t0 = t_begin + sub; t0 < t_end; t0 += 8 * kBatch) {
                float z[kBatch];
#pragma unroll
                for (int x = 0; x < kBatch; ++x) {
                    const int t = t0 + 8 * x;
                    z[x] = t < t_end
                               ? key_score<kR>(keys, t, qr, q, q_scale, static_cast<int>(args.r))
                               : -INFINITY;
                }
                float z_max = z[0];  // finite: t0 < t_end
#pragma unroll
                for (int x = 1; x < kBatch; ++x) z_max = fmaxf(z_max, z[x]);
                if (z_max > m) {
                    l *= exp2f(m - z_max);  // exp2f(-inf) = 0 on the lane's first batch
                    m = z_max;
                }
#pragma unroll
                for (int x = 0; x < kBatch; ++x) l += exp2f(z[x] - m);
            }
        }
        // The group's states merged: the block's max, then each lane's sum rescaled to it (a lane
        // without keys adds 0). Lane 0 of a group with a block always has a key (b <= p / B).
        const float m_block = group8_max(m);
        const float l_block = group8_sum(m == -INFINITY ? 0.0f : l * exp2f(m - m_block));
        if (b < n_used) {
            const float log2_mass =
                m_block + log2f(l_block);  // l_block >= 1: the max key gives 2^0
            if (sub == 0) st.log2_mass[row * args.n_used_max + b] = log2_mass;
            heaviest = fmaxf(heaviest, log2_mass);
        }
    }
    if (st.row_max == nullptr) return;  // CTA-uniform
    // One atomic per CTA and row (thousands of CTAs of a row share its address).
    __shared__ float warp_heaviest[kMassWarps];
    heaviest = warp_max(heaviest);
    if (lane == 0) warp_heaviest[warp] = heaviest;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kMassWarps; ++w) heaviest = fmaxf(heaviest, warp_heaviest[w]);
        atomicMax(st.row_max + row, ordered_bits(heaviest));
    }
}

// ---- the selection of a row, one CTA per row ----------------------------------------------

// One CTA of kRowThreads per (token, retrieval head): the row's heaviest block, its histogram,
// the boundary bin, the refinement levels, the exact resolution and the ascending list of kept
// blocks.
__global__ void __launch_bounds__(kRowThreads) select_row_kernel(SelectState st) {
    const SelectBlocksArgs& args = st.args;
    constexpr int kThreads = kRowThreads, kWarps = kThreads / 32;
    static_assert(kWarps % kHistCopies == 0, "whole warps per histogram copy");
    const int64_t row = blockIdx.x;  // token * hr + head
    const int p = args.pos[row / args.hr];
    const int n_used = p / args.block_size + 1;
    int32_t* out = args.blocks + row * args.max_blocks;  // (max_blocks,)
    const int tid = threadIdx.x;

    __shared__ Mass hist[kSelectBins];
    __shared__ int hist_count[kSelectBins];  // blocks per bin, for the block budget
    __shared__ Mass copy_mass[kHistCopies][kSelectBins];
    __shared__ int copy_count[kHistCopies][kSelectBins];
    __shared__ Mass reduce_m[kWarps];
    __shared__ float reduce_f[kWarps];
    __shared__ int reduce_i[kWarps + 1];
    __shared__ BoundaryScratch boundary_scratch;
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
    uint16_t* const states = st.staged_bytes > 0 ? reinterpret_cast<uint16_t*>(select_states_smem)
                                                 : st.states + row * st.state_stride;
    int32_t* candidates = st.candidates + row * args.n_used_max;
    int32_t* ranks = st.ranks + row * args.n_used_max;
    const int own = own_first_block(args, row / args.hr, p);
    auto always_kept = [own](int b) { return b == 0 || b >= own; };
    auto add_m = [](Mass x, Mass y) { return x + y; };

    // The heaviest block; the masses relative to it, their histogram, total and always-kept part.
    const Segment seg = thread_segment<kThreads>(n_used);
    float heaviest = -INFINITY;
    for (int b = seg.begin; b < seg.end; ++b) heaviest = fmaxf(heaviest, a[b]);
    heaviest = block_reduce<kThreads>(
        heaviest, [](float x, float y) { return fmaxf(x, y); }, reduce_f);
    clear_copies<kThreads>(copies);
    Mass total = 0, kept = 0;
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
    const RowRule rule = row_rule(args, total, kept, n_used, own);

    Boundary boundary = find_boundary<kThreads>(hist, hist_count, kept, 0, rule, boundary_scratch);
    const int bound0 = boundary.bin;
    // No boundary at level 0 (rounding left the histogram short of the target): every block
    // is kept, and no state equals bound0 = kSelectBins = kKeep by mistake.
    int n_candidates = 0;
    if (bound0 < kSelectBins) {
        n_candidates = block_compact<kThreads>(
            n_used, [&](int b) { return states[b] == bound0; },
            [&](int b, int index) { candidates[index] = b; }, reduce_i);
    }
    // Refinement: while the boundary bin holds many blocks (flat masses over a long context),
    // its blocks are binned again one level finer and the boundary found among those.
    for (int level = 1;
         n_candidates > kQuadraticMax && level < kLevels && boundary.bin < kSelectBins - 1;
         ++level) {
        clear_copies<kThreads>(copies);
        BinRun level_run;
        const Segment cand_seg = thread_segment<kThreads>(n_candidates);
        for (int x = cand_seg.begin; x < cand_seg.end; ++x) {
            const int b = candidates[x];
            level_run.add(copies, level_bin(heaviest - a[b], level), fixed_mass(a[b], heaviest));
        }
        level_run.flush(copies);
        merge_copies<kThreads>(copies, hist, hist_count);
        boundary = find_boundary<kThreads>(hist, hist_count, boundary.kept, boundary.taken, rule,
                                           boundary_scratch);
        // The candidates off this level's boundary bin are decided by it: earlier (heavier)
        // bins kept, later ones dropped. With no boundary at this level (rounding: the
        // histogram stayed short, bin = kSelectBins) every candidate is kept.
        const int bound = boundary.bin;
        n_candidates = block_compact<kThreads>(
            n_candidates,
            [&](int x) {
                const int b = candidates[x];
                const int k = level_bin(heaviest - a[b], level);
                if (k == bound) return true;
                states[b] = k < bound ? kKeep : kDrop;  // the same in both walks
                return false;
            },
            [&](int x, int index) { ranks[index] = candidates[x]; }, reduce_i);
        for (int x = tid; x < n_candidates; x += kThreads) candidates[x] = ranks[x];
        __syncthreads();
    }

    // Exact resolution of the remaining candidates.
    __shared__ int cand_id[kQuadraticMax];
    __shared__ float cand_a[kQuadraticMax];
    __shared__ Mass cand_w[kQuadraticMax];
    CandidateList list{n_candidates, candidates, a, heaviest, false, nullptr, nullptr, nullptr};
    list = stage_candidates<kThreads>(list, cand_id, cand_a, cand_w);
    const int n_taken = rank_candidates<kThreads>(list, 0, n_candidates, rule, boundary.kept,
                                                  boundary.taken, ranks, reduce_i);
    for (int x_index = tid; x_index < n_candidates; x_index += kThreads)
        states[list.id(x_index)] = ranks[x_index] < n_taken ? kKeep : kDrop;
    __syncthreads();

    // Kept, ascending: the decided kKeep blocks and every block of a bin before the boundary.
    const int count = block_compact<kThreads>(
        n_used,
        [&](int b) {
            const uint16_t v = states[b];
            return v == kKeep || v < bound0;
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
    uint32_t* group_row_max;  // (n_groups * hr,) their heaviest block (a cluster per row), or null
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
// exact ties stay ties), stored as a log2 mass (-inf: none). With a cluster per row each warp also
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
            if (b > args.sample_pos[s] / args.block_size) continue;  // past the token: 0
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

// Few rows (decode: a token's retrieval heads) of at most kClusterMaxBlocks blocks take a
// cluster of CTAs per row.
bool clustered_rows(int64_t rows, int64_t n_used_max) {
    int device = 0, n_sm = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return rows <= 2 * static_cast<int64_t>(n_sm) && n_used_max <= kClusterMaxBlocks;
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

// The scratch, in this order: log2 masses, candidates, ranks, then the states (a CTA per row)
// or the row maxima (a cluster per row). Returns its size; fills `st` when given.
size_t layout(const SelectBlocksArgs& args, int64_t rows, int64_t n_used_max, bool clustered,
              SelectState* st) {
    const size_t cells = static_cast<size_t>(rows) * static_cast<size_t>(n_used_max);
    const int stride = state_stride(n_used_max);
    ScratchCarver carve{static_cast<unsigned char*>(args.scratch)};
    void* log2_mass = carve.take(cells * sizeof(float));
    void* candidates = carve.take(cells * sizeof(int32_t));
    void* ranks = carve.take(cells * sizeof(int32_t));
    void* states = clustered ? nullptr
                             : carve.take(static_cast<size_t>(rows) * static_cast<size_t>(stride) *
                                          sizeof(uint16_t));
    void* row_max = clustered ? carve.take(static_cast<size_t>(rows) * sizeof(uint32_t)) : nullptr;
    if (st != nullptr) {
        *st = SelectState{};
        st->args = args;
        st->log2_mass = static_cast<float*>(log2_mass);
        st->candidates = static_cast<int32_t*>(candidates);
        st->ranks = static_cast<int32_t*>(ranks);
        st->states = static_cast<uint16_t*>(states);
        st->state_stride = stride;
        const size_t state_bytes = static_cast<size_t>(stride) * sizeof(uint16_t);
        st->staged_bytes = !clustered && state_bytes <= static_cast<size_t>(kMaxStagedBytes)
                               ? static_cast<int>(state_bytes)
                               : 0;
        st->row_max = static_cast<uint32_t*>(row_max);
        st->cluster_chunk =
            clustered ? static_cast<int>((n_used_max + kClusterCtas - 1) / kClusterCtas) : 0;
    }
    return carve.at;
}

// The grouped path's scratch: the sampled tokens' queries, masses and totals, the group rows'
// selection, then the group rows' selection scratch (layout). Returns its size; fills `gs`
// and `st` when given.
size_t grouped_layout(const SelectBlocksArgs& args, bool clustered, GroupState* gs,
                      SelectState* st) {
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
    group_args.keep_from = args.group_first_block;
    group_args.blocks = static_cast<int32_t*>(group_blocks);
    group_args.counts = static_cast<int32_t*>(group_counts);
    carve.at +=
        layout(group_args, static_cast<int64_t>(group_rows), args.n_used_max, clustered, st);
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
    // kMassCtaBlocks blocks of one row per CTA (rows * chunks <= rows * u fits an int).
    constexpr int mass_threads = kMassWarps * 32;
    const unsigned chunks_per_row =
        static_cast<unsigned>((args.n_used_max + kMassCtaBlocks - 1) / kMassCtaBlocks);
    const unsigned mass_ctas = static_cast<unsigned>(rows) * chunks_per_row;
    // The unrolled bodies read a key with 8- or 16-byte loads: rows of r in {8, 16} and a base
    // aligned for them (keys of 8 bytes: f8 of 8 elements).
    const uintptr_t base = reinterpret_cast<uintptr_t>(args.index_keys);
    const size_t key_bytes = static_cast<size_t>(args.r) * (args.keys_f8     ? 1
                                                            : args.keys_bf16 ? 2
                                                                             : 4);
    const int kr = (args.r == 8 || args.r == 16) && base % std::min<size_t>(key_bytes, 16) == 0
                       ? static_cast<int>(args.r)
                       : 0;
    auto launch_mass = [&](auto key_tag) {
        using Key = decltype(key_tag);
        switch (kr) {
            case 16:
                block_mass_kernel<16, Key>
                    <<<mass_ctas, mass_threads, 0, stream>>>(st, chunks_per_row);
                break;
            case 8:
                block_mass_kernel<8, Key>
                    <<<mass_ctas, mass_threads, 0, stream>>>(st, chunks_per_row);
                break;
            default:
                block_mass_kernel<0, Key>
                    <<<mass_ctas, mass_threads, 0, stream>>>(st, chunks_per_row);
                break;
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

// Steps 2 and 3 over the rows of st.args, whose log2 masses (and with a cluster per row, row
// maxima) are in place.
cudaError_t launch_row_selection(const SelectState& st, cudaStream_t stream) {
    if (st.row_max != nullptr) return launch_select_rows_clustered(st, stream);
    const int64_t rows = st.args.n * st.args.hr;
    // Shared memory for the row's states, beyond the 48 KB a kernel gets without asking.
    if (st.staged_bytes > 0) {
        const cudaError_t err = cudaFuncSetAttribute(
            select_row_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxStagedBytes);
        if (err != cudaSuccess) return err;
    }
    select_row_kernel<<<static_cast<unsigned>(rows), kRowThreads, st.staged_bytes, stream>>>(st);
    return cudaGetLastError();
}

// One selection per query group: the sampled tokens' queries gathered, step 1 over them, the
// groups' mean rows, steps 2 and 3 on those, and the copy to the tokens.
cudaError_t launch_grouped(const SelectBlocksArgs& args, cudaStream_t stream) {
    const int64_t group_rows = args.n_groups * args.hr;
    const bool clustered = clustered_rows(group_rows, args.n_used_max);
    GroupState gs;
    SelectState st;
    (void)grouped_layout(args, clustered, &gs, &st);

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
    if (clustered &&
        (err = cudaMemsetAsync(st.row_max, 0, static_cast<size_t>(group_rows) * sizeof(uint32_t),
                               stream)) != cudaSuccess)
        return err;
    const dim3 mean_grid(
        static_cast<unsigned>(group_rows),
        static_cast<unsigned>((args.n_used_max + kMeanThreads - 1) / kMeanThreads));
    group_mean_kernel<<<mean_grid, kMeanThreads, 0, stream>>>(gs);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    if ((err = launch_row_selection(st, stream)) != cudaSuccess) return err;
    broadcast_kernel<<<static_cast<unsigned>(args.n * args.hr), 128, 0, stream>>>(gs);
    return cudaGetLastError();
}

}  // namespace

size_t select_blocks_scratch_bytes(const SelectBlocksArgs& args) {
    SelectBlocksArgs sizing = args;
    sizing.scratch = nullptr;
    if (args.n_groups > 0) {
        SelectState st;
        return grouped_layout(sizing, clustered_rows(args.n_groups * args.hr, args.n_used_max),
                              nullptr, &st);
    }
    const int64_t rows = args.n * args.hr;
    return layout(sizing, rows, args.n_used_max, clustered_rows(rows, args.n_used_max), nullptr);
}

cudaError_t launch_select_blocks(const SelectBlocksArgs& args, cudaStream_t stream) {
    const int64_t rows = args.n * args.hr;
    if (rows == 0) return cudaSuccess;
    // Key indices and block ids are ints in the kernels, and so are the indices into rows of u
    // blocks: the tokens', or with query groups the sampled tokens' and the groups'.
    const int64_t mass_rows =
        args.n_groups > 0 ? std::max(args.n_samples, args.n_groups) * args.hr : rows;
    if (args.block_size <= 0 || args.n_used_max <= 0 || args.n_used_max > kMaxRowBlocks ||
        rows > INT_MAX || mass_rows * args.n_used_max > INT_MAX ||
        args.c + args.block_size > INT_MAX)
        return cudaErrorInvalidValue;
    if (args.n_groups > 0) return launch_grouped(args, stream);
    const bool clustered = clustered_rows(rows, args.n_used_max);
    SelectState st;
    (void)layout(args, rows, args.n_used_max, clustered, &st);
    cudaError_t err = cudaSuccess;
    // Below every float's bits: the row maxima start empty.
    if (clustered &&
        (err = cudaMemsetAsync(st.row_max, 0, static_cast<size_t>(rows) * sizeof(uint32_t),
                               stream)) != cudaSuccess)
        return err;
    if ((err = launch_block_mass(st, stream)) != cudaSuccess) return err;
    return launch_row_selection(st, stream);
}

}  // namespace purbo::cuda
