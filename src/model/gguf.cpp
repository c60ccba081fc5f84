// GGUF header, metadata and tensor-info parsing (format summary in gguf.h).
#include "model/gguf.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

namespace purbo {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr size_t kDefaultAlignment = 32;     // GGUF_DEFAULT_ALIGNMENT in llama.cpp
constexpr int kMaxTensorDims = 4;            // GGML_MAX_DIMS
static_assert(kMaxTensorDims == kMaxDims);

// Smallest encodings, used to reject counts the remaining bytes cannot hold before anything is
// allocated: a string is a u64 length, a kv pair a string key + u32 type + 1 byte of value, a
// tensor info a string name + u32 n_dims + u32 type + u64 offset.
constexpr uint64_t kMinStringBytes = 8;
constexpr uint64_t kMinKvBytes = kMinStringBytes + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = kMinStringBytes + 4 + 4 + 8;
constexpr size_t kMaxArrayReserve = size_t{1} << 18;

// Size of a scalar value of this type; 0 for string, array and unknown ids.
size_t scalar_size(GgufValueType type) {
    switch (type) {
        case GgufValueType::kU8:
        case GgufValueType::kI8:
        case GgufValueType::kBool:
            return 1;
        case GgufValueType::kU16:
        case GgufValueType::kI16:
            return 2;
        case GgufValueType::kU32:
        case GgufValueType::kI32:
        case GgufValueType::kF32:
            return 4;
        case GgufValueType::kU64:
        case GgufValueType::kI64:
        case GgufValueType::kF64:
            return 8;
        case GgufValueType::kString:
        case GgufValueType::kArray:
            return 0;
    }
    return 0;
}

bool known_value_type(uint32_t id) {
    return id <= static_cast<uint32_t>(GgufValueType::kF64);
}

// Little-endian cursor over the file bytes; every read checks the bytes that remain.
class Reader {
  public:
    Reader(std::span<const uint8_t> bytes, const std::string& source)
        : bytes_(bytes), source_(source) {}

    size_t pos() const { return pos_; }
    void seek(size_t pos) { pos_ = pos; }
    uint64_t remaining() const { return bytes_.size() - pos_; }

    Status need(uint64_t n, std::string_view what) const {
        if (n > remaining()) {
            return error(StatusCode::kParseError,
                         "{}: {}: truncated: needs {} bytes at offset {}, only {} remain", source_,
                         what, n, pos_, remaining());
        }
        return Status::ok();
    }

    template <class T>
    Status read(T* out, std::string_view what) {
        PURBO_TRY(need(sizeof(T), what));
        std::memcpy(out, bytes_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return Status::ok();
    }

    Status read_string(std::string* out, std::string_view what) {
        uint64_t len = 0;
        PURBO_TRY(read(&len, what));
        if (len > remaining()) {
            return error(StatusCode::kParseError,
                         "{}: {}: string length {} at offset {} exceeds the {} bytes that remain",
                         source_, what, len, pos_ - 8, remaining());
        }
        out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(len));
        pos_ += static_cast<size_t>(len);
        return Status::ok();
    }

    // A count of items of at least `min_item_bytes` each must fit in the remaining bytes.
    Status check_count(uint64_t count, uint64_t min_item_bytes, std::string_view what) const {
        if (count > remaining() / min_item_bytes) {
            return error(StatusCode::kParseError,
                         "{}: {}: count {} cannot fit in the {} bytes that remain (offset {})",
                         source_, what, count, remaining(), pos_);
        }
        return Status::ok();
    }

