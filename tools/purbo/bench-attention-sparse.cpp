#include "bench-attention-sparse.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <utility>

#include "bench-attention-util.h"
#include "core/timer.h"

namespace purbo::cli {
namespace {

// Retrieval heads are the first round(R h) query heads (whole KV groups first, as the
// KV-group-aware calibration prefers); the rest are local. (h,) 1 = local.
std::vector<uint8_t> local_mask(const AttentionShape& s, double retrieval) {
    const int64_t hr = std::llround(retrieval * static_cast<double>(s.heads));
    std::vector<uint8_t> mask(static_cast<size_t>(s.heads), 1);
    for (int64_t j = 0; j < hr; ++j) mask[static_cast<size_t>(j)] = 0;
    return mask;
}

int64_t count_retrieval(const std::vector<uint8_t>& mask) {
    return std::count(mask.begin(), mask.end(), uint8_t{0});
}

// KV heads that some local head reads (they serve the window to it).
int64_t kv_heads_with_local(const AttentionShape& s, const std::vector<uint8_t>& mask) {
    const int64_t per = s.heads / s.kv_heads;
    int64_t count = 0;
    for (int64_t kv = 0; kv < s.kv_heads; ++kv) {
        bool any = false;
        for (int64_t j = kv * per; j < (kv + 1) * per; ++j) any |= mask[static_cast<size_t>(j)] != 0;
        count += any ? 1 : 0;
    }
    return count;
}

// Block ids of a synthetic selection keeping `kept` of `n_blocks` blocks: the sink block,
// the current block and the others evenly spaced (which blocks does not change the work).
std::vector<int32_t> spread_blocks(int64_t n_blocks, int64_t kept) {
    kept = std::clamp<int64_t>(kept, std::min<int64_t>(2, n_blocks), n_blocks);
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < kept; ++i) {
        const int64_t b = kept == 1 ? 0 : i * (n_blocks - 1) / (kept - 1);
        if (ids.empty() || ids.back() != b) ids.push_back(static_cast<int32_t>(b));
    }
    return ids;
}

// Index keys (1, hr, n, r) on the backend whose distribution under the query q (r,) looks like a
// trained indexer's at a kept share f: `needles` (block ids) hold `share` of the mass outside
// the always-kept blocks (the first and the last: top-p counts the rest), each
// needle block's keys scoring a little differently (up to e^2 apart, so that the selection
// orders them rather than breaking exact ties), the other keys random in [-1, 1]. Written in
// slabs of rows from the host. scale: of the scores, as BlockSelectParams::scale.
Status fill_needle_keys(Backend& be, const Tensor& keys, const std::vector<float>& q,
                        const std::vector<int32_t>& needles, int64_t block, float scale,
                        double share, std::mt19937& rng) {
    const int64_t hr = keys.dim(1), n = keys.dim(2), r = keys.dim(3), last = (n - 1) / block;
    double q_norm2 = 0;
    for (float v : q) q_norm2 += static_cast<double>(v) * v;
    std::uniform_real_distribution<float> base(-1.0f, 1.0f), lift(0.0f, 2.0f);
    const Tensor flat = keys.reshaped({hr * n, r});
    constexpr int64_t kSlab = 65536;
    Tensor host = tensor_cpu(DType::kF32, {kSlab, r}, "needle keys");
    for (int64_t j = 0; j < hr; ++j) {
        // The base keys' mass sum, then the needle level Z that gives the needles `share`.
        std::vector<float> head(static_cast<size_t>(n * r));
        double base_mass = 0;
        std::vector<uint8_t> is_needle(static_cast<size_t>((n + block - 1) / block), 0);
        for (int32_t b : needles) is_needle[static_cast<size_t>(b)] = 1;
        for (int64_t t = 0; t < n; ++t) {
            double z = 0;
            for (int64_t e = 0; e < r; ++e) {
                const float v = base(rng);
                head[static_cast<size_t>(t * r + e)] = v;
                z += static_cast<double>(v) * q[static_cast<size_t>(e)];
            }
            const int64_t b = t / block;
            if (!is_needle[static_cast<size_t>(b)] && b != 0 && b != last)
                base_mass += std::exp(scale * z);
        }
        std::vector<double> lifts;
        double lift_mass = 0;
        for (int32_t b : needles) {
            const int64_t keys_in = std::min(block, n - b * block);
            lifts.push_back(lift(rng));
            if (b != 0 && b != last)
                lift_mass += static_cast<double>(keys_in) * std::exp(lifts.back());
        }
        // No free needle or no other mass (f = 1): nothing to weigh against.
        const double level = base_mass > 0 && lift_mass > 0
                                 ? std::log(share / (1 - share) * base_mass / lift_mass)
                                 : 0.0;
        for (size_t k = 0; k < needles.size(); ++k) {
            // k_t = c q: score scale * c * |q|^2 = level + lift.
            const double c = (level + lifts[k]) / (scale * q_norm2);
            for (int64_t t = needles[k] * block; t < std::min(n, (needles[k] + 1) * block); ++t) {
                for (int64_t e = 0; e < r; ++e)
                    head[static_cast<size_t>(t * r + e)] =
                        static_cast<float>(c * q[static_cast<size_t>(e)]);
            }
        }
        for (int64_t t0 = 0; t0 < n; t0 += kSlab) {
            const int64_t m = std::min(kSlab, n - t0);
            std::copy_n(head.data() + t0 * r, m * r, host.f32());
            PURBO_TRY(be.from_host(host.rows(0, m), flat.rows(j * n + t0, j * n + t0 + m)));
        }
    }
    return Status::ok();
}

// The needle blocks' share of the index mass in the decode rows' timed selection: above the
// top-p 0.9, so that the selection keeps most of them and little else.
constexpr double kNeedleShare = 0.95;

// Tokens per query group of a per-query-block selection.
int query_group(const SparseBenchConfig& c) {
    return c.query_block > 0 ? c.query_block : c.block;
}

// Keys the retrieval heads' queries at positions 0..n-1 read when each query group of `group`
// tokens keeps its K heaviest blocks of B (block 0 and the group's own blocks among them, kept
// whatever K): the own blocks' keys up to the query and the other kept blocks whole, or every
// key while the group sees at most K blocks. group = 1: a selection per token.
double top_k_prefill_keys(int64_t n, int64_t block, int64_t group, int64_t k) {
    double keys = 0;
    for (int64_t t = 0; t < n; ++t) {
        // t's query group [g0, g0 + group): its blocks own .. last are kept with block 0.
        const int64_t g0 = t / group * group, own = g0 / block;
        const int64_t last = (std::min(g0 + group, n) - 1) / block;
        if (last + 1 <= k || own == 0) {  // every block it can see
            keys += static_cast<double>(t + 1);
            continue;
        }
        const int64_t others = std::min(std::max<int64_t>(k - 1 - (last - own + 1), 0), own - 1);
        keys += static_cast<double>((1 + others) * block + (t - own * block + 1));
    }
    return keys;
}
// Queries per op call of block-sparse prefill: chunks whose selection's mass rows (4 bytes per
// row and key block) stay near --select-memory (default 4 GiB). Per token every token has one;
// per query group `samples` of its tokens (0: all) do, plus the group's selection row (a mass,
// candidate, rank and state: 14 bytes per key block). Sampling a group's tokens thus
// lengthens the chunks, as it would a model's. Longer chunks fill a GPU better (bench/NOTES.md).
int64_t block_sparse_chunk(const SparseBenchConfig& c, int64_t hr, int64_t n_blocks) {
    const double mass = 4.0, selection_row = 14.0;
    const int group = query_group(c);
    const double sampled =
        c.query_block_samples > 0 ? std::min(c.query_block_samples, group) : group;
    const double bytes_per_token =
        c.per_query_block ? (mass * sampled + selection_row) / group : mass;
    const double fit = static_cast<double>(c.select_memory_mib << 20) /
                       (bytes_per_token * static_cast<double>(std::max<int64_t>(1, hr) * n_blocks));
    int64_t m = std::clamp<int64_t>(static_cast<int64_t>(fit), 1, c.chunk);
    // Whole query blocks: chunks then start at block boundaries, so no query group is cut in
    // two (and cuda's tensor-core tiles start where the chunk does).
    if (c.per_query_block && m >= group) m = m / group * group;
    return m;
}

struct Row {
    Row(std::string mode_name, int64_t size, double kept = 1)
        : mode(std::move(mode_name)), n(size), fraction(kept) {}
    std::string mode;
    int64_t n = 0;
    double fraction = 1;  // decode-sparse, prefill-block-sparse: blocks kept
    double ms = 0, select_ms = 0, attn_ms = 0, dense_ms = 0;
    double select_kept = 0;  // decode-sparse: the share of blocks the timed selection kept
    double flops = 0, bytes = 0;
    std::string skipped;
};

void print_header(const SparseBenchConfig& c) {
    if (c.output != "md") {
        std::printf("[\n");
        return;
    }
    std::printf("| shape | device | mode | n | window | sinks | retrieval | blocks kept | ms | select ms | attention ms | vs dense | TFLOP/s | GB/s |\n");
    std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
}

void print_row(const SparseBenchConfig& c, int64_t hr, const Row& r, bool last) {
    const bool ok = r.skipped.empty();
    const double tflops = ok && r.ms > 0 ? r.flops / (r.ms * 1e-3) / 1e12 : 0;
    const double gbps = ok && r.attn_ms > 0 ? r.bytes / (r.attn_ms * 1e-3) / 1e9 : 0;
    const double ratio = ok && r.dense_ms > 0 ? r.dense_ms / r.ms : 0;
    if (c.output == "md") {
        const std::string kept = r.mode == "prefill-sparse" || r.mode == "decode"
                                     ? "-"
                                     : fmt::format("{:g}%", 100 * r.fraction);
        const std::string cells =
            ok ? fmt::format("{:.3f} | {} | {:.3f} | {} | {:.2f} | {:.1f}", r.ms,
                             r.select_ms > 0 ? fmt::format("{:.3f}", r.select_ms) : "-", r.attn_ms,
                             ratio > 0 ? fmt::format("{:.2f}x", ratio) : "-", tflops, gbps)
               : r.skipped + " | - | - | - | - | -";
        const std::string mode =
            r.mode == "prefill-block-sparse"
                ? r.mode + (c.per_query_block
                                ? fmt::format(" (per query block of {})", query_group(c))
                                : std::string(" (per token)"))
                : r.mode;
        std::printf("| %s | %s | %s | %s | %d | %d | %lld/%lld | %s | %s |\n",
                    c.shape_label.c_str(), c.device.c_str(), mode.c_str(), size_label(r.n).c_str(),
                    c.window, c.sinks, static_cast<long long>(hr),
                    static_cast<long long>(c.shape.heads), kept.c_str(), cells.c_str());
    } else {
        nlohmann::ordered_json j = {{"shape", c.shape_name},
                                    {"device", c.device},
                                    {"cache", dtype_name(c.cache_type)},
                                    {"index_keys", dtype_name(c.index_key_type)},
                                    {"cold_cache", c.cold_cache},
                                    {"mode", r.mode},
                                    {"n", r.n},
                                    {"window", c.window},
                                    {"sinks", c.sinks},
                                    {"retrieval_heads", hr},
                                    {"heads", c.shape.heads},
                                    {"kv_heads", c.shape.kv_heads},
                                    {"head_dim", c.shape.head_dim},
                                    {"block", c.block},
                                    {"fraction", r.fraction},
                                    {"ms", nullptr},
                                    {"select_ms", nullptr},
                                    {"attention_ms", nullptr},
                                    {"dense_ms", nullptr},
                                    {"tflops", nullptr},
                                    {"gbps", nullptr},
                                    {"skipped", nullptr}};
        if (r.mode == "prefill-block-sparse") {
            j["select"] = c.per_query_block ? "block" : "token";
            if (c.per_query_block) {
                j["samples"] = c.query_block_samples;
                j["query_block"] = query_group(c);
            }
        }
        if (ok) {
            j["ms"] = r.ms;
            j["select_ms"] = r.select_ms;
            j["attention_ms"] = r.attn_ms;
            if (r.mode == "decode-sparse") j["select_kept"] = r.select_kept;
            if (r.dense_ms > 0) j["dense_ms"] = r.dense_ms;
            j["tflops"] = tflops;
            j["gbps"] = gbps;
        } else {
            j["skipped"] = r.skipped;
        }
        std::printf("  %s%s\n", j.dump().c_str(), last ? "" : ",");
    }
    std::fflush(stdout);
}

}  // namespace

