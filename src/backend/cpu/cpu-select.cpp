// cpu: top-p block selection in one pass over the keys, with a histogram of block masses
// (method.md section 4). Same kept set as cpu-ref's sort and cumulative sum except where f32
// rounding flips a comparison at the boundary.
//
// Per (query group, retrieval head j), the pairs spread over the OpenMP threads (a group is
// one token, or with per_query_block a query block whose tokens' normalised block masses are
// averaged in double between steps 1 and 2):
//  1. One pass over the keys 0 .. pos: each block b of keys reduces its scores, in the log2
//     domain (z_t = scale * log2(e) * iq . k_t, f32), to m_b = max z and l_b = sum 2^(z - m_b);
//     its log2 mass is a_b = m_b + log2(l_b).
//  2. Relative to the heaviest block, A = max_b a_b, block b has mass w_b = 2^(a_b - A) in
//     (0, 1]; from here on double (one value per block, cheap) so that the sums that decide
//     the boundary round far below the f32 error of the masses themselves.
//  3. The histogram of select-bins.h (bin mapping, tie rule, and why it is keyed on the mass),
//     the scan for the boundary bin, and the exact resolution of that bin by a sort of its
//     blocks only. A block budget (max_blocks) is a second stopping rule on the same scan: the
//     histogram also counts each bin's blocks, and the boundary bin is the first where either
//     the mass or the count is reached; the bins are in mass order, so the whole bins before
//     it are the heaviest blocks, and the sort of the boundary bin picks the rest.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "backend/cpu/cpu-backend.h"
#include "backend/cpu/vec-avx512.h"
#include "backend/cpu/vec-exp.h"
#include "backend/op-checks.h"
#include "backend/select-bins.h"
#include "core/fp16.h"
#include "core/fp8.h"

namespace purbo {
namespace {

// The 256 values of an e4m3 byte (core/fp8.h), for the scalar paths.
const std::vector<float> kF8Values = [] {
    std::vector<float> values(256);
    for (int code = 0; code < 256; ++code)
        values[static_cast<size_t>(code)] = f8e4m3_to_f32(static_cast<uint8_t>(code));
    return values;
}();

// An index key element as f32: the keys are kept in f32 or bf16 (like the KV cache) or f8 e4m3.
inline float key_value(float k) { return k; }
inline float key_value(uint16_t k) { return bf16_to_f32(k); }
inline float key_value(F8E4M3 k) {
    return kF8Values[k.bits];
}

// q . k over kR dims (kR = 0: r dims, known at run time only). The index dims of the method
// (8, 16) get a fully unrolled, vectorised body.
template <int kR, class Key>
inline float dot_r(const float* q, const Key* k, int64_t r) {
    const int64_t len = kR > 0 ? kR : r;
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t e = 0; e < len; ++e) sum += q[e] * key_value(k[e]);
    return sum;
}

// scores[t] = q . k_t for the nt keys k_t at keys + t * kR.
template <int kR, class Key>
void index_scores(const float* q, const Key* keys, int64_t r, int64_t nt, float* scores) {
    int64_t t = 0;
#if defined(__AVX512F__)
    if constexpr (kR == 16) {  // a key is one vector: 16 keys' products, summed transposed
        const __m512 qv = _mm512_loadu_ps(q);
        for (; t + 16 <= nt; t += 16) {
            __m512 p[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) p[i] = _mm512_mul_ps(qv, load16(keys + (t + i) * 16));
            _mm512_storeu_ps(scores + t, transpose_sums16(p));
        }
    }
#endif
    for (; t < nt; ++t) scores[t] = dot_r<kR>(q, keys + t * r, r);
}

// a[b] receives the log2 mass a_b of blocks b in [b_begin, b_end) of the keys 0 .. p; q (r,)
// is pre-scaled by scale * log2(e); keys (c, r) f32, bf16 or f8; scores (block_size,) is
// scratch. With r = 16 the scores are 16 keys at a time and 2^x is vectorised: a libm call and
// a horizontal sum per key made this pass a tenth of the sparse model's decode step on the CPU.
template <int kR, class Key>
void block_log2_masses(const float* q, const Key* keys, int64_t r, int64_t p, int64_t block_size,
                       int64_t b_begin, int64_t b_end, float* scores, float* a) {
    for (int64_t b = b_begin; b < b_end; ++b) {
        const int64_t t0 = b * block_size, nt = std::min(block_size, p + 1 - t0);
        index_scores<kR>(q, keys + t0 * r, r, nt, scores);
        float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)  // std::max_element stays scalar: a compare chain per key
        for (int64_t t = 0; t < nt; ++t) m = scores[t] > m ? scores[t] : m;
        a[b] = m + std::log2(exp2_shifted_sum(scores, nt, m));  // the sum >= 1: the max key gives 2^0
    }
}