  private:
    std::span<const uint8_t> bytes_;
    const std::string& source_;
    size_t pos_ = 0;
};

template <class T>
Status read_scalar_as(Reader& r, GgufValue* v, std::string_view what) {
    T x{};
    PURBO_TRY(r.read(&x, what));
    if constexpr (std::is_floating_point_v<T>) {
        v->float_value = static_cast<double>(x);
    } else if constexpr (std::is_signed_v<T>) {
        v->int_value = static_cast<int64_t>(x);
    } else {
        v->uint_value = static_cast<uint64_t>(x);
    }
    return Status::ok();
}

// Reads one scalar or string of `type` into v's scalar fields.
Status read_scalar(Reader& r, GgufValueType type, GgufValue* v, const std::string& source,
                   std::string_view what) {
    switch (type) {
        case GgufValueType::kU8:
            return read_scalar_as<uint8_t>(r, v, what);
        case GgufValueType::kI8:
            return read_scalar_as<int8_t>(r, v, what);
        case GgufValueType::kU16:
            return read_scalar_as<uint16_t>(r, v, what);
        case GgufValueType::kI16:
            return read_scalar_as<int16_t>(r, v, what);
        case GgufValueType::kU32:
            return read_scalar_as<uint32_t>(r, v, what);
        case GgufValueType::kI32:
            return read_scalar_as<int32_t>(r, v, what);
        case GgufValueType::kU64:
            return read_scalar_as<uint64_t>(r, v, what);
        case GgufValueType::kI64:
            return read_scalar_as<int64_t>(r, v, what);
        case GgufValueType::kF32:
            return read_scalar_as<float>(r, v, what);
        case GgufValueType::kF64:
            return read_scalar_as<double>(r, v, what);
        case GgufValueType::kBool: {
            uint8_t b = 0;
            PURBO_TRY(r.read(&b, what));
            if (b > 1) {
                return error(StatusCode::kParseError, "{}: {}: bool value {} is neither 0 nor 1",
                             source, what, b);
            }
            v->uint_value = b;
            return Status::ok();
        }
        case GgufValueType::kString:
            return r.read_string(&v->string_value, what);
        case GgufValueType::kArray:
            break;
    }
    return error(StatusCode::kInternal, "{}: {}: read_scalar of type {}", source, what,
                 static_cast<uint32_t>(type));
}

Status read_array(Reader& r, GgufValue* v, const std::string& source, const std::string& what) {
    uint32_t elem_id = 0;
    uint64_t count = 0;
    PURBO_TRY(r.read(&elem_id, what + ": array element type"));
    if (!known_value_type(elem_id)) {
        return error(StatusCode::kParseError, "{}: {}: unknown array element type {}", source, what,
                     elem_id);
    }
    const auto elem = static_cast<GgufValueType>(elem_id);
    if (elem == GgufValueType::kArray) {
        return error(StatusCode::kUnsupported, "{}: {}: arrays of arrays are not supported", source,
                     what);
    }
    PURBO_TRY(r.read(&count, what + ": array length"));
    const uint64_t min_item = elem == GgufValueType::kString ? kMinStringBytes : scalar_size(elem);
    PURBO_TRY(r.check_count(count, min_item, what + ": array length"));
    v->array_type = elem;
    const size_t n = static_cast<size_t>(count);
    // The count already fits the remaining bytes, but an item in memory is up to 8x its encoding
    // (a u8 kept as u64, a string header of 8 bytes as a 32-byte std::string): reserve at most
    // kMaxArrayReserve items up front (a vocabulary fits) and let a longer array grow as it is
    // read.
    const size_t reserve = std::min(n, kMaxArrayReserve);
    GgufValue item;
    switch (elem) {
        case GgufValueType::kString:
            v->string_items.reserve(reserve);
            break;
        case GgufValueType::kI8:
        case GgufValueType::kI16:
        case GgufValueType::kI32:
        case GgufValueType::kI64:
            v->int_items.reserve(reserve);
            break;
        case GgufValueType::kF32:
        case GgufValueType::kF64:
            v->float_items.reserve(reserve);
            break;
        default:
            v->uint_items.reserve(reserve);
            break;
    }
    for (size_t i = 0; i < n; ++i) {
        const size_t item_pos = r.pos();
        if (!read_scalar(r, elem, &item, source, what).is_ok()) {
            // Read again with the item index in the message (kept off the hot path: a vocabulary
            // has 10^5 items).
            r.seek(item_pos);
            return read_scalar(r, elem, &item, source,
                               fmt::format("{}: item {} of {}", what, i, n));
        }
        switch (elem) {
            case GgufValueType::kString:
                v->string_items.push_back(std::move(item.string_value));
                break;
            case GgufValueType::kI8:
            case GgufValueType::kI16:
            case GgufValueType::kI32:
            case GgufValueType::kI64:
                v->int_items.push_back(item.int_value);
                break;
            case GgufValueType::kF32:
            case GgufValueType::kF64:
                v->float_items.push_back(item.float_value);
                break;
            default:
                v->uint_items.push_back(item.uint_value);
                break;
        }
    }
    return Status::ok();
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_mul_overflow(a, b, out);
}
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
    return __builtin_add_overflow(a, b, out);
}

}  // namespace

