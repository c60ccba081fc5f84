// GGUF metadata values: type names, ggml type ids, typed getters, printing.
#include <limits>

#include "model/gguf.h"

namespace purbo {
namespace {

bool is_unsigned(GgufValueType t) {
    return t == GgufValueType::kU8 || t == GgufValueType::kU16 || t == GgufValueType::kU32 ||
           t == GgufValueType::kU64;
}
bool is_signed(GgufValueType t) {
    return t == GgufValueType::kI8 || t == GgufValueType::kI16 || t == GgufValueType::kI32 ||
           t == GgufValueType::kI64;
}
bool is_float(GgufValueType t) {
    return t == GgufValueType::kF32 || t == GgufValueType::kF64;
}

// "u32" or "array of string": the type as the getters' errors describe it.
std::string describe_type(const GgufValue& v) {
    if (!v.is_array()) return std::string(gguf_type_name(v.type));
    return fmt::format("array of {}", gguf_type_name(v.array_type));
}

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// ggml type ids (gguf-py GGMLQuantizationType) of the formats we read.
struct GgmlTypeEntry {
    uint32_t id;
    std::string_view name;
    bool readable;
    DType dtype;
};
constexpr GgmlTypeEntry kGgmlTypes[] = {
    {0, "f32", true, DType::kF32},       {1, "f16", true, DType::kF16},
    {2, "q4_0", true, DType::kQ4_0},     {3, "q4_1", true, DType::kQ4_1},
    {6, "q5_0", true, DType::kQ5_0},     {7, "q5_1", true, DType::kQ5_1},
    {8, "q8_0", true, DType::kQ8_0},     {9, "q8_1", true, DType::kQ8_1},
    {10, "q2_K", true, DType::kQ2_K},    {11, "q3_K", true, DType::kQ3_K},
    {12, "q4_K", true, DType::kQ4_K},    {13, "q5_K", true, DType::kQ5_K},
    {14, "q6_K", true, DType::kQ6_K},    {15, "q8_K", true, DType::kQ8_K},
    {16, "iq2_xxs", false, DType::kF32}, {17, "iq2_xs", false, DType::kF32},
    {18, "iq3_xxs", false, DType::kF32}, {19, "iq1_s", false, DType::kF32},
    {20, "iq4_nl", false, DType::kF32},  {21, "iq3_s", false, DType::kF32},
    {22, "iq2_s", false, DType::kF32},   {23, "iq4_xs", false, DType::kF32},
    {24, "i8", false, DType::kF32},      {25, "i16", false, DType::kF32},
    {26, "i32", true, DType::kI32},      {27, "i64", false, DType::kF32},
    {28, "f64", false, DType::kF32},     {29, "iq1_m", false, DType::kF32},
    {30, "bf16", true, DType::kBF16},    {34, "tq1_0", false, DType::kF32},
    {35, "tq2_0", false, DType::kF32},   {39, "mxfp4", false, DType::kF32},
    {40, "nvfp4", false, DType::kF32},   {41, "q1_0", false, DType::kF32},
};

const GgmlTypeEntry* find_ggml_type(uint32_t id) {
    for (const GgmlTypeEntry& e : kGgmlTypes) {
        if (e.id == id) return &e;
    }
    return nullptr;
}

}  // namespace

std::string_view gguf_type_name(GgufValueType type) {
    switch (type) {
        case GgufValueType::kU8:
            return "u8";
        case GgufValueType::kI8:
            return "i8";
        case GgufValueType::kU16:
            return "u16";
        case GgufValueType::kI16:
            return "i16";
        case GgufValueType::kU32:
            return "u32";
        case GgufValueType::kI32:
            return "i32";
        case GgufValueType::kF32:
            return "f32";
        case GgufValueType::kBool:
            return "bool";
        case GgufValueType::kString:
            return "string";
        case GgufValueType::kArray:
            return "array";
        case GgufValueType::kU64:
            return "u64";
        case GgufValueType::kI64:
            return "i64";
        case GgufValueType::kF64:
            return "f64";
    }
    return "unknown";
}

Result<DType> gguf_dtype_from_ggml_type(uint32_t ggml_type) {
    const GgmlTypeEntry* e = find_ggml_type(ggml_type);
    if (e == nullptr) {
        return error(StatusCode::kParseError, "type: unknown ggml type id {}", ggml_type);
    }
    if (!e->readable) {
        return error(StatusCode::kUnsupported, "type: ggml type {} (id {}) is not supported",
                     e->name, ggml_type);
    }
    return e->dtype;
}

std::string gguf_ggml_type_name(uint32_t ggml_type) {
    const GgmlTypeEntry* e = find_ggml_type(ggml_type);
    return e != nullptr ? std::string(e->name) : fmt::format("type {}", ggml_type);
}

size_t GgufValue::array_size() const {
    if (!is_array()) return 0;
    switch (array_type) {
        case GgufValueType::kString:
            return string_items.size();
        case GgufValueType::kF32:
        case GgufValueType::kF64:
            return float_items.size();
        default:
            return is_signed(array_type) ? int_items.size() : uint_items.size();
    }
}

std::string GgufValue::to_string(size_t max_items) const {
    auto scalar = [](GgufValueType t, uint64_t u, int64_t i, double f, const std::string& s) {
        if (t == GgufValueType::kString) return fmt::format("\"{}\"", s);
        if (t == GgufValueType::kBool) return std::string(u ? "true" : "false");
        if (is_float(t)) return fmt::format("{}", f);
        if (is_signed(t)) return fmt::format("{}", i);
        return fmt::format("{}", u);
    };
    if (!is_array()) {
        return fmt::format("{} = {}", gguf_type_name(type),
                           scalar(type, uint_value, int_value, float_value, string_value));
    }
    const size_t n = array_size();
    std::string out = fmt::format("array of {} {} = [", n, gguf_type_name(array_type));
    static const std::string kEmpty;
    for (size_t k = 0; k < n && k < max_items; ++k) {
        const bool str = array_type == GgufValueType::kString;
        const bool flt = is_float(array_type);
        const bool sgn = is_signed(array_type);
        const bool uns = !str && !flt && !sgn;
        out += (k ? ", " : "") + scalar(array_type, uns ? uint_items[k] : 0, sgn ? int_items[k] : 0,
                                        flt ? float_items[k] : 0.0, str ? string_items[k] : kEmpty);
    }
    return out + (n > max_items ? ", ...]" : "]");
}

Status GgufFile::check_value_type(std::string_view key, const GgufValue*& value, GgufValueType want,
                                  std::string_view want_name) const {
    value = find(key);
    if (value == nullptr) {
        return error(StatusCode::kNotFound, "{}: key '{}' not found", source_name_, key);
    }
    const bool ok = want == GgufValueType::kArray ? value->is_array() : value->type == want;
    if (!ok) {
        return error(StatusCode::kInvalidArgument, "{}: key '{}': expected {}, found {}",
                     source_name_, key, want_name, describe_type(*value));
    }
    return Status::ok();
}

Result<std::string> GgufFile::get_string(std::string_view key) const {
    const GgufValue* v = nullptr;
    PURBO_TRY(check_value_type(key, v, GgufValueType::kString, "string"));
    return v->string_value;
}

Result<bool> GgufFile::get_bool(std::string_view key) const {
    const GgufValue* v = nullptr;
    PURBO_TRY(check_value_type(key, v, GgufValueType::kBool, "bool"));
    return v->uint_value != 0;
}

Result<int64_t> GgufFile::get_int(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr)
        return error(StatusCode::kNotFound, "{}: key '{}' not found", source_name_, key);
    if (is_signed(v->type)) return v->int_value;
    if (is_unsigned(v->type)) {
        if (v->uint_value > static_cast<uint64_t>(kInt64Max)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: key '{}': u64 value {} does not fit int64", source_name_, key,
                         v->uint_value);
        }
        return static_cast<int64_t>(v->uint_value);
    }
    return error(StatusCode::kInvalidArgument, "{}: key '{}': expected an integer, found {}",
                 source_name_, key, describe_type(*v));
}

