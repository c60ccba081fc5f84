// Byte-level BPE tokenizer (GPT-2 / Llama-3 / Qwen2 / SmolLM2 families), loaded from a GGUF
// vocabulary (tokenizer.ggml.*) or from Hugging Face tokenizer.json (+ tokenizer_config.json).
// Its ids match the Hugging Face `tokenizers` library exactly.
//
// Choices where the two references differ or are silent:
//  - GGUF route: control tokens (type 3) are matched in text only with parse_special;
//    user-defined tokens (type 4) always, and decode(skip_special) keeps them (llama.cpp).
//  - GGUF route with pre "qwen2": text is NFC-normalised as Qwen2's tokenizer.json says
//    (llama.cpp does not normalise).
//  - Added tokens are matched on the text before normalisation; single_word is ignored.
//  - A text that already starts with the bos token gets no second bos from add_special.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "model/pre-tokenizer.h"

namespace purbo {

// What a GGUF file says about its tokenizer (tokenizer.ggml.* keys).
struct TokenizerVocab {
    std::string model;                 // "gpt2" (byte-level BPE); others -> kUnsupported
    std::string pre;                   // tokenizer.ggml.pre: "smollm", "llama-bpe", "qwen2", ...
    std::vector<std::string> tokens;   // id -> token text (byte-level encoded)
    std::vector<int32_t> token_types;  // 1 normal, 2 unknown, 3 control, 4 user-defined,
                                       // 5 unused, 6 byte (may be empty)
    std::vector<std::string> merges;   // "a b"
    int32_t bos_id = -1, eos_id = -1, eot_id = -1, pad_id = -1, unk_id = -1;
    bool add_bos = false, add_eos = false;
    std::string source;  // file name for messages
};

enum TokenType : int32_t {
    kTokenTypeNormal = 1,
    kTokenTypeUnknown = 2,
    kTokenTypeControl = 3,
    kTokenTypeUserDefined = 4,
    kTokenTypeUnused = 5,
    kTokenTypeByte = 6,
};

// A token matched verbatim in the text before normal tokenisation (tokenizer.json
// added_tokens; GGUF control and user-defined tokens).
struct AddedToken {
    int32_t id = -1;
    std::string content;   // the text as written (not byte-level encoded)
    bool special = false;  // matched only when parse_special; skipped by decode(skip_special)
    bool lstrip = false;   // the match swallows whitespace on its left
    bool rstrip = false;   // ... and on its right
};

// Everything a Tokenizer is built from; the two loaders fill it.
struct TokenizerSpec {
    std::vector<std::string> tokens;  // id -> byte-level text ("" for ids only added tokens use)
    std::vector<std::pair<std::string, std::string>> merges;  // rank order
    bool ignore_merges = false;
    bool normalize_nfc = false;
    PreTokenizer pre_tokenizer;
    std::vector<AddedToken> added_tokens;
    int32_t bos_id = -1, eos_id = -1, eot_id = -1, pad_id = -1, unk_id = -1;
    bool add_bos = false, add_eos = false;
    std::string chat_template;
    std::string source;
};

class Tokenizer {
  public:
    static Result<Tokenizer> from_vocab(const TokenizerVocab& vocab);
    // tokenizer.json plus, when the path is not empty, tokenizer_config.json (add_bos_token,
    // add_eos_token, bos_token, eos_token, chat_template).
    static Result<Tokenizer> from_hf_files(const std::string& tokenizer_json_path,
                                           const std::string& tokenizer_config_path);
    static Result<Tokenizer> from_hf_json(std::string_view json_text, std::string source);
    static Result<Tokenizer> from_spec(TokenizerSpec spec);

    // add_special: bos in front when the model asks for it (not when the text already starts
    // with the bos token, e.g. a Llama-3 chat template), eos at the end likewise.
    // parse_special: special tokens written in the text become their ids; without it they are
    // tokenised as plain text (non-special added tokens are always recognised).
    // Invalid UTF-8 in `text` is replaced by U+FFFD first.
    std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;
    // Concatenated pieces; bytes that are not valid UTF-8 on their own are kept as they are.
    std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
    // The bytes token `id` stands for ("" for an id out of range). Concatenating the pieces of
    // a stream reproduces decode() of the whole sequence.
    std::string token_to_piece(int32_t id) const;

    int32_t n_vocab() const;
    int32_t bos_id() const;
    int32_t eos_id() const;
    bool add_bos() const;
    // eos, eot and whichever of <|im_end|>, <|eot_id|>, <|eom_id|>, <|endoftext|>,
    // <|end_of_text|> exist: generation stops at any of them.
    std::span<const int32_t> stop_ids() const;
    bool is_special(int32_t id) const;
    std::optional<int32_t> token_id(std::string_view text) const;
    std::string_view chat_template_text() const;  // empty when the files had none
    const std::string& source() const;

    struct State;  // defined in tokenizer.cpp

  private:
    Tokenizer() = default;  // only the loaders make one, so state_ is never null
    std::shared_ptr<const State> state_;
};

}  // namespace purbo