// Per-thread buffers, grown to the largest row.
struct RowScratch {
    std::vector<float> q;           // (r,) the query, pre-scaled
    std::vector<float> scores;      // (block_size,)
    std::vector<float> log2_mass;   // (n_used,) a_b
    std::vector<double> mass;       // (n_used,) w_b = 2^(a_b - A)
    std::vector<int> bin;           // (n_used,) histogram bin, -1 for the always-kept blocks
    std::vector<int64_t> boundary;  // blocks of the boundary bin
    std::vector<double> mean;       // (n_used,) a query group's mean distribution
};

// block_log2_masses with r known at compile time where it is 8 or 16.
template <class Key>
void block_log2_masses_r(const float* q, const Key* keys, int64_t r, int64_t p, int64_t block_size,
                         int64_t b_begin, int64_t b_end, float* scores, float* a) {
    switch (r) {
        case 8:
            return block_log2_masses<8>(q, keys, r, p, block_size, b_begin, b_end, scores, a);
        case 16:
            return block_log2_masses<16>(q, keys, r, p, block_size, b_begin, b_end, scores, a);
        default:
            return block_log2_masses<0>(q, keys, r, p, block_size, b_begin, b_end, scores, a);
    }
}

// s.q = the query pre-scaled by scale * log2(e); s.log2_mass sized for position p.
void prepare_row(const float* iq_row, int64_t r, int64_t p, const BlockSelectParams& params,
                 RowScratch& s) {
    s.q.resize(static_cast<size_t>(r));
    for (int64_t e = 0; e < r; ++e)
        s.q[static_cast<size_t>(e)] = iq_row[e] * (params.scale * kSelectLog2e);
    s.log2_mass.resize(static_cast<size_t>(p / params.block_size + 1));
}

// Fills s.log2_mass (p / B + 1,) with the log2 masses a_b of one (token, head) pair.
template <class Key>
void row_log2_masses(const float* iq_row, const Key* keys, int64_t r, int64_t p,
                     const BlockSelectParams& params, RowScratch& s) {
    prepare_row(iq_row, r, p, params, s);
    s.scores.resize(static_cast<size_t>(params.block_size));
    block_log2_masses_r(s.q.data(), keys, r, p, params.block_size, 0,
                        static_cast<int64_t>(s.log2_mass.size()), s.scores.data(),
                        s.log2_mass.data());
}

// Whether the rule keeps every block without looking at the masses.
bool keeps_everything(int64_t n_used, const BlockSelectParams& params) {
    const bool limited = params.max_blocks > 0 && params.max_blocks < n_used;
    return params.top_p >= 1.0f && !limited;
}

// Selects the blocks of a row from the log2 masses in s.log2_mass, unless keeps_everything;
// block 0 and the blocks from `own` (those of the query positions, the last one included) are
// always kept. Returns their number, ids ascending in `out`.
int64_t select_from_log2_masses(const BlockSelectParams& params, int64_t own, RowScratch& s,
                                int32_t* out) {
    const int64_t n_used = static_cast<int64_t>(s.log2_mass.size());
    const bool limited = params.max_blocks > 0 && params.max_blocks < n_used;
    const float* a = s.log2_mass.data();
    const float heaviest = *std::max_element(a, a + n_used);

    // Masses relative to the heaviest block, the histogram, and the always-kept mass.
    s.mass.resize(static_cast<size_t>(n_used));
    s.bin.resize(static_cast<size_t>(n_used));
    double hist[kSelectBins] = {};
    int64_t hist_count[kSelectBins] = {};  // blocks per bin, for the block budget
    double total = 0, kept = 0;
    for (int64_t b = 0; b < n_used; ++b) {
        const double w = std::exp2(static_cast<double>(a[b]) - heaviest);
        s.mass[static_cast<size_t>(b)] = w;
        total += w;
        if (b == 0 || b >= own) {
            s.bin[static_cast<size_t>(b)] = -1;
            kept += w;
        } else {
            const int k = select_mass_bin(heaviest - a[b]);
            s.bin[static_cast<size_t>(b)] = k;
            hist[k] += w;
            ++hist_count[k];
        }
    }
    // top_p of the mass outside the always-kept blocks (backend.h). top_p = 1 (only reached
    // with a budget) stops on the count alone: no mass target.
    const double target = params.top_p >= 1.0f
                              ? std::numeric_limits<double>::infinity()
                              : kept + static_cast<double>(params.top_p) * (total - kept);
    // Blocks the budget allows besides the always-kept ones (which it may not cut).
    const int64_t n_always = (own > 0 ? 1 : 0) + (n_used - own);
    const int64_t extra_limit = limited ? std::max<int64_t>(0, params.max_blocks - n_always)
                                        : std::numeric_limits<int64_t>::max();

    // The boundary bin: the first whose mass reaches the target or whose blocks reach the
    // budget. None (kSelectBins) when rounding leaves the whole histogram just short of the
    // target: then every block is kept.
    int boundary = kSelectBins;
    int64_t taken = 0;  // blocks of the bins before the boundary
    for (int k = 0; k < kSelectBins; ++k) {
        if (kept + hist[k] >= target || taken + hist_count[k] >= extra_limit) {
            boundary = k;
            break;
        }
        kept += hist[k];
        taken += hist_count[k];
    }

    // Resolve the boundary bin exactly: heaviest first, ties by lower id (a stable sort of
    // ascending ids), until the kept mass reaches the target or the budget is spent.
    s.boundary.clear();
    for (int64_t b = 0; b < n_used; ++b) {
        if (s.bin[static_cast<size_t>(b)] == boundary) s.boundary.push_back(b);
    }
    std::stable_sort(s.boundary.begin(), s.boundary.end(),
                     [&](int64_t x, int64_t y) { return a[x] > a[y]; });
    for (int64_t b : s.boundary) {
        if (kept >= target || taken >= extra_limit) {
            s.bin[static_cast<size_t>(b)] = kSelectBins;  // past the boundary: dropped
            continue;
        }
        kept += s.mass[static_cast<size_t>(b)];
        ++taken;
        s.bin[static_cast<size_t>(b)] = -1;
    }

    // Kept: the always-kept and taken boundary blocks (-1) and every bin before the boundary.
    int64_t count = 0;
    for (int64_t b = 0; b < n_used; ++b) {
        if (s.bin[static_cast<size_t>(b)] < boundary) out[count++] = static_cast<int32_t>(b);
    }
    return count;
}

