#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/fp16.h"
#include "core/fp8.h"
#include "core/mapped-file.h"
#include "core/status.h"
#include "core/tensor.h"
#include "test-util.h"

namespace purbo {
namespace {

Result<int> parse_positive(int x) {
    if (x <= 0) return error(StatusCode::kInvalidArgument, "value {} is not positive", x);
    return x;
}

Status use_try(int x, int* out) {
    PURBO_ASSIGN_OR_RETURN(int v, parse_positive(x));
    *out = v;
    return Status::ok();
}

TEST(Status, ResultCarriesValueOrError) {
    int out = 0;
    EXPECT_TRUE(use_try(3, &out).is_ok());
    EXPECT_EQ(out, 3);
    Status s = use_try(-1, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.to_string(), "invalid argument: value -1 is not positive");
    EXPECT_EQ(s.with_context("x.json").message(), "x.json: value -1 is not positive");
}

TEST(Fp16, HalfRoundTripsEveryValueExactly) {
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = f16_to_f32_portable(static_cast<uint16_t>(h));
        if (std::isnan(f)) continue;
        ASSERT_EQ(f32_to_f16_portable(f), h) << "half bits " << h;
        ASSERT_EQ(f16_to_f32(static_cast<uint16_t>(h)), f);
    }
}

TEST(Fp16, PortableRoundingMatchesHardwareOnRandomFloats) {
    uint32_t state = 12345;
    for (int i = 0; i < 200000; ++i) {
        state = state * 1664525u + 1013904223u;
        float f;
        uint32_t bits = (state & 0x8fffffffu) | 0x30000000u;  // magnitudes around the half range
        std::memcpy(&f, &bits, 4);
        ASSERT_EQ(f32_to_f16_portable(f), f32_to_f16(f)) << f;
    }
}

TEST(Fp16, Bf16RoundsToNearestEven) {
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
    EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
}

TEST(Fp8, E4M3CodesDecodeAsTheFormatDefines) {
    EXPECT_EQ(f8e4m3_to_f32(0x00), 0.0f);
    EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
    EXPECT_EQ(f8e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
    EXPECT_EQ(f8e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // the smallest normal
    EXPECT_EQ(f8e4m3_to_f32(0x38), 1.0f);
    EXPECT_EQ(f8e4m3_to_f32(0x39), 1.125f);
    EXPECT_EQ(f8e4m3_to_f32(0x7E), 448.0f);
    EXPECT_EQ(f8e4m3_to_f32(0xFE), -448.0f);
    EXPECT_EQ(f8e4m3_to_f32(0xB8), -1.0f);
    EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7F)));
    EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0xFF)));
    EXPECT_EQ(dtype_row_bytes(DType::kF8E4M3, 16), 16u);
}

// The nearest code by brute force over the 127 finite non-negative codes, ties to the even
// code (its last mantissa bit 0); beyond 448 the saturated 448.
uint8_t nearest_e4m3(float x) {
    const float magnitude = std::fabs(x);
    uint8_t best = 0x7E;
    if (magnitude < 448.0f) {
        double best_gap = std::numeric_limits<double>::infinity();
        for (int code = 0; code <= 0x7E; ++code) {
            const double gap = std::fabs(
                static_cast<double>(f8e4m3_to_f32(static_cast<uint8_t>(code))) - magnitude);
            if (gap < best_gap || (gap == best_gap && code % 2 == 0)) {
                best_gap = gap;
                best = static_cast<uint8_t>(code);
            }
        }
    }
    return static_cast<uint8_t>(best | (std::signbit(x) ? 0x80 : 0));
}

TEST(Fp8, E4M3RoundsToNearestEvenAndSaturates) {
    std::vector<float> xs = {0.0f,
                             -0.0f,
                             448.0f,
                             460.0f,
                             464.0f,
                             1e30f,
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(),
                             std::ldexp(1.0f, -10),
                             std::ldexp(3.0f, -11),
                             std::ldexp(1.0f, -12),
                             std::numeric_limits<float>::denorm_min()};
    // Every code, the midpoints between neighbours (the ties) and a hair either side of them.
    for (int code = 0; code < 0x7E; ++code) {
        const float lo = f8e4m3_to_f32(static_cast<uint8_t>(code)),
                    hi = f8e4m3_to_f32(static_cast<uint8_t>(code + 1));
        const float mid = (lo + hi) / 2;  // exact: both have few mantissa bits
        for (float x : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1000.0f)}) {
            xs.push_back(x);
            xs.push_back(-x);
        }
    }
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> log2_magnitude(-14.0f, 10.0f);
    for (int i = 0; i < 20000; ++i)
        xs.push_back((i % 2 ? -1.0f : 1.0f) * std::exp2(log2_magnitude(rng)));
    for (float x : xs) ASSERT_EQ(f32_to_f8e4m3(x), nearest_e4m3(x)) << x;
    // Round trips: every finite code converts back to itself.
    for (int code = 0; code < 256; ++code) {
        if ((code & 0x7F) == 0x7F) continue;
        ASSERT_EQ(f32_to_f8e4m3(f8e4m3_to_f32(static_cast<uint8_t>(code))), code) << code;
    }
    EXPECT_EQ(f32_to_f8e4m3(std::nanf("")) & 0x7F, 0x7F);
}

TEST(DType, RowBytesFollowBlockLayouts) {
    EXPECT_EQ(dtype_row_bytes(DType::kF32, 10), 40u);
    EXPECT_EQ(dtype_row_bytes(DType::kQ4_1, 576), 18u * 20u);
    EXPECT_EQ(dtype_row_bytes(DType::kQ6_K, 512), 2u * 210u);
}

TEST(Tensor, ReshapeAndRowsShareStorage) {
    Tensor t = tensor_cpu(DType::kF32, {4, 6});
    for (int i = 0; i < 24; ++i) t.f32()[i] = static_cast<float>(i);
    Tensor r = t.reshaped({2, 2, 6});
    EXPECT_EQ(r.describe(), "(2, 2, 6) f32");
    Tensor rows = t.rows(1, 3);
    EXPECT_EQ(rows.dim(0), 2);
    EXPECT_EQ(rows.f32()[0], 6.0f);
}

TEST(MappedFile, MissingFileIsNotFound) {
    auto r = MappedFile::open("/nonexistent/file.gguf");
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
    EXPECT_NE(r.status().message().find("/nonexistent/file.gguf"), std::string::npos);
}

TEST(MappedFile, AtomicWriteThenMap) {
    const std::string dir = test::temp_dir("mapped_file");
    const std::string path = dir + "/a.bin";
    const uint8_t bytes[] = {1, 2, 3};
    ASSERT_TRUE(write_file_atomic(path, bytes).is_ok());
    auto f = MappedFile::open(path);
    ASSERT_TRUE(f.is_ok());
    EXPECT_EQ((*f)->size(), 3u);
    EXPECT_EQ((*f)->data()[2], 3);
}

}  // namespace
}  // namespace purbo
