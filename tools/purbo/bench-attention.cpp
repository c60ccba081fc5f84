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
#include "common.h"
#include "core/timer.h"

namespace purbo::cli {
namespace {

struct ShapePreset {
    const char* name;
    int heads, kv_heads, head_dim;
};
constexpr ShapePreset kShapes[] = {{"qwen3-30b-a3b", 32, 4, 128}, {"llama3-8b", 32, 8, 128}};

constexpr int64_t kFillRows = 65536;    // rows of each random host block copied over device buffers
constexpr int64_t kElemBytes = 4;       // q, out and the KV cache are f32 on every backend
constexpr double kLongCallSeconds = 2;  // longer calls run once, with no warm-up
constexpr double kMinSampleMs = 20;     // short calls repeat within a sample to reach this

struct Flags {
    bool attention = false;
    std::string device = "cuda", shape = "qwen3-30b-a3b", output = "md";
    std::string prefill = "8K,32K,128K,512K,1M", decode = "32K,128K,512K,1M";
    int threads = 0, heads = 0, kv_heads = 0, head_dim = 0, window = 0, sinks = 0, reps = 3;
    int chunk = 65536;
    float max_seconds = 60, deadline = 0;
};

enum class Mode { kPrefill, kDecode };

// Comma-separated token counts with optional K (x1024) or M (x1024^2) suffixes; "" or "none"
// is an empty list.
Result<std::vector<int64_t>> parse_sizes(const std::string& flag, const std::string& text) {
    std::vector<int64_t> out;
    if (text.empty() || text == "none") return out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        int64_t mult = 1;
        std::string digits = item;
        if (!digits.empty() && (digits.back() == 'K' || digits.back() == 'k')) mult = 1024;
        if (!digits.empty() && (digits.back() == 'M' || digits.back() == 'm')) mult = 1024 * 1024;
        if (mult > 1) digits.pop_back();
        char* end = nullptr;
        const long long v = std::strtoll(digits.c_str(), &end, 10);
        if (digits.empty() || *end != '\0' || v <= 0 || v * mult > (int64_t{1} << 24)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: '{}' in '{}' is not a token count (1..16M, K and M suffixes)", flag,
                         item, text);
        }
        out.push_back(v * mult);
    }
    return out;
}

std::string size_label(int64_t n) {
    if (n % (1024 * 1024) == 0) return std::to_string(n / (1024 * 1024)) + "M";
    if (n % 1024 == 0) return std::to_string(n / 1024) + "K";
    return std::to_string(n);
}

// The first m rows of t's outermost dim; shares storage.
Tensor leading(const Tensor& t, int64_t m) {
    Tensor v = t;
    v.shape[0] = m;
    return v;
}

// Copies the host block (rows, d) over dev, viewed as (numel / d, d), again and again.
Status fill_rows(Backend& be, const Tensor& dev, const Tensor& block) {
    const int64_t d = block.dim(1);
    const Tensor flat = dev.reshaped({dev.numel() / d, d});
    for (int64_t r = 0; r < flat.dim(0); r += block.dim(0)) {
        const int64_t m = std::min(block.dim(0), flat.dim(0) - r);
        PURBO_TRY(be.from_host(block.rows(0, m), flat.rows(r, r + m)));
    }
    return Status::ok();
}

Tensor random_block(int64_t d, std::mt19937& rng) {
    Tensor t = tensor_cpu(DType::kF32, {kFillRows, d}, "random block");
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = dist(rng);
    return t;
}

// One case's device buffers: the cache holds n keys; q and out hold one chunk of queries.
struct CaseBuffers {
    KvCacheView cache;
    Tensor q, out;             // (m, h, d)
    std::vector<int32_t> seq;  // (m,) all slot 0
    std::vector<int32_t> pos;  // (queries,): 0..n-1 for prefill, n-1 for decode
};

Result<CaseBuffers> make_buffers(Backend& be, const AttentionShape& s, Mode mode, int64_t n,
                                 int64_t chunk, const Tensor& block_k, const Tensor& block_v) {
    CaseBuffers b;
    const int64_t m = mode == Mode::kDecode ? 1 : std::min(n, chunk);
    b.cache.k = be.alloc(DType::kF32, {1, s.kv_heads, n, s.head_dim}, "cache k");
    b.cache.v = be.alloc(DType::kF32, {1, s.kv_heads, n, s.head_dim}, "cache v");
    b.q = be.alloc(DType::kF32, {m, s.heads, s.head_dim}, "q");
    b.out = be.alloc(DType::kF32, {m, s.heads, s.head_dim}, "out");
    for (const Tensor* t : {&b.cache.k, &b.cache.v, &b.q, &b.out}) {
        if (t->empty())
            return error(StatusCode::kOutOfMemory, "cannot allocate the buffers for n = {}", n);
    }
    PURBO_TRY(fill_rows(be, b.cache.k, block_k));
    PURBO_TRY(fill_rows(be, b.cache.v, block_v));
    PURBO_TRY(fill_rows(be, b.q, block_k));
    b.seq.assign(static_cast<size_t>(m), 0);
    if (mode == Mode::kDecode) {
        b.pos = {static_cast<int32_t>(n - 1)};
    } else {
        b.pos.resize(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) b.pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    }
    return b;
}