// The log2 masses of a query group's mean distribution (tokens [first, end), or its sampled
// ones, one head) into s.log2_mass: each token's masses normalised to sum 1 (in double), averaged.
// One token: its own unnormalised log2 masses, which select the same blocks.
template <class Key>
void group_log2_masses(const Tensor& iq, const Key* keys, const TokenPlacement& place,
                       int64_t first, int64_t end, int64_t j, const BlockSelectParams& params,
                       RowScratch& s) {
    const int64_t hr = iq.dim(1), r = iq.dim(2);
    auto token_row = [&](int64_t i) {
        row_log2_masses(iq.f32() + (i * hr + j) * r, keys, r, place.pos[i], params, s);
    };
    if (end - first == 1) {  // decode: no group to average (and no list to allocate)
        token_row(first);
        return;
    }
    const std::vector<int64_t> sampled =
        select_group_samples(first, end, params.query_block_samples);
    if (sampled.size() == 1) {
        token_row(sampled[0]);
        return;
    }
    // The group's row reaches its last token's block; a token's distribution is 0 past its own.
    const size_t n_used = static_cast<size_t>(place.pos[end - 1] / params.block_size + 1);
    s.mean.assign(n_used, 0.0);
    for (int64_t i : sampled) {
        token_row(i);
        const float* a = s.log2_mass.data();
        const size_t n_token = s.log2_mass.size();
        const double heaviest = *std::max_element(a, a + n_token);
        double total = 0;
        for (size_t b = 0; b < n_token; ++b)
            total += std::exp2(static_cast<double>(a[b]) - heaviest);
        const double norm = 1.0 / (total * static_cast<double>(sampled.size()));
        for (size_t b = 0; b < n_token; ++b)
            s.mean[b] += std::exp2(static_cast<double>(a[b]) - heaviest) * norm;
    }
    s.log2_mass.resize(n_used);
    for (size_t b = 0; b < n_used; ++b) s.log2_mass[b] = static_cast<float>(std::log2(s.mean[b]));
}

}  // namespace

