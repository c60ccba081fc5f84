// OpenBLAS's thread count, set for one scope.
#pragma once

#include <cblas.h>
#include <omp.h>

namespace purbo {

// Sets OpenBLAS's thread count for one scope and restores it, together with OpenMP's default
// team size, which OpenBLAS's OpenMP build changes as a side effect (omp_set_num_threads)
// and which other modules' parallel regions without a num_threads clause would inherit.
// Use ScopedBlasThreads(1) around OpenMP regions whose threads each call BLAS: OpenBLAS stays
// serial inside an active parallel region, but a team of one thread is not active, and its
// own threads then oversubscribe the cores (measured: 400 ms instead of 0.8 ms for a tiled
// q4_1 GEMM of n = 32, k = 576, m = 1536 on a loaded machine).
class ScopedBlasThreads {
  public:
    explicit ScopedBlasThreads(int n)
        : saved_blas_(openblas_get_num_threads()), saved_omp_(omp_get_max_threads()) {
        openblas_set_num_threads(n);
    }
    ~ScopedBlasThreads() {
        openblas_set_num_threads(saved_blas_);
        omp_set_num_threads(saved_omp_);
    }
    ScopedBlasThreads(const ScopedBlasThreads&) = delete;
    ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

  private:
    int saved_blas_;
    int saved_omp_;
};

}  // namespace purbo
