// Reader of GGUF files (llama.cpp's model format), versions 2 and 3, little-endian.
//
// Layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv (key, type, value)
// records, then n_tensors tensor infos (name, u32 n_dims, n_dims x u64 ne, u32 ggml type,
// u64 offset), then padding to general.alignment (default 32), then the tensor data; each
// tensor's offset is relative to the start of that data section.
//
// GGUF lists dimensions innermost first (ne[0] is the row length); GgufTensorInfo::shape and
// the Tensor views are outermost first: ne = [576, 192] is shape (192, 576).
//
// Every count, length, offset and id is checked against the bytes that remain; a malformed
// file gives a Status naming the file, the field and the value, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/mapped-file.h"
#include "core/status.h"
#include "core/tensor.h"

namespace purbo {

enum class GgufValueType : uint32_t {
    kU8 = 0,
    kI8 = 1,
    kU16 = 2,
    kI16 = 3,
    kU32 = 4,
    kI32 = 5,
    kF32 = 6,
    kBool = 7,
    kString = 8,
    kArray = 9,
    kU64 = 10,
    kI64 = 11,
    kF64 = 12,
};

// "u32", "string", "array", ...; "unknown" outside the enum.
std::string_view gguf_type_name(GgufValueType type);

// One metadata value. Scalars live in the field of their kind; arrays (type == kArray) keep
// their element type in array_type and their items in the vector of that kind.
struct GgufValue {
    GgufValueType type = GgufValueType::kU8;
    uint64_t uint_value = 0;   // kU8, kU16, kU32, kU64, kBool (0 or 1)
    int64_t int_value = 0;     // kI8, kI16, kI32, kI64
    double float_value = 0.0;  // kF32 (widened exactly), kF64
    std::string string_value;  // kString

    GgufValueType array_type = GgufValueType::kU8;  // element type when type == kArray
    std::vector<uint64_t> uint_items;
    std::vector<int64_t> int_items;
    std::vector<double> float_items;
    std::vector<std::string> string_items;

    bool is_array() const { return type == GgufValueType::kArray; }
    size_t array_size() const;
    // "u32 = 576", "array of 49152 string = [\"<|endoftext|>\", ...]": for `purbo inspect`.
    std::string to_string(size_t max_items = 8) const;
};

struct GgufTensorInfo {
    std::string name;
    DType dtype = DType::kF32;
    uint32_t ggml_type = 0;      // the id as stored
    std::vector<int64_t> shape;  // outermost first (reversed GGUF ne)
    uint64_t offset = 0;         // from the start of the data section
    size_t nbytes = 0;
    int64_t numel() const;
};

// ggml type id -> DType; kUnsupported for ids we do not read (IQ*, TQ*, I8, ...).
Result<DType> gguf_dtype_from_ggml_type(uint32_t ggml_type);
// "q4_K" for ids we know by name, else "type <id>".
std::string gguf_ggml_type_name(uint32_t ggml_type);

class GgufFile {
  public:
    // Maps the file; tensors are views into the mapping, which they keep alive.
    static Result<GgufFile> open(const std::string& path);
    // Parses bytes the caller keeps alive for as long as the file and its tensors are used
    // (tests, fuzzing). `source_name` stands for the file name in error messages.
    static Result<GgufFile> parse(std::span<const uint8_t> bytes, std::string source_name);

    const std::string& source_name() const { return source_name_; }
    uint32_t version() const { return version_; }
    size_t alignment() const { return alignment_; }
    size_t data_offset() const { return data_offset_; }  // start of the data section

    // Metadata in file order.
    const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
    const GgufValue* find(std::string_view key) const;

    // Typed getters: kNotFound when the key is missing, kInvalidArgument when its type does
    // not fit; both messages name the file, the key and the type found.
    Result<std::string> get_string(std::string_view key) const;
    Result<int64_t> get_int(std::string_view key) const;   // any integer type whose value fits
    Result<double> get_float(std::string_view key) const;  // f32 or f64
    Result<bool> get_bool(std::string_view key) const;
    Result<std::vector<std::string>> get_string_array(std::string_view key) const;
    Result<std::vector<int64_t>> get_int_array(std::string_view key) const;
    Result<std::vector<double>> get_float_array(std::string_view key) const;

    const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
    const GgufTensorInfo* find_tensor(std::string_view name) const;
    // A read-only view (shape outermost first) into the mapping; kNotFound if absent. The
    // mapping is PROT_READ: writing through the view faults.
    Result<Tensor> tensor(std::string_view name) const;
    Tensor tensor(const GgufTensorInfo& info) const;

  private:
    GgufFile() = default;
    Status parse_header();
    Status check_value_type(std::string_view key, const GgufValue*& value, GgufValueType want,
                            std::string_view want_name) const;

    std::string source_name_;
    std::shared_ptr<MappedFile> mapping_;  // null when parsed from caller-owned bytes
    std::span<const uint8_t> bytes_;
    uint32_t version_ = 0;
    size_t alignment_ = 32;
    size_t data_offset_ = 0;
    std::vector<std::pair<std::string, GgufValue>> metadata_;
    std::map<std::string, size_t, std::less<>> metadata_index_;
    std::vector<GgufTensorInfo> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace purbo
