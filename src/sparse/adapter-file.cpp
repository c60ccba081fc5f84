// The adapter file: one safetensors file whose metadata holds the settings and whose tensors
// hold the head scores and the indexer (layout: docs/file-formats.md, "Adapter").
#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <nlohmann/json.hpp>

#include "model/safetensors.h"
#include "sparse/adapter.h"

namespace purbo {

namespace {

using json = nlohmann::json;

// Letters: L = n_layer, H = n_head, R = retrieval heads, r = indexer rank, d = head_dim.
constexpr std::string_view kFormat = "purbo-adapter";
// Bumped when a reader of the previous version would misread the file; the reader refuses
// versions it does not know rather than guess.
constexpr std::string_view kVersion = "1";
constexpr std::string_view kTensorScores = "head_scores";  // (L, H) f32
constexpr std::string_view kTensorWq = "indexer.wq";       // (R, r, d) f32
constexpr std::string_view kTensorWk = "indexer.wk";       // (R, r, d) f32

// A printable excerpt of a metadata value for messages.
std::string value_text(std::string_view v) {
    std::string s(v.substr(0, 60));
    if (v.size() > 60) s += "...";
    return "'" + s + "'";
}

class MetadataReader {
  public:
    MetadataReader(const std::map<std::string, std::string>& metadata, const std::string& source)
        : metadata_(metadata), source_(source) {}

    const std::string* find(const std::string& key) const {
        const auto it = metadata_.find(key);
        return it == metadata_.end() ? nullptr : &it->second;
    }

    Status missing(const std::string& key) const {
        return error(StatusCode::kParseError, "{}: metadata field '{}' is missing", source_, key);
    }

    Status read_string(const std::string& key, std::string* out, bool required) const {
        const std::string* v = find(key);
        if (v == nullptr) return required ? missing(key) : Status::ok();
        *out = *v;
        return Status::ok();
    }

    // A decimal integer >= min_value, nothing around it.
    Status read_int(const std::string& key, int* out, int min_value) const {
        const std::string* v = find(key);
        if (v == nullptr) return missing(key);
        int value = 0;
        const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), value);
        if (v->empty() || ec != std::errc() || end != v->data() + v->size()) {
            return error(StatusCode::kParseError,
                         "{}: metadata field '{}': value {} is not an integer in [{}, {}]", source_,
                         key, value_text(*v), INT_MIN, INT_MAX);
        }
        if (value < min_value) {
            return error(StatusCode::kInvalidArgument,
                         "{}: metadata field '{}': value {} must be at least {}", source_, key,
                         value, min_value);
        }
        *out = value;
        return Status::ok();
    }

    Status read_float(const std::string& key, float* out) const {
        const std::string* v = find(key);
        if (v == nullptr) return missing(key);
        float value = 0.0f;
        const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), value);
        if (v->empty() || ec != std::errc() || end != v->data() + v->size()) {
            return error(StatusCode::kParseError,
                         "{}: metadata field '{}': value {} is not a number", source_, key,
                         value_text(*v));
        }
        *out = value;
        return Status::ok();
    }

    // "[[layer, head], ...]"; ranges and order are checked by Adapter::validate.
    Status read_heads(const std::string& key, std::vector<HeadId>* out) const {
        const std::string* v = find(key);
        if (v == nullptr) return missing(key);
        const json list = json::parse(*v, nullptr, /*allow_exceptions=*/false);
        if (list.is_discarded() || !list.is_array()) {
            return error(StatusCode::kParseError,
                         "{}: metadata field '{}': value {} is not a JSON list of [layer, head] "
                         "pairs",
                         source_, key, value_text(*v));
        }
        out->clear();
        for (size_t i = 0; i < list.size(); ++i) {
            const json& pair = list[i];
            const auto is_int = [](const json& x) {
                return x.is_number_integer() && x.get<int64_t>() >= INT_MIN &&
                       x.get<int64_t>() <= INT_MAX &&
                       !(x.is_number_unsigned() && x.get<uint64_t>() > INT_MAX);
            };
            if (!pair.is_array() || pair.size() != 2 || !is_int(pair[0]) || !is_int(pair[1])) {
                return error(StatusCode::kParseError,
                             "{}: metadata field '{}': entry {} is {}, not a [layer, head] pair of "
                             "integers",
                             source_, key, i,
                             value_text(pair.dump(-1, ' ', true, json::error_handler_t::replace)));
            }
            out->push_back({pair[0].get<int>(), pair[1].get<int>()});
        }
        return Status::ok();
    }

  private:
    const std::map<std::string, std::string>& metadata_;
    const std::string& source_;
};

