// Block formats: known values built by hand, bit-exact agreement with gguf-py (fixtures from
// scripts/gen_gguf_fixtures.py), and error bounds of the reference quantisers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "core/fp16.h"
#include "core/mapped-file.h"
#include "core/quants.h"
#include "test-util.h"

namespace purbo {
namespace {

using nlohmann::json;

std::vector<uint8_t> from_hex(const std::string& hex) {
    std::vector<uint8_t> out(hex.size() / 2);
    for (size_t i = 0; i < out.size(); ++i)
        out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    return out;
}

std::vector<float> floats(const json& j) {
    std::vector<float> out;
    for (const auto& v : j) out.push_back(static_cast<float>(v.get<double>()));
    return out;
}

const json& quant_fixtures() {
    static const json doc = [] {
        Result<std::string> text = read_text_file(test::fixture_path("gguf/quants.json"));
        PURBO_ASSERT(text.is_ok(), "{}", text.status().to_string());
        return json::parse(*text);
    }();
    return doc;
}

// Bitwise equality (so -0.0 vs 0.0 and last-ulp differences count), reporting the first diff.
void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& want,
                       const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) {
        uint32_t a, b;
        std::memcpy(&a, &got[i], 4);
        std::memcpy(&b, &want[i], 4);
        ASSERT_EQ(a, b) << what << ": element " << i << ": got " << got[i] << ", gguf-py "
                        << want[i];
    }
}

struct FormatCase {
    const char* key;
    DType dtype;
};

// ---- known values, computed by hand from the block layouts ----

TEST(Quants, Q8_0KnownValues) {
    BlockQ8_0 b{};
    b.d = f32_to_f16(2.0f);
    for (int i = 0; i < 32; ++i) b.qs[i] = static_cast<int8_t>(i - 16);
    float y[32];
    dequantize_row(DType::kQ8_0, &b, y, 32);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 2.0f * static_cast<float>(i - 16)) << i;
}

TEST(Quants, Q4_0KnownValues) {
    BlockQ4_0 b{};
    b.d = f32_to_f16(0.5f);
    for (int i = 0; i < 16; ++i) b.qs[i] = static_cast<uint8_t>(0x90 | i);  // low: i, high: 9
    float y[32];
    dequantize_row(DType::kQ4_0, &b, y, 32);
    for (int i = 0; i < 16; ++i) EXPECT_EQ(y[i], 0.5f * static_cast<float>(i - 8)) << i;
    for (int i = 16; i < 32; ++i) EXPECT_EQ(y[i], 0.5f) << i;  // (9 - 8) * 0.5
}

TEST(Quants, Q4_1KnownValues) {
    BlockQ4_1 b{};
    b.d = f32_to_f16(0.25f);
    b.m = f32_to_f16(-3.0f);
    for (int i = 0; i < 16; ++i) b.qs[i] = static_cast<uint8_t>((15 - i) << 4 | i);
    float y[32];
    dequantize_row(DType::kQ4_1, &b, y, 32);
    for (int i = 0; i < 16; ++i) {
        EXPECT_EQ(y[i], 0.25f * static_cast<float>(i) - 3.0f) << i;
        EXPECT_EQ(y[16 + i], 0.25f * static_cast<float>(15 - i) - 3.0f) << i;
    }
}

TEST(Quants, Q5_0AndQ5_1KnownValues) {
    // Element e takes its fifth bit from bit e of qh (little-endian u32): set it for odd e.
    BlockQ5_0 b0{};
    BlockQ5_1 b1{};
    b0.d = b1.d = f32_to_f16(1.0f);
    b1.m = f32_to_f16(0.5f);
    for (int i = 0; i < 4; ++i) b0.qh[i] = b1.qh[i] = 0xAA;
    for (int i = 0; i < 16; ++i) b0.qs[i] = b1.qs[i] = static_cast<uint8_t>(0x30 | (i & 0x0F));
    float y0[32], y1[32];
    dequantize_row(DType::kQ5_0, &b0, y0, 32);
    dequantize_row(DType::kQ5_1, &b1, y1, 32);
    for (int e = 0; e < 32; ++e) {
        const int q = (e < 16 ? e : 3) | ((e % 2) << 4);
        EXPECT_EQ(y0[e], static_cast<float>(q - 16)) << e;
        EXPECT_EQ(y1[e], static_cast<float>(q) + 0.5f) << e;
    }
}

