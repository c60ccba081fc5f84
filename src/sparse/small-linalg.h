// Small dense linear algebra in double for the indexer initialisation: matrices of a head
// dimension (d <= 256), where simple O(d^3) algorithms take milliseconds and need no LAPACK.
// Matrices are row-major n x n std::vector<double>, element (i, j) at i * n + j.
#pragma once

#include <vector>

#include "core/status.h"

namespace purbo {

// Cholesky factor L (lower triangular, A = L L^T) of a symmetric positive definite n x n A.
// kInvalidArgument when a pivot is not positive (A not positive definite).
Result<std::vector<double>> cholesky_lower(const std::vector<double>& a, int n);

// Solves L^T x = b for x (back substitution), L lower triangular n x n with a non-zero diagonal.
std::vector<double> solve_lower_transposed(const std::vector<double>& l, int n,
                                           const std::vector<double>& b);

// Singular value decomposition A = U diag(s) V^T of a square n x n matrix, singular values in
// descending order. U's and V's columns are the singular vectors (row-major n x n, column j =
// vector j). Columns of U whose singular value is zero are zero vectors.
struct Svd {
    std::vector<double> u;
    std::vector<double> s;
    std::vector<double> v;
};

// One-sided Jacobi (Hestenes 1958; Demmel & Veselic 1992): rotates column pairs of A V until
// all are orthogonal to relative precision, so A V = U diag(s). Slower than LAPACK's
// bidiagonalisation but short, and accurate to working precision even for tiny singular
// values; at n = 64 it converges in under 10 sweeps (~1 ms).
Svd svd_jacobi(const std::vector<double>& a, int n);

}  // namespace purbo
