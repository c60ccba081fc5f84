// The indexer's SVD initialisation and the small linear algebra under it, on synthetic data
// whose best rank-r bilinear form is known. (Recall on the real model: tests/train.)
#include <cmath>
#include <random>

#include "sparse/indexer-init.h"
#include "sparse/small-linalg.h"
#include "test-util.h"

namespace purbo {
namespace {

using Matrix = std::vector<double>;  // row-major n x n

Matrix random_matrix(std::mt19937& rng, int n) {
    std::normal_distribution<double> normal;
    Matrix a(static_cast<size_t>(n) * n);
    for (double& x : a) x = normal(rng);
    return a;
}

Matrix multiply(const Matrix& a, const Matrix& b, int n) {
    Matrix c(a.size(), 0.0);
    for (int i = 0; i < n; ++i)
        for (int k = 0; k < n; ++k)
            for (int j = 0; j < n; ++j)
                c[static_cast<size_t>(i * n + j)] +=
                    a[static_cast<size_t>(i * n + k)] * b[static_cast<size_t>(k * n + j)];
    return c;
}

Matrix transpose(const Matrix& a, int n) {
    Matrix t(a.size());
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
            t[static_cast<size_t>(j * n + i)] = a[static_cast<size_t>(i * n + j)];
    return t;
}

double max_abs_diff(const Matrix& a, const Matrix& b) {
    double m = 0;
    for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
    return m;
}

TEST(SmallLinalg, CholeskyAndSolve) {
    std::mt19937 rng(1);
    const int n = 24;
    const Matrix g = random_matrix(rng, n);
    Matrix a = multiply(g, transpose(g, n), n);  // SPD
    for (int i = 0; i < n; ++i) a[static_cast<size_t>(i * n + i)] += 0.1;
    auto l = cholesky_lower(a, n);
    ASSERT_TRUE(l.is_ok()) << l.status().message();
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) EXPECT_EQ((*l)[static_cast<size_t>(i * n + j)], 0.0);
    // Well conditioned (cond ~ 1e4): 1e-9 leaves a margin of 1e3 over double rounding.
    EXPECT_LT(max_abs_diff(multiply(*l, transpose(*l, n), n), a), 1e-9);
    std::vector<double> b(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) b[static_cast<size_t>(i)] = std::sin(i + 1.0);
    const std::vector<double> x = solve_lower_transposed(*l, n, b);
    for (int i = 0; i < n; ++i) {
        double lt_x = 0;  // (L^T x)_i
        for (int k = 0; k < n; ++k)
            lt_x += (*l)[static_cast<size_t>(k * n + i)] * x[static_cast<size_t>(k)];
        EXPECT_NEAR(lt_x, b[static_cast<size_t>(i)], 1e-9);
    }
    Matrix not_pd = a;
    not_pd[0] = -1.0;
    EXPECT_FALSE(cholesky_lower(not_pd, n).is_ok());
}

TEST(SmallLinalg, JacobiSvd) {
    std::mt19937 rng(2);
    const int n = 64;
    const Matrix a = random_matrix(rng, n);
    const Svd svd = svd_jacobi(a, n);
    for (int i = 1; i < n; ++i)
        EXPECT_GE(svd.s[static_cast<size_t>(i - 1)], svd.s[static_cast<size_t>(i)]);
    Matrix us(a.size());
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j)
            us[static_cast<size_t>(i * n + j)] =
                svd.u[static_cast<size_t>(i * n + j)] * svd.s[static_cast<size_t>(j)];
    // Jacobi reaches working precision: entries O(1), n = 64 -> errors ~ n * eps ~ 1e-14.
    EXPECT_LT(max_abs_diff(multiply(us, transpose(svd.v, n), n), a), 1e-11);
    Matrix identity(a.size(), 0.0);
    for (int i = 0; i < n; ++i) identity[static_cast<size_t>(i * n + i)] = 1.0;
    EXPECT_LT(max_abs_diff(multiply(transpose(svd.u, n), svd.u, n), identity), 1e-11);
    EXPECT_LT(max_abs_diff(multiply(transpose(svd.v, n), svd.v, n), identity), 1e-11);

