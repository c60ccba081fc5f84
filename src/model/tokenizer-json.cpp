// Tokenizer::from_hf_json / from_hf_files: Hugging Face tokenizer.json (and
// tokenizer_config.json) into a TokenizerSpec. Every component type we do not implement is an
// error naming the file, the JSON path and the type, rather than a silently different split.
#include <nlohmann/json.hpp>

#include "core/mapped-file.h"
#include "model/tokenizer.h"
#include "model/unicode.h"

namespace purbo {
namespace {

using Json = nlohmann::json;

struct Ctx {
    const std::string& source;
};

std::string type_of(const Json& j) {
    if (j.is_object() && j.contains("type") && j["type"].is_string()) {
        return j["type"].get<std::string>();
    }
    return "";
}

Status unsupported(const Ctx& c, const std::string& path, const std::string& type) {
    return error(StatusCode::kUnsupported, "{}: {}: unsupported type '{}'", c.source, path, type);
}

Status bad_field(const Ctx& c, const std::string& path, const Json& value, const char* want) {
    std::string shown = value.dump();
    if (shown.size() > 80) shown = shown.substr(0, 80) + "...";
    return error(StatusCode::kParseError, "{}: {}: expected {}, got {}", c.source, path, want,
                 shown);
}

// Optional bool field: absent or null -> fallback.
Result<bool> get_bool(const Ctx& c, const Json& obj, const std::string& path, const char* key,
                      bool fallback) {
    if (!obj.contains(key) || obj[key].is_null()) return fallback;
    if (!obj[key].is_boolean()) return bad_field(c, path + "." + key, obj[key], "a boolean");
    return obj[key].get<bool>();
}

Status parse_normalizer(const Ctx& c, const Json& j, const std::string& path, TokenizerSpec& s) {
    if (j.is_null()) return Status::ok();
    const std::string type = type_of(j);
    if (type == "NFC") {
        s.normalize_nfc = true;
        return Status::ok();
    }
    if (type == "Sequence") {
        const Json& list = j.contains("normalizers") ? j["normalizers"] : Json();
        if (!list.is_array()) return bad_field(c, path + ".normalizers", list, "an array");
        for (size_t i = 0; i < list.size(); ++i) {
            PURBO_TRY(parse_normalizer(c, list[i], fmt::format("{}.normalizers[{}]", path, i), s));
        }
        return Status::ok();
    }
    return unsupported(c, path, type.empty() ? j.dump() : type);
}

Result<SplitBehavior> parse_behavior(const Ctx& c, const Json& j, const std::string& path) {
    if (!j.is_string()) return bad_field(c, path, j, "a string");
    const std::string b = j.get<std::string>();
    if (b == "Isolated") return SplitBehavior::kIsolated;
    if (b == "Removed") return SplitBehavior::kRemoved;
    if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
    if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
    if (b == "Contiguous") return SplitBehavior::kContiguous;
    return error(StatusCode::kUnsupported, "{}: {}: unsupported split behavior '{}'", c.source,
                 path, b);
}

Status parse_pre_tokenizer(const Ctx& c, const Json& j, const std::string& path, TokenizerSpec& s) {
    if (j.is_null()) return Status::ok();
    const std::string type = type_of(j);
    if (type == "Sequence") {
        const Json& list = j.contains("pretokenizers") ? j["pretokenizers"] : Json();
        if (!list.is_array()) return bad_field(c, path + ".pretokenizers", list, "an array");
        for (size_t i = 0; i < list.size(); ++i) {
            PURBO_TRY(
                parse_pre_tokenizer(c, list[i], fmt::format("{}.pretokenizers[{}]", path, i), s));
        }
        return Status::ok();
    }
    if (type == "ByteLevel") {
        PURBO_ASSIGN_OR_RETURN(bool prefix, get_bool(c, j, path, "add_prefix_space", true));
        PURBO_ASSIGN_OR_RETURN(bool use_regex, get_bool(c, j, path, "use_regex", true));
        return s.pre_tokenizer.add_byte_level(prefix, use_regex);
    }
    if (type == "Digits") {
        PURBO_ASSIGN_OR_RETURN(bool individual, get_bool(c, j, path, "individual_digits", false));
        // tokenizers splits at every char::is_numeric character (categories Nd, Nl, No).
        PURBO_ASSIGN_OR_RETURN(auto regex, Regex::compile(R"(\p{N})", false));
        s.pre_tokenizer.add_split(
            std::move(regex), individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
            false);
        return Status::ok();
    }
    if (type == "Split") {
        const Json& pattern = j.contains("pattern") ? j["pattern"] : Json();
        std::shared_ptr<const Regex> regex;
        if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
            auto r = Regex::compile(pattern["Regex"].get<std::string>(), false);
            if (!r.is_ok()) return r.status().with_context(c.source + ": " + path + ".pattern");
            regex = r.value();
        } else if (pattern.is_object() && pattern.contains("String") &&
                   pattern["String"].is_string()) {
            auto r = Regex::compile(pattern["String"].get<std::string>(), true);
            if (!r.is_ok()) return r.status().with_context(c.source + ": " + path + ".pattern");
            regex = r.value();
        } else {
            return bad_field(c, path + ".pattern", pattern,
                             "{\"Regex\": ...} or {\"String\": ...}");
        }
        const Json& behavior_json = j.contains("behavior") ? j["behavior"] : Json();
        PURBO_ASSIGN_OR_RETURN(SplitBehavior behavior,
                               parse_behavior(c, behavior_json, path + ".behavior"));
        PURBO_ASSIGN_OR_RETURN(bool invert, get_bool(c, j, path, "invert", false));
        s.pre_tokenizer.add_split(std::move(regex), behavior, invert);
        return Status::ok();
    }
    return unsupported(c, path, type.empty() ? j.dump() : type);
}

Status parse_decoder(const Ctx& c, const Json& j, const std::string& path) {
    if (j.is_null()) return Status::ok();
    const std::string type = type_of(j);
    if (type == "ByteLevel") return Status::ok();
    if (type == "Sequence" && j.contains("decoders") && j["decoders"].is_array()) {
        for (size_t i = 0; i < j["decoders"].size(); ++i) {
            PURBO_TRY(parse_decoder(c, j["decoders"][i], fmt::format("{}.decoders[{}]", path, i)));
        }
        return Status::ok();
    }
    return unsupported(c, path, type.empty() ? j.dump() : type);
}

// Id of a named special token of a TemplateProcessing.
Result<int32_t> template_special_id(const Ctx& c, const Json& proc, const std::string& path,
                                    const std::string& name) {
    const Json& specials = proc.contains("special_tokens") ? proc["special_tokens"] : Json();
    if (!specials.is_object() || !specials.contains(name) || !specials[name].contains("ids") ||
        !specials[name]["ids"].is_array() || specials[name]["ids"].size() != 1 ||
        !specials[name]["ids"][0].is_number_integer()) {
        return error(StatusCode::kParseError,
                     "{}: {}.special_tokens: no single id for special token '{}'", c.source, path,
                     name);
    }
    return specials[name]["ids"][0].get<int32_t>();
}

// Only what matters for a single sequence: a special token in front (bos) or after (eos).
Status parse_post_processor(const Ctx& c, const Json& j, const std::string& path,
                            TokenizerSpec& s) {
    if (j.is_null()) return Status::ok();
    const std::string type = type_of(j);
    if (type == "ByteLevel") return Status::ok();  // offsets only
    if (type == "Sequence") {
        const Json& list = j.contains("processors") ? j["processors"] : Json();
        if (!list.is_array()) return bad_field(c, path + ".processors", list, "an array");
        for (size_t i = 0; i < list.size(); ++i) {
            PURBO_TRY(
                parse_post_processor(c, list[i], fmt::format("{}.processors[{}]", path, i), s));
        }
        return Status::ok();
    }
    if (type == "TemplateProcessing") {
        const Json& single = j.contains("single") ? j["single"] : Json();
        if (!single.is_array()) return bad_field(c, path + ".single", single, "an array");
        bool seen_sequence = false;
        for (size_t i = 0; i < single.size(); ++i) {
            const Json& item = single[i];
            const std::string item_path = fmt::format("{}.single[{}]", path, i);
            if (item.contains("Sequence")) {
                seen_sequence = true;
            } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id") &&
                       item["SpecialToken"]["id"].is_string()) {
                const std::string name = item["SpecialToken"]["id"].get<std::string>();
                PURBO_ASSIGN_OR_RETURN(int32_t id, template_special_id(c, j, path, name));
                if (!seen_sequence) {
                    if (s.add_bos) {
                        return error(StatusCode::kUnsupported,
                                     "{}: {}: more than one special token before the text",
                                     c.source, item_path);
                    }
                    s.add_bos = true;
                    s.bos_id = id;
                } else {
                    s.add_eos = true;
                    s.eos_id = id;
                }
            } else {
                return bad_field(c, item_path, item, "{\"Sequence\"} or {\"SpecialToken\"}");
            }
        }
        return Status::ok();
    }
    return unsupported(c, path, type.empty() ? j.dump() : type);
}