std::string shape_text(std::span<const int64_t> shape) {
    std::string s = "(";
    for (size_t i = 0; i < shape.size(); ++i) s += fmt::format("{}{}", i ? ", " : "", shape[i]);
    return s + ")";
}

// A copy of f32 tensor `name`, whose shape must be `shape` (named `shape_names` in messages).
// A copy, not a view of the mapping: the mapping is read-only and training updates the indexer.
Result<Tensor> read_f32(const SafetensorsFile& file, std::string_view name,
                        std::span<const int64_t> shape, std::string_view shape_names) {
    const SafetensorsEntry* entry = file.find(name);
    if (entry == nullptr) {
        return error(StatusCode::kParseError, "{}: tensor '{}' is missing", file.source(), name);
    }
    if (entry->dtype_name != "F32") {
        return error(StatusCode::kInvalidArgument, "{}: tensor '{}': dtype {}, must be F32",
                     file.source(), name, entry->dtype_name);
    }
    if (!std::equal(entry->shape.begin(), entry->shape.end(), shape.begin(), shape.end())) {
        return error(StatusCode::kInvalidArgument,
                     "{}: tensor '{}': shape {} does not match {} = {} from the metadata",
                     file.source(), name, shape_text(entry->shape), shape_names, shape_text(shape));
    }
    PURBO_ASSIGN_OR_RETURN(Tensor view, file.tensor(name));
    Tensor copy = tensor_cpu(DType::kF32, shape, std::string(name));
    if (view.numel() > 0) std::memcpy(copy.data, view.data, view.nbytes());
    return copy;
}

}  // namespace

