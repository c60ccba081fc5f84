#include "model/chat-template.h"

#include "model/unicode.h"

namespace purbo {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kStartHeader = "<|start_header_id|>";

// Jinja string escapes that can appear in a prompt literal.
std::string unescape_jinja(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[++i];
        switch (c) {
            case 'n':
                out += '\n';
                break;
            case 't':
                out += '\t';
                break;
            case 'r':
                out += '\r';
                break;
            default:
                out += c;
                break;  // \\ \' \"
        }
    }
    return out;
}

// Jinja's `trim`: Python str.strip(), which removes Unicode whitespace at both ends.
std::string trim_unicode(std::string_view s) {
    size_t begin = 0;
    size_t end = s.size();
    while (begin < end) {
        const unicode::Utf8Char c = unicode::utf8_decode(s, begin);
        if (!c.valid || !unicode::is_whitespace(c.cp)) break;
        begin += c.len;
    }
    while (end > begin) {
        size_t p = end - 1;
        while (p > begin && (static_cast<uint8_t>(s[p]) & 0xC0) == 0x80) --p;
        const unicode::Utf8Char c = unicode::utf8_decode(s, p);
        if (!c.valid || !unicode::is_whitespace(c.cp)) break;
        end = p;
    }
    return std::string(s.substr(begin, end - begin));
}

}  // namespace

std::string chatml_default_system_prompt(std::string_view t) {
    const std::string marker = std::string(kImStart) + "system";
    for (size_t at = t.find(marker); at != std::string_view::npos; at = t.find(marker, at + 1)) {
        // The string literal the marker sits in: the nearest quote before it.
        const size_t quote_pos = t.find_last_of("'\"", at);
        if (quote_pos == std::string_view::npos) continue;
        const char quote = t[quote_pos];
        size_t body = at + marker.size();
        if (t.substr(body, 1) == "\n") {
            body += 1;
        } else if (t.substr(body, 2) == "\\n") {
            body += 2;
        } else {
            continue;
        }
        const size_t end = t.find(kImEnd, body);
        if (end == std::string_view::npos) continue;
        const std::string_view text = t.substr(body, end - body);
        bool literal = !text.empty() && text.find("{{") == std::string_view::npos &&
                       text.find("{%") == std::string_view::npos;
        for (size_t i = 0; literal && i < text.size(); ++i) {
            if (text[i] == '\\') {
                ++i;  // an escaped character, quotes included
            } else if (text[i] == quote) {
                literal = false;  // the literal closed: the prompt is an expression
            }
        }
        if (literal) return unescape_jinja(text);
    }
    return "";
}

Result<ChatTemplate> ChatTemplate::from_text(std::string_view jinja_text, std::string source,
                                             std::string bos_token) {
    ChatTemplate out;
    out.source_ = std::move(source);
    if (jinja_text.find(kImStart) != std::string_view::npos) {
        out.name_ = "chatml";
        out.default_system_ = chatml_default_system_prompt(jinja_text);
        return out;
    }
    if (jinja_text.find(kStartHeader) != std::string_view::npos) {
        out.name_ = "llama3";
        if (jinja_text.find("bos_token") != std::string_view::npos) {
            out.bos_ = std::move(bos_token);
        } else if (jinja_text.find("<|begin_of_text|>") != std::string_view::npos) {
            out.bos_ = "<|begin_of_text|>";
        }
        return out;
    }
    // Show the start of the template on one line.
    std::string head(jinja_text.substr(0, 80));
    for (char& c : head) {
        if (c == '\n') c = ' ';
    }
    return error(StatusCode::kUnsupported,
                 "{}: unknown chat template (only ChatML and Llama-3 are recognised; a Jinja "
                 "subset comes later): {}",
                 out.source_, head);
}

std::string ChatTemplate::apply(std::span<const ChatMessage> messages,
                                bool add_generation_prompt) const {
    std::string out;
    if (name_ == "chatml") {
        if (!messages.empty() && messages[0].role != "system" && !default_system_.empty()) {
            out += fmt::format("{}system\n{}{}\n", kImStart, default_system_, kImEnd);
        }
        for (const ChatMessage& m : messages) {
            out += fmt::format("{}{}\n{}{}\n", kImStart, m.role, m.content, kImEnd);
        }
        if (add_generation_prompt) out += fmt::format("{}assistant\n", kImStart);
        return out;
    }
    PURBO_ASSERT(name_ == "llama3", "chat template '{}'", name_);
    for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0) out += bos_;
        out += fmt::format("{}{}<|end_header_id|>\n\n{}<|eot_id|>", kStartHeader, messages[i].role,
                           trim_unicode(messages[i].content));
    }
    if (add_generation_prompt) out += fmt::format("{}assistant<|end_header_id|>\n\n", kStartHeader);
    return out;
}

}  // namespace purbo