TEST(Quants, Q6_KKnownValues) {
    // All ql nibbles 5, all qh pairs 2: q = 5 | 2 << 4 = 37, value = d * scale * (37 - 32).
    BlockQ6_K b{};
    std::memset(b.ql, 0x55, sizeof(b.ql));
    std::memset(b.qh, 0xAA, sizeof(b.qh));
    for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<int8_t>(s - 8);
    b.d = f32_to_f16(0.5f);
    float y[256];
    dequantize_row(DType::kQ6_K, &b, y, 256);
    for (int e = 0; e < 256; ++e)
        EXPECT_EQ(y[e], 0.5f * static_cast<float>(e / 16 - 8) * 5.0f) << e;
}

TEST(Quants, Q4_KKnownValues) {
    // Scales j < 4 in the low 6 bits of bytes 0..3, mins in bytes 4..7; j >= 4 split over
    // byte j + 4 (low 4 bits) and the top 2 bits of bytes j - 4 / j.
    BlockQ4_K b{};
    b.d = f32_to_f16(1.0f);
    b.dmin = f32_to_f16(0.5f);
    const int sc[8] = {1, 2, 3, 4, 17, 33, 49, 63};
    const int mn[8] = {0, 1, 2, 3, 20, 36, 52, 60};
    for (int j = 0; j < 4; ++j) {
        b.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        b.scales[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
        b.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4));
    }
    for (int g = 0; g < 4; ++g) std::memset(b.qs + 32 * g, 0x73, 32);  // low nibble 3, high 7
    float y[256];
    dequantize_row(DType::kQ4_K, &b, y, 256);
    for (int e = 0; e < 256; ++e) {
        const int j = e / 32;
        const int q = (e % 64) < 32 ? 3 : 7;
        EXPECT_EQ(y[e], static_cast<float>(sc[j] * q) - 0.5f * static_cast<float>(mn[j])) << e;
    }
}

TEST(Quants, DequantizeSupported) {
    EXPECT_FALSE(dequantize_supported(DType::kI32));
    for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ8_0,
                    DType::kQ2_K, DType::kQ6_K, DType::kQ8_K}) {
        EXPECT_TRUE(dequantize_supported(d)) << dtype_name(d);
    }
}

// ---- bit-exact agreement with gguf-py ----

TEST(Quants, DequantizeMatchesGgufPy) {
    const FormatCase cases[] = {
        {"q4_0", DType::kQ4_0}, {"q4_1", DType::kQ4_1}, {"q5_0", DType::kQ5_0},
        {"q5_1", DType::kQ5_1}, {"q8_0", DType::kQ8_0}, {"bf16", DType::kBF16},
        {"q2_k", DType::kQ2_K}, {"q3_k", DType::kQ3_K}, {"q4_k", DType::kQ4_K},
        {"q5_k", DType::kQ5_K}, {"q6_k", DType::kQ6_K},
    };
    for (const FormatCase& c : cases) {
        const json& f = quant_fixtures().at(c.key);
        const std::vector<uint8_t> blocks = from_hex(f.at("blocks_hex").get<std::string>());
        const std::vector<float> want = floats(f.at("dequant"));
        ASSERT_EQ(blocks.size(), dtype_row_bytes(c.dtype, static_cast<int64_t>(want.size())))
            << c.key;
        std::vector<float> got(want.size());
        dequantize_row(c.dtype, blocks.data(), got.data(), static_cast<int64_t>(got.size()));
        expect_bits_equal(got, want, c.key);
    }
}

TEST(Quants, QuantizeMatchesGgufPy) {
    struct Q {
        const char* key;
        DType dtype;
        void (*quantize)(const float*, void*, int64_t);
    };
    const Q cases[] = {{"q8_0", DType::kQ8_0, quantize_row_q8_0},
                       {"q4_0", DType::kQ4_0, quantize_row_q4_0},
                       {"q4_1", DType::kQ4_1, quantize_row_q4_1}};
    for (const Q& c : cases) {
        const json& f = quant_fixtures().at(c.key);
        const std::vector<float> input = floats(f.at("input"));
        const std::vector<uint8_t> want = from_hex(f.at("blocks_hex").get<std::string>());
        std::vector<uint8_t> got(dtype_row_bytes(c.dtype, static_cast<int64_t>(input.size())));
        ASSERT_EQ(got.size(), want.size()) << c.key;
        c.quantize(input.data(), got.data(), static_cast<int64_t>(input.size()));
        for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_EQ(got[i], want[i]) << c.key << ": byte " << i << " (block "
                                       << i / dtype_traits(c.dtype).block_bytes << ")";
        }
    }
}