Status parse_model(const Ctx& c, const Json& m, TokenizerSpec& s) {
    if (!m.is_object()) return bad_field(c, "model", m, "an object");
    const std::string type = type_of(m);
    if (type != "BPE") {
        return error(StatusCode::kUnsupported, "{}: model.type '{}' is not supported (only BPE)",
                     c.source, type);
    }
    PURBO_ASSIGN_OR_RETURN(bool byte_fallback, get_bool(c, m, "model", "byte_fallback", false));
    if (byte_fallback) {
        return error(StatusCode::kUnsupported,
                     "{}: model.byte_fallback true is not supported (byte-level BPE only)",
                     c.source);
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (m.contains(key) && !m[key].is_null() &&
            !(m[key].is_string() && m[key].get<std::string>().empty())) {
            return error(StatusCode::kUnsupported, "{}: model.{} {} is not supported", c.source,
                         key, m[key].dump());
        }
    }
    PURBO_ASSIGN_OR_RETURN(s.ignore_merges, get_bool(c, m, "model", "ignore_merges", false));

    const Json& vocab = m.contains("vocab") ? m["vocab"] : Json();
    if (!vocab.is_object()) return bad_field(c, "model.vocab", vocab, "an object");
    // Ids above this are certainly corrupt (the largest real vocabularies are ~260K).
    constexpr int64_t kMaxVocab = 1 << 24;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
            it.value().get<int64_t>() >= kMaxVocab) {
            return bad_field(c, "model.vocab[\"" + it.key() + "\"]", it.value(),
                             "an id in [0, 2^24)");
        }
        const auto id = static_cast<size_t>(it.value().get<int64_t>());
        if (id >= s.tokens.size()) s.tokens.resize(id + 1);
        s.tokens[id] = it.key();
    }

    const Json& merges = m.contains("merges") ? m["merges"] : Json::array();
    if (!merges.is_array()) return bad_field(c, "model.merges", merges, "an array");
    s.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
        const Json& mj = merges[i];
        const std::string path = fmt::format("model.merges[{}]", i);
        if (mj.is_string()) {  // "a b" (tokenizers before 0.20)
            const std::string text = mj.get<std::string>();
            const size_t space = text.find(' ', 1);
            if (space == std::string::npos || space + 1 >= text.size() ||
                text.find(' ', space + 1) != std::string::npos) {
                return bad_field(c, path, mj, "\"left right\"");
            }
            s.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
        } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
            s.merges.emplace_back(mj[0].get<std::string>(), mj[1].get<std::string>());
        } else {
            return bad_field(c, path, mj, "\"left right\" or [\"left\", \"right\"]");
        }
    }

    if (m.contains("unk_token") && m["unk_token"].is_string()) {
        const std::string unk = m["unk_token"].get<std::string>();
        for (size_t id = 0; id < s.tokens.size(); ++id) {
            if (s.tokens[id] == unk) s.unk_id = static_cast<int32_t>(id);
        }
    }
    return Status::ok();
}

