#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/pre-tokenizer.h"

#include <pcre2.h>

#include <algorithm>

#include "model/unicode.h"

namespace purbo {
namespace {

// Llama-3 (tiktoken cl100k style): letters with one leading non-letter, numbers of at most
// three digits, punctuation runs with trailing newlines.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: the Llama-3 pattern with single digits.
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Per-thread PCRE2 scratch: a JIT stack large enough for long whitespace runs and the match
// context that points at it (a JIT stack may not be shared between threads).
struct MatchScratch {
    pcre2_jit_stack* jit_stack = nullptr;
    pcre2_match_context* context = nullptr;
    MatchScratch() {
        jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
        context = pcre2_match_context_create(nullptr);
        if (jit_stack && context) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    }
    ~MatchScratch() {
        pcre2_match_context_free(context);
        pcre2_jit_stack_free(jit_stack);
    }
};

}  // namespace

Result<std::shared_ptr<const Regex>> Regex::compile(std::string_view pattern, bool literal) {
    int err = 0;
    PCRE2_SIZE err_offset = 0;
    const uint32_t options =
        PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : 0u);
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &err, &err_offset, nullptr);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        return error(StatusCode::kParseError, "regex /{}/: {} at offset {}", pattern,
                     reinterpret_cast<const char*>(msg), err_offset);
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // the interpreter is the fallback
    std::shared_ptr<Regex> regex(new Regex());
    regex->code_ = code;
    regex->pattern_ = std::string(pattern);
    return std::shared_ptr<const Regex>(std::move(regex));
}

Regex::~Regex() {
    pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void Regex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
    thread_local MatchScratch scratch;
    auto* code = static_cast<pcre2_code*>(code_);
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    PURBO_ASSERT(md != nullptr, "pcre2_match_data_create_from_pattern");
    size_t pos = 0;
    while (pos <= text.size()) {
        const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                                   pos, PCRE2_NO_UTF_CHECK, md, scratch.context);
        if (rc < 0) break;  // no match (or a resource limit, treated as no further match)
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        out.emplace_back(ov[0], ov[1]);
        if (ov[1] > ov[0]) {
            pos = ov[1];
        } else {
            if (ov[1] >= text.size()) break;
            pos = ov[1] + unicode::utf8_decode(text, ov[1]).len;
        }
    }
    pcre2_match_data_free(md);
}

void PreTokenizer::add_split(std::shared_ptr<const Regex> regex, SplitBehavior behavior,
                             bool invert) {
    steps_.push_back({std::move(regex), behavior, invert, false});
}

Status PreTokenizer::add_byte_level(bool add_prefix_space, bool use_regex) {
    std::shared_ptr<const Regex> regex;
    if (use_regex) {
        static const auto gpt2 = Regex::compile(kGpt2Regex, false);
        PURBO_ASSERT(gpt2.is_ok(), "{}", gpt2.status().to_string());
        regex = gpt2.value();
    }
    steps_.push_back({std::move(regex), SplitBehavior::kIsolated, false, add_prefix_space});
    return Status::ok();
}

namespace {

struct Span {
    size_t begin, end;
    bool is_match;
};

// tokenizers' NormalizedString::split: the (match / non-match) spans covering `text` are
// combined per behaviour; empty pieces are dropped.
void split_one(std::string_view text, const Regex& regex, SplitBehavior behavior, bool invert,
               std::vector<std::string>& out) {
    std::vector<std::pair<size_t, size_t>> matches;
    regex.find_all(text, matches);
    std::vector<Span> spans;
    spans.reserve(matches.size() * 2 + 1);
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
        if (prev != b) spans.push_back({prev, b, false});
        spans.push_back({b, e, true});
        prev = e;
    }
    if (prev != text.size()) spans.push_back({prev, text.size(), false});
    if (invert) {
        for (Span& s : spans) s.is_match = !s.is_match;
    }

