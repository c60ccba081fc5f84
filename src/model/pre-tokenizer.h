// Pre-tokenization: splits text into the pieces that BPE encodes one by one, as the Hugging
// Face `tokenizers` pre-tokenizers (Split, ByteLevel, Digits, Sequence) and llama.cpp's
// per-`tokenizer.ggml.pre` regex lists do.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace purbo {

// A compiled PCRE2 pattern (UTF + UCP so \p{L}, \p{N}, \s are Unicode-aware; JIT when the
// library has it). Immutable and safe to share between threads.
class Regex {
  public:
    static Result<std::shared_ptr<const Regex>> compile(std::string_view pattern, bool literal);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Every non-overlapping match, leftmost first, as (begin, end) byte offsets. An empty
    // match is recorded and the search resumes one character later, as `tokenizers` does.
    void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const;
    const std::string& pattern() const { return pattern_; }

  private:
    Regex() = default;
    void* code_ = nullptr;  // pcre2_code_8*
    std::string pattern_;
};

// What happens to the matched parts (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior {
    kIsolated,            // matches become pieces of their own
    kRemoved,             // matches are dropped
    kMergedWithPrevious,  // a match is glued to the piece before it
    kMergedWithNext,      // a match is glued to the piece after it
    kContiguous,          // runs of matches (and of non-matches) become one piece
};

class PreTokenizer {
  public:
    // llama.cpp's regex list for a GGUF `tokenizer.ggml.pre` value ("smollm", "llama-bpe",
    // "qwen2", "gpt2", "default", ...); each regex splits every piece, keeping both the
    // matches and the text between them. Unknown values -> kUnsupported.
    static Result<PreTokenizer> from_llama_pre(std::string_view pre, std::string_view source);

    // Steps run in the order added, each on every piece the previous step produced.
    void add_split(std::shared_ptr<const Regex> regex, SplitBehavior behavior, bool invert);
    // ByteLevel: a space in front of every piece that does not start with one (per piece, as
    // `tokenizers` does), then the GPT-2 regex when use_regex.
    Status add_byte_level(bool add_prefix_space, bool use_regex);
    bool empty() const { return steps_.empty(); }

    // Appends the pieces of `text` (valid UTF-8) to `pieces`.
    void split(std::string_view text, std::vector<std::string>& pieces) const;

  private:
    struct Step {
        std::shared_ptr<const Regex> regex;  // null for a pure prefix-space step
        SplitBehavior behavior = SplitBehavior::kIsolated;
        bool invert = false;
        bool add_prefix_space = false;
    };
    std::vector<Step> steps_;
};

// The GPT-2 pattern of the ByteLevel pre-tokenizer.
inline constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace purbo