// The case's op sequence once: the queries in chunks of q's rows, each at its own positions.
Status run_once(Backend& be, const CaseBuffers& b, const AttentionParams& params) {
    const int64_t n = static_cast<int64_t>(b.pos.size()), m = b.q.dim(0);
    for (int64_t begin = 0; begin < n; begin += m) {
        const int64_t count = std::min(m, n - begin);
        const TokenPlacement place{
            std::span<const int32_t>(b.seq).first(static_cast<size_t>(count)),
            std::span<const int32_t>(b.pos).subspan(static_cast<size_t>(begin),
                                                    static_cast<size_t>(count))};
        PURBO_TRY(be.attention(leading(b.q, count), b.cache, place, params, leading(b.out, count)));
    }
    return Status::ok();
}

// Milliseconds per op sequence, over `calls` back-to-back sequences.
Result<double> time_calls(Backend& be, const CaseBuffers& b, const AttentionParams& params,
                          int calls) {
    be.synchronize();
    const double t0 = time_now_ms();
    for (int i = 0; i < calls; ++i) PURBO_TRY(run_once(be, b, params));
    be.synchronize();
    return (time_now_ms() - t0) / calls;
}

// Reads a row of the output back: surfaces a kernel failure (which synchronize only logs) and
// an output that is not finite.
Status check_output(Backend& be, const CaseBuffers& b) {
    Tensor host = tensor_cpu(DType::kF32, {1, b.out.dim(1), b.out.dim(2)}, "out row");
    PURBO_TRY(be.to_host(leading(b.out, 1), host));
    for (int64_t i = 0; i < host.numel(); ++i) {
        if (!std::isfinite(host.f32()[i]))
            return error(StatusCode::kInternal, "attention output element {} is {}", i,
                         host.f32()[i]);
    }
    return Status::ok();
}

struct Measured {
    double ms = 0;  // median per op sequence
    int reps = 0, inner = 1;
};

Result<Measured> measure(Backend& be, const CaseBuffers& b, const AttentionParams& params, int reps,
                         bool long_call) {
    Measured r;
    if (long_call) {  // one-time costs are small next to the call: no warm-up, one sample
        PURBO_ASSIGN_OR_RETURN(r.ms, time_calls(be, b, params, 1));
        r.reps = 1;
    } else {
        PURBO_ASSIGN_OR_RETURN(const double warm_ms, time_calls(be, b, params, 1));
        r.inner = static_cast<int>(
            std::clamp(std::ceil(kMinSampleMs / std::max(warm_ms, 1e-3)), 1.0, 1000.0));
        std::vector<double> samples;
        for (int i = 0; i < reps; ++i) {
            PURBO_ASSIGN_OR_RETURN(const double ms, time_calls(be, b, params, r.inner));
            samples.push_back(ms);
        }
        std::sort(samples.begin(), samples.end());
        const size_t mid = samples.size() / 2;
        r.ms = samples.size() % 2 ? samples[mid] : 0.5 * (samples[mid - 1] + samples[mid]);
        r.reps = reps;
    }
    PURBO_TRY(check_output(be, b));
    return r;
}

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
        "previous case's rate; warm-up plus repetitions, or one call when a call takes over "
        "2 s) exceeds --max-seconds is skipped.";
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
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    params.window = f.window;
    params.n_sink = f.sinks;

    const double start_ms = time_now_ms();
    std::mt19937 rng(42);
    const Tensor block_k = random_block(s.head_dim, rng), block_v = random_block(s.head_dim, rng);
    std::fprintf(
        stderr,
        "bench-attention: %s on %s (h %lld, g %lld, d %lld), window %d, sinks %d, budget %.0f s\n",
        f.shape.c_str(), f.device.c_str(), static_cast<long long>(s.heads),
        static_cast<long long>(s.kv_heads), static_cast<long long>(s.head_dim), f.window, f.sinks,
        static_cast<double>(f.max_seconds));
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
            is_prefill ? attention_prefill_work(s, n, f.window, f.sinks, kElemBytes, kElemBytes)
                       : attention_decode_work(s, n, f.window, f.sinks, kElemBytes, kElemBytes);
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
                         2.0 * n * s.kv_heads * s.head_dim * kElemBytes / 1073741824.0,
                         rate > 0 ? fmt::format(", predicted {:.2f} s", predicted).c_str() : "");
            Result<CaseBuffers> b = make_buffers(be, s, mode, n, f.chunk, block_k, block_v);
            Result<Measured> r = b.is_ok() ? measure(be, *b, params, f.reps, long_call)
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
            std::printf("| %s | %s | %s | %s | %d | %d | %s |\n", f.shape.c_str(), f.device.c_str(),
                        mode_name, size_label(n).c_str(), f.window, f.sinks, cells.c_str());
        } else {
            nlohmann::ordered_json j = {
                {"shape", f.shape},       {"heads", s.heads},  {"kv_heads", s.kv_heads},
                {"head_dim", s.head_dim}, {"mode", mode_name}, {"n", n},
                {"window", f.window},     {"sinks", f.sinks},  {"ms", nullptr},
                {"tflops", nullptr},      {"gbps", nullptr},   {"device", f.device},
                {"pairs", work.pairs},    {"reps", m.reps},    {"inner", m.inner},
                {"skipped", nullptr}};
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
