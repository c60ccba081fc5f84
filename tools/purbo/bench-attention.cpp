// purbo bench --attention: one layer's Backend::attention op alone, at long contexts. The KV
// cache is filled with random values beforehand (kv_store is not timed); prefill times n
// queries attending causally to themselves, decode one query at position n - 1. Each case
// reports the median time of the op sequence and its rate (TFLOP/s, GB/s); a case predicted
// (from the previous case's rate) to exceed the time budget is skipped.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "attention-cost.h"
#include "backend/backend.h"
#include "bench-attention-sparse.h"
#include "bench-attention-util.h"
#include "common.h"
#include "core/timer.h"
#include "sparse/sparse-policy.h"

namespace purbo::cli {
namespace {

struct ShapePreset {
    const char* name;
    int heads, kv_heads, head_dim;
};
constexpr ShapePreset kShapes[] = {{"qwen3-30b-a3b", 32, 4, 128}, {"llama3-8b", 32, 8, 128}};

struct Flags {
    bool attention = false;
    std::string device = "cuda", shape = "qwen3-30b-a3b", output = "md";
    std::string prefill = "8K,32K,128K,512K,1M", decode = "32K,128K,512K,1M";
    std::string cache_type;  // "" = the backend's preferred
    std::string index_keys;  // sparse layer: "" = default_index_key_type
    int threads = 0, heads = 0, kv_heads = 0, head_dim = 0, window = 0, sinks = 0, reps = 3;
    int chunk = 65536;
    float max_seconds = 60, deadline = 0;
    // The sparse layer (bench-attention-sparse.h): retrieval share, block, fractions, rank.
    float retrieval = 0;
    int block = 64, rank = 16;
    float index_top_p = 0.9f;
    std::string fractions = "1,0.2,0.1,0.05,0.02";
    bool block_sparse_prefill = false;
    bool shared_index_query = false;
    std::string prefill_select = "block";
    int prefill_samples = 0;
    int select_memory = 4096;
    int prefill_query_block = 0;
    bool cold_cache = false;
};

Result<AttentionShape> resolve_shape(const Flags& f) {
    AttentionShape s;
    bool found = false;
    for (const ShapePreset& p : kShapes) {
        if (f.shape == p.name) {
            s = {p.heads, p.kv_heads, p.head_dim};
            found = true;
        }
    }
    if (!found) {
        return error(StatusCode::kInvalidArgument,
                     "--shape: '{}' (expected qwen3-30b-a3b or llama3-8b)", f.shape);
    }
    if (f.heads > 0) s.heads = f.heads;
    if (f.kv_heads > 0) s.kv_heads = f.kv_heads;
    if (f.head_dim > 0) s.head_dim = f.head_dim;
    if (s.heads % s.kv_heads != 0) {
        return error(StatusCode::kInvalidArgument, "--heads {} is not a multiple of --kv-heads {}",
                     s.heads, s.kv_heads);
    }
    return s;
}

// The tables' shape column: the preset's name, or heads/KV heads/head dim where --heads,
// --kv-heads or --head-dim changed it.
std::string shape_label(const Flags& f, const AttentionShape& s) {
    if (f.heads == 0 && f.kv_heads == 0 && f.head_dim == 0) return f.shape;
    return fmt::format("{}/{}/{}", s.heads, s.kv_heads, s.head_dim);
}

Status check_flags(const Flags& f) {
    if (f.output != "md" && f.output != "json")
        return error(StatusCode::kInvalidArgument, "--output: '{}' (expected md or json)",
                     f.output);
    if (f.reps <= 0)
        return error(StatusCode::kInvalidArgument, "--repetitions: {} must be positive", f.reps);
    if (f.chunk <= 0)
        return error(StatusCode::kInvalidArgument, "--chunk: {} must be positive", f.chunk);
    if (f.window < 0 || f.sinks < 0)
        return error(StatusCode::kInvalidArgument, "--window {} and --sinks {} must be >= 0",
                     f.window, f.sinks);
    if (f.heads < 0 || f.kv_heads < 0 || f.head_dim < 0)
        return error(StatusCode::kInvalidArgument,
                     "--heads, --kv-heads and --head-dim must be positive");
    if (!(f.max_seconds > 0))
        return error(StatusCode::kInvalidArgument, "--max-seconds: {} must be positive",
                     f.max_seconds);
    if (f.shared_index_query && !f.block_sparse_prefill)
        return error(StatusCode::kInvalidArgument,
                     "--shared-index-query applies to --block-sparse-prefill only");
    PURBO_TRY(
        check_prefill_selection_flags(f.prefill_select, f.prefill_samples, f.prefill_query_block));
    if (f.block > 0 && f.prefill_query_block % f.block != 0)
        return error(StatusCode::kInvalidArgument,
                     "--prefill-query-block: {} is not a multiple of --block {}",
                     f.prefill_query_block, f.block);
    if (f.select_memory <= 0)
        return error(StatusCode::kInvalidArgument, "--select-memory: {} MiB must be positive",
                     f.select_memory);
    if (f.cold_cache && f.device.rfind("cuda", 0) == 0)
        return error(
            StatusCode::kInvalidArgument,
            "--cold-cache with --device {}: cpu backends only (a GPU's calls are timed back "
            "to back; one call alone would time its launch)",
            f.device);
    if (f.block_sparse_prefill && !(f.retrieval > 0))
        return error(StatusCode::kInvalidArgument,
                     "--block-sparse-prefill needs the sparse layer (--retrieval R --window W)");
    return Status::ok();
}

}  // namespace

int cmd_bench_attention(int argc, char** argv) {
    Flags f;
    OptionSet set;
    set.usage = "purbo bench --attention [options]";
    set.description =
        "Times one layer's attention op alone (the cache is filled beforehand; storing keys is "
        "not timed). prefill: n queries at positions 0..n-1 attend causally to the same n keys, "
        "in chunks of --chunk queries per op call. decode: one query at position n-1 over n "
        "keys. Reports the median ms per case, TFLOP/s (4 * d * h per visible query-key pair) "
        "and GB/s (K and V of the keys read, q and out). A case whose predicted time (from the "
        "previous case's rate; warm-up plus repetitions, or one call after a warm-up of its "
        "first chunk when a call takes over 2 s) exceeds --max-seconds is skipped.";
    set.options.push_back(
        {"--attention", "", "", "this benchmark (instead of the whole-model one)", &f.attention});
    set.options.push_back({"--device", "", "NAME", "cuda (default), cpu or cpu-ref", &f.device});
    set.options.push_back({"--threads", "-t", "N", "CPU threads (default: all cores)", &f.threads});
    set.options.push_back({"--shape", "", "NAME",
                           "qwen3-30b-a3b (32/4/128, default) or llama3-8b (32/8/128)", &f.shape});
    set.options.push_back({"--heads", "", "H", "query heads (overrides the shape)", &f.heads});
    set.options.push_back({"--kv-heads", "", "G", "KV heads (overrides the shape)", &f.kv_heads});
    set.options.push_back({"--head-dim", "", "D", "head dim (overrides the shape)", &f.head_dim});
    set.options.push_back({"--prefill", "", "LIST",
                           "prefill sizes, K/M suffixes (default 8K,32K,128K,512K,1M; none)",
                           &f.prefill});
    set.options.push_back({"--decode", "", "LIST",
                           "decode context sizes (default 32K,128K,512K,1M; none)", &f.decode});
    set.options.push_back(
        {"--window", "", "W", "sliding window in tokens (default 0: full causal)", &f.window});
    set.options.push_back(
        {"--sinks", "", "S", "sink tokens kept visible below the window (default 0)", &f.sinks});
    set.options.push_back(
        {"--chunk", "", "N", "prefill queries per op call (default 65536)", &f.chunk});
    set.options.push_back({"--repetitions", "-r", "N",
                           "timed samples per case, median reported (default 3)", &f.reps});
    set.options.push_back({"--max-seconds", "", "S",
                           "skip a case predicted to take longer (default 60)", &f.max_seconds});
    set.options.push_back({"--deadline", "", "S",
                           "skip cases that would end after S s from the start (default: none)",
                           &f.deadline});
    set.options.push_back({"--output", "-o", "FMT", "md (default) or json", &f.output});
    set.options.push_back({"--cache-type", "-ctk", "TYPE", "KV cache element type: f32 or bf16 (default: bf16 on cuda)",
                           &f.cache_type});
    set.options.push_back({"--retrieval", "", "R",
                           "the sparse layer: share R of the heads are retrieval heads, the rest local "
                           "(needs --window; default 0: the dense op)", &f.retrieval});
    set.options.push_back({"--block", "", "B", "sparse layer: selection block in tokens (default 64)", &f.block});
    set.options.push_back(
        {"--fractions", "", "LIST",
         "sparse decode (and block-sparse prefill): shares of blocks kept (default "
         "1,0.2,0.1,0.05,0.02)",
         &f.fractions});
    set.options.push_back(
        {"--block-sparse-prefill", "", "",
         "sparse layer: also time prefill with retrieval heads over selected blocks, one row "
         "per fraction (the selection keeps that share of the blocks, top-K by index mass)",
         &f.block_sparse_prefill});
    set.options.push_back(
        {"--shared-index-query", "", "",
         "block-sparse prefill: one indexer query for every token, so all select the same "
         "blocks (default: an independent random query per token)",
         &f.shared_index_query});
    set.options.push_back(
        {"--prefill-select", "", "MODE",
         "block-sparse prefill: block = one selection per query block of B tokens (default); "
         "token = one per token",
         &f.prefill_select});
    set.options.push_back(
        {"--prefill-samples", "", "K",
         "block-sparse prefill per query block: average the index distributions of K "
         "evenly spaced tokens of each block (default 0: all)",
         &f.prefill_samples});
    set.options.push_back(
        {"--prefill-query-block", "", "N",
         "block-sparse prefill: tokens per query block, a multiple of --block (default: the "
         "block)",
         &f.prefill_query_block});
    set.options.push_back(
        {"--select-memory", "", "MIB",
         "block-sparse prefill: the selection's scratch per chunk call, which sets the chunk "
         "(default 4096)",
         &f.select_memory});
    set.options.push_back({"--rank", "", "R", "sparse layer: indexer dimension (default 16)", &f.rank});
    set.options.push_back(
        {"--index-keys", "", "TYPE",
         "sparse layer: element type of the index keys, f32, bf16 or f8 (default: bf16 where "
         "the backend keeps it, else the KV cache's type)",
         &f.index_keys});
    set.options.push_back({"--index-top-p", "", "P", "sparse decode: top-p of the timed selection (default 0.9)",
                           &f.index_top_p});
    set.options.push_back(
        {"--cold-cache", "", "",
         "cpu backends: time every call alone after evicting the CPU caches, as in a model's "
         "step (default: back-to-back calls, which may find their inputs cached)",
         &f.cold_cache});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok())
        return report_error("bench", st);
    if (help) return 0;
    if (Status st = check_flags(f); !st.is_ok()) return report_error("bench", st);
    Result<AttentionShape> shape = resolve_shape(f);
    if (!shape.is_ok()) return report_error("bench", shape.status());
    const AttentionShape s = *shape;
    auto prefill = parse_sizes("--prefill", f.prefill);
    if (!prefill.is_ok()) return report_error("bench", prefill.status());
    auto decode = parse_sizes("--decode", f.decode);
    if (!decode.is_ok()) return report_error("bench", decode.status());
    std::vector<std::pair<Mode, int64_t>> cases;
    for (int64_t n : *prefill) cases.emplace_back(Mode::kPrefill, n);
    for (int64_t n : *decode) cases.emplace_back(Mode::kDecode, n);

