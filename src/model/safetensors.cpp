#include "model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/log.h"

namespace purbo {

namespace {

using json = nlohmann::json;

// Element sizes of every dtype the format defines, so that any file can be checked even when
// some of its tensors are of a type we do not compute with.
size_t safetensors_element_bytes(std::string_view dtype) {
    static const std::pair<std::string_view, size_t> kSizes[] = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
        {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
        {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8},
    };
    for (const auto& [name, size] : kSizes) {
        if (name == dtype) return size;
    }
    return 0;
}

bool dtype_from_safetensors(std::string_view name, DType* out) {
    if (name == "F32")
        *out = DType::kF32;
    else if (name == "F16")
        *out = DType::kF16;
    else if (name == "BF16")
        *out = DType::kBF16;
    else if (name == "I32")
        *out = DType::kI32;
    else
        return false;
    return true;
}

const char* dtype_to_safetensors(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return "F32";
        case DType::kF16:
            return "F16";
        case DType::kBF16:
            return "BF16";
        case DType::kI32:
            return "I32";
        default:
            return nullptr;
    }
}

// A short, printable excerpt of a JSON value for error messages.
std::string json_excerpt(const json& j) {
    std::string s = j.dump(-1, ' ', true, json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
}

Status parse_entry(const std::string& source, const std::string& name, const json& value,
                   uint64_t data_bytes, SafetensorsEntry* entry) {
    if (!value.is_object()) {
        return error(StatusCode::kParseError, "{}: tensor '{}': header entry is {}, not an object",
                     source, name, json_excerpt(value));
    }
    entry->name = name;
    const auto dtype_it = value.find("dtype");
    if (dtype_it == value.end() || !dtype_it->is_string()) {
        return error(StatusCode::kParseError,
                     "{}: tensor '{}': field 'dtype' missing or not a string", source, name);
    }
    entry->dtype_name = dtype_it->get<std::string>();
    entry->element_bytes = safetensors_element_bytes(entry->dtype_name);
    if (entry->element_bytes == 0) {
        return error(StatusCode::kUnsupported, "{}: tensor '{}': field 'dtype': unknown dtype '{}'",
                     source, name, entry->dtype_name);
    }

    const auto shape_it = value.find("shape");
    if (shape_it == value.end() || !shape_it->is_array()) {
        return error(StatusCode::kParseError,
                     "{}: tensor '{}': field 'shape' missing or not an array", source, name);
    }
    entry->numel = 1;
    for (const json& d : *shape_it) {
        if (!d.is_number_unsigned()) {
            return error(
                StatusCode::kParseError,
                "{}: tensor '{}': field 'shape': dimension {} is not a non-negative integer",
                source, name, json_excerpt(d));
        }
        const uint64_t dim = d.get<uint64_t>();
        constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
        if (dim > kMax || (dim != 0 && static_cast<uint64_t>(entry->numel) > kMax / dim)) {
            return error(StatusCode::kParseError,
                         "{}: tensor '{}': field 'shape': element count overflows at dimension {}",
                         source, name, dim);
        }
        entry->numel = static_cast<int64_t>(static_cast<uint64_t>(entry->numel) * dim);
        entry->shape.push_back(static_cast<int64_t>(dim));
    }

    const auto off_it = value.find("data_offsets");
    if (off_it == value.end() || !off_it->is_array() || off_it->size() != 2 ||
        !(*off_it)[0].is_number_unsigned() || !(*off_it)[1].is_number_unsigned()) {
        return error(
            StatusCode::kParseError,
            "{}: tensor '{}': field 'data_offsets' must be two non-negative integers, got {}",
            source, name, off_it == value.end() ? "nothing" : json_excerpt(*off_it));
    }
    entry->begin = (*off_it)[0].get<uint64_t>();
    entry->end = (*off_it)[1].get<uint64_t>();
    if (entry->begin > entry->end || entry->end > data_bytes) {
        return error(
            StatusCode::kParseError,
            "{}: tensor '{}': field 'data_offsets' [{}, {}) outside the data section of {} "
            "bytes",
            source, name, entry->begin, entry->end, data_bytes);
    }
    const uint64_t numel = static_cast<uint64_t>(entry->numel);
    if (numel > std::numeric_limits<uint64_t>::max() / entry->element_bytes ||
        numel * entry->element_bytes != entry->end - entry->begin) {
        return error(StatusCode::kParseError,
                     "{}: tensor '{}': field 'data_offsets' spans {} bytes but {} elements of {} "
                     "need {}",
                     source, name, entry->end - entry->begin, entry->numel, entry->dtype_name,
                     numel * entry->element_bytes);
    }
    return Status::ok();
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::parse(std::span<const uint8_t> bytes,
                                               std::string source_name) {
    const std::string& source = source_name;
    if (bytes.size() < 8) {
        return error(StatusCode::kParseError,
                     "{}: file of {} bytes is too short for the 8-byte header length", source,
                     bytes.size());
    }
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[static_cast<size_t>(i)];
    if (header_bytes > kSafetensorsMaxHeaderBytes) {
        return error(StatusCode::kParseError, "{}: header length {} exceeds the limit of {} bytes",
                     source, header_bytes, kSafetensorsMaxHeaderBytes);
    }
    if (header_bytes > bytes.size() - 8) {
        return error(
            StatusCode::kParseError,
            "{}: header length {} runs past the end of the file ({} bytes after the length)",
            source, header_bytes, bytes.size() - 8);
    }
    const char* header_text = reinterpret_cast<const char*>(bytes.data() + 8);
    const uint64_t data_bytes = bytes.size() - 8 - header_bytes;

    // nlohmann keeps the last of duplicate keys silently; the callback sees every key, so
    // duplicates at the top level (tensor names) are caught here.
    std::set<std::string> seen_keys;
    std::string duplicate;
    const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event,
                                                 json& parsed) {
        if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
            if (!seen_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
                duplicate = parsed.get<std::string>();
            }
        }
        return true;
    };
    json header = json::parse(header_text, header_text + header_bytes, on_event,
                              /*allow_exceptions=*/false);
    if (header.is_discarded()) {
        return error(StatusCode::kParseError, "{}: header of {} bytes is not valid JSON", source,
                     header_bytes);
    }
    if (!header.is_object()) {
        return error(StatusCode::kParseError, "{}: header is {}, not a JSON object", source,
                     json_excerpt(header));
    }
    if (!duplicate.empty()) {
        return error(StatusCode::kParseError, "{}: tensor '{}' appears twice in the header", source,
                     duplicate);
    }

    SafetensorsFile file;
    file.source_ = std::move(source_name);
    file.data_section_ = bytes.data() + 8 + header_bytes;
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (!value.is_object()) {
                return error(StatusCode::kParseError, "{}: '__metadata__' is {}, not an object",
                             file.source_, json_excerpt(value));
            }
            for (const auto& [mkey, mvalue] : value.items()) {
                if (!mvalue.is_string()) {
                    return error(StatusCode::kParseError,
                                 "{}: '__metadata__' field '{}' is {}, not a string", file.source_,
                                 mkey, json_excerpt(mvalue));
                }
                file.metadata_[mkey] = mvalue.get<std::string>();
            }
            continue;
        }
        SafetensorsEntry entry;
        PURBO_TRY(parse_entry(file.source_, key, value, data_bytes, &entry));
        file.entries_.push_back(std::move(entry));
    }
    std::sort(file.entries_.begin(), file.entries_.end(),
              [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                  return a.begin != b.begin ? a.begin < b.begin : a.name < b.name;
              });
    for (size_t i = 0; i < file.entries_.size(); ++i) file.index_[file.entries_[i].name] = i;
    return file;
}