// ---- quantise -> dequantise error bounds ----

std::vector<float> random_row(int64_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = dist(rng);
    for (int64_t i = 0; i < 32; ++i) x[static_cast<size_t>(32 + i)] = 0.0f;  // an all-zero block
    return x;
}

// Slack for the float32 arithmetic of x * (1 / d) and the dequantising product: a few ulps of
// the block's largest magnitude.
float float_slack(float amax) {
    return 4.0f * amax * std::numeric_limits<float>::epsilon();
}

TEST(Quants, Q8_0RoundTripError) {
    const int64_t n = 32 * 64;
    const std::vector<float> x = random_row(n, 1);
    std::vector<BlockQ8_0> q(static_cast<size_t>(n / 32));
    std::vector<float> y(static_cast<size_t>(n));
    quantize_row_q8_0(x.data(), q.data(), n);
    dequantize_row(DType::kQ8_0, q.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
        float amax = 0.0f;
        for (int i = 0; i < 32; ++i)
            amax = std::max(amax, std::fabs(x[static_cast<size_t>(b * 32 + i)]));
        const float d = amax / 127.0f;
        const float dh = f16_to_f32(q[static_cast<size_t>(b)].d);
        // Rounding to the nearest q costs d / 2; storing d as f16 moves each of up to 127
        // steps by |d - dh|.
        const float bound = d / 2 + 127.0f * std::fabs(d - dh) + float_slack(amax);
        for (int i = 0; i < 32; ++i) {
            const size_t k = static_cast<size_t>(b * 32 + i);
            ASSERT_LE(std::fabs(y[k] - x[k]), bound) << "block " << b << " element " << i;
        }
    }
}

TEST(Quants, Q8_1RoundTripErrorAndSum) {
    const int64_t n = 32 * 64;
    const std::vector<float> x = random_row(n, 2);
    std::vector<BlockQ8_1> q(static_cast<size_t>(n / 32));
    std::vector<float> y(static_cast<size_t>(n));
    quantize_row_q8_1(x.data(), q.data(), n);
    dequantize_row(DType::kQ8_1, q.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
        const BlockQ8_1& blk = q[static_cast<size_t>(b)];
        float amax = 0.0f;
        int sum = 0;
        for (int i = 0; i < 32; ++i) {
            amax = std::max(amax, std::fabs(x[static_cast<size_t>(b * 32 + i)]));
            sum += blk.qs[i];
        }
        const float d = amax / 127.0f;
        const float dh = f16_to_f32(blk.d);
        const float bound = d / 2 + 127.0f * std::fabs(d - dh) + float_slack(amax);  // as q8_0
        for (int i = 0; i < 32; ++i) {
            const size_t k = static_cast<size_t>(b * 32 + i);
            ASSERT_LE(std::fabs(y[k] - x[k]), bound) << "block " << b << " element " << i;
        }
        // s is sum(q) * d (f32 d) rounded once to f16.
        EXPECT_EQ(blk.s, f32_to_f16(static_cast<float>(sum) * d)) << "block " << b;
    }
}

TEST(Quants, Q4_0RoundTripError) {
    const int64_t n = 32 * 64;
    const std::vector<float> x = random_row(n, 3);
    std::vector<BlockQ4_0> q(static_cast<size_t>(n / 32));
    std::vector<float> y(static_cast<size_t>(n));
    quantize_row_q4_0(x.data(), q.data(), n);
    dequantize_row(DType::kQ4_0, q.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < 32; ++i) {
            const float v = x[static_cast<size_t>(b * 32 + i)];
            if (std::fabs(v) > amax) {
                amax = std::fabs(v);
                max = v;
            }
        }
        const float d = std::fabs(max / -8.0f);
        const float dh = std::fabs(f16_to_f32(q[static_cast<size_t>(b)].d));
        // x / d lies in [-8, 8]; q - 8 in [-8, 7]: rounding costs d / 2 except at +8, clipped
        // to 7, which costs d. f16 storage of d moves each of up to 8 steps by |d - dh|.
        const float bound = d + 8.0f * std::fabs(d - dh) + float_slack(amax);
        for (int i = 0; i < 32; ++i) {
            const size_t k = static_cast<size_t>(b * 32 + i);
            ASSERT_LE(std::fabs(y[k] - x[k]), bound) << "block " << b << " element " << i;
        }
    }
}

