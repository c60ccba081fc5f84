#include "bench-attention-util.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/timer.h"

namespace purbo::cli {
namespace {

constexpr int64_t kFillRows = 65536;  // rows of each random host block copied over device buffers
constexpr double kMinSampleMs = 20;   // short calls repeat within a sample to reach this
// evict_cpu_caches' buffer: well above the last-level caches of the machines this runs on
// (32 MiB on the 2-vCPU VM of bench/RESULTS.md, up to a few hundred MiB on server parts).
constexpr size_t kEvictBytes = size_t{512} << 20;
constexpr double kMaxColdCalls = 8;  // per sample

}  // namespace

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

Result<DType> resolve_cache_type(const Backend& be, const std::string& flag) {
    const std::vector<DType> supported = be.kv_cache_dtypes();
    if (flag.empty()) return supported.front();
    for (DType t : supported) {
        if (dtype_name(t) == flag) return t;
    }
    std::string names;
    for (DType t : supported) names += fmt::format("{}{}", names.empty() ? "" : ", ", dtype_name(t));
    return error(StatusCode::kInvalidArgument, "--cache-type '{}': the {} backend keeps caches in {}", flag,
                 be.name(), names);
}

Result<CaseBuffers> make_buffers(Backend& be, const AttentionShape& s, Mode mode, int64_t n, int64_t chunk,
                                 DType cache_type, const Tensor& block_k, const Tensor& block_v) {
    CaseBuffers b;
    const int64_t m = mode == Mode::kDecode ? 1 : std::min(n, chunk);
    b.cache.k = be.alloc(cache_type, {1, s.kv_heads, n, s.head_dim}, "cache k");
    b.cache.v = be.alloc(cache_type, {1, s.kv_heads, n, s.head_dim}, "cache v");
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

Status run_once(Backend& be, const CaseBuffers& b, const AttentionParams& params, int64_t chunks) {
    const int64_t n = static_cast<int64_t>(b.pos.size()), m = b.q.dim(0);
    const int64_t end = chunks > 0 ? std::min(n, chunks * m) : n;
    for (int64_t begin = 0; begin < end; begin += m) {
        const int64_t count = std::min(m, n - begin);
        const TokenPlacement place{
            std::span<const int32_t>(b.seq).first(static_cast<size_t>(count)),
            std::span<const int32_t>(b.pos).subspan(static_cast<size_t>(begin),
                                                    static_cast<size_t>(count))};
        PURBO_TRY(be.attention(leading(b.q, count), b.cache, place, params, leading(b.out, count)));
    }
    return Status::ok();
}

namespace {

// Milliseconds per call of `op`, over `calls` back-to-back calls; cold: each call timed alone
// after the caches are evicted.
Result<double> time_calls(Backend& be, const std::function<Status()>& op, int calls, bool cold) {
    if (cold) {
        double total = 0;
        for (int i = 0; i < calls; ++i) {
            evict_cpu_caches();
            be.synchronize();
            const double t0 = time_now_ms();
            PURBO_TRY(op());
            be.synchronize();
            total += time_now_ms() - t0;
        }
        return total / calls;
    }
    be.synchronize();
    const double t0 = time_now_ms();
    for (int i = 0; i < calls; ++i) PURBO_TRY(op());
    be.synchronize();
    return (time_now_ms() - t0) / calls;
}

// Reads a row of the output back: surfaces a kernel failure (which synchronize only logs) and
// an output that is not finite.
Status check_output(Backend& be, const Tensor& out) {
    Tensor host = tensor_cpu(DType::kF32, {1, out.dim(1), out.dim(2)}, "out row");
    PURBO_TRY(be.to_host(leading(out, 1), host));
    for (int64_t i = 0; i < host.numel(); ++i) {
        if (!std::isfinite(host.f32()[i]))
            return error(StatusCode::kInternal, "attention output element {} is {}", i,
                         host.f32()[i]);
    }
    return Status::ok();
}

}  // namespace

void evict_cpu_caches() {
    // One buffer for the process, touched in full once so that its pages exist before timing.
    static std::vector<unsigned char> buffer(kEvictBytes, 1);
    unsigned char* data = buffer.data();
    const int64_t lines = static_cast<int64_t>(buffer.size() / 64);
    // Every OpenMP thread (the cpu backends' ops run on the same pool) walks its part, which
    // also leaves its core's private caches holding the buffer rather than the op's data.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < lines; ++i) data[i * 64] += 1;
}

Result<Measured> measure(Backend& be, const std::function<Status()>& op, const Tensor& out,
                         int reps, bool long_call, bool cold,
                         const std::function<Status()>& warm_up) {
    Measured r;
    if (long_call) {  // one sample, after the untimed warm-up of a part of the call
        if (warm_up) {
            PURBO_TRY(warm_up());
            be.synchronize();
        }
        PURBO_ASSIGN_OR_RETURN(r.ms, time_calls(be, op, 1, cold));
        r.reps = 1;
    } else {
        PURBO_ASSIGN_OR_RETURN(const double warm_ms, time_calls(be, op, 1, cold));
        // Cold calls are timed one by one, so few suffice; each costs an eviction.
        r.inner = static_cast<int>(std::clamp(std::ceil(kMinSampleMs / std::max(warm_ms, 1e-3)),
                                              1.0, cold ? kMaxColdCalls : 1000.0));
        std::vector<double> samples;
        for (int i = 0; i < reps; ++i) {
            PURBO_ASSIGN_OR_RETURN(const double ms, time_calls(be, op, r.inner, cold));
            samples.push_back(ms);
        }
        std::sort(samples.begin(), samples.end());
        const size_t mid = samples.size() / 2;
        r.ms = samples.size() % 2 ? samples[mid] : 0.5 * (samples[mid - 1] + samples[mid]);
        r.reps = reps;
    }
    PURBO_TRY(check_output(be, out));
    return r;
}

}  // namespace purbo::cli