int run_sparse_attention_bench(Backend& be, const SparseBenchConfig& c) {
    const AttentionShape& s = c.shape;
    const std::vector<uint8_t> mask = local_mask(s, c.retrieval);
    const int64_t hr = count_retrieval(mask), hl = s.heads - hr;
    AttentionParams local_params;
    local_params.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    local_params.window = c.window;
    local_params.n_sink = c.sinks;
    local_params.local_heads = mask;
    AttentionParams dense_params;
    dense_params.scale = local_params.scale;

    std::mt19937 rng(42);
    const Tensor block_k = random_block(s.head_dim, rng), block_v = random_block(s.head_dim, rng);
    const Tensor block_index = random_block(c.rank, rng);
    std::fprintf(stderr,
                 "bench-attention: sparse layer %s on %s: %lld of %lld heads retrieval, W %d, S "
                 "%d, B %d, r %d, %s KV cache, %s index keys%s\n",
                 c.shape_name.c_str(), c.device.c_str(), static_cast<long long>(hr),
                 static_cast<long long>(s.heads), c.window, c.sinks, c.block, c.rank,
                 std::string(dtype_name(c.cache_type)).c_str(),
                 std::string(dtype_name(c.index_key_type)).c_str(),
                 c.cold_cache ? ", every call after the CPU caches are evicted" : "");
    print_header(c);
    const size_t total_rows =
        c.prefill.size() * (1 + (c.block_sparse_prefill ? c.fractions.size() : 0)) +
        c.decode.size() * (1 + c.fractions.size());
    size_t printed = 0;
    auto emit = [&](const Row& r) { print_row(c, hr, r, ++printed == total_rows); };

    const double start_ms = time_now_ms();
    auto past_deadline = [&](double predicted_s) {
        return c.deadline > 0 && (time_now_ms() - start_ms) / 1e3 + predicted_s > c.deadline;
    };
    double prefill_s_per_pair = 0;
    double block_sparse_s_per_pair = 0;  // of the last block-sparse row: predicts the next
    // Block-sparse prefill of n queries, each retrieval head keeping K = f x blocks (top-K by
    // index mass over random index keys): per chunk the selection, then attention over it.
    auto block_sparse_prefill_row = [&](int64_t n, double f) {
        Row r{"prefill-block-sparse", n, f};
        const int64_t n_blocks = (n + c.block - 1) / c.block;
        const int64_t k = std::max<int64_t>(2, std::llround(f * static_cast<double>(n_blocks)));
        const double kept_keys =
            top_k_prefill_keys(n, c.block, c.per_query_block ? query_group(c) : 1, k);
        const double pairs = static_cast<double>(hr) * kept_keys +
                             static_cast<double>(hl) *
                                 static_cast<double>(attention_prefill_pairs(n, c.window, c.sinks));
        r.flops = 4.0 * static_cast<double>(s.head_dim) * pairs;
        r.bytes =
            2.0 * static_cast<double>(n * s.kv_heads * s.head_dim * cache_elem_bytes(c.cache_type));
        const double predicted = block_sparse_s_per_pair * pairs;
        const double predicted_total =
            predicted * (predicted > kLongCallSeconds ? 2 : 2 * (c.reps + 1));
        auto log = [&] {
            std::fprintf(
                stderr, "bench-attention: prefill-block-sparse n=%s K=%lld of %lld blocks: %s\n",
                size_label(n).c_str(), static_cast<long long>(k), static_cast<long long>(n_blocks),
                r.skipped.empty() ? fmt::format("{:.3f} ms (select {:.3f}, attention {:.3f})", r.ms,
                                                r.select_ms, r.attn_ms)
                                        .c_str()
                                  : r.skipped.c_str());
        };
        if (predicted_total > c.max_seconds || past_deadline(predicted_total)) {
            r.skipped = predicted_total > c.max_seconds
                            ? fmt::format("skipped: predicted {:.1f} s > budget {:.0f} s",
                                          predicted_total, c.max_seconds)
                            : fmt::format("skipped: predicted {:.1f} s would pass the deadline",
                                          predicted_total);
            log();
            return r;
        }
        const int64_t m = block_sparse_chunk(c, hr, n_blocks);
        Result<CaseBuffers> b =
            make_buffers(be, s, Mode::kPrefill, n, m, c.cache_type, block_k, block_v);
        Tensor index_keys, iq;
        BlockSelection sel;
        Status st = b.status();
        if (st.is_ok()) {
            index_keys = be.alloc(c.index_key_type, {1, hr, n, c.rank}, "index keys");
            iq = be.alloc(DType::kF32, {m, hr, c.rank}, "iq");
            // Room for the budget only (max(K, the always-kept blocks) a row): the per-token
            // rows are written whole, -1 past the kept ones, and at 1M a row of every block
            // would be 64 KB per token and head.
            const int64_t always = 1 + (c.per_query_block ? query_group(c) / c.block : 1);
            sel.blocks = be.alloc(DType::kI32, {m, hr, std::min(n_blocks, std::max(k, always))},
                                  "selected blocks");
            sel.counts = be.alloc(DType::kI32, {m, hr}, "selected counts");
            if (index_keys.empty() || iq.empty() || sel.blocks.empty() || sel.counts.empty())
                st = error(StatusCode::kOutOfMemory,
                           "cannot allocate the index keys and selection for n = {}", n);
        }
        if (st.is_ok()) st = fill_rows(be, index_keys, block_index);
        if (st.is_ok())
            st = fill_rows(be, iq, c.shared_index_query ? leading(block_index, 1) : block_index);
        sel.block_size = c.block;
        sel.shared_by_query_group = c.per_query_block;
        sel.query_block = c.per_query_block ? c.query_block : 0;
        std::vector<int32_t> head_row(static_cast<size_t>(s.heads), -1);
        for (int64_t j = 0; j < hr; ++j) head_row[static_cast<size_t>(j)] = static_cast<int32_t>(j);
        sel.head_row = head_row;
        BlockSelectParams sp;
        sp.block_size = c.block;
        sp.top_p = 1.0f;  // the budget alone
        sp.max_blocks = static_cast<int>(k);
        sp.per_query_block = c.per_query_block;
        sp.query_block = c.per_query_block ? c.query_block : 0;
        sp.query_block_samples = c.query_block_samples;
        sp.scale = 1.0f / std::sqrt(static_cast<float>(c.rank));
        // The chunks in order: select (and attend over the selection when `attend`); `end`
        // stops early (the warm-up: the first chunk only).
        auto run = [&](bool attend, int64_t end) -> Status {
            for (int64_t begin = 0; begin < end; begin += m) {
                const int64_t count = std::min(m, n - begin);
                const TokenPlacement place{
                    std::span<const int32_t>(b->seq).first(static_cast<size_t>(count)),
                    std::span<const int32_t>(b->pos).subspan(static_cast<size_t>(begin),
                                                             static_cast<size_t>(count))};
                BlockSelection chunk_sel = sel;
                chunk_sel.blocks = leading(sel.blocks, count);
                chunk_sel.counts = leading(sel.counts, count);
                PURBO_TRY(be.select_blocks(leading(iq, count), index_keys, place, sp,
                                           chunk_sel.blocks, chunk_sel.counts));
                if (!attend) continue;
                AttentionParams params = local_params;
                params.selection = &chunk_sel;
                PURBO_TRY(be.attention(leading(b->q, count), b->cache, place, params,
                                       leading(b->out, count)));
            }
            return Status::ok();
        };
        const bool long_call = predicted > kLongCallSeconds;
        Result<Measured> total = st.is_ok()
                                     ? measure(
                                           be, [&] { return run(true, n); }, b->out, c.reps,
                                           long_call, c.cold_cache, [&] { return run(true, m); })
                                     : Result<Measured>(st);
        Result<Measured> select = total.is_ok() ? measure(
                                                      be, [&] { return run(false, n); }, b->out,
                                                      c.reps, long_call, c.cold_cache)
                                                : total;
        if (!select.is_ok()) {
            r.skipped = "failed: " + select.status().to_string();
        } else {
            r.ms = total->ms;
            r.select_ms = std::min(select->ms, total->ms);
            r.attn_ms = r.ms - r.select_ms;
            block_sparse_s_per_pair = r.ms / 1e3 / pairs;
        }
        log();
        return r;
    };
    for (int64_t n : c.prefill) {
        Row r{"prefill-sparse", n};
        const double pairs = static_cast<double>(hr) * static_cast<double>(attention_prefill_pairs(n, 0, 0)) +
                             static_cast<double>(hl) * static_cast<double>(attention_prefill_pairs(n, c.window, c.sinks));
        r.flops = 4.0 * static_cast<double>(s.head_dim) * pairs;
        r.bytes = 2.0 * static_cast<double>(n * s.kv_heads * s.head_dim * cache_elem_bytes(c.cache_type));
        const double predicted = prefill_s_per_pair * pairs;
        const double predicted_total = predicted * (predicted > kLongCallSeconds ? 1 : c.reps + 1);
        if (predicted_total > c.max_seconds || past_deadline(predicted_total)) {
            r.skipped = predicted_total > c.max_seconds
                            ? fmt::format("skipped: predicted {:.1f} s > budget {:.0f} s", predicted_total, c.max_seconds)
                            : fmt::format("skipped: predicted {:.1f} s would pass the deadline", predicted_total);
            emit(r);
            continue;
        }
        Result<CaseBuffers> b = make_buffers(be, s, Mode::kPrefill, n, c.chunk, c.cache_type, block_k, block_v);
        Result<Measured> m = b.is_ok()
                                 ? measure(
                                       be, [&] { return run_once(be, *b, local_params); }, b->out,
                                       c.reps, predicted > kLongCallSeconds, c.cold_cache,
                                       [&] { return run_once(be, *b, local_params, 1); })
                                 : Result<Measured>(b.status());
        if (!m.is_ok()) {
            r.skipped = "failed: " + m.status().to_string();
        } else {
            r.ms = r.attn_ms = m->ms;
            prefill_s_per_pair = m->ms / 1e3 / pairs;
        }
        std::fprintf(stderr, "bench-attention: prefill-sparse n=%s: %s\n", size_label(n).c_str(),
                     r.skipped.empty() ? fmt::format("{:.3f} ms", r.ms).c_str() : r.skipped.c_str());
        emit(r);
        if (!c.block_sparse_prefill) continue;
        for (double f : c.fractions) emit(block_sparse_prefill_row(n, f));
    }

    for (int64_t n : c.decode) {
        // Dense decode on the same cache: the baseline of the ratios.
        Row dense{"decode", n};
        const AttentionWork w = attention_decode_work(s, n, 0, 0, cache_elem_bytes(c.cache_type), kElemBytes);
        dense.flops = w.flops;
        dense.bytes = w.bytes;
        Result<CaseBuffers> b = past_deadline(0)
                                    ? Result<CaseBuffers>(error(StatusCode::kUnsupported, "the --deadline has passed"))
                                    : make_buffers(be, s, Mode::kDecode, n, c.chunk, c.cache_type, block_k, block_v);
        if (!b.is_ok()) {
            dense.skipped = (past_deadline(0) ? "skipped: " : "failed: ") + b.status().to_string();
            emit(dense);
            for (double f : c.fractions) {
                Row r{"decode-sparse", n, f};
                r.skipped = dense.skipped;
                emit(r);
            }
            continue;
        }
        Result<Measured> dm = measure(
            be, [&] { return run_once(be, *b, dense_params); }, b->out, c.reps, false,
            c.cold_cache);
        if (dm.is_ok()) dense.ms = dense.attn_ms = dm->ms;
        else dense.skipped = "failed: " + dm.status().to_string();
        emit(dense);

        // The index keys of the retrieval heads (s = 1, hr, n, r), one query's iq (1, hr, r),
        // and the selection the op writes.
        const int64_t n_blocks = (n + c.block - 1) / c.block;
        Tensor index_keys = be.alloc(c.index_key_type, {1, hr, n, c.rank}, "index keys");
        Tensor iq = be.alloc(DType::kF32, {1, hr, c.rank}, "iq");
        Tensor sel_blocks = be.alloc(DType::kI32, {1, hr, n_blocks}, "selected blocks");
        Tensor sel_counts = be.alloc(DType::kI32, {1, hr}, "selected counts");
        // One query for every retrieval head (its keys are drawn around it).
        std::vector<float> q(static_cast<size_t>(c.rank));
        std::copy_n(block_index.f32(), c.rank, q.begin());
        Status allocated =
            index_keys.empty() || iq.empty() || sel_blocks.empty() || sel_counts.empty()
                ? error(StatusCode::kOutOfMemory, "cannot allocate the index keys for n = {}", n)
                : fill_rows(be, iq, leading(block_index, 1));
        const TokenPlacement place{std::span<const int32_t>(b->seq), std::span<const int32_t>(b->pos)};
        BlockSelectParams sp;
        sp.block_size = c.block;
        sp.top_p = c.top_p;
        sp.scale = 1.0f / std::sqrt(static_cast<float>(c.rank));
        auto select = [&] {
            return be.select_blocks(iq, index_keys, place, sp, sel_blocks, sel_counts);
        };

        for (double f : c.fractions) {
            Row r{"decode-sparse", n, f};
            r.dense_ms = dense.ms;
            // A synthetic selection keeping round(f x blocks) blocks per retrieval head, evenly
            // spread; the timed selection runs over index keys whose mass sits in those blocks
            // (0.95 of it, so that top-p keeps about f: kNeedleShare), as a trained indexer's does.
            const std::vector<int32_t> ids = spread_blocks(n_blocks, std::llround(f * static_cast<double>(n_blocks)));
            Status filled = allocated;
            if (filled.is_ok())
                filled =
                    fill_needle_keys(be, index_keys, q, ids, c.block, sp.scale, kNeedleShare, rng);
            Result<Measured> sm = filled.is_ok()
                                      ? measure(be, select, b->out, c.reps, false, c.cold_cache)
                                      : Result<Measured>(filled);
            if (sm.is_ok()) {
                Tensor counts = tensor_cpu(DType::kI32, {1, hr});
                if (be.to_host(sel_counts, counts).is_ok()) {
                    double kept = 0;
                    for (int64_t j = 0; j < hr; ++j) kept += counts.ptr<int32_t>()[j];
                    r.select_kept = kept / static_cast<double>(hr * n_blocks);
                }
            }
            Tensor host_blocks = tensor_cpu(DType::kI32, {1, hr, n_blocks});
            Tensor host_counts = tensor_cpu(DType::kI32, {1, hr});
            for (int64_t j = 0; j < hr; ++j) {
                std::copy(ids.begin(), ids.end(), host_blocks.ptr<int32_t>() + j * n_blocks);
                host_counts.ptr<int32_t>()[j] = static_cast<int32_t>(ids.size());
            }
            BlockSelection sel;
            sel.block_size = c.block;
            std::vector<int32_t> head_row(static_cast<size_t>(s.heads), -1);
            for (int64_t j = 0; j < hr; ++j) head_row[static_cast<size_t>(j)] = static_cast<int32_t>(j);
            sel.head_row = head_row;
            sel.blocks = be.alloc(DType::kI32, {1, hr, n_blocks}, "synthetic blocks");
            sel.counts = be.alloc(DType::kI32, {1, hr}, "synthetic counts");
            Status st = sel.blocks.empty() || sel.counts.empty()
                            ? error(StatusCode::kOutOfMemory, "cannot allocate a selection")
                            : be.from_host(host_blocks, sel.blocks);
            if (st.is_ok()) st = be.from_host(host_counts, sel.counts);
            AttentionParams params = local_params;
            params.selection = &sel;
            Result<Measured> am = st.is_ok() ? measure(
                                                   be, [&] { return run_once(be, *b, params); },
                                                   b->out, c.reps, false, c.cold_cache)
                                             : Result<Measured>(st);
            if (!am.is_ok() || !sm.is_ok()) {
                r.skipped = "failed: " + (am.is_ok() ? sm.status() : am.status()).to_string();
            } else {
                r.attn_ms = am->ms;
                r.select_ms = sm->ms;
                r.ms = r.attn_ms + r.select_ms;
                const double kept_keys =
                    std::min<double>(static_cast<double>(n), static_cast<double>(ids.size()) * c.block);
                const double local_keys = static_cast<double>(attention_visible_keys(n - 1, c.window, c.sinks));
                r.flops = 4.0 * static_cast<double>(s.head_dim) *
                          (static_cast<double>(hr) * kept_keys + static_cast<double>(hl) * local_keys);
                // K and V rows each retrieval head reads (no sharing assumed between heads), and
                // the window of every KV head some local head reads.
                r.bytes = 2.0 * static_cast<double>(s.head_dim * cache_elem_bytes(c.cache_type)) *
                          (static_cast<double>(hr) * kept_keys +
                           static_cast<double>(kv_heads_with_local(s, mask)) * local_keys);
            }
            std::fprintf(
                stderr,
                "bench-attention: decode-sparse n=%s kept %g%% (the timed selection kept %.1f%%): "
                "%s\n",
                size_label(n).c_str(), 100 * f, 100 * r.select_kept,
                r.skipped.empty()
                    ? fmt::format("{:.3f} ms (select {:.3f}, attention {:.3f}), dense {:.3f} ms",
                                  r.ms, r.select_ms, r.attn_ms, r.dense_ms)
                          .c_str()
                    : r.skipped.c_str());
            emit(r);
        }
    }
    if (c.output == "json") std::printf("]\n");
    return 0;
}

}  // namespace purbo::cli
