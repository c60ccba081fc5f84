// purbo-membw: the machine's memory bandwidth and sgemm throughput, measured the way the
// engine uses them. Decode speed is bounded by read bandwidth (every weight is read once per
// token); prefill speed is bounded by GEMM FLOP/s. bench/NOTES.md turns these into floors.
//
// usage: purbo-membw [--mb SIZE_MB] [--reps N] [--threads MAX] [--gemm N]
//   read : sum over an array of SIZE_MB (default 1024) MB of floats        bytes = size
//   copy : b[i] = a[i] over two arrays of SIZE_MB each (STREAM counting)   bytes = 2 * size
//          (write-allocate makes the real traffic 3 * size on most CPUs; we report 2 * size
//          like STREAM so numbers compare with published ones)
//   sgemm: cblas_sgemm N x N x N (default 2048) in fp32                    flop = 2 * N^3
// Each test runs for 1, 2, 4, ... MAX threads (default: omp_get_max_threads()), one warm-up
// plus --reps timed runs (default 10), and prints the best and the mean.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Options {
    size_t size_mb = 1024;
    int reps = 10;
    int max_threads = 0;  // 0: omp_get_max_threads()
    int gemm_n = 2048;
};

struct Timing {
    double best_s = 0;
    double mean_s = 0;
};

// Runs fn once to warm up (page faults, caches, thread pool), then reps timed times.
Timing time_runs(int reps, const std::function<void()>& fn) {
    fn();
    Timing t;
    t.best_s = 1e30;
    double total = 0;
    for (int r = 0; r < reps; ++r) {
        double start = omp_get_wtime();
        fn();
        double elapsed = omp_get_wtime() - start;
        t.best_s = std::min(t.best_s, elapsed);
        total += elapsed;
    }
    t.mean_s = total / reps;
    return t;
}

// Page-aligned storage, first touched by the threads that will read it (NUMA placement).
struct AlignedFloats {
    float* data = nullptr;
    size_t n = 0;
    explicit AlignedFloats(size_t count) : n(count) {
        constexpr size_t kAlign = 4096;
        size_t bytes = (count * sizeof(float) + kAlign - 1) / kAlign * kAlign;
        data = static_cast<float*>(std::aligned_alloc(kAlign, bytes));
        if (!data) {
            std::fprintf(stderr, "purbo-membw: cannot allocate %zu bytes\n", bytes);
            std::exit(1);
        }
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < count; ++i) data[i] = static_cast<float>(i & 1023) * 1e-3f;
    }
    ~AlignedFloats() { std::free(data); }
    AlignedFloats(const AlignedFloats&) = delete;
    AlignedFloats& operator=(const AlignedFloats&) = delete;
};

// Sum with kLanes independent accumulators: a single float accumulator is a serial chain of
// adds (about 0.5 G adds/s, measured 1.8 GB/s on one core) and would time the adder, not
// memory; without -ffast-math the compiler may not reorder the adds itself.
float sum_floats(const float* p, size_t n) {
    constexpr size_t kLanes = 64;  // 4 AVX-512 or 8 AVX2 registers of partial sums
    float acc[kLanes] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (size_t j = 0; j < kLanes; ++j) acc[j] += p[i + j];
    }
    for (; i < n; ++i) acc[0] += p[i];
    float sum = 0;
    for (size_t j = 0; j < kLanes; ++j) sum += acc[j];
    return sum;
}

