#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/fp16.h"
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
