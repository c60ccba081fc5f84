// Steps 2 and 3 of the top-p selection (cuda-select.cu) for decode's few long rows: one
// thread-block cluster of kClusterCtas CTAs per row, CTA c owning the c-th chunk of the row's
// blocks (their log2 masses and states in its shared memory).
//
// Every cluster-wide quantity is a sum of the CTAs' parts, exchanged through distributed
// shared memory: each CTA writes its part (a 256-bin histogram, a count), the cluster
// synchronises, and every CTA reads all parts and sums them in rank order. All CTAs then hold
// the same histogram and take the same decisions (the boundary bin, whether to refine),
// without a broadcast. The integer sums make the result the same as one CTA's over the row
// (select_row_kernel), bit for bit. Parts are double-buffered: a CTA writes a buffer again
// only two exchanges later, after a cluster barrier that every CTA reaches only once it has
// read the buffer's previous contents.
//
// The passes, each CTA over its chunk:
//  1. masses into shared memory, each block's level-0 bin, the chunk's histogram; exchange;
//     the boundary bin; blocks before it kept, after it dropped, in it candidates;
//  2. while the candidates are too many for the pairwise resolution: their histogram one level
//     finer; exchange; the boundary among those;
//  3. the candidates listed in ascending id order in the row's global list (each CTA at the
//     offset of the candidates of the CTAs before it, known from the exchanged histograms);
//     cluster barrier; each CTA ranks its own candidates against the whole list; exchange of
//     the taken counts;
//  4. the kept blocks' count; exchange; each CTA writes its kept ids at its offset.
// Floor at 1M tokens (16K blocks a row, 2K a CTA, 5 rows on 40 SMs): a few microseconds of
// barriers and shared-memory passes, against 50 us for one 1024-thread CTA per row after a
// separate histogram kernel (bench/NOTES.md).
#include <cooperative_groups.h>

#include "backend/cuda/cuda-select-row.cuh"

namespace purbo::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
static_assert(kWarps % kHistCopies == 0, "whole warps per histogram copy");

// One CTA's share of a cluster-wide sum.
struct ClusterPart {
    Mass mass[kSelectBins];
    int count[kSelectBins];
    Mass total;  // level 0: every block of the chunk
    Mass kept;   // level 0: its always-kept blocks (not in the bins)
    int n;       // a count (taken candidates, kept blocks)
};