    BackendOptions bo;
    bo.n_threads = f.threads;
    Result<std::unique_ptr<Backend>> backend = backend_create(f.device, bo);
    if (!backend.is_ok()) return report_error("bench", backend.status());
    Backend& be = **backend;
    Result<DType> cache_type = resolve_cache_type(be, f.cache_type);
    if (!cache_type.is_ok()) return report_error("bench", cache_type.status());
    const int64_t kv_bytes = cache_elem_bytes(*cache_type);
    if (f.retrieval > 0) {
        if (!(f.retrieval <= 1) || f.window <= 0 || f.block <= 0 || f.rank <= 0 ||
            !(f.index_top_p > 0 && f.index_top_p <= 1))
            return report_error("bench", error(StatusCode::kInvalidArgument,
                                               "--retrieval {} must be in (0, 1] with --window > 0 (got {}), --block {} "
                                               "and --rank {} positive, --index-top-p {} in (0, 1]",
                                               f.retrieval, f.window, f.block, f.rank, f.index_top_p));
        SparseBenchConfig c;
        c.shape_name = f.shape;
        c.shape_label = shape_label(f, s);
        c.device = f.device;
        c.output = f.output;
        c.shape = s;
        c.prefill = *prefill;
        c.decode = *decode;
        std::stringstream ss(f.fractions);
        for (std::string item; std::getline(ss, item, ',');) {
            char* end = nullptr;
            const double v = std::strtod(item.c_str(), &end);
            if (item.empty() || *end != '\0' || !(v > 0 && v <= 1))
                return report_error("bench", error(StatusCode::kInvalidArgument,
                                                   "--fractions: '{}' in '{}' is not in (0, 1]", item, f.fractions));
            c.fractions.push_back(v);
        }
        c.block_sparse_prefill = f.block_sparse_prefill;
        c.shared_index_query = f.shared_index_query;
        c.per_query_block = f.prefill_select == "block";
        c.query_block_samples = f.prefill_samples;
        c.select_memory_mib = f.select_memory;
        c.query_block = f.prefill_query_block;
        c.retrieval = f.retrieval;
        c.window = f.window;
        c.sinks = f.sinks;
        c.block = f.block;
        c.rank = f.rank;
        c.top_p = f.index_top_p;
        c.reps = f.reps;
        c.chunk = f.chunk;
        c.max_seconds = f.max_seconds;
        c.deadline = f.deadline;
        c.cache_type = *cache_type;
        c.cold_cache = f.cold_cache;
        Result<std::optional<DType>> index_keys = parse_index_key_type(f.index_keys);
        if (!index_keys.is_ok()) return report_error("bench", index_keys.status());
        c.index_key_type = index_keys->value_or(default_index_key_type(be, *cache_type));
        const std::vector<DType> kept = be.index_key_dtypes();
        if (std::find(kept.begin(), kept.end(), c.index_key_type) == kept.end())
            return report_error("bench", error(StatusCode::kUnsupported,
                                               "--index-keys: the {} backend does not keep {}",
                                               be.name(), dtype_name(c.index_key_type)));
        return run_sparse_attention_bench(be, c);
    }
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    params.window = f.window;
    params.n_sink = f.sinks;