    // Rank 3: the other singular values vanish and their U columns are zero.
    Matrix low(a.size(), 0.0);
    for (int t = 0; t < 3; ++t) {
        const Matrix x = random_matrix(rng, n);
        for (int i = 0; i < n; ++i)
            for (int j = 0; j < n; ++j)
                low[static_cast<size_t>(i * n + j)] +=
                    x[static_cast<size_t>(i)] * x[static_cast<size_t>(n + j)];
    }
    const Svd low_svd = svd_jacobi(low, n);
    EXPECT_GT(low_svd.s[2], 1.0);
    EXPECT_LT(low_svd.s[3], 1e-10 * low_svd.s[0]);
}

// Synthetic head data: rows x = B z + noise with B (d, k) fixed, z ~ N(0, diag(spread)).
struct Data {
    std::vector<float> values;
    RowsView view(int64_t rows, int d) const { return {values.data(), rows, d, d}; }
};

Data synthetic(std::mt19937& rng, int64_t rows, int d, const std::vector<double>& basis, int k,
               double noise) {
    std::normal_distribution<double> normal;
    Data data;
    data.values.resize(static_cast<size_t>(rows * d));
    std::vector<double> z(static_cast<size_t>(k));
    for (int64_t t = 0; t < rows; ++t) {
        for (int j = 0; j < k; ++j) z[static_cast<size_t>(j)] = normal(rng) * (1.0 + j);
        for (int i = 0; i < d; ++i) {
            double x = noise * normal(rng);
            for (int j = 0; j < k; ++j)
                x += basis[static_cast<size_t>(i * k + j)] * z[static_cast<size_t>(j)];
            data.values[static_cast<size_t>(t * d + i)] = static_cast<float>(x);
        }
    }
    return data;
}

// M = Wq^T Wk (d, d) in double.
Matrix bilinear(const HeadIndexerInit& init, int r, int d) {
    Matrix m(static_cast<size_t>(d) * d, 0.0);
    for (int t = 0; t < r; ++t)
        for (int i = 0; i < d; ++i)
            for (int j = 0; j < d; ++j)
                m[static_cast<size_t>(i * d + j)] +=
                    static_cast<double>(init.wq[static_cast<size_t>(t * d + i)]) *
                    init.wk[static_cast<size_t>(t * d + j)];
    return m;
}

// Over all (query, key) pairs: mean (q^T (scale I - M) k)^2 and its ratio to mean (scale q^T k)^2.
struct FormError {
    double mean_sq = 0;
    double relative = 0;
};

FormError form_error(const RowsView& q, const RowsView& k, const Matrix& m, float scale) {
    const int d = q.cols;
    double num = 0, den = 0;
    std::vector<double> mk(static_cast<size_t>(d));
    for (int64_t b = 0; b < k.rows; ++b) {
        for (int i = 0; i < d; ++i) {
            double s = 0;
            for (int j = 0; j < d; ++j) s += m[static_cast<size_t>(i * d + j)] * k.row(b)[j];
            mk[static_cast<size_t>(i)] = s;
        }
        for (int64_t a = 0; a < q.rows; ++a) {
            double dense = 0, approx = 0;
            for (int i = 0; i < d; ++i) {
                dense += static_cast<double>(q.row(a)[i]) * k.row(b)[i];
                approx += q.row(a)[i] * mk[static_cast<size_t>(i)];
            }
            dense *= scale;
            num += (dense - approx) * (dense - approx);
            den += dense * dense;
        }
    }
    const double pairs = static_cast<double>(q.rows * k.rows);
    return {num / pairs, num / den};
}