namespace {

// The adapter held by a parsed safetensors file; `path` names it in errors.
Result<Adapter> adapter_from_file(const SafetensorsFile* file, const std::string& path) {
    const MetadataReader meta(file->metadata(), path);

    std::string format, version;
    if (meta.find("purbo.format") == nullptr) {
        return error(StatusCode::kInvalidArgument,
                     "{}: not a purbo adapter: metadata field 'purbo.format' is missing", path);
    }
    PURBO_TRY(meta.read_string("purbo.format", &format, true));
    if (format != kFormat) {
        return error(StatusCode::kInvalidArgument,
                     "{}: not a purbo adapter: metadata field 'purbo.format' is {}, not '{}'", path,
                     value_text(format), kFormat);
    }
    PURBO_TRY(meta.read_string("purbo.version", &version, true));
    if (version != kVersion) {
        return error(StatusCode::kUnsupported,
                     "{}: metadata field 'purbo.version': version {} is not supported (this "
                     "build reads version {})",
                     path, value_text(version), kVersion);
    }

    Adapter a;
    SparseSettings& s = a.settings;
    PURBO_TRY(meta.read_int("window", &s.window, 1));
    PURBO_TRY(meta.read_int("n_sink", &s.n_sink, 0));
    PURBO_TRY(meta.read_float("top_p", &s.top_p));
    PURBO_TRY(meta.read_int("block_size", &s.block_size, 1));
    PURBO_TRY(meta.read_int("rank", &s.rank, 1));
    PURBO_TRY(meta.read_int("n_layer", &a.n_layer, 1));
    PURBO_TRY(meta.read_int("n_head", &a.n_head, 1));
    PURBO_TRY(meta.read_int("n_head_kv", &a.n_head_kv, 1));
    PURBO_TRY(meta.read_int("head_dim", &a.head_dim, 1));
    PURBO_TRY(meta.read_string("base_fingerprint", &a.base_fingerprint, true));
    PURBO_TRY(meta.read_heads("retrieval_heads", &a.retrieval));
    PURBO_TRY(meta.read_string("calibration_info", &a.calibration_info, false));
    PURBO_TRY(meta.read_string("training_info", &a.training_info, false));

    PURBO_TRY(a.validate_fields(path));

    // A tensor we do not know may be a misspelt one we do: refuse rather than ignore it.
    for (const SafetensorsEntry& e : file->entries()) {
        if (e.name != kTensorScores && e.name != kTensorWq && e.name != kTensorWk) {
            return error(StatusCode::kInvalidArgument,
                         "{}: tensor '{}' is not part of an adapter ({}, {} and {} are)", path,
                         e.name, kTensorScores, kTensorWq, kTensorWk);
        }
    }

    const int64_t score_shape[] = {a.n_layer, a.n_head};
    PURBO_ASSIGN_OR_RETURN(Tensor scores,
                           read_f32(*file, kTensorScores, score_shape, "(n_layer, n_head)"));
    a.scores.assign(scores.f32(), scores.f32() + scores.numel());

    const bool has_wq = file->contains(kTensorWq), has_wk = file->contains(kTensorWk);
    if (has_wq != has_wk) {
        return error(StatusCode::kInvalidArgument,
                     "{}: tensor '{}' is missing while '{}' is present (the indexer needs both)",
                     path, has_wq ? kTensorWk : kTensorWq, has_wq ? kTensorWq : kTensorWk);
    }
    if (has_wq) {
        const int64_t shape[] = {static_cast<int64_t>(a.retrieval.size()), s.rank, a.head_dim};
        const std::string_view names = "(retrieval heads, rank, head_dim)";
        PURBO_ASSIGN_OR_RETURN(a.wq, read_f32(*file, kTensorWq, shape, names));
        PURBO_ASSIGN_OR_RETURN(a.wk, read_f32(*file, kTensorWk, shape, names));
    }
    PURBO_TRY(a.validate(path));
    return a;
}

}  // namespace

Result<Adapter> adapter_load(const std::string& path) {
    PURBO_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::open(path));
    return adapter_from_file(file.get(), path);
}

Result<Adapter> adapter_parse(std::span<const uint8_t> bytes, const std::string& source) {
    PURBO_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::parse(bytes, source));
    return adapter_from_file(&file, source);
}

Status adapter_save(const std::string& path, const Adapter& a) {
    PURBO_TRY(a.validate(path));
    json heads = json::array();
    for (const HeadId& h : a.retrieval) heads.push_back({h.layer, h.head});
    const SparseSettings& s = a.settings;
    const std::map<std::string, std::string> metadata = {
        {"purbo.format", std::string(kFormat)},
        {"purbo.version", std::string(kVersion)},
        {"window", std::to_string(s.window)},
        {"n_sink", std::to_string(s.n_sink)},
        // fmt prints the shortest text that reads back as the same float.
        {"top_p", fmt::format("{}", s.top_p)},
        {"block_size", std::to_string(s.block_size)},
        {"rank", std::to_string(s.rank)},
        {"n_layer", std::to_string(a.n_layer)},
        {"n_head", std::to_string(a.n_head)},
        {"n_head_kv", std::to_string(a.n_head_kv)},
        {"head_dim", std::to_string(a.head_dim)},
        {"base_fingerprint", a.base_fingerprint},
        {"retrieval_heads", heads.dump()},
        {"calibration_info", a.calibration_info},
        {"training_info", a.training_info},
    };
    const int64_t score_shape[] = {a.n_layer, a.n_head};
    // The writer only reads the scores; the view needs a non-const pointer.
    std::vector<std::pair<std::string, Tensor>> tensors = {
        {std::string(kTensorScores),
         tensor_view(DType::kF32, score_shape, const_cast<float*>(a.scores.data()))}};
    if (a.has_indexer()) {
        tensors.emplace_back(std::string(kTensorWq), a.wq);
        tensors.emplace_back(std::string(kTensorWk), a.wk);
    }
    return safetensors_write(path, tensors, metadata);
}

}  // namespace purbo
