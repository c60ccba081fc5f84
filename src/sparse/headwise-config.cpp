// Import and export of rtp-llm's `headwise_config`, the head classes of its RTPurbo models.
//
// rtp-llm reads it from the model's config.json into its model config and hands it to its
// HeadWise attention (package rtp_llm.models_py.modules.factory.attention: HeadWisePrefillAttnOp,
// HeadWiseRuntimeConfig), which reads the object below:
//   "headwise_config": {
//     "sink_token_num": 4,        // S; rtp-llm's default when absent: 4
//     "swa_token_num": 8192,      // W; default 8192
//     "seqlen_threshold": 16384,  // kv length below which every head runs dense; default 16384
//     "0": [1, 0, 0, ...],        // layer 0: one flag per query head of the whole model
//     "1": [...], ...             // (under tensor parallelism each rank takes its slice)
//   }
// A flag is 1 for a retrieval head (full attention) and 0 for a local head (sinks + sliding
// window). rtp-llm looks layers up by the key str(layer) and runs a layer without a key as
// all-retrieval; we refuse such a file instead, because a missing or extra layer almost always
// means a config written for another model. `seqlen_threshold` has no counterpart here (purbo's
// local heads are local at every length): it is ignored on import and left out on export, so
// rtp-llm keeps its default. Besides rtp-llm's object we also read a plain list of n_layer
// lists of flags.
#include <algorithm>
#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/log.h"
#include "core/mapped-file.h"
#include "sparse/adapter.h"

namespace purbo {

namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kKey = "headwise_config";
// rtp-llm's defaults (HeadWiseRuntimeConfig) for a file that leaves these keys out.
constexpr int kRtpDefaultSinks = 4;
constexpr int kRtpDefaultWindow = 8192;

std::string excerpt(const json& j) {
    std::string s = j.dump(-1, ' ', true, json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
}

std::optional<int> json_int(const json& v, int min_value) {
    if (!v.is_number_integer()) return std::nullopt;
    if (v.is_number_unsigned() ? v.get<uint64_t>() > INT_MAX : v.get<int64_t>() > INT_MAX) {
        return std::nullopt;
    }
    const int64_t x = v.get<int64_t>();
    if (x < min_value) return std::nullopt;
    return static_cast<int>(x);
}

// "12" -> 12; anything but a canonical decimal (no sign, no leading zero) -> nullopt, since
// rtp-llm finds layer i under the key str(i) only.
std::optional<int> layer_key(const std::string& key) {
    if (key.empty() || key.size() > 9 || (key.size() > 1 && key[0] == '0')) return std::nullopt;
    int v = 0;
    for (char c : key) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + (c - '0');
    }
    return v;
}

// The flags of one layer into the adapter's scores and retrieval list.
Status read_layer(const std::string& source, const std::string& field, const json& flags, int layer,
                  Adapter* a) {
    if (!flags.is_array()) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field '{}': value {} is not a list of 0/1 flags", source, field,
                     excerpt(flags));
    }
    if (flags.size() != static_cast<size_t>(a->n_head)) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field '{}': {} head flags, but the model has {} query heads", source,
                     field, flags.size(), a->n_head);
    }
    for (int h = 0; h < a->n_head; ++h) {
        const json& f = flags[static_cast<size_t>(h)];
        const std::optional<int> v = json_int(f, 0);
        if (!v || *v > 1) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field '{}': flag of head {} is {}, not 0 or 1", source, field, h,
                         excerpt(f));
        }
        a->scores[static_cast<size_t>(layer * a->n_head + h)] = static_cast<float>(*v);
        if (*v == 1) a->retrieval.push_back({layer, h});
    }
    return Status::ok();
}

Status read_setting(const std::string& source, const std::string& key, const json& v, int min_value,
                    int* out) {
    const std::optional<int> x = json_int(v, min_value);
    if (!x) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field '{}.{}': value {} is not an integer >= {}", source, kKey, key,
                     excerpt(v), min_value);
    }
    *out = *x;
    return Status::ok();
}

// rtp-llm's object form: settings and one key per layer.
Status read_object(const std::string& source, const json& hw, Adapter* a) {
    std::vector<const json*> layers(static_cast<size_t>(a->n_layer), nullptr);
    for (const auto& [key, value] : hw.items()) {
        if (key == "sink_token_num") {
            PURBO_TRY(read_setting(source, key, value, 0, &a->settings.n_sink));
        } else if (key == "swa_token_num") {
            PURBO_TRY(read_setting(source, key, value, 1, &a->settings.window));
        } else if (key == "seqlen_threshold") {
            int ignored = 0;
            PURBO_TRY(read_setting(source, key, value, 0, &ignored));
        } else if (const std::optional<int> layer = layer_key(key)) {
            if (*layer >= a->n_layer) {
                return error(StatusCode::kInvalidArgument,
                             "{}: field '{}.{}': layer {}, but the model has {} layers", source,
                             kKey, key, *layer, a->n_layer);
            }
            layers[static_cast<size_t>(*layer)] = &value;
        } else if (!key.empty() && key.find_first_not_of("0123456789") == std::string::npos) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field '{}.{}': not a layer key (rtp-llm looks layers up as \"0\", "
                         "\"1\", ...)",
                         source, kKey, key);
        } else {
            PURBO_LOG_WARN("{}: ignoring field '{}.{}' (not a head flag list or a known setting)",
                           source, kKey, key);
        }
    }
    size_t n_found = 0;
    for (const json* l : layers) n_found += l != nullptr;
    for (int l = 0; l < a->n_layer; ++l) {
        if (layers[static_cast<size_t>(l)] == nullptr) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field '{}': flags for {} layers, but the model has {} (layer {} is "
                         "missing)",
                         source, kKey, n_found, a->n_layer, l);
        }
        PURBO_TRY(read_layer(source, fmt::format("{}.{}", kKey, l), *layers[static_cast<size_t>(l)],
                             l, a));
    }
    return Status::ok();
}