TEST(IndexerInit, CapturesLowRankStructure) {
    std::mt19937 rng(3);
    const int d = 32, r = 4;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    std::normal_distribution<double> normal;
    std::vector<double> basis(static_cast<size_t>(d * r));
    for (double& b : basis) b = normal(rng);
    // Queries and keys share an r-dim subspace up to 1% noise: q^T k lives on it.
    const Data q = synthetic(rng, 300, d, basis, r, 0.01);
    const Data k = synthetic(rng, 400, d, basis, r, 0.01);
    auto init = indexer_init_svd(q.view(300, d), k.view(400, d), r, scale);
    ASSERT_TRUE(init.is_ok()) << init.status().message();
    const Matrix m = bilinear(*init, r, d);
    const FormError svd_error = form_error(q.view(300, d), k.view(400, d), m, scale);
    // The optimum is s times the projector onto the shared subspace, exact whenever q or k has
    // no noise: only the noise x noise term is left, ~ (noise / signal)^4 ~ 1e-8 / d (measured
    // 8e-13). 1e-6 is far below what a wrong subspace gives (~1, the random baseline 0.36).
    EXPECT_LT(svd_error.relative, 1e-6);

    const HeadIndexerInit random = indexer_init_random(r, d, scale, 7);
    const FormError random_error =
        form_error(q.view(300, d), k.view(400, d), bilinear(random, r, d), scale);
    EXPECT_GT(random_error.relative, 100 * svd_error.relative);

    // Wq^T Wk has rank r exactly (a product through r dims).
    const Svd svd = svd_jacobi(m, d);
    EXPECT_GT(svd.s[static_cast<size_t>(r - 1)], 1e-3 * svd.s[0]);
    EXPECT_LT(svd.s[static_cast<size_t>(r)], 1e-10 * svd.s[0]);
}

TEST(IndexerInit, ErrorIsTheDiscardedSpectrum) {
    // Full-rank anisotropic data, no ridge: the mean squared error of the form over all pairs
    // is tr(D^T Cq D Ck) with the empirical moments, which the construction makes equal to
    // sum_{i > r} s_i^2 (Eckart-Young) up to rounding.
    std::mt19937 rng(4);
    const int d = 16;
    std::normal_distribution<double> normal;
    std::vector<double> basis(static_cast<size_t>(d * d));
    for (double& b : basis) b = normal(rng);
    const Data q = synthetic(rng, 200, d, basis, d, 0.1);
    const Data k = synthetic(rng, 150, d, basis, d, 0.1);
    const float scale = 0.25f;
    IndexerInitOptions opt;
    opt.ridge = 0.0;
    for (int r : {1, 4, 9, 16}) {
        auto init = indexer_init_svd(q.view(200, d), k.view(150, d), r, scale, opt);
        ASSERT_TRUE(init.is_ok()) << init.status().message();
        double discarded = 0;
        for (int i = r; i < d; ++i)
            discarded += init->singular_values[static_cast<size_t>(i)] *
                         init->singular_values[static_cast<size_t>(i)];
        const FormError e =
            form_error(q.view(200, d), k.view(150, d), bilinear(*init, r, d), scale);
        // Rounding Wq, Wk to f32 (relative 6e-8) moves M = Wq^T Wk within the tangent space of
        // the rank-r matrices, where the error's gradient vanishes at the optimum: the error
        // changes at second order, ~(6e-8)^2 of the total energy (measured 1e-14 relative).
        // 1e-10 leaves room for the double sums over 3e4 pairs.
        double total = 0;
        for (double s : init->singular_values) total += s * s;
        EXPECT_NEAR(e.mean_sq, discarded, 1e-10 * total) << "r = " << r;
        if (r == d) {
            // Full rank reproduces scale * I.
            const Matrix m = bilinear(*init, r, d);
            for (int i = 0; i < d; ++i)
                for (int j = 0; j < d; ++j)
                    EXPECT_NEAR(m[static_cast<size_t>(i * d + j)], i == j ? scale : 0.0, 1e-5);
        }
    }
}

TEST(IndexerInit, RejectsBadArguments) {
    std::vector<float> x(8 * 4, 1.0f);
    const RowsView v{x.data(), 8, 4, 4};
    EXPECT_FALSE(indexer_init_svd(v, v, 0, 0.5f).is_ok());
    EXPECT_FALSE(indexer_init_svd(v, v, 5, 0.5f).is_ok());
    const RowsView three{x.data(), 8, 4, 3};
    EXPECT_FALSE(indexer_init_svd(v, three, 2, 0.5f).is_ok());
    std::vector<float> zeros(8 * 4, 0.0f);
    auto all_zero = indexer_init_svd({zeros.data(), 8, 4, 4}, v, 2, 0.5f);
    ASSERT_FALSE(all_zero.is_ok());
    EXPECT_NE(all_zero.status().message().find("queries"), std::string::npos);
    // Rank-one data still factors thanks to the ridge.
    EXPECT_TRUE(indexer_init_svd(v, v, 2, 0.5f).is_ok());
}

}  // namespace
}  // namespace purbo
