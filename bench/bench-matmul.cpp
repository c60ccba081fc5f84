// Speed of the cpu backend's matmul paths: GEMV (decode, weight bandwidth) and GEMM
// (prefill, FLOP/s). Usage: bench-matmul [n_threads]   (default: all cores)
// GB/s counts the weight bytes read once per call; GFLOP/s counts 2 n m k.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "backend/cpu/cpu-backend.h"
#include "core/quants.h"

namespace purbo {
namespace {

Tensor random_weight(DType dtype, int64_t m, int64_t k, std::mt19937& rng) {
    std::uniform_real_distribution<float> dist(-1, 1);
    std::vector<float> row(static_cast<size_t>(k));
    Tensor w = tensor_cpu(DType::kF32 == dtype ? DType::kF32 : dtype, {m, k});
    Tensor f = tensor_cpu(DType::kF32, {1, k});
    for (int64_t j = 0; j < m; ++j) {
        for (float& v : row) v = dist(rng);
        switch (dtype) {
            case DType::kQ4_0:
                quantize_row_q4_0(row.data(), w.row_ptr(j), k);
                break;
            case DType::kQ4_1:
                quantize_row_q4_1(row.data(), w.row_ptr(j), k);
                break;
            case DType::kQ8_0:
                quantize_row_q8_0(row.data(), w.row_ptr(j), k);
                break;
            default:
                for (int64_t i = 0; i < k; ++i)
                    reinterpret_cast<float*>(w.row_ptr(j))[i] = row[static_cast<size_t>(i)];
        }
    }
    return w;
}

void run(DType dtype, int64_t n, int64_t k, int64_t m, int n_threads, bool gemv) {
    std::mt19937 rng(1);
    Tensor w = random_weight(dtype, m, k, rng);
    Tensor x = tensor_cpu(DType::kF32, {n, k});
    std::uniform_real_distribution<float> dist(-1, 1);
    for (int64_t i = 0; i < n * k; ++i) x.f32()[i] = dist(rng);
    Tensor out = tensor_cpu(DType::kF32, {n, m});
    auto call = [&] {
        gemv ? cpu_matmul_gemv(x, w, out, n_threads) : cpu_matmul_gemm(x, w, out, n_threads);
    };
    call();  // warm up: threads, caches
    int reps = 0;
    const auto start = std::chrono::steady_clock::now();
    double seconds = 0;
    while (seconds < 0.5 || reps < 5) {
        call();
        ++reps;
        seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const double per_call = seconds / reps;
    std::printf(
        "%-5s %-4s n=%-4lld k=%-5lld m=%-6lld threads=%d  %8.1f us  %7.2f GB/s  %7.1f GFLOP/s\n",
        gemv ? "gemv" : "gemm", std::string(dtype_name(dtype)).c_str(), static_cast<long long>(n),
        static_cast<long long>(k), static_cast<long long>(m), n_threads, per_call * 1e6,
        static_cast<double>(w.nbytes()) / per_call * 1e-9, 2.0 * n * m * k / per_call * 1e-9);
}

}  // namespace
}  // namespace purbo

int main(int argc, char** argv) {
    using purbo::DType;
    const int n_threads = argc > 1 ? std::atoi(argv[1]) : 0;
    const int threads =
        n_threads > 0 ? n_threads : purbo::CpuBackend(purbo::BackendOptions{}).n_threads();
    for (DType dtype : {DType::kQ4_1, DType::kQ4_0, DType::kQ8_0, DType::kF32}) {
        purbo::run(dtype, 1, 576, 1536, threads, true);   // SmolLM2-135M up/gate projection
        purbo::run(dtype, 1, 1536, 576, threads, true);   // down projection
        purbo::run(dtype, 1, 576, 49152, threads, true);  // LM head
    }
    for (int64_t n : {4, 8, 16, 32}) {  // around the GEMV/GEMM switch
        purbo::run(DType::kQ4_1, n, 576, 1536, threads, true);
        purbo::run(DType::kQ4_1, n, 576, 1536, threads, false);
    }
    purbo::run(DType::kQ4_1, 128, 576, 1536, threads, false);
    purbo::run(DType::kF32, 128, 576, 1536, threads, false);
    return 0;
}
