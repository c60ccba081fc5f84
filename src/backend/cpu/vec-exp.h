// Vectorised exponentials of the cpu backend: softmax weights (attention) and SiLU (swiglu).
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

// sum_t 2^(x[t] - shift) for t < n, x unchanged: the block masses of the top-p selection,
// which works in the log2 domain. The same polynomial after an exact reduction (about 2 ulp);
// terms below FLT_MIN (x - shift < -126) are 0.
float exp2_shifted_sum(const float* x, int64_t n, float shift);

// out[t] = silu(g[t]) * u[t] = g[t] / (1 + exp(-g[t])) * u[t], the exp as above (exp(-g) is
// clamped to [e^-87.3, e^88.37]: for g below -88 the result is ~g / 2.6e38 instead of
// g e^g, both under 1e-36). out may alias g or u.
void silu_mul(const float* g, const float* u, float* out, int64_t n);

}  // namespace purbo
