// Element types of tensors. Quantised types follow the ggml block layouts so that GGUF data
// can be used without conversion (block layouts in core/quants.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace purbo {

enum class DType : uint8_t {
    kF32,
    kF16,
    kBF16,
    kI32,
    kQ4_0,
    kQ4_1,
    kQ5_0,
    kQ5_1,
    kQ8_0,
    kQ8_1,
    kQ2_K,
    kQ3_K,
    kQ4_K,
    kQ5_K,
    kQ6_K,
    kQ8_K,
    kF8E4M3,  // OCP e4m3 (core/fp8.h): cached index keys
};

struct DTypeTraits {
    std::string_view name;   // "f32", "q4_1", ... (as llama.cpp prints them)
    int64_t block_size;      // elements per block (1 for plain types)
    size_t block_bytes;      // bytes per block
    bool is_quantized;
};

const DTypeTraits& dtype_traits(DType dtype);
inline std::string_view dtype_name(DType d) { return dtype_traits(d).name; }
inline bool dtype_is_quantized(DType d) { return dtype_traits(d).is_quantized; }

// Bytes taken by a row of n elements; n must be a multiple of the block size.
size_t dtype_row_bytes(DType dtype, int64_t n);

}  // namespace purbo
