// cuda: top-p block selection, one pass with a histogram of block masses (cuda-select.cu).
#include <algorithm>
#include <climits>
#include <vector>

#include "backend/cuda/cuda-backend.h"
#include "backend/cuda/cuda-check.h"
#include "backend/cuda/cuda-kernels.h"
#include "backend/op-checks.h"

namespace purbo {

Status CudaBackend::select_blocks(const Tensor& iq, const Tensor& index_keys,
                                  const TokenPlacement& place, const BlockSelectParams& params,
                                  const Tensor& blocks, const Tensor& counts) {
    PURBO_TRY(
        check_select_blocks(iq, index_keys, place, params, blocks, counts, index_key_dtypes()));
    PURBO_TRY(require_device("select_blocks", iq, "iq"));
    PURBO_TRY(require_device("select_blocks", index_keys, "index_keys"));
    PURBO_TRY(require_device("select_blocks", blocks, "blocks"));
    PURBO_TRY(require_device("select_blocks", counts, "counts"));
    // iq (n, hr, r); index_keys (s, hr, c, r) f32 or bf16; blocks (n, hr, max_blocks); counts (n, hr)
    const int64_t n = iq.dim(0), hr = iq.dim(1);
    if (n == 0 || hr == 0) return Status::ok();
    // u: the blocks of the largest position, the per-row extent of the kernels' scratch.
    const int64_t n_used_max =
        *std::max_element(place.pos.begin(), place.pos.end()) / params.block_size + 1;
    // Query groups (per_query_block); when every group is one token, the per-token path.
    const std::vector<int64_t> starts =
        select_query_groups(place, query_group_tokens(params), params.per_query_block);
    const int64_t n_groups = static_cast<int64_t>(starts.size()) - 1;
    const bool grouped = n_groups < n;

    // Staging, int32: seq (n,), pos (n,); when grouped group_of (n,), group_pos (G,: the last
    // token's), group_first_block (G,), sample_start (G + 1,), then the sampled tokens' ids,
    // seqs and positions (S each).
    std::vector<int32_t> staging(place.seq.begin(), place.seq.end());
    staging.insert(staging.end(), place.pos.begin(), place.pos.end());
    int64_t n_samples = 0;
    if (grouped) {
        std::vector<int32_t> sample_start, sample_token;
        for (int64_t g = 0; g < n_groups; ++g) {
            staging.insert(staging.end(), starts[g + 1] - starts[g], static_cast<int32_t>(g));
            sample_start.push_back(static_cast<int32_t>(sample_token.size()));
            for (int64_t i :
                 select_group_samples(starts[g], starts[g + 1], params.query_block_samples))
                sample_token.push_back(static_cast<int32_t>(i));
        }
        sample_start.push_back(static_cast<int32_t>(sample_token.size()));
        for (int64_t g = 0; g < n_groups; ++g) staging.push_back(place.pos[starts[g + 1] - 1]);
        for (int64_t g = 0; g < n_groups; ++g)
            staging.push_back(place.pos[starts[g]] / params.block_size);
        staging.insert(staging.end(), sample_start.begin(), sample_start.end());
        staging.insert(staging.end(), sample_token.begin(), sample_token.end());
        for (int32_t i : sample_token) staging.push_back(place.seq[i]);
        for (int32_t i : sample_token) staging.push_back(place.pos[i]);
        n_samples = static_cast<int64_t>(sample_token.size());
    }
    // The rows of u blocks the kernels index with ints: the tokens', or with query groups the
    // sampled tokens' and the groups' (the tokens then only receive their group's list).
    const int64_t mass_rows = grouped ? std::max(n_samples, n_groups) * hr : n * hr;
    if (n * hr > INT_MAX || mass_rows * n_used_max > INT_MAX || blocks.dim(2) > INT_MAX)
        return error(
            StatusCode::kUnsupported,
            "select_blocks: {} rows of {} blocks (iq {}, blocks {}) exceed the kernels' grid",
            mass_rows, n_used_max, iq.describe(), blocks.describe());
    PURBO_ASSIGN_OR_RETURN(void* dev, stage(indices_, staging.data(), staging.size() * 4));
    const auto* staged = static_cast<const int32_t*>(dev);

    cuda::SelectBlocksArgs args{};
    args.iq = iq.ptr<float>();
    args.index_keys = index_keys.data;
    args.keys_bf16 = index_keys.dtype == DType::kBF16;
    args.keys_f8 = index_keys.dtype == DType::kF8E4M3;
    const bool one_seq = std::all_of(place.seq.begin(), place.seq.end(),
                                     [&](int32_t s) { return s == place.seq[0]; });
    args.one_seq = one_seq ? place.seq[0] : -1;
    args.seq = staged;
    args.pos = staged + n;
    if (grouped) {
        args.n_groups = n_groups;
        args.group_of = staged + 2 * n;
        args.group_pos = args.group_of + n;
        args.group_first_block = args.group_pos + n_groups;
        args.n_samples = n_samples;
        args.sample_start = args.group_first_block + n_groups;
        args.sample_token = args.sample_start + n_groups + 1;
        args.sample_seq = args.sample_token + n_samples;
        args.sample_pos = args.sample_seq + n_samples;
    }
    args.blocks = blocks.ptr<int32_t>();
    args.counts = counts.ptr<int32_t>();
    args.n = n;
    args.hr = hr;
    args.r = iq.dim(2);
    args.c = index_keys.dim(2);
    args.block_size = params.block_size;
    args.n_used_max = static_cast<int>(n_used_max);
    args.max_blocks = static_cast<int>(blocks.dim(2));
    args.top_p = params.top_p;
    args.scale = params.scale;
    args.max_kept = params.max_blocks;
    PURBO_ASSIGN_OR_RETURN(args.scratch, reserve(select_, cuda::select_blocks_scratch_bytes(args)));
    return enqueue("launch_select_blocks", [&] { return cuda::launch_select_blocks(args, stream_); }, args);
}

}  // namespace purbo
