// Speed of the cpu backend's attention: decode (one token) and prefill (n tokens attending
// causally to themselves) over SmolLM2-135M's heads (9 query, 3 KV, d = 64).
// Usage: bench-attention [n_threads]   (default: all cores). GFLOP/s counts 4 d per visible key
// per query head (q.k and p.v).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/cpu-backend.h"

namespace purbo {
namespace {

void run(Backend& backend, int64_t n, int64_t context, int window) {
    const int64_t h = 9, g = 3, d = 64, c = context;
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1, 1);
    Tensor k = tensor_cpu(DType::kF32, {1, g, c, d}), v = tensor_cpu(DType::kF32, {1, g, c, d});
    Tensor q = tensor_cpu(DType::kF32, {n, h, d}), out = tensor_cpu(DType::kF32, {n, h, d});
    for (Tensor* t : {&k, &v, &q}) {
        for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] = dist(rng);
    }
    std::vector<int32_t> seq(static_cast<size_t>(n), 0), pos(static_cast<size_t>(n));
    double visible = 0;
    for (int64_t i = 0; i < n; ++i) {
        pos[static_cast<size_t>(i)] = static_cast<int32_t>(c - n + i);
        const double all = static_cast<double>(c - n + i + 1);
        visible += window > 0 ? std::min<double>(all, window) : all;
    }
    const AttentionParams params{1.0f / std::sqrt(static_cast<float>(d)), window, 0};
    auto call = [&] {
        PURBO_ASSERT(backend.attention(q, {k, v}, {seq, pos}, params, out).is_ok());
    };
    call();
    int reps = 0;
    double seconds = 0;
    const auto start = std::chrono::steady_clock::now();
    while (seconds < 0.5 || reps < 3) {
        call();
        ++reps;
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const double per_call = seconds / reps;
    std::printf("attention n=%-5lld context=%-5lld window=%-4d  %9.1f us  %6.1f GFLOP/s\n",
                static_cast<long long>(n), static_cast<long long>(c), window, per_call * 1e6,
                visible * static_cast<double>(h) * 4.0 * d / per_call * 1e-9);
}

}  // namespace
}  // namespace purbo

int main(int argc, char** argv) {
    purbo::CpuBackend backend(purbo::BackendOptions{argc > 1 ? std::atoi(argv[1]) : 0});
    purbo::run(backend, 1, 1024, 0);
    purbo::run(backend, 1, 8192, 0);
    purbo::run(backend, 1024, 1024, 0);
    purbo::run(backend, 1024, 1024, 128);
    return 0;
}