Status CpuBackend::select_blocks(const Tensor& iq, const Tensor& index_keys,
                                 const TokenPlacement& place, const BlockSelectParams& params,
                                 const Tensor& blocks, const Tensor& counts) {
    PURBO_TRY(
        check_select_blocks(iq, index_keys, place, params, blocks, counts, index_key_dtypes()));
    // iq (n, hr, r); index_keys (s, hr, c, r) f32, bf16 or f8; blocks (n, hr, max_blocks); counts
    // (n, hr)
    const int64_t n = iq.dim(0), hr = iq.dim(1), r = iq.dim(2), c = index_keys.dim(2);
    const int64_t max_blocks = blocks.dim(2);
    const DType key_type = index_keys.dtype;
    const std::vector<int64_t> groups =
        select_query_groups(place, query_group_tokens(params), params.per_query_block);
    const int64_t n_groups = static_cast<int64_t>(groups.size()) - 1;
    // fn(keys) with the (c, r) index keys of token i's sequence and head j, typed.
    auto with_keys = [&](int64_t i, int64_t j, auto&& fn) {
        const int64_t offset = (place.seq[i] * hr + j) * c * r;
        if (key_type == DType::kBF16) return fn(index_keys.ptr<uint16_t>() + offset);
        if (key_type == DType::kF8E4M3) return fn(index_keys.ptr<F8E4M3>() + offset);
        return fn(index_keys.f32() + offset);
    };
    // Row (group g, head j) of the output from its masses in s (or every block), copied to
    // the group's other tokens.
    auto write_row = [&](int64_t g, int64_t j, RowScratch& s) {
        const int64_t first = groups[static_cast<size_t>(g)],
                      end = groups[static_cast<size_t>(g) + 1];
        int32_t* row = blocks.ptr<int32_t>() + (first * hr + j) * max_blocks;
        const int64_t n_used = place.pos[end - 1] / params.block_size + 1;
        int64_t count = n_used;
        if (keeps_everything(n_used, params)) {  // whatever the masses
            for (int64_t b = 0; b < n_used; ++b) row[b] = static_cast<int32_t>(b);
        } else {
            count = select_from_log2_masses(params, place.pos[first] / params.block_size, s, row);
        }
        std::fill(row + count, row + max_blocks, -1);
        counts.ptr<int32_t>()[first * hr + j] = static_cast<int32_t>(count);
        for (int64_t i = first + 1; i < end; ++i) {
            std::copy(row, row + max_blocks, blocks.ptr<int32_t>() + (i * hr + j) * max_blocks);
            counts.ptr<int32_t>()[i * hr + j] = static_cast<int32_t>(count);
        }
    };

    const int64_t n_rows = n_groups * hr;
    if (n_groups == n && n_rows <= 2 * static_cast<int64_t>(n_threads_)) {
        // Few one-token rows (decode of a few sequences: a layer of the default model has one
        // or two retrieval heads): one row per thread would leave cores idle over a long
        // context, so the rows' block masses are computed in slices of kMassSliceBlocks blocks
        // spread over the threads, then each row selects. Every block's mass is computed by the
        // same code on either path: the kept blocks do not depend on it.
        constexpr int64_t kMassSliceBlocks = 64;
        std::vector<RowScratch> rows(static_cast<size_t>(n_rows));
        struct Slice {
            int64_t row, b_begin, b_end;
        };
        std::vector<Slice> slices;
        for (int64_t row = 0; row < n_rows; ++row) {
            const int64_t i = row / hr, p = place.pos[i];
            RowScratch& s = rows[static_cast<size_t>(row)];
            prepare_row(iq.f32() + row * r, r, p, params, s);
            const int64_t n_used = static_cast<int64_t>(s.log2_mass.size());
            if (keeps_everything(n_used, params)) continue;
            for (int64_t b = 0; b < n_used; b += kMassSliceBlocks)
                slices.push_back({row, b, std::min(n_used, b + kMassSliceBlocks)});
        }
        const int64_t n_slices = static_cast<int64_t>(slices.size());
#pragma omp parallel num_threads(n_threads_)
        {
            std::vector<float> scores(static_cast<size_t>(params.block_size));
#pragma omp for schedule(dynamic)
            for (int64_t k = 0; k < n_slices; ++k) {
                const Slice& sl = slices[static_cast<size_t>(k)];
                const int64_t i = sl.row / hr, j = sl.row % hr;
                RowScratch& s = rows[static_cast<size_t>(sl.row)];
                with_keys(i, j, [&](const auto* keys) {
                    block_log2_masses_r(s.q.data(), keys, r, place.pos[i], params.block_size,
                                        sl.b_begin, sl.b_end, scores.data(), s.log2_mass.data());
                });
            }
#pragma omp for schedule(dynamic)
            for (int64_t row = 0; row < n_rows; ++row)
                write_row(row / hr, row % hr, rows[static_cast<size_t>(row)]);
        }
        return Status::ok();
    }
#pragma omp parallel num_threads(n_threads_) if (n_rows > 1)
    {
        RowScratch scratch;
#pragma omp for collapse(2) schedule(dynamic)
        for (int64_t g = 0; g < n_groups; ++g) {
            for (int64_t j = 0; j < hr; ++j) {
                const int64_t first = groups[static_cast<size_t>(g)],
                              end = groups[static_cast<size_t>(g) + 1];
                if (!keeps_everything(place.pos[end - 1] / params.block_size + 1, params))
                    with_keys(first, j, [&](const auto* keys) {
                        group_log2_masses(iq, keys, place, first, end, j, params, scratch);
                    });
                write_row(g, j, scratch);
            }
        }
    }
    return Status::ok();
}

}  // namespace purbo