Status parse_added_tokens(const Ctx& c, const Json& list, TokenizerSpec& s) {
    if (list.is_null()) return Status::ok();
    if (!list.is_array()) return bad_field(c, "added_tokens", list, "an array");
    for (size_t i = 0; i < list.size(); ++i) {
        const Json& t = list[i];
        const std::string path = fmt::format("added_tokens[{}]", i);
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
            !t.contains("content") || !t["content"].is_string()) {
            return bad_field(c, path, t, "an object with integer id and string content");
        }
        AddedToken a;
        const int64_t id = t["id"].get<int64_t>();
        if (id < 0 || id >= (1 << 24)) return bad_field(c, path + ".id", t["id"], "an id");
        a.id = static_cast<int32_t>(id);
        a.content = t["content"].get<std::string>();
        if (a.content.empty() || !unicode::utf8_is_valid(a.content)) {
            return bad_field(c, path + ".content", t["content"], "non-empty UTF-8 text");
        }
        PURBO_ASSIGN_OR_RETURN(a.special, get_bool(c, t, path, "special", false));
        PURBO_ASSIGN_OR_RETURN(a.lstrip, get_bool(c, t, path, "lstrip", false));
        PURBO_ASSIGN_OR_RETURN(a.rstrip, get_bool(c, t, path, "rstrip", false));
        s.added_tokens.push_back(std::move(a));
    }
    return Status::ok();
}

