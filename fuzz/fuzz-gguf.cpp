// Fuzz target: GgufFile::parse on arbitrary bytes; when they parse, dequantise a few rows of
// every tensor (the views must stay inside the input) and print every metadata value.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "core/quants.h"
#include "model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // A copy of exactly `size` bytes, so that ASan flags any read past the end.
    const std::vector<uint8_t> bytes(data, data + size);
    purbo::Result<purbo::GgufFile> file = purbo::GgufFile::parse(bytes, "fuzz.gguf");
    if (!file.is_ok()) return 0;
    size_t chars = 0;
    for (const auto& [key, value] : file->metadata())
        chars += key.size() + value.to_string().size();
    (void)chars;
    constexpr int64_t kMaxRows = 4;
    constexpr int64_t kMaxRowElements = 1 << 16;  // keeps each run fast; longer rows are skipped
    std::vector<float> row;
    for (const purbo::GgufTensorInfo& info : file->tensors()) {
        const purbo::Tensor t = file->tensor(info);
        if (!purbo::dequantize_supported(t.dtype) || t.row_size() > kMaxRowElements) continue;
        row.resize(static_cast<size_t>(t.row_size()));
        const int64_t rows = t.n_rows() < kMaxRows ? t.n_rows() : kMaxRows;
        for (int64_t r = 0; r < rows; ++r) {
            purbo::dequantize_row(t.dtype, t.row_ptr(r), row.data(), t.row_size());
        }
        // The last row too: the far end of the data range.
        purbo::dequantize_row(t.dtype, t.row_ptr(t.n_rows() - 1), row.data(), t.row_size());
    }
    return 0;
}
