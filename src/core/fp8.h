// OCP 8-bit float E4M3 ("e4m3fn": 1 sign, 4 exponent bits of bias 7, 3 mantissa bits; no
// infinities; S.1111.111 is NaN; largest finite value 448, smallest subnormal 2^-9) <-> float.
// The conversion to 8 bits rounds to nearest even and saturates: values beyond +-448 (and
// infinities) become +-448, as CUDA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3).
// Used for cached index keys, whose 16 values per key and head are what decode selection reads.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace purbo {

// One e4m3 element in memory: a distinct type, so that overloads and templates tell an f8 key
// apart from other bytes.
struct F8E4M3 {
    uint8_t bits;
};
static_assert(sizeof(F8E4M3) == 1);

// The value of each of the 256 codes, written from the definition (the oracle of the faster
// decodings: cpu's vector path, cuda's hardware conversion).
inline float f8e4m3_to_f32(uint8_t v) {
    const int exponent = (v >> 3) & 0xF, mantissa = v & 0x7;
    const float sign = (v & 0x80) ? -1.0f : 1.0f;
    if (exponent == 0xF && mantissa == 0x7) return sign * std::nanf("");
    if (exponent == 0)
        return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m 2^-9
    return sign * std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
}

inline uint8_t f32_to_f8e4m3(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return sign | 0x7F;   // NaN
    if (magnitude >= 0x43e00000u) return sign | 0x7E;  // >= 448, infinity: saturate to 448
    if (magnitude < 0x3c800000u) {                     // below 2^-6: the subnormal steps of 2^-9
        float scaled;
        std::memcpy(&scaled, &magnitude, 4);
        // x 2^9 is exact; nearbyint rounds half to even (the default rounding mode). 8 steps
        // round up to the smallest normal, code 0x08, which is what 8 encodes.
        return sign | static_cast<uint8_t>(std::nearbyint(scaled * 512.0f));
    }
    // Normal: 23 mantissa bits to 3, half to even (a carry moves into the exponent, as it
    // should), then the exponent rebiased from 127 to 7. Below 448 the result stays <= 0x7E.
    const uint32_t rounded = magnitude + 0x7FFFFu + ((magnitude >> 20) & 1u);
    return sign | static_cast<uint8_t>((rounded >> 20) - (120u << 3));
}

}  // namespace purbo