// Writes `root` with two-space indentation, but each layer's flags on one line.
std::string format_config(const ordered_json& root) {
    std::string out = "{\n";
    size_t i = 0;
    for (const auto& [key, value] : root.items()) {
        out += "  " + ordered_json(key).dump() + ": ";
        if (key == kKey && value.is_object()) {
            out += "{\n";
            size_t j = 0;
            for (const auto& [k, v] : value.items()) {
                out += "    " + ordered_json(k).dump() + ": " +
                       v.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
                out += ++j < value.size() ? ",\n" : "\n";
            }
            out += "  }";
        } else {
            std::string text = value.dump(2, ' ', false, ordered_json::error_handler_t::replace);
            // Nested lines move right by the two spaces of the key; newlines inside JSON
            // strings are escaped, so every raw newline is layout.
            for (size_t p = text.find('\n'); p != std::string::npos; p = text.find('\n', p + 3)) {
                text.replace(p, 1, "\n  ");
            }
            out += text;
        }
        out += ++i < root.size() ? ",\n" : "\n";
    }
    return out + "}\n";
}

}  // namespace

Result<Adapter> adapter_from_headwise_config(const std::string& config_json_path,
                                             const ModelConfig& config) {
    const std::string& source = config_json_path;
    PURBO_ASSIGN_OR_RETURN(std::string text, read_text_file(source));
    const json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {
        return error(StatusCode::kParseError, "{}: not valid JSON", source);
    }
    if (!root.is_object()) {
        return error(StatusCode::kParseError, "{}: top level is {}, not a JSON object", source,
                     excerpt(root));
    }
    const auto it = root.find(kKey);
    if (it == root.end() || it->is_null()) {
        return error(StatusCode::kInvalidArgument, "{}: field '{}' is missing", source, kKey);
    }

    Adapter a;
    a.n_layer = config.n_layer;
    a.n_head = config.n_head;
    a.n_head_kv = config.n_head_kv;
    a.head_dim = config.head_dim;
    a.settings.n_sink = kRtpDefaultSinks;
    a.settings.window = kRtpDefaultWindow;
    // No indexer comes with the flags; a rank the head can hold keeps the adapter valid.
    a.settings.rank = std::min(a.settings.rank, config.head_dim);
    a.scores.assign(static_cast<size_t>(config.n_layer) * static_cast<size_t>(config.n_head), 0.0f);
    a.calibration_info = "imported from rtp-llm headwise_config in " + source;
    PURBO_TRY(a.validate(source));  // the model's shape itself, before indexing by it

    const json& hw = *it;
    if (hw.is_object()) {
        PURBO_TRY(read_object(source, hw, &a));
    } else if (hw.is_array()) {
        if (hw.size() != static_cast<size_t>(a.n_layer)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field '{}': flags for {} layers, but the model has {}", source, kKey,
                         hw.size(), a.n_layer);
        }
        for (int l = 0; l < a.n_layer; ++l) {
            PURBO_TRY(read_layer(source, fmt::format("{}[{}]", kKey, l), hw[static_cast<size_t>(l)],
                                 l, &a));
        }
    } else {
        return error(StatusCode::kInvalidArgument,
                     "{}: field '{}': value {} is neither an object of per-layer flags nor a list",
                     source, kKey, excerpt(hw));
    }
    PURBO_TRY(a.validate(source));
    return a;
}

Status adapter_export_headwise_config(const Adapter& adapter, const std::string& path) {
    PURBO_TRY(adapter.validate(path));
    ordered_json hw = ordered_json::object();
    hw["sink_token_num"] = adapter.settings.n_sink;
    hw["swa_token_num"] = adapter.settings.window;
    for (int l = 0; l < adapter.n_layer; ++l) {
        ordered_json flags = ordered_json::array();
        for (int h = 0; h < adapter.n_head; ++h)
            flags.push_back(adapter.is_retrieval(l, h) ? 1 : 0);
        hw[std::to_string(l)] = std::move(flags);
    }

    // Exporting into an existing config.json (the place rtp-llm reads it from) replaces only
    // `headwise_config` and keeps every other key in its order; a file that is not a JSON object
    // is left alone rather than overwritten.
    ordered_json root = ordered_json::object();
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
        PURBO_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
        root = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (root.is_discarded() || !root.is_object()) {
            return error(StatusCode::kInvalidArgument,
                         "{}: exists and is not a JSON object; not overwriting it", path);
        }
    }
    root[kKey] = std::move(hw);
    const std::string text = format_config(root);
    return write_file_atomic(path,
                             std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace purbo