Result<std::shared_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
    PURBO_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
    PURBO_ASSIGN_OR_RETURN(SafetensorsFile file, parse(mapped->bytes(), path));
    file.keep_alive_ = mapped;
    return std::make_shared<SafetensorsFile>(std::move(file));
}

const SafetensorsEntry* SafetensorsFile::find(std::string_view name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
}

Result<Tensor> SafetensorsFile::tensor(std::string_view name) const {
    const SafetensorsEntry* entry = find(name);
    if (entry == nullptr) {
        return error(StatusCode::kNotFound, "{}: tensor '{}' not found", source_, name);
    }
    DType dtype;
    if (!dtype_from_safetensors(entry->dtype_name, &dtype)) {
        return error(StatusCode::kUnsupported,
                     "{}: tensor '{}': dtype {} is not supported (F32, F16, BF16, I32 are)",
                     source_, name, entry->dtype_name);
    }
    if (entry->shape.size() > static_cast<size_t>(kMaxDims)) {
        return error(StatusCode::kUnsupported,
                     "{}: tensor '{}': {} dimensions, at most {} supported", source_, name,
                     entry->shape.size(), kMaxDims);
    }
    // The view is const in spirit: the mapping is read-only (MAP_PRIVATE, PROT_READ).
    void* data = const_cast<uint8_t*>(data_section_ + entry->begin);
    Tensor t = tensor_view(dtype, entry->shape, data, keep_alive_);
    t.name = entry->name;
    return t;
}

Status safetensors_write(const std::string& path,
                         std::span<const std::pair<std::string, Tensor>> tensors,
                         const std::map<std::string, std::string>& metadata) {
    json header = json::object();
    if (!metadata.empty()) {
        json meta = json::object();
        for (const auto& [k, v] : metadata) meta[k] = v;
        header["__metadata__"] = std::move(meta);
    }
    uint64_t offset = 0;
    std::vector<size_t> sizes;
    for (const auto& [name, t] : tensors) {
        const char* dtype = dtype_to_safetensors(t.dtype);
        if (name.empty() || name == "__metadata__" || header.contains(name)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: tensor name '{}' is empty, reserved or "
                         "repeated",
                         path, name);
        }
        if (dtype == nullptr) {
            return error(StatusCode::kUnsupported, "{}: tensor '{}': dtype {} cannot be written",
                         path, name, dtype_name(t.dtype));
        }
        if (t.device != Device::kCpu || (t.data == nullptr && t.numel() != 0)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: tensor '{}' is not a CPU tensor with data", path, name);
        }
        const size_t nbytes = t.ndim == 0 ? dtype_row_bytes(t.dtype, 1) : t.nbytes();
        json shape = json::array();
        for (int i = 0; i < t.ndim; ++i) shape.push_back(t.shape[static_cast<size_t>(i)]);
        header[name] = {
            {"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + nbytes}}};
        offset += nbytes;
        sizes.push_back(nbytes);
    }
    std::string header_text = header.dump();
    // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
    header_text.append((8 - header_text.size() % 8) % 8, ' ');

    std::vector<uint8_t> out(8 + header_text.size() + offset);
    const uint64_t n = header_text.size();
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
    std::memcpy(out.data() + 8, header_text.data(), header_text.size());
    uint8_t* dst = out.data() + 8 + header_text.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
        if (sizes[i] > 0) std::memcpy(dst, tensors[i].second.data, sizes[i]);
        dst += sizes[i];
    }
    return write_file_atomic(path, out);
}

}  // namespace purbo