bool parse_args(int argc, char** argv, Options& opt) {
    for (int i = 1; i < argc; ++i) {
        std::string flag = argv[i];
        auto value = [&](const char* name) -> long {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "purbo-membw: %s needs a value\n", name);
                std::exit(2);
            }
            char* end = nullptr;
            long v = std::strtol(argv[++i], &end, 10);
            if (*end != '\0' || v <= 0) {
                std::fprintf(stderr, "purbo-membw: %s: '%s' is not a positive integer\n", name,
                             argv[i]);
                std::exit(2);
            }
            return v;
        };
        if (flag == "--mb") {
            opt.size_mb = static_cast<size_t>(value("--mb"));
        } else if (flag == "--reps") {
            opt.reps = static_cast<int>(value("--reps"));
        } else if (flag == "--threads") {
            opt.max_threads = static_cast<int>(value("--threads"));
        } else if (flag == "--gemm") {
            opt.gemm_n = static_cast<int>(value("--gemm"));
        } else if (flag == "-h" || flag == "--help") {
            std::puts("usage: purbo-membw [--mb SIZE_MB] [--reps N] [--threads MAX] [--gemm N]");
            std::exit(0);
        } else {
            std::fprintf(stderr, "purbo-membw: unknown flag '%s'\n", flag.c_str());
            return false;
        }
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    if (!parse_args(argc, argv, opt)) return 2;
    if (opt.max_threads == 0) opt.max_threads = omp_get_max_threads();

    std::vector<int> thread_counts;
    for (int t = 1; t < opt.max_threads; t *= 2) thread_counts.push_back(t);
    thread_counts.push_back(opt.max_threads);

    const size_t n = opt.size_mb * 1024 * 1024 / sizeof(float);
    const double bytes = static_cast<double>(n) * sizeof(float);
    AlignedFloats a(n);
    AlignedFloats b(n);
    volatile float sink = 0;  // keeps the read loop from being removed

    std::printf("array %zu MiB, %d timed reps after 1 warm-up; GB = 1e9 bytes\n\n", opt.size_mb,
                opt.reps);
    std::printf("| test | threads | best GB/s | mean GB/s |\n|---|---:|---:|---:|\n");
    for (int threads : thread_counts) {
        omp_set_num_threads(threads);
        Timing read = time_runs(opt.reps, [&] {
            float sum = 0;
#pragma omp parallel reduction(+ : sum)
            {
                // The same static split as the first touch, so each thread reads its pages.
                size_t n_threads = static_cast<size_t>(omp_get_num_threads());
                size_t id = static_cast<size_t>(omp_get_thread_num());
                size_t begin = n * id / n_threads;
                size_t end = n * (id + 1) / n_threads;
                sum += sum_floats(a.data + begin, end - begin);
            }
            sink = sink + sum;
        });
        std::printf("| read | %d | %.2f | %.2f |\n", threads, bytes / read.best_s / 1e9,
                    bytes / read.mean_s / 1e9);
        Timing copy = time_runs(opt.reps, [&] {
#pragma omp parallel for simd schedule(static)
            for (size_t i = 0; i < n; ++i) b.data[i] = a.data[i];
        });
        std::printf("| copy | %d | %.2f | %.2f |\n", threads, 2 * bytes / copy.best_s / 1e9,
                    2 * bytes / copy.mean_s / 1e9);
        std::fflush(stdout);
    }

    // sgemm through OpenBLAS (the openmp build follows omp_set_num_threads).
    const int g = opt.gemm_n;
    const size_t gg = static_cast<size_t>(g) * g;
    std::vector<float> ga(gg, 0.5f), gb(gg, 0.25f), gc(gg, 0.0f);
    const double flop = 2.0 * g * static_cast<double>(g) * g;
    const int gemm_reps = std::max(1, opt.reps / 2);
    std::printf("\nsgemm %d x %d x %d (row-major, no transpose), %d timed reps\n\n", g, g, g,
                gemm_reps);
    std::printf("| test | threads | best GFLOP/s | mean GFLOP/s |\n|---|---:|---:|---:|\n");
    for (int threads : thread_counts) {
        omp_set_num_threads(threads);
        openblas_set_num_threads(threads);
        Timing t = time_runs(gemm_reps, [&] {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g, g, g, 1.0f, ga.data(), g,
                        gb.data(), g, 0.0f, gc.data(), g);
        });
        std::printf("| sgemm | %d | %.1f | %.1f |\n", threads, flop / t.best_s / 1e9,
                    flop / t.mean_s / 1e9);
        std::fflush(stdout);
    }
    // A wrong sum would mean the kernels above did not run as written.
    const float expect = 0.5f * 0.25f * static_cast<float>(g);
    if (std::abs(gc[0] - expect) > 1e-3f * expect) {
        std::fprintf(stderr, "purbo-membw: sgemm result %g, expected %g\n", gc[0], expect);
        return 1;
    }
    return 0;
}