Result<double> GgufFile::get_float(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr)
        return error(StatusCode::kNotFound, "{}: key '{}' not found", source_name_, key);
    if (!is_float(v->type)) {
        return error(StatusCode::kInvalidArgument, "{}: key '{}': expected f32 or f64, found {}",
                     source_name_, key, describe_type(*v));
    }
    return v->float_value;
}

Result<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
    const GgufValue* v = nullptr;
    PURBO_TRY(check_value_type(key, v, GgufValueType::kArray, "array of string"));
    if (v->array_type != GgufValueType::kString) {
        return error(StatusCode::kInvalidArgument,
                     "{}: key '{}': expected array of string, found {}", source_name_, key,
                     describe_type(*v));
    }
    return v->string_items;
}

Result<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
    const GgufValue* v = nullptr;
    PURBO_TRY(check_value_type(key, v, GgufValueType::kArray, "array of integers"));
    if (is_signed(v->array_type)) return v->int_items;
    if (!is_unsigned(v->array_type)) {
        return error(StatusCode::kInvalidArgument,
                     "{}: key '{}': expected array of integers, found {}", source_name_, key,
                     describe_type(*v));
    }
    std::vector<int64_t> out;
    out.reserve(v->uint_items.size());
    for (size_t i = 0; i < v->uint_items.size(); ++i) {
        if (v->uint_items[i] > static_cast<uint64_t>(kInt64Max)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: key '{}': item {} = {} does not fit int64", source_name_, key, i,
                         v->uint_items[i]);
        }
        out.push_back(static_cast<int64_t>(v->uint_items[i]));
    }
    return out;
}

Result<std::vector<double>> GgufFile::get_float_array(std::string_view key) const {
    const GgufValue* v = nullptr;
    PURBO_TRY(check_value_type(key, v, GgufValueType::kArray, "array of f32 or f64"));
    if (!is_float(v->array_type)) {
        return error(StatusCode::kInvalidArgument,
                     "{}: key '{}': expected array of f32 or f64, found {}", source_name_, key,
                     describe_type(*v));
    }
    return v->float_items;
}

}  // namespace purbo