TEST(Quants, Q4_1RoundTripError) {
    const int64_t n = 32 * 64;
    const std::vector<float> x = random_row(n, 4);
    std::vector<BlockQ4_1> q(static_cast<size_t>(n / 32));
    std::vector<float> y(static_cast<size_t>(n));
    quantize_row_q4_1(x.data(), q.data(), n);
    dequantize_row(DType::kQ4_1, q.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
        float lo = x[static_cast<size_t>(b * 32)], hi = lo;
        for (int i = 0; i < 32; ++i) {
            lo = std::min(lo, x[static_cast<size_t>(b * 32 + i)]);
            hi = std::max(hi, x[static_cast<size_t>(b * 32 + i)]);
        }
        const float d = (hi - lo) / 15.0f;
        const float dh = f16_to_f32(q[static_cast<size_t>(b)].d);
        const float mh = f16_to_f32(q[static_cast<size_t>(b)].m);
        // (x - min) / d in [0, 15] rounds to the nearest q: d / 2; f16 storage of d moves up to
        // 15 steps by |d - dh| and the offset by |min - mh|.
        const float amax = std::max(std::fabs(lo), std::fabs(hi));
        const float bound =
            d / 2 + 15.0f * std::fabs(d - dh) + std::fabs(lo - mh) + float_slack(amax);
        for (int i = 0; i < 32; ++i) {
            const size_t k = static_cast<size_t>(b * 32 + i);
            ASSERT_LE(std::fabs(y[k] - x[k]), bound) << "block " << b << " element " << i;
        }
    }
}

TEST(Quants, Q8_KRoundTripErrorAndBsums) {
    const int64_t n = 256 * 8;
    std::vector<float> x = random_row(n, 5);
    for (int i = 0; i < 256; ++i)
        x[static_cast<size_t>(256 + i)] = 0.0f;  // an all-zero super-block
    std::vector<BlockQ8_K> q(static_cast<size_t>(n / 256));
    std::vector<float> y(static_cast<size_t>(n));
    quantize_row_q8_k(x.data(), q.data(), n);
    dequantize_row(DType::kQ8_K, q.data(), y.data(), n);
    for (int64_t b = 0; b < n / 256; ++b) {
        const BlockQ8_K& blk = q[static_cast<size_t>(b)];
        float amax = 0.0f;
        for (int i = 0; i < 256; ++i)
            amax = std::max(amax, std::fabs(x[static_cast<size_t>(b * 256 + i)]));
        // d is kept in f32: only the rounding to the nearest q, |d| / 2, plus float slack.
        const float bound = std::fabs(blk.d) / 2 + float_slack(amax);
        for (int i = 0; i < 256; ++i) {
            const size_t k = static_cast<size_t>(b * 256 + i);
            ASSERT_LE(std::fabs(y[k] - x[k]), bound) << "block " << b << " element " << i;
        }
        for (int g = 0; g < 16; ++g) {
            int sum = 0;
            for (int i = 0; i < 16; ++i) sum += blk.qs[g * 16 + i];
            EXPECT_EQ(blk.bsums[g], sum) << "block " << b << " group " << g;
        }
        if (b == 1) {
            EXPECT_EQ(blk.d, 0.0f);
        }
    }
}

TEST(Quants, HalfFormatsRoundTrip) {
    const std::vector<uint16_t> h = {0x0000, 0x8000, 0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00};
    const std::vector<float> want = {0.0f,    -0.0f, 1.0f, -2.0f, 65504.0f, 5.9604644775390625e-08f,
                                     INFINITY};
    std::vector<float> y(h.size());
    dequantize_row(DType::kF16, h.data(), y.data(), static_cast<int64_t>(h.size()));
    expect_bits_equal(y, want, "f16");
    const std::vector<uint16_t> bf = {0x3F80, 0xC040, 0x0000};  // 1, -3, 0
    std::vector<float> yb(bf.size());
    dequantize_row(DType::kBF16, bf.data(), yb.data(), 3);
    expect_bits_equal(yb, {1.0f, -3.0f, 0.0f}, "bf16");
}

}  // namespace
}  // namespace purbo