Status parse_tokenizer_json(const Ctx& c, const Json& root, TokenizerSpec& s) {
    if (!root.is_object()) return bad_field(c, "(root)", root, "an object");
    const Json null_json;
    const auto field = [&](const char* key) -> const Json& {
        return root.contains(key) ? root[key] : null_json;
    };
    PURBO_TRY(parse_model(c, field("model"), s));
    PURBO_TRY(parse_added_tokens(c, field("added_tokens"), s));
    PURBO_TRY(parse_normalizer(c, field("normalizer"), "normalizer", s));
    PURBO_TRY(parse_pre_tokenizer(c, field("pre_tokenizer"), "pre_tokenizer", s));
    PURBO_TRY(parse_post_processor(c, field("post_processor"), "post_processor", s));
    PURBO_TRY(parse_decoder(c, field("decoder"), "decoder"));
    return Status::ok();
}

// Token text as written in a tokenizer_config.json field: "text" or {"content": "text"}.
std::optional<std::string> config_token(const Json& cfg, const char* key) {
    if (!cfg.contains(key)) return std::nullopt;
    const Json& v = cfg[key];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) {
        return v["content"].get<std::string>();
    }
    return std::nullopt;
}

int32_t find_token(const TokenizerSpec& s, const std::string& text) {
    for (const AddedToken& t : s.added_tokens) {
        if (t.content == text) return t.id;
    }
    const std::string byte_level = unicode::bytes_to_byte_level(text);
    for (size_t id = 0; id < s.tokens.size(); ++id) {
        if (s.tokens[id] == byte_level) return static_cast<int32_t>(id);
    }
    return -1;
}