    std::vector<std::pair<size_t, size_t>> pieces;
    switch (behavior) {
        case SplitBehavior::kIsolated:
            for (const Span& s : spans) pieces.emplace_back(s.begin, s.end);
            break;
        case SplitBehavior::kRemoved:
            for (const Span& s : spans) {
                if (!s.is_match) pieces.emplace_back(s.begin, s.end);
            }
            break;
        case SplitBehavior::kMergedWithPrevious: {
            bool previous_match = false;
            for (const Span& s : spans) {
                if (s.is_match && !previous_match && !pieces.empty()) {
                    pieces.back().second = s.end;
                } else {
                    pieces.emplace_back(s.begin, s.end);
                }
                previous_match = s.is_match;
            }
            break;
        }
        case SplitBehavior::kMergedWithNext: {
            bool previous_match = false;
            for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
                if (it->is_match && !previous_match && !pieces.empty()) {
                    pieces.back().first = it->begin;
                } else {
                    pieces.emplace_back(it->begin, it->end);
                }
                previous_match = it->is_match;
            }
            std::reverse(pieces.begin(), pieces.end());
            break;
        }
        case SplitBehavior::kContiguous: {
            bool previous_match = false;
            for (const Span& s : spans) {
                if (s.is_match == previous_match && !pieces.empty()) {
                    pieces.back().second = s.end;
                } else {
                    pieces.emplace_back(s.begin, s.end);
                }
                previous_match = s.is_match;
            }
            break;
        }
    }
    for (const auto& [b, e] : pieces) {
        if (e > b) out.emplace_back(text.substr(b, e - b));
    }
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string>& pieces) const {
    std::vector<std::string> current;
    current.emplace_back(text);
    std::vector<std::string> next;
    for (const Step& step : steps_) {
        next.clear();
        for (std::string& piece : current) {
            if (step.add_prefix_space && (piece.empty() || piece[0] != ' ')) {
                piece.insert(piece.begin(), ' ');
            }
            if (step.regex) {
                split_one(piece, *step.regex, step.behavior, step.invert, next);
            } else if (!piece.empty()) {
                next.push_back(std::move(piece));
            }
        }
        current.swap(next);
    }
    for (std::string& piece : current) {
        if (!piece.empty()) pieces.push_back(std::move(piece));
    }
}

Result<PreTokenizer> PreTokenizer::from_llama_pre(std::string_view pre, std::string_view source) {
    std::vector<std::string_view> regexes;
    // The gpt2 pattern without its final `|\s+`: with isolated splitting, whitespace that
    // no alternative takes becomes a piece of its own anyway, so both spellings split alike.
    if (pre == "gpt2" || pre == "mpt" || pre == "olmo" || pre == "jais") {
        regexes = {kGpt2Regex};
    } else if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "command-r" ||
               pre == "codeshell" || pre == "exaone" || pre == "minerva") {
        regexes = {R"(\p{N})", kGpt2Regex};
    } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3" || pre == "falcon3" ||
               pre == "smaug-bpe" || pre == "pixtral") {
        regexes = {kLlama3Regex};
    } else if (pre == "qwen2" || pre == "stablelm2" || pre == "deepseek-r1-qwen") {
        regexes = {kQwen2Regex};
    } else if (pre == "default" || pre.empty()) {
        regexes = {R"([\p{P}\$\+<=>\^~\|]+)",
                   R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))",
                   R"(\p{N}+)", R"([0-9][0-9][0-9])"};
    } else {
        return error(StatusCode::kUnsupported,
                     "{}: tokenizer.ggml.pre '{}' is not supported (known: gpt2, smollm, "
                     "llama-bpe, qwen2, default and their aliases)",
                     source, pre);
    }
    PreTokenizer out;
    for (std::string_view r : regexes) {
        PURBO_ASSIGN_OR_RETURN(auto regex, Regex::compile(r, false));
        out.add_split(std::move(regex), SplitBehavior::kIsolated, false);
    }
    return out;
}

}  // namespace purbo
