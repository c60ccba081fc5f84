// A read-only memory-mapped file. Model weights are used in place from the mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/status.h"

namespace purbo {

class MappedFile {
public:
    // Maps the whole file; an empty file maps to an empty span.
    static Result<std::shared_ptr<MappedFile>> open(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    const std::string& path() const { return path_; }

private:
    MappedFile() = default;
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Whole file into memory (small text files: JSON, templates).
Result<std::string> read_text_file(const std::string& path);
// Writes to `path.tmp` and renames, so a reader never sees a half-written file.
Status write_file_atomic(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace purbo
