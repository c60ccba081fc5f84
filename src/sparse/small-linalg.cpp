#include "sparse/small-linalg.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace purbo {

Result<std::vector<double>> cholesky_lower(const std::vector<double>& a, int n) {
    PURBO_ASSERT(a.size() == static_cast<size_t>(n) * n);
    std::vector<double> l(a.size(), 0.0);
    const auto at = [n](int i, int j) { return static_cast<size_t>(i) * n + j; };
    for (int j = 0; j < n; ++j) {
        double diag = a[at(j, j)];
        for (int k = 0; k < j; ++k) diag -= l[at(j, k)] * l[at(j, k)];
        if (!(diag > 0.0))
            return error(StatusCode::kInvalidArgument,
                         "cholesky: matrix is not positive definite (pivot {} is {})", j, diag);
        const double ljj = std::sqrt(diag);
        l[at(j, j)] = ljj;
        for (int i = j + 1; i < n; ++i) {
            double sum = a[at(i, j)];
            for (int k = 0; k < j; ++k) sum -= l[at(i, k)] * l[at(j, k)];
            l[at(i, j)] = sum / ljj;
        }
    }
    return l;
}

std::vector<double> solve_lower_transposed(const std::vector<double>& l, int n,
                                           const std::vector<double>& b) {
    PURBO_ASSERT(l.size() == static_cast<size_t>(n) * n && b.size() == static_cast<size_t>(n));
    // L^T is upper triangular with (L^T)(i, k) = L(k, i).
    std::vector<double> x(b);
    for (int i = n - 1; i >= 0; --i) {
        double sum = x[static_cast<size_t>(i)];
        for (int k = i + 1; k < n; ++k)
            sum -= l[static_cast<size_t>(k) * n + i] * x[static_cast<size_t>(k)];
        x[static_cast<size_t>(i)] = sum / l[static_cast<size_t>(i) * n + i];
    }
    return x;
}

Svd svd_jacobi(const std::vector<double>& a, int n) {
    PURBO_ASSERT(a.size() == static_cast<size_t>(n) * n);
    const auto at = [n](int i, int j) { return static_cast<size_t>(i) * n + j; };
    std::vector<double> w(a);  // becomes A V, whose columns are s_j u_j
    std::vector<double> v(a.size(), 0.0);
    for (int i = 0; i < n; ++i) v[at(i, i)] = 1.0;

    // Columns p, q count as orthogonal when |<w_p, w_q>| <= kTol ||w_p|| ||w_q||: a few ulps,
    // the precision the rotations themselves reach.
    constexpr double kTol = 4 * std::numeric_limits<double>::epsilon();
    // Convergence is quadratic once the off-diagonal mass is small; 60 sweeps is far beyond
    // what any matrix needs (tests at n = 64 converge in < 10) and only guards the loop.
    constexpr int kMaxSweeps = 60;
    for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
        bool rotated = false;
        for (int p = 0; p < n - 1; ++p) {
            for (int q = p + 1; q < n; ++q) {
                double alpha = 0, beta = 0, gamma = 0;
                for (int i = 0; i < n; ++i) {
                    const double wp = w[at(i, p)], wq = w[at(i, q)];
                    alpha += wp * wp;
                    beta += wq * wq;
                    gamma += wp * wq;
                }
                if (alpha == 0.0 || beta == 0.0 ||
                    std::abs(gamma) <= kTol * std::sqrt(alpha * beta))
                    continue;
                rotated = true;
                // The rotation that zeroes the (p, q) entry of the Gram matrix W^T W.
                const double zeta = (beta - alpha) / (2.0 * gamma);
                const double t =
                    std::copysign(1.0, zeta) / (std::abs(zeta) + std::sqrt(1.0 + zeta * zeta));
                const double c = 1.0 / std::sqrt(1.0 + t * t);
                const double s = c * t;
                for (int i = 0; i < n; ++i) {
                    const double wp = w[at(i, p)], wq = w[at(i, q)];
                    w[at(i, p)] = c * wp - s * wq;
                    w[at(i, q)] = s * wp + c * wq;
                    const double vp = v[at(i, p)], vq = v[at(i, q)];
                    v[at(i, p)] = c * vp - s * vq;
                    v[at(i, q)] = s * vp + c * vq;
                }
            }
        }
        if (!rotated) break;
    }

    std::vector<double> norms(static_cast<size_t>(n));
    for (int j = 0; j < n; ++j) {
        double sum = 0;
        for (int i = 0; i < n; ++i) sum += w[at(i, j)] * w[at(i, j)];
        norms[static_cast<size_t>(j)] = std::sqrt(sum);
    }
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) {
        return norms[static_cast<size_t>(x)] > norms[static_cast<size_t>(y)];
    });
    const double s_max = n > 0 ? norms[static_cast<size_t>(order[0])] : 0.0;
    // Below this a column is rounding noise of the rotations, not a direction of A.
    const double s_zero = s_max * n * std::numeric_limits<double>::epsilon();

    Svd out;
    out.u.assign(a.size(), 0.0);
    out.v.assign(a.size(), 0.0);
    out.s.assign(static_cast<size_t>(n), 0.0);
    for (int jj = 0; jj < n; ++jj) {
        const int j = order[static_cast<size_t>(jj)];
        const double s = norms[static_cast<size_t>(j)];
        out.s[static_cast<size_t>(jj)] = s;
        for (int i = 0; i < n; ++i) {
            out.v[at(i, jj)] = v[at(i, j)];
            if (s > s_zero) out.u[at(i, jj)] = w[at(i, j)] / s;
        }
    }
    return out;
}

}  // namespace purbo
