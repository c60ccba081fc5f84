// Writes sparse-bench-reference.txt: the head split, block choice, pair counts and work formulas of
// `purbo bench --attention --retrieval` (tools/purbo/bench-attention-sparse.cpp, whose helpers are
// file-local, so they are copied here verbatim; the pair counts come from attention-cost.h itself).
// scripts/bench_torch_sparse_attention.py --self-test checks its Python port against the file.
//
// usage (from the repository root):
//   g++ -std=c++20 -I tools/purbo scripts/testdata/sparse-bench-reference.cpp -o /tmp/sparse-ref &&
//   /tmp/sparse-ref > scripts/testdata/sparse-bench-reference.txt
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "attention-cost.h"

using namespace purbo::cli;

// Copied from bench-attention-sparse.cpp.
std::vector<uint8_t> local_mask(const AttentionShape& s, double retrieval) {
    const int64_t hr = std::llround(retrieval * static_cast<double>(s.heads));
    std::vector<uint8_t> mask(static_cast<size_t>(s.heads), 1);
    for (int64_t j = 0; j < hr; ++j) mask[static_cast<size_t>(j)] = 0;
    return mask;
}

int64_t kv_heads_with_local(const AttentionShape& s, const std::vector<uint8_t>& mask) {
    const int64_t per = s.heads / s.kv_heads;
    int64_t count = 0;
    for (int64_t kv = 0; kv < s.kv_heads; ++kv) {
        bool any = false;
        for (int64_t j = kv * per; j < (kv + 1) * per; ++j)
            any |= mask[static_cast<size_t>(j)] != 0;
        count += any ? 1 : 0;
    }
    return count;
}

std::vector<int32_t> spread_blocks(int64_t n_blocks, int64_t kept) {
    kept = std::clamp<int64_t>(kept, std::min<int64_t>(2, n_blocks), n_blocks);
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < kept; ++i) {
        const int64_t b = kept == 1 ? 0 : i * (n_blocks - 1) / (kept - 1);
        if (ids.empty() || ids.back() != b) ids.push_back(static_cast<int32_t>(b));
    }
    return ids;
}

int main() {
    // S n_blocks fraction kept count sum(ids) sum((i+1)*ids[i]): the blocks a decode-sparse row
    // keeps.
    const int64_t blocks[] = {1, 2, 3, 7, 16, 100, 512, 2048, 16384};
    const double fractions[] = {1, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.001};
    for (int64_t nb : blocks) {
        for (double f : fractions) {
            const int64_t kept = std::llround(f * static_cast<double>(nb));
            const std::vector<int32_t> ids = spread_blocks(nb, kept);
            long long sum = 0, weighted = 0;
            for (size_t i = 0; i < ids.size(); ++i) {
                sum += ids[i];
                weighted += static_cast<long long>(i + 1) * ids[i];
            }
            std::printf("S %lld %.17g %zu %lld %lld\n", static_cast<long long>(nb), f, ids.size(),
                        sum, weighted);
        }
    }
    // R share heads kv_heads retrieval_heads kv_heads_with_local: the share as typed on the command
    // line, which purbo reads into a float (bench-attention.cpp Flags): 0.7 x 5 heads is 3.4999999.
    struct Share {
        const char* text;
        float value;
    };
#define SHARE(x) \
    Share {      \
#x, x##f \
    }
    const Share shares[] = {SHARE(0.15), SHARE(0.7),  SHARE(0.3),  SHARE(0.1),
                            SHARE(1.0),  SHARE(0.01), SHARE(0.25), SHARE(0.5)};
#undef SHARE
    const AttentionShape shapes[] = {{32, 4, 128}, {32, 8, 128}, {9, 3, 64},
                                     {5, 1, 64},   {10, 2, 64},  {2, 1, 64}};
    for (const Share& r : shares) {
        for (const AttentionShape& s : shapes) {
            const std::vector<uint8_t> mask = local_mask(s, r.value);
            const int64_t hr = std::count(mask.begin(), mask.end(), uint8_t{0});
            std::printf("R %s %lld %lld %lld %lld\n", r.text, static_cast<long long>(s.heads),
                        static_cast<long long>(s.kv_heads), static_cast<long long>(hr),
                        static_cast<long long>(kv_heads_with_local(s, mask)));
        }
    }
    // P n window sinks prefill_pairs visible_keys(n - 1).
    const int64_t sizes[] = {1, 5, 100, 8192, 8193, 32768, 1048576};
    const int64_t masks[][2] = {{0, 0}, {8192, 4}, {64, 4}, {4096, 0}, {3, 7}};
    for (int64_t n : sizes) {
        for (const auto& m : masks) {
            std::printf("P %lld %lld %lld %lld %lld\n", static_cast<long long>(n),
                        static_cast<long long>(m[0]), static_cast<long long>(m[1]),
                        static_cast<long long>(attention_prefill_pairs(n, m[0], m[1])),
                        static_cast<long long>(attention_visible_keys(n - 1, m[0], m[1])));
        }
    }
    // W heads kv_heads head_dim retrieval n window sinks block fraction prefill_flops decode_flops
    // decode_bytes: run_sparse_attention_bench's work of a prefill-sparse and a decode-sparse row
    // (4-byte elements, kElemBytes of bench-attention-util.h).
    const int64_t elem = 4;
    const int64_t decode_sizes[] = {100, 8192, 32768, 131072, 1048576};
    for (const AttentionShape& s : {shapes[0], shapes[1], shapes[2]}) {
        for (int64_t n : decode_sizes) {
            for (double f : {1.0, 0.1, 0.02}) {
                const float r = 0.15f;  // printed as typed: 0.15
                const int window = 8192, sinks = 4, block = 64;
                const std::vector<uint8_t> mask = local_mask(s, r);
                const int64_t hr = std::count(mask.begin(), mask.end(), uint8_t{0}),
                              hl = s.heads - hr;
                const double pairs =
                    static_cast<double>(hr) *
                        static_cast<double>(attention_prefill_pairs(n, 0, 0)) +
                    static_cast<double>(hl) *
                        static_cast<double>(attention_prefill_pairs(n, window, sinks));
                const double prefill_flops = 4.0 * static_cast<double>(s.head_dim) * pairs;
                const int64_t n_blocks = (n + block - 1) / block;
                const std::vector<int32_t> ids =
                    spread_blocks(n_blocks, std::llround(f * static_cast<double>(n_blocks)));
                const double kept_keys = std::min<double>(static_cast<double>(n),
                                                          static_cast<double>(ids.size()) * block);
                const double local_keys =
                    static_cast<double>(attention_visible_keys(n - 1, window, sinks));
                const double flops =
                    4.0 * static_cast<double>(s.head_dim) *
                    (static_cast<double>(hr) * kept_keys + static_cast<double>(hl) * local_keys);
                const double bytes =
                    2.0 * static_cast<double>(s.head_dim * elem) *
                    (static_cast<double>(hr) * kept_keys +
                     static_cast<double>(kv_heads_with_local(s, mask)) * local_keys);
                std::printf("W %lld %lld %lld %g %lld %d %d %d %.17g %.17g %.17g %.17g\n",
                            static_cast<long long>(s.heads), static_cast<long long>(s.kv_heads),
                            static_cast<long long>(s.head_dim), 0.15, static_cast<long long>(n),
                            window, sinks, block, f, prefill_flops, flops, bytes);
            }
        }
    }
}
