#include "core/dtype.h"

#include "core/status.h"

namespace purbo {

const DTypeTraits& dtype_traits(DType dtype) {
    // Block sizes and bytes of the ggml layouts (see core/quants.h for the structs).
    static const DTypeTraits kTraits[] = {
        {"f32", 1, 4, false},     {"f16", 1, 2, false},     {"bf16", 1, 2, false},
        {"i32", 1, 4, false},     {"q4_0", 32, 18, true},   {"q4_1", 32, 20, true},
        {"q5_0", 32, 22, true},   {"q5_1", 32, 24, true},   {"q8_0", 32, 34, true},
        {"q8_1", 32, 36, true},   {"q2_K", 256, 84, true},  {"q3_K", 256, 110, true},
        {"q4_K", 256, 144, true}, {"q5_K", 256, 176, true}, {"q6_K", 256, 210, true},
        {"q8_K", 256, 292, true}, {"f8_e4m3", 1, 1, false},
    };
    static_assert(sizeof(kTraits) / sizeof(kTraits[0]) == static_cast<size_t>(DType::kF8E4M3) + 1);
    return kTraits[static_cast<size_t>(dtype)];
}

size_t dtype_row_bytes(DType dtype, int64_t n) {
    const DTypeTraits& t = dtype_traits(dtype);
    PURBO_ASSERT(n % t.block_size == 0, "row of {} elements is not a multiple of the {} block size {}",
                 n, t.name, t.block_size);
    return static_cast<size_t>(n / t.block_size) * t.block_bytes;
}

}  // namespace purbo