    const double start_ms = time_now_ms();
    std::mt19937 rng(42);
    const Tensor block_k = random_block(s.head_dim, rng), block_v = random_block(s.head_dim, rng);
    std::fprintf(stderr,
                 "bench-attention: %s on %s (h %lld, g %lld, d %lld), %s KV cache, window %d, "
                 "sinks %d, budget %.0f s%s\n",
                 f.shape.c_str(), f.device.c_str(), static_cast<long long>(s.heads),
                 static_cast<long long>(s.kv_heads), static_cast<long long>(s.head_dim),
                 std::string(dtype_name(*cache_type)).c_str(), f.window, f.sinks,
                 static_cast<double>(f.max_seconds),
                 f.cold_cache ? ", every call after the CPU caches are evicted" : "");
    if (f.output == "md") {
        std::printf("| shape | device | mode | n | window | sinks | ms | TFLOP/s | GB/s |\n");
        std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    } else {
        std::printf("[\n");
    }
    std::fflush(stdout);

    double seconds_per_unit[2] = {
        0, 0};  // last measured rate per mode: per pair (prefill), per byte (decode)
    for (size_t ci = 0; ci < cases.size(); ++ci) {
        const auto [mode, n] = cases[ci];
        const bool is_prefill = mode == Mode::kPrefill;
        const char* mode_name = is_prefill ? "prefill" : "decode";
        const AttentionWork work =
            is_prefill ? attention_prefill_work(s, n, f.window, f.sinks, kv_bytes, kElemBytes)
                       : attention_decode_work(s, n, f.window, f.sinks, kv_bytes, kElemBytes);
        const double units = is_prefill ? static_cast<double>(work.pairs) : work.bytes;
        const double rate = seconds_per_unit[is_prefill ? 0 : 1];
        const double predicted_call = rate > 0 ? rate * units : 0;
        const bool long_call = predicted_call > kLongCallSeconds;
        const double predicted = predicted_call * (long_call ? 1 : f.reps + 1);
        const double elapsed = (time_now_ms() - start_ms) / 1e3;

        std::string skipped;
        Measured m;
        if (predicted > f.max_seconds) {
            skipped = fmt::format("skipped: predicted {:.1f} s > budget {:.0f} s", predicted,
                                  f.max_seconds);
        } else if (f.deadline > 0 && elapsed + predicted > f.deadline) {
            skipped = fmt::format(
                "skipped: predicted {:.1f} s would pass the deadline ({:.0f} s of {:.0f} s used)",
                predicted, elapsed, f.deadline);
        } else {
            std::fprintf(stderr, "bench-attention: %s n=%s: filling %.2f GiB of cache%s\n",
                         mode_name, size_label(n).c_str(),
                         2.0 * n * s.kv_heads * s.head_dim * kv_bytes / 1073741824.0,
                         rate > 0 ? fmt::format(", predicted {:.2f} s", predicted).c_str() : "");
            Result<CaseBuffers> b = make_buffers(be, s, mode, n, f.chunk, *cache_type, block_k, block_v);
            Result<Measured> r = b.is_ok() ? measure(
                                                 be, [&] { return run_once(be, *b, params); },
                                                 b->out, f.reps, long_call, f.cold_cache,
                                                 [&] { return run_once(be, *b, params, 1); })
                                           : Result<Measured>(b.status());
            if (r.is_ok()) {
                m = *r;
                seconds_per_unit[is_prefill ? 0 : 1] = m.ms / 1e3 / units;
            } else {
                skipped = "failed: " + r.status().to_string();
            }
        }
        const double tflops = skipped.empty() ? work.flops / (m.ms * 1e-3) / 1e12 : 0;
        const double gbps = skipped.empty() ? work.bytes / (m.ms * 1e-3) / 1e9 : 0;
        std::fprintf(
            stderr, "bench-attention: %s n=%s: %s\n", mode_name, size_label(n).c_str(),
            skipped.empty()
                ? fmt::format("{:.3f} ms, {:.2f} TFLOP/s, {:.1f} GB/s", m.ms, tflops, gbps).c_str()
                : skipped.c_str());
        if (f.output == "md") {
            const std::string cells =
                skipped.empty() ? fmt::format("{:.3f} | {:.2f} | {:.1f}", m.ms, tflops, gbps)
                                : skipped + " | - | -";
            std::printf("| %s | %s | %s | %s | %d | %d | %s |\n", shape_label(f, s).c_str(),
                        f.device.c_str(), mode_name, size_label(n).c_str(), f.window, f.sinks,
                        cells.c_str());
        } else {
            nlohmann::ordered_json j = {{"shape", f.shape},
                                        {"heads", s.heads},
                                        {"kv_heads", s.kv_heads},
                                        {"head_dim", s.head_dim},
                                        {"mode", mode_name},
                                        {"n", n},
                                        {"window", f.window},
                                        {"sinks", f.sinks},
                                        {"ms", nullptr},
                                        {"tflops", nullptr},
                                        {"gbps", nullptr},
                                        {"device", f.device},
                                        {"pairs", work.pairs},
                                        {"reps", m.reps},
                                        {"inner", m.inner},
                                        {"skipped", nullptr},
                                        {"cache", dtype_name(*cache_type)},
                                        {"cold_cache", f.cold_cache}};
            if (skipped.empty()) {
                j["ms"] = m.ms;
                j["tflops"] = tflops;
                j["gbps"] = gbps;
            } else {
                j["skipped"] = skipped;
            }
            std::printf("  %s%s\n", j.dump().c_str(), ci + 1 < cases.size() ? "," : "");
        }
        std::fflush(stdout);
    }
    if (f.output == "json") std::printf("]\n");
    return 0;
}

}  // namespace purbo::cli
