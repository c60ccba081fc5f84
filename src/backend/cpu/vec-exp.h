// The exponentials of softmax weights, vectorised (the cpu backend's attention).
#pragma once

#include <cstdint>

namespace purbo {

// x[t] = exp(x[t] - shift) for t < n, returning the sum of the results. The scalar exp of the
// softmax weights was a third of the decode attention time at depth 4096 (one libm call per key
// and query head). AVX-512: Cephes' single-precision exp (range reduction by ln 2 in two parts,
// a degree-6 polynomial, 2^n applied with scalef; about 1 ulp), 16 keys per step, the tail
// masked so every key takes the same arithmetic. Weights below FLT_MIN (x - shift < -87.3,
// including masked keys at -inf) are 0: against the largest weight, 1, they are far below
// the sum's rounding. Sums in another order than a sequential loop (fp32).
float exp_shifted_sum(float* x, int64_t n, float shift);

}  // namespace purbo
