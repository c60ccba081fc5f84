// cpu-ref: top-p block selection, the exact reference (sort + cumulative sum).
//
// For query token i and retrieval head j, in double precision:
//   z_t    = scale * iq[i, j] . index_keys[seq_i, j, t]          for t = 0 .. pos_i
//   mass_b = sum_{t in block b, t <= pos_i} exp(z_t - max z) / sum_t exp(z_t - max z)
// Per query block (per_query_block), mass_b is the mean of that over the group's tokens (or
// over the sampled ones, query_block_samples; 0 past a token's position), and the group's
// row reaches its last token's block.
// Keep block 0 and the block of pos_i (per query block: every block of the group's positions;
// mass m together), then the other blocks by decreasing
// mass (ties: lower id first) until those hold top_p of the rest: until the kept mass reaches
// m + top_p (1 - m). top_p = 1 keeps every block. With max_blocks =
// K > 0 the same order also stops once K blocks are kept (the always-kept ones count): the
// top-K blocks by mass. The fast backends must give the same set except where f32 rounding
// flips a comparison at the boundary (or reorders two blocks of nearly equal mass).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu-ref/cpu-ref-backend.h"
#include "backend/op-checks.h"
#include "core/quants.h"

namespace purbo {
namespace {

// Each block's share of token i's index distribution for head j, (p / B + 1,).
std::vector<double> token_block_masses(const Tensor& iq, const Tensor& index_keys,
                                       const TokenPlacement& place, const BlockSelectParams& params,
                                       int64_t i, int64_t j) {
    const int64_t hr = iq.dim(1), r = iq.dim(2), c = index_keys.dim(2);
    const int64_t p = place.pos[i], block_size = params.block_size;
    const float* q = iq.f32() + (i * hr + j) * r;  // (r,)
    // The sequence's keys for head j as f32, (c, r): f32 keys as they are, f8 ones decoded.
    const int64_t first = (place.seq[i] * hr + j) * c * r;
    std::vector<float> decoded;
    const float* keys = nullptr;
    if (index_keys.dtype == DType::kF8E4M3) {
        decoded.resize(static_cast<size_t>((p + 1) * r));
        dequantize_row(DType::kF8E4M3, index_keys.ptr<uint8_t>() + first, decoded.data(),
                       (p + 1) * r);
        keys = decoded.data();
    } else {
        keys = index_keys.f32() + first;
    }
    std::vector<double> z(static_cast<size_t>(p + 1));
    double max_z = -std::numeric_limits<double>::infinity();
    for (int64_t t = 0; t <= p; ++t) {
        double dot = 0;
        for (int64_t e = 0; e < r; ++e) dot += static_cast<double>(q[e]) * keys[t * r + e];
        z[static_cast<size_t>(t)] = dot * params.scale;
        max_z = std::max(max_z, z[static_cast<size_t>(t)]);
    }
    std::vector<double> mass(static_cast<size_t>(p / block_size + 1), 0.0);
    double total = 0;
    for (int64_t t = 0; t <= p; ++t) {
        const double w = std::exp(z[static_cast<size_t>(t)] - max_z);
        mass[static_cast<size_t>(t / block_size)] += w;
        total += w;
    }
    for (double& m : mass) m /= total;
    return mass;
}

// The kept block ids, ascending, of a row whose blocks have masses `mass`: block 0 and the
// blocks from `own` (those of the query positions, the last one included) always.
std::vector<int32_t> select_by_mass(const std::vector<double>& mass, int64_t own,
                                    const BlockSelectParams& params) {
    const int64_t n_used = static_cast<int64_t>(mass.size());
    const double top_p = params.top_p;
    std::vector<bool> keep(static_cast<size_t>(n_used), false);
    double kept = 0, rest = 0;
    int64_t n_kept = 0;
    std::vector<int64_t> order;  // the other blocks, heaviest first, ties by lower id
    for (int64_t b = 0; b < n_used; ++b) {
        if (b == 0 || b >= own) {
            keep[static_cast<size_t>(b)] = true;
            kept += mass[static_cast<size_t>(b)];
            ++n_kept;
        } else {
            rest += mass[static_cast<size_t>(b)];
            order.push_back(b);
        }
    }
    const double target = kept + top_p * rest;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return mass[static_cast<size_t>(a)] > mass[static_cast<size_t>(b)];
    });
    for (int64_t b : order) {
        if (top_p < 1.0 && kept >= target) break;
        if (params.max_blocks > 0 && n_kept >= params.max_blocks) break;
        keep[static_cast<size_t>(b)] = true;
        kept += mass[static_cast<size_t>(b)];
        ++n_kept;
    }
    std::vector<int32_t> ids;
    for (int64_t b = 0; b < n_used; ++b) {
        if (keep[static_cast<size_t>(b)]) ids.push_back(static_cast<int32_t>(b));
    }
    return ids;
}

}  // namespace

Status CpuRefBackend::select_blocks(const Tensor& iq, const Tensor& index_keys,
                                    const TokenPlacement& place, const BlockSelectParams& params,
                                    const Tensor& blocks, const Tensor& counts) {
    PURBO_TRY(
        check_select_blocks(iq, index_keys, place, params, blocks, counts, index_key_dtypes()));
    // iq (n, hr, r); index_keys (s, hr, c, r); blocks (n, hr, max_blocks); counts (n, hr)
    const int64_t hr = iq.dim(1), max_blocks = blocks.dim(2);
    const std::vector<int64_t> groups =
        select_query_groups(place, query_group_tokens(params), params.per_query_block);
    for (size_t g = 0; g + 1 < groups.size(); ++g) {
        const int64_t first = groups[g], end = groups[g + 1];
        // The row reaches the group's last position; its positions' blocks are always kept.
        const int64_t own = place.pos[first] / params.block_size;
        const size_t n_used = static_cast<size_t>(place.pos[end - 1] / params.block_size + 1);
        for (int64_t j = 0; j < hr; ++j) {
            // The mean of the group's (sampled) distributions (one token: its own), each 0
            // past its token's block.
            const std::vector<int64_t> sampled =
                select_group_samples(first, end, params.query_block_samples);
            std::vector<double> mass(n_used, 0.0);
            for (int64_t i : sampled) {
                const std::vector<double> m =
                    token_block_masses(iq, index_keys, place, params, i, j);
                for (size_t b = 0; b < m.size(); ++b) mass[b] += m[b];
            }
            for (double& m : mass) m /= static_cast<double>(sampled.size());
            const std::vector<int32_t> ids = select_by_mass(mass, own, params);
            for (int64_t i = first; i < end; ++i) {
                int32_t* row = blocks.ptr<int32_t>() + (i * hr + j) * max_blocks;
                std::copy(ids.begin(), ids.end(), row);
                std::fill(row + ids.size(), row + max_blocks, -1);
                counts.ptr<int32_t>()[i * hr + j] = static_cast<int32_t>(ids.size());
            }
        }
    }
    return Status::ok();
}

}  // namespace purbo
