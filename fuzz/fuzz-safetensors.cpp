// libFuzzer target: SafetensorsFile::parse must return a Status for any input, never crash or
// read outside the buffer; every tensor it accepts must lie inside the buffer.
#include <cstddef>
#include <cstdint>
#include <span>

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto file = purbo::SafetensorsFile::parse(std::span<const uint8_t>(data, size), "fuzz");
    if (!file.is_ok()) return 0;
    volatile uint8_t sink = 0;
    for (const purbo::SafetensorsEntry& entry : file->entries()) {
        auto t = file->tensor(entry.name);
        if (!t.is_ok()) continue;
        // Touch the first and last byte so ASan sees any out-of-range view.
        const size_t nbytes = static_cast<size_t>(entry.end - entry.begin);
        if (nbytes > 0) {
            const auto* p = static_cast<const uint8_t*>(t->data);
            sink = sink ^ p[0] ^ p[nbytes - 1];
        }
    }
    (void)sink;
    return 0;
}
