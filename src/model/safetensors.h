// Reader and writer of the safetensors format (one file):
//   [u64 little-endian header length N][N bytes of JSON header][data section]
// The header maps each tensor name to {"dtype", "shape" (outermost first), "data_offsets"
// [begin, end) relative to the data section}, plus an optional "__metadata__" string map.
// Tensors are returned as views into the mapping, which they keep alive.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/mapped-file.h"
#include "core/status.h"
#include "core/tensor.h"

namespace purbo {

// Headers larger than this are rejected before parsing (real headers are a few hundred KB).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;

struct SafetensorsEntry {
    std::string name;
    std::string dtype_name;  // as spelled in the file: "F32", "BF16", "I64", ...
    size_t element_bytes = 0;
    std::vector<int64_t> shape;  // outermost first; empty for a scalar
    int64_t numel = 1;
    uint64_t begin = 0;  // [begin, end) relative to the data section
    uint64_t end = 0;
};

class SafetensorsFile {
  public:
    // Maps and parses `path`; tensors keep the mapping alive.
    static Result<std::shared_ptr<SafetensorsFile>> open(const std::string& path);
    // Parses bytes owned by the caller (they must outlive the returned tensors);
    // `source_name` names the input in error messages.
    static Result<SafetensorsFile> parse(std::span<const uint8_t> bytes, std::string source_name);

    const std::string& source() const { return source_; }
    // Entries in the order of their data offsets.
    const std::vector<SafetensorsEntry>& entries() const { return entries_; }
    const SafetensorsEntry* find(std::string_view name) const;
    bool contains(std::string_view name) const { return find(name) != nullptr; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // A view of tensor `name` (F32, F16, BF16 or I32); kNotFound when absent, kUnsupported for
    // other dtypes or more than kMaxDims dimensions.
    Result<Tensor> tensor(std::string_view name) const;

  private:
    std::string source_;
    std::shared_ptr<void> keep_alive_;  // the MappedFile when opened from a path
    const uint8_t* data_section_ = nullptr;
    std::vector<SafetensorsEntry> entries_;
    std::map<std::string, size_t, std::less<>> index_;  // name -> entries_ position
    std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (CPU, F32/F16/BF16/I32) and `metadata` to `path` atomically.
// Tensor names must be unique and non-empty.
Status safetensors_write(const std::string& path,
                         std::span<const std::pair<std::string, Tensor>> tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace purbo