Result<GgufFile> GgufFile::open(const std::string& path) {
    PURBO_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> mapping, MappedFile::open(path));
    GgufFile file;
    file.source_name_ = path;
    file.bytes_ = mapping->bytes();
    file.mapping_ = std::move(mapping);
    PURBO_TRY(file.parse_header());
    return file;
}

Result<GgufFile> GgufFile::parse(std::span<const uint8_t> bytes, std::string source_name) {
    GgufFile file;
    file.source_name_ = std::move(source_name);
    file.bytes_ = bytes;
    PURBO_TRY(file.parse_header());
    return file;
}

Status GgufFile::parse_header() {
    const std::string& src = source_name_;
    Reader r(bytes_, src);

    uint32_t magic = 0;
    PURBO_TRY(r.read(&magic, "magic"));
    if (magic != kGgufMagic) {
        return error(StatusCode::kParseError, "{}: magic: 0x{:08x} is not \"GGUF\" (0x{:08x})", src,
                     magic, kGgufMagic);
    }
    PURBO_TRY(r.read(&version_, "version"));
    if (version_ != 2 && version_ != 3) {
        // A big-endian file reads as a version with only its high bytes set.
        const bool big_endian = (version_ & 0xFFFFu) == 0 && version_ != 0;
        return error(StatusCode::kUnsupported, "{}: version: {} is not supported (only 2 and 3{})",
                     src, version_, big_endian ? "; this looks like a big-endian file" : "");
    }
    uint64_t n_tensors = 0;
    uint64_t n_kv = 0;
    PURBO_TRY(r.read(&n_tensors, "n_tensors"));
    PURBO_TRY(r.read(&n_kv, "n_kv"));
    PURBO_TRY(r.check_count(n_kv, kMinKvBytes, "n_kv"));
    PURBO_TRY(r.check_count(n_tensors, kMinTensorInfoBytes, "n_tensors"));

    // Metadata. No reserve(n_kv): an entry in memory is ~15x its smallest encoding, so a
    // bogus count would allocate far more than the file holds; growth follows what is read.
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key;
        PURBO_TRY(r.read_string(&key, fmt::format("key of metadata entry {}", i)));
        const std::string what = fmt::format("key '{}'", key);
        if (metadata_index_.count(key) != 0) {
            return error(StatusCode::kParseError, "{}: {}: duplicate key (entry {})", src, what, i);
        }
        uint32_t type_id = 0;
        PURBO_TRY(r.read(&type_id, what + ": value type"));
        if (!known_value_type(type_id)) {
            return error(StatusCode::kParseError, "{}: {}: unknown value type {}", src, what,
                         type_id);
        }
        GgufValue value;
        value.type = static_cast<GgufValueType>(type_id);
        if (value.type == GgufValueType::kArray) {
            PURBO_TRY(read_array(r, &value, src, what));
        } else {
            PURBO_TRY(read_scalar(r, value.type, &value, src, what));
        }
        metadata_index_.emplace(key, metadata_.size());
        metadata_.emplace_back(std::move(key), std::move(value));
    }

    alignment_ = kDefaultAlignment;
    if (find("general.alignment") != nullptr) {
        PURBO_ASSIGN_OR_RETURN(const int64_t alignment, get_int("general.alignment"));
        if (alignment <= 0 || !std::has_single_bit(static_cast<uint64_t>(alignment))) {
            return error(StatusCode::kParseError,
                         "{}: key 'general.alignment': {} is not a positive power of two", src,
                         alignment);
        }
        alignment_ = static_cast<size_t>(alignment);
    }

    // Tensor infos.
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo info;
        PURBO_TRY(r.read_string(&info.name, fmt::format("name of tensor {}", i)));
        const std::string what = fmt::format("tensor '{}'", info.name);
        if (tensor_index_.count(info.name) != 0) {
            return error(StatusCode::kParseError, "{}: {}: duplicate tensor name (tensor {})", src,
                         what, i);
        }
        uint32_t n_dims = 0;
        PURBO_TRY(r.read(&n_dims, what + ": n_dims"));
        if (n_dims < 1 || n_dims > kMaxTensorDims) {
            return error(StatusCode::kParseError, "{}: {}: n_dims {} is not in [1, {}]", src, what,
                         n_dims, kMaxTensorDims);
        }
        uint64_t ne[kMaxTensorDims] = {};
        uint64_t numel = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            PURBO_TRY(r.read(&ne[d], what + ": ne"));
            if (ne[d] == 0 || ne[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                return error(StatusCode::kParseError, "{}: {}: ne[{}] = {} is not a positive int64",
                             src, what, d, static_cast<int64_t>(ne[d]));
            }
            if (mul_overflows(numel, ne[d], &numel) ||
                numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                return error(StatusCode::kParseError,
                             "{}: {}: element count overflows int64 at ne[{}] = {}", src, what, d,
                             ne[d]);
            }
        }
        PURBO_TRY(r.read(&info.ggml_type, what + ": type"));
        Result<DType> dtype = gguf_dtype_from_ggml_type(info.ggml_type);
        if (!dtype.is_ok()) return dtype.status().with_context(fmt::format("{}: {}", src, what));
        info.dtype = *dtype;
        const DTypeTraits& traits = dtype_traits(info.dtype);
        if (ne[0] % static_cast<uint64_t>(traits.block_size) != 0) {
            return error(StatusCode::kParseError,
                         "{}: {}: row length ne[0] = {} is not a multiple of the {} block size {}",
                         src, what, ne[0], traits.name, traits.block_size);
        }
        uint64_t nbytes = 0;
        if (mul_overflows(numel / static_cast<uint64_t>(traits.block_size), traits.block_bytes,
                          &nbytes)) {
            return error(StatusCode::kParseError, "{}: {}: byte size of {} {} elements overflows",
                         src, what, numel, traits.name);
        }
        info.nbytes = static_cast<size_t>(nbytes);
        PURBO_TRY(r.read(&info.offset, what + ": offset"));
        if (info.offset % alignment_ != 0) {
            return error(StatusCode::kParseError,
                         "{}: {}: offset {} is not a multiple of the alignment {}", src, what,
                         info.offset, alignment_);
        }
        for (uint32_t d = 0; d < n_dims; ++d) {
            info.shape.push_back(static_cast<int64_t>(ne[n_dims - 1 - d]));
        }
        tensor_index_.emplace(info.name, tensors_.size());
        tensors_.push_back(std::move(info));
    }

    // The data section starts at the next multiple of the alignment.
    const uint64_t header_end = r.pos();
    data_offset_ = static_cast<size_t>((header_end + alignment_ - 1) / alignment_ * alignment_);
    for (const GgufTensorInfo& t : tensors_) {
        uint64_t begin = 0;
        uint64_t end = 0;
        if (add_overflows(data_offset_, t.offset, &begin) || add_overflows(begin, t.nbytes, &end) ||
            end > bytes_.size()) {
            return error(
                StatusCode::kParseError,
                "{}: tensor '{}': data [{} + {}, + {} bytes) extends beyond the file size {}", src,
                t.name, data_offset_, t.offset, t.nbytes, bytes_.size());
        }
    }
    return Status::ok();
}

const GgufValue* GgufFile::find(std::string_view key) const {
    auto it = metadata_index_.find(key);
    return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Tensor GgufFile::tensor(const GgufTensorInfo& info) const {
    // The data stays const in the mapping; Tensor has one pointer type for all its uses.
    void* data = const_cast<uint8_t*>(bytes_.data() + data_offset_ + info.offset);
    Tensor t = tensor_view(info.dtype, info.shape, data, mapping_);
    t.name = info.name;
    return t;
}

Result<Tensor> GgufFile::tensor(std::string_view name) const {
    const GgufTensorInfo* info = find_tensor(name);
    if (info == nullptr) {
        return error(StatusCode::kNotFound, "{}: tensor '{}' not found", source_name_, name);
    }
    return tensor(*info);
}

int64_t GgufTensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

}  // namespace purbo