__global__ void __cluster_dims__(kClusterCtas, 1, 1) __launch_bounds__(kThreads)
    select_row_cluster_kernel(SelectState st) {
    const SelectBlocksArgs& args = st.args;
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = static_cast<int>(cluster.block_rank());
    const int tid = threadIdx.x;
    const int64_t row = blockIdx.y;  // token * hr + head
    const int p = args.pos[row / args.hr];
    const int n_used = p / args.block_size + 1, own = own_first_block(args, row / args.hr, p);
    int32_t* out = args.blocks + row * args.max_blocks;  // (max_blocks,)

    const bool limited = args.max_kept > 0 && args.max_kept < n_used;
    if (args.top_p >= 1.0f && !limited) {  // every block; uniform over the cluster
        for (int b = rank * kThreads + tid; b < args.max_blocks; b += kClusterCtas * kThreads)
            out[b] = b < n_used ? b : -1;
        if (rank == 0 && tid == 0) args.counts[row] = n_used;
        return;
    }

    // The CTA's chunk [begin, begin + count) of the row's blocks.
    const int chunk = (n_used + kClusterCtas - 1) / kClusterCtas;
    const int begin = min(n_used, rank * chunk);
    const int count = min(chunk, n_used - begin);
    extern __shared__ __align__(16) unsigned char cluster_smem[];
    float* a = reinterpret_cast<float*>(cluster_smem);                     // (cluster_chunk,)
    uint16_t* states = reinterpret_cast<uint16_t*>(a + st.cluster_chunk);  // (cluster_chunk,)

    __shared__ ClusterPart parts[2];
    __shared__ Mass copy_mass[kHistCopies][kSelectBins];
    __shared__ int copy_count[kHistCopies][kSelectBins];
    __shared__ Mass hist[kSelectBins];
    __shared__ int hist_count[kSelectBins];
    __shared__ Mass reduce_m[kWarps];
    __shared__ int reduce_i[kWarps + 1];
    __shared__ BoundaryScratch boundary_scratch;
    __shared__ Mass row_total, row_kept;
    __shared__ int s_before, s_sum;  // exchange_count's results
    __shared__ int s_candidates_before;
    const HistCopies copies{copy_mass, copy_count};
    auto add_m = [](Mass x, Mass y) { return x + y; };

    int exchange = 0;  // exchanges so far: the next one uses parts[exchange % 2]
    // The cluster's histogram: every CTA's part summed in rank order into (hist, hist_count).
    auto exchange_histogram = [&](int buf) {
        cluster.sync();
        if (tid < kSelectBins) {
            Mass sum = 0;
            int blocks = 0;
            for (int r = 0; r < kClusterCtas; ++r) {
                const ClusterPart* part = cluster.map_shared_rank(&parts[buf], r);
                sum += part->mass[tid];
                blocks += part->count[tid];
            }
            hist[tid] = sum;
            hist_count[tid] = blocks;
        }
        __syncthreads();
    };
    // The candidates of the CTAs before this one (their blocks in bin `bin` of parts[buf]) into
    // s_candidates_before, read after the next barrier.
    auto count_candidates_before = [&](int buf, int bin) {
        if (tid != 0) return;
        int before = 0;
        for (int r = 0; r < rank; ++r)
            before += cluster.map_shared_rank(&parts[buf], r)->count[bin];
        s_candidates_before = before;
    };
    // A count exchanged: this CTA's `mine`; returns the sum over the CTAs before it, and the
    // cluster's sum in s_sum (every thread calls it).
    auto exchange_count = [&](int mine) {
        const int buf = exchange++ % 2;
        if (tid == 0) parts[buf].n = mine;
        cluster.sync();
        if (tid == 0) {
            int before = 0, sum = 0;
            for (int r = 0; r < kClusterCtas; ++r) {
                const int n = cluster.map_shared_rank(&parts[buf], r)->n;
                before += r < rank ? n : 0;
                sum += n;
            }
            s_before = before;
            s_sum = sum;
        }
        __syncthreads();
        return s_before;
    };

    // 1. Level 0: masses relative to the heaviest block (step 1's row maximum), their bins.
    const float heaviest = from_ordered_bits(st.row_max[row]);
    const float* row_a = st.log2_mass + row * args.n_used_max;
    const Segment seg = thread_segment<kThreads>(count);
    clear_copies<kThreads>(copies);
    Mass total = 0, kept = 0;
    BinRun run;
    for (int x = seg.begin; x < seg.end; ++x) {
        const int b = begin + x;
        const float ab = row_a[b];
        a[x] = ab;
        const Mass w = fixed_mass(ab, heaviest);
        total += w;
        if (b == 0 || b >= own) {
            kept += w;
            states[x] = kKeep;
        } else {
            const int bin = select_mass_bin(heaviest - ab);
            run.add(copies, bin, w);
            states[x] = static_cast<uint16_t>(bin);
        }
    }
    run.flush(copies);
    int buf = exchange++ % 2;
    merge_copies<kThreads>(copies, parts[buf].mass, parts[buf].count);
    total = block_reduce<kThreads>(total, add_m, reduce_m);
    kept = block_reduce<kThreads>(kept, add_m, reduce_m);
    if (tid == 0) {
        parts[buf].total = total;
        parts[buf].kept = kept;
    }
    exchange_histogram(buf);
    if (tid == 0) {
        Mass sum_total = 0, sum_kept = 0;
        for (int r = 0; r < kClusterCtas; ++r) {
            const ClusterPart* part = cluster.map_shared_rank(&parts[buf], r);
            sum_total += part->total;
            sum_kept += part->kept;
        }
        row_total = sum_total;
        row_kept = sum_kept;
    }
    __syncthreads();
    const RowRule rule = row_rule(args, row_total, row_kept, n_used, own);
    Boundary boundary =
        find_boundary<kThreads>(hist, hist_count, row_kept, 0, rule, boundary_scratch);
    // No boundary (bin kSelectBins): every block is kept.
    int n_candidates = boundary.bin < kSelectBins ? hist_count[boundary.bin] : 0;
    if (n_candidates > 0) count_candidates_before(buf, boundary.bin);
    for (int x = seg.begin; x < seg.end; ++x) {
        const int v = states[x];
        if (v < kSelectBins)
            states[x] = v < boundary.bin ? kKeep : v == boundary.bin ? kCandidate : kDrop;
    }

    // 2. Refinement: the candidates binned one level finer, the boundary found among those.
    for (int level = 1;
         n_candidates > kQuadraticMax && level < kLevels && boundary.bin < kSelectBins - 1;
         ++level) {
        __syncthreads();  // the states of step 1 or of the previous level
        clear_copies<kThreads>(copies);
        BinRun level_run;
        for (int x = seg.begin; x < seg.end; ++x) {
            if (states[x] == kCandidate)
                level_run.add(copies, level_bin(heaviest - a[x], level),
                              fixed_mass(a[x], heaviest));
        }
        level_run.flush(copies);
        buf = exchange++ % 2;
        merge_copies<kThreads>(copies, parts[buf].mass, parts[buf].count);
        exchange_histogram(buf);
        boundary = find_boundary<kThreads>(hist, hist_count, boundary.kept, boundary.taken, rule,
                                           boundary_scratch);
        n_candidates = boundary.bin < kSelectBins ? hist_count[boundary.bin] : 0;
        if (n_candidates > 0) count_candidates_before(buf, boundary.bin);
        for (int x = seg.begin; x < seg.end; ++x) {
            if (states[x] != kCandidate) continue;
            const int k = level_bin(heaviest - a[x], level);
            states[x] = k < boundary.bin ? kKeep : k == boundary.bin ? kCandidate : kDrop;
        }
    }
    __syncthreads();

    // 3. Exact resolution of the remaining candidates (uniform: every CTA holds n_candidates).
    if (n_candidates > 0) {
        const int before = s_candidates_before;
        int32_t* list_ids = st.candidates + row * args.n_used_max;  // (n_candidates,) ascending
        int32_t* ranks = st.ranks + row * args.n_used_max;
        const int mine = block_compact<kThreads>(
            count, [&](int x) { return states[x] == kCandidate; },
            [&](int x, int index) { list_ids[before + index] = begin + x; }, reduce_i);
        cluster.sync();  // the list is whole (global memory, ordered at cluster scope)
        __shared__ int cand_id[kQuadraticMax];
        __shared__ float cand_a[kQuadraticMax];
        __shared__ Mass cand_w[kQuadraticMax];
        CandidateList list{n_candidates, list_ids, row_a,   heaviest,
                           false,        nullptr,  nullptr, nullptr};
        list = stage_candidates<kThreads>(list, cand_id, cand_a, cand_w);
        const int taken = rank_candidates<kThreads>(list, before, before + mine, rule,
                                                    boundary.kept, boundary.taken, ranks, reduce_i);
        (void)exchange_count(taken);
        const int n_taken = s_sum;
        for (int x_index = before + tid; x_index < before + mine; x_index += kThreads)
            states[list.id(x_index) - begin] = ranks[x_index] < n_taken ? kKeep : kDrop;
        __syncthreads();
    }

    // 4. Kept, ascending: each CTA's kept blocks after those of the CTAs before it.
    const int n_mine = block_compact_at<kThreads>(
        count, [&](int x) { return states[x] == kKeep; },
        [&](int flagged) { return exchange_count(flagged); },
        [&](int x, int index) { out[index] = begin + x; }, reduce_i);
    (void)n_mine;
    const int n_kept = s_sum;
    for (int k = n_kept + rank * kThreads + tid; k < args.max_blocks; k += kClusterCtas * kThreads)
        out[k] = -1;
    if (rank == 0 && tid == 0) args.counts[row] = n_kept;
    cluster.sync();  // no CTA leaves while another may still read its parts
}

}  // namespace

cudaError_t launch_select_rows_clustered(const SelectState& st, cudaStream_t stream) {
    const int64_t rows = st.args.n * st.args.hr;
    if (st.cluster_chunk <= 0 || st.cluster_chunk > kClusterMaxChunk || rows > 65535)
        return cudaErrorInvalidValue;
    const int smem = st.cluster_chunk * static_cast<int>(sizeof(float) + sizeof(uint16_t));
    const int smem_padded = (smem + 15) / 16 * 16;
    cudaError_t err = cudaFuncSetAttribute(
        select_row_cluster_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_padded);
    if (err != cudaSuccess) return err;
    const dim3 grid(kClusterCtas, static_cast<unsigned>(rows));
    select_row_cluster_kernel<<<grid, kThreads, smem_padded, stream>>>(st);
    return cudaGetLastError();
}

}  // namespace purbo::cuda