Status parse_tokenizer_config(const std::string& source, const Json& cfg, TokenizerSpec& s) {
    if (!cfg.is_object()) {
        return error(StatusCode::kParseError, "{}: expected a JSON object", source);
    }
    const Ctx c{source};
    for (const auto& [key, id_field] :
         {std::pair{"bos_token", &s.bos_id}, std::pair{"eos_token", &s.eos_id},
          std::pair{"pad_token", &s.pad_id}, std::pair{"unk_token", &s.unk_id}}) {
        if (auto text = config_token(cfg, key)) {
            const int32_t id = find_token(s, *text);
            if (id < 0) {
                return error(StatusCode::kParseError, "{}: {} '{}' is not in the vocabulary",
                             source, key, *text);
            }
            *id_field = id;
        }
    }
    if (cfg.contains("add_bos_token") && !cfg["add_bos_token"].is_null()) {
        PURBO_ASSIGN_OR_RETURN(s.add_bos, get_bool(c, cfg, "(root)", "add_bos_token", false));
    }
    if (cfg.contains("add_eos_token") && !cfg["add_eos_token"].is_null()) {
        PURBO_ASSIGN_OR_RETURN(s.add_eos, get_bool(c, cfg, "(root)", "add_eos_token", false));
    }
    if (cfg.contains("chat_template")) {
        const Json& t = cfg["chat_template"];
        if (t.is_string()) {
            s.chat_template = t.get<std::string>();
        } else if (t.is_array()) {  // [{"name": "default", "template": "..."}, ...]
            for (const Json& entry : t) {
                if (entry.is_object() && entry.value("name", "") == "default" &&
                    entry.contains("template") && entry["template"].is_string()) {
                    s.chat_template = entry["template"].get<std::string>();
                }
            }
        } else if (!t.is_null()) {
            return bad_field(c, "chat_template", t, "a string or a list of named templates");
        }
    }
    return Status::ok();
}

void set_eot(TokenizerSpec& s) {
    for (const char* name : {"<|eot_id|>", "<|im_end|>"}) {
        const int32_t id = find_token(s, name);
        if (id >= 0) {
            s.eot_id = id;
            return;
        }
    }
}

Result<Json> parse_json(std::string_view text, const std::string& source) {
    Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return error(StatusCode::kParseError, "{}: not valid JSON", source);
    return j;
}

}  // namespace

Result<Tokenizer> Tokenizer::from_hf_json(std::string_view json_text, std::string source) {
    PURBO_ASSIGN_OR_RETURN(Json root, parse_json(json_text, source));
    TokenizerSpec spec;
    spec.source = source;
    try {
        PURBO_TRY(parse_tokenizer_json(Ctx{source}, root, spec));
    } catch (const Json::exception& e) {  // a type we did not check; never crosses the API
        return error(StatusCode::kParseError, "{}: {}", source, e.what());
    }
    set_eot(spec);
    return from_spec(std::move(spec));
}

Result<Tokenizer> Tokenizer::from_hf_files(const std::string& tokenizer_json_path,
                                           const std::string& tokenizer_config_path) {
    PURBO_ASSIGN_OR_RETURN(std::string text, read_text_file(tokenizer_json_path));
    PURBO_ASSIGN_OR_RETURN(Json root, parse_json(text, tokenizer_json_path));
    TokenizerSpec spec;
    spec.source = tokenizer_json_path;
    try {
        PURBO_TRY(parse_tokenizer_json(Ctx{tokenizer_json_path}, root, spec));
        if (!tokenizer_config_path.empty()) {
            PURBO_ASSIGN_OR_RETURN(std::string cfg_text, read_text_file(tokenizer_config_path));
            PURBO_ASSIGN_OR_RETURN(Json cfg, parse_json(cfg_text, tokenizer_config_path));
            PURBO_TRY(parse_tokenizer_config(tokenizer_config_path, cfg, spec));
        }
    } catch (const Json::exception& e) {
        return error(StatusCode::kParseError, "{}: {}", tokenizer_json_path, e.what());
    }
    set_eot(spec);
    return from_spec(std::move(spec));
}

}  // namespace purbo
