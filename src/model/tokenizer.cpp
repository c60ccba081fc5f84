#include "model/tokenizer.h"

#include <algorithm>

#include "model/bpe.h"
#include "model/unicode.h"

namespace purbo {

struct Tokenizer::State {
    std::unique_ptr<BpeModel> bpe;
    bool normalize_nfc = false;
    PreTokenizer pre_tokenizer;
    std::vector<AddedToken> added;                              // longest content first
    std::array<std::vector<int32_t>, 256> added_by_first_byte;  // indices into `added`
    std::vector<std::string> pieces;                            // id -> bytes it stands for
    std::vector<uint8_t> special;                               // id -> 1 when special
    std::vector<int32_t> stop_ids;
    int32_t n_vocab = 0;
    int32_t bos_id = -1, eos_id = -1;
    bool add_bos = false, add_eos = false;
    std::string chat_template;
    std::string source;
};

namespace {

// The ByteLevel decoder: every character of the token maps back to its byte; a token with a
// character outside the table (an added token such as "hello world") is its own UTF-8.
std::string byte_level_decode(std::string_view token) {
    std::string out;
    out.reserve(token.size());
    for (size_t pos = 0; pos < token.size();) {
        const unicode::Utf8Char c = unicode::utf8_decode(token, pos);
        const int b = c.valid ? unicode::byte_from_unicode(c.cp) : -1;
        if (b < 0) return std::string(token);
        out += static_cast<char>(b);
        pos += c.len;
    }
    return out;
}

// A piece of the input: either text for BPE or an added token's id.
struct Segment {
    std::string_view text;
    int32_t added_id = -1;
};

size_t skip_whitespace_left(std::string_view text, size_t begin, size_t limit) {
    // Walks back over whitespace code points while staying at or after `limit`.
    while (begin > limit) {
        size_t p = begin - 1;
        while (p > limit && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
        const unicode::Utf8Char c = unicode::utf8_decode(text, p);
        if (!c.valid || !unicode::is_whitespace(c.cp)) break;
        begin = p;
    }
    return begin;
}

size_t skip_whitespace_right(std::string_view text, size_t end) {
    while (end < text.size()) {
        const unicode::Utf8Char c = unicode::utf8_decode(text, end);
        if (!c.valid || !unicode::is_whitespace(c.cp)) break;
        end += c.len;
    }
    return end;
}

// Splits `text` at added tokens: at each position the longest token that starts there wins,
// and the leftmost position wins first (tokenizers' leftmost-longest Aho-Corasick search).
std::vector<Segment> split_added(const Tokenizer::State& st, std::string_view text,
                                 bool parse_special) {
    std::vector<Segment> segments;
    size_t text_begin = 0;  // start of the pending plain text
    size_t pos = 0;
    while (pos < text.size()) {
        const AddedToken* hit = nullptr;
        for (const int32_t index : st.added_by_first_byte[static_cast<uint8_t>(text[pos])]) {
            const AddedToken& t = st.added[index];
            if (t.special && !parse_special) continue;
            if (text.compare(pos, t.content.size(), t.content) == 0) {
                hit = &t;  // sorted longest first
                break;
            }
        }
        if (!hit) {
            ++pos;
            continue;
        }
        size_t begin = pos;
        size_t end = pos + hit->content.size();
        if (hit->lstrip) begin = skip_whitespace_left(text, begin, text_begin);
        if (hit->rstrip) end = skip_whitespace_right(text, end);
        if (begin > text_begin) segments.push_back({text.substr(text_begin, begin - text_begin)});
        segments.push_back({{}, hit->id});
        text_begin = pos = end;
    }
    if (text_begin < text.size()) segments.push_back({text.substr(text_begin)});
    return segments;
}

}  // namespace

Result<Tokenizer> Tokenizer::from_spec(TokenizerSpec spec) {
    auto st = std::make_shared<State>();
    int32_t n_vocab = static_cast<int32_t>(spec.tokens.size());
    for (const AddedToken& t : spec.added_tokens) {
        if (t.id < 0) {
            return error(StatusCode::kParseError, "{}: added token '{}' has a negative id {}",
                         spec.source, t.content, t.id);
        }
        if (t.content.empty()) {
            return error(StatusCode::kParseError, "{}: added token {} has empty content",
                         spec.source, t.id);
        }
        n_vocab = std::max(n_vocab, t.id + 1);
    }
    const auto check_id = [&](int32_t id, const char* what) -> Status {
        if (id < -1 || id >= n_vocab) {
            return error(StatusCode::kParseError, "{}: {} {} outside the vocabulary of {}",
                         spec.source, what, id, n_vocab);
        }
        return Status::ok();
    };
    PURBO_TRY(check_id(spec.bos_id, "bos id"));
    PURBO_TRY(check_id(spec.eos_id, "eos id"));
    PURBO_TRY(check_id(spec.eot_id, "eot id"));
    PURBO_TRY(check_id(spec.pad_id, "pad id"));
    PURBO_TRY(check_id(spec.unk_id, "unk id"));

    PURBO_ASSIGN_OR_RETURN(st->bpe, BpeModel::build(spec.tokens, spec.merges, spec.ignore_merges,
                                                    spec.unk_id, spec.source));
    st->n_vocab = n_vocab;
    st->pieces.resize(n_vocab);
    st->special.assign(n_vocab, 0);
    for (size_t id = 0; id < spec.tokens.size(); ++id) {
        st->pieces[id] = byte_level_decode(spec.tokens[id]);
    }
    for (const AddedToken& t : spec.added_tokens) {
        st->pieces[t.id] = byte_level_decode(t.content);
        st->special[t.id] = t.special ? 1 : 0;
    }
    st->added = std::move(spec.added_tokens);
    std::stable_sort(st->added.begin(), st->added.end(),
                     [](const AddedToken& a, const AddedToken& b) {
                         return a.content.size() > b.content.size();
                     });
    for (size_t i = 0; i < st->added.size(); ++i) {
        st->added_by_first_byte[static_cast<uint8_t>(st->added[i].content[0])].push_back(
            static_cast<int32_t>(i));
    }

    st->normalize_nfc = spec.normalize_nfc;
    st->pre_tokenizer = std::move(spec.pre_tokenizer);
    st->bos_id = spec.bos_id;
    st->eos_id = spec.eos_id;
    st->add_bos = spec.add_bos && spec.bos_id >= 0;
    st->add_eos = spec.add_eos && spec.eos_id >= 0;
    st->chat_template = std::move(spec.chat_template);
    st->source = std::move(spec.source);

    Tokenizer tok;
    tok.state_ = st;
    const auto add_stop = [&](int32_t id) {
        if (id >= 0 &&
            std::find(st->stop_ids.begin(), st->stop_ids.end(), id) == st->stop_ids.end()) {
            st->stop_ids.push_back(id);
        }
    };
    add_stop(spec.eos_id);
    add_stop(spec.eot_id);
    for (const char* name :
         {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end_of_text|>"}) {
        if (auto id = tok.token_id(name)) add_stop(*id);
    }
    return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view raw_text, bool add_special,
                                       bool parse_special) const {
    const State& st = *state_;
    const std::string text = unicode::utf8_sanitize(raw_text);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 2);
    std::vector<std::string> pieces;
    for (const Segment& seg : split_added(st, text, parse_special)) {
        if (seg.added_id >= 0) {
            ids.push_back(seg.added_id);
            continue;
        }
        std::string normalized;
        std::string_view body = seg.text;
        if (st.normalize_nfc) {
            // Input is valid UTF-8 here, so NFC cannot fail on it; keep the text if ICU does.
            auto n = unicode::nfc(body);
            if (n.is_ok()) {
                normalized = std::move(n).value();
                body = normalized;
            }
        }
        pieces.clear();
        if (st.pre_tokenizer.empty()) {
            pieces.emplace_back(body);
        } else {
            st.pre_tokenizer.split(body, pieces);
        }
        for (const std::string& piece : pieces) st.bpe->encode_piece(piece, ids);
    }
    if (add_special) {
        if (st.add_bos && (ids.empty() || ids.front() != st.bos_id)) {
            ids.insert(ids.begin(), st.bos_id);
        }
        if (st.add_eos) ids.push_back(st.eos_id);
    }
    return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
    std::string out;
    for (const int32_t id : ids) {
        if (id < 0 || id >= state_->n_vocab) continue;
        if (skip_special && state_->special[id]) continue;
        out += state_->pieces[id];
    }
    return out;
}

std::string Tokenizer::token_to_piece(int32_t id) const {
    if (id < 0 || id >= state_->n_vocab) return {};
    return state_->pieces[id];
}

int32_t Tokenizer::n_vocab() const {
    return state_->n_vocab;
}
int32_t Tokenizer::bos_id() const {
    return state_->bos_id;
}
int32_t Tokenizer::eos_id() const {
    return state_->eos_id;
}
bool Tokenizer::add_bos() const {
    return state_->add_bos;
}
std::span<const int32_t> Tokenizer::stop_ids() const {
    return state_->stop_ids;
}
bool Tokenizer::is_special(int32_t id) const {
    return id >= 0 && id < state_->n_vocab && state_->special[id];
}
std::string_view Tokenizer::chat_template_text() const {
    return state_->chat_template;
}
const std::string& Tokenizer::source() const {
    return state_->source;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view text) const {
    for (const AddedToken& t : state_->added) {
        if (t.content == text) return t.id;
    }
    const int32_t id = state_->bpe->token_id(unicode::bytes_to_byte_level(text));
    if (id >= 0) return id;
    return std::nullopt;
}

Result<Tokenizer> Tokenizer::from_vocab(const TokenizerVocab& v) {
    if (v.model != "gpt2") {
        return error(StatusCode::kUnsupported,
                     "{}: tokenizer.ggml.model '{}' is not supported (only 'gpt2', byte-level BPE)",
                     v.source, v.model);
    }
    if (!v.token_types.empty() && v.token_types.size() != v.tokens.size()) {
        return error(StatusCode::kParseError,
                     "{}: tokenizer.ggml.token_type has {} entries for {} tokens", v.source,
                     v.token_types.size(), v.tokens.size());
    }
    TokenizerSpec spec;
    spec.source = v.source;
    PURBO_ASSIGN_OR_RETURN(spec.pre_tokenizer, PreTokenizer::from_llama_pre(v.pre, v.source));
    // llama.cpp sets ignore_merges for the Llama-3 pre-tokenizer, as its tokenizer.json does.
    spec.ignore_merges = v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3";
    // Qwen2's tokenizer.json normalises to NFC; llama.cpp skips that, we follow tokenizer.json.
    spec.normalize_nfc = v.pre == "qwen2" || v.pre == "deepseek-r1-qwen";

    spec.merges.reserve(v.merges.size());
    for (size_t i = 0; i < v.merges.size(); ++i) {
        const std::string& m = v.merges[i];
        const size_t space = m.find(' ', 1);  // a part may itself start with a space
        if (space == std::string::npos || space + 1 >= m.size()) {
            return error(StatusCode::kParseError,
                         "{}: tokenizer.ggml.merges[{}] '{}' is not two tokens separated by a "
                         "space",
                         v.source, i, m);
        }
        spec.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }

    spec.tokens.resize(v.tokens.size());
    for (size_t id = 0; id < v.tokens.size(); ++id) {
        const int32_t type = v.token_types.empty() ? kTokenTypeNormal : v.token_types[id];
        const bool is_control = type == kTokenTypeControl;
        const bool is_user = type == kTokenTypeUserDefined;
        if (is_control || is_user) {
            if (v.tokens[id].empty()) continue;
            // Control tokens are recognised only when parse_special; user-defined ones always
            // (llama.cpp). Both count as special for decode(skip_special).
            AddedToken t;
            t.id = static_cast<int32_t>(id);
            t.content = is_user ? byte_level_decode(v.tokens[id]) : v.tokens[id];
            t.special = is_control;
            spec.added_tokens.push_back(std::move(t));
        } else {
            spec.tokens[id] = v.tokens[id];
        }
    }
    // Without token types the bos/eos/... tokens are still control tokens.
    if (v.token_types.empty()) {
        for (const int32_t id : {v.bos_id, v.eos_id, v.eot_id, v.pad_id}) {
            if (id < 0 || id >= static_cast<int32_t>(v.tokens.size())) continue;
            if (std::any_of(spec.added_tokens.begin(), spec.added_tokens.end(),
                            [&](const AddedToken& t) { return t.id == id; })) {
                continue;
            }
            spec.added_tokens.push_back({id, v.tokens[id], true, false, false});
            spec.tokens[id].clear();
        }
    }
    spec.bos_id = v.bos_id;
    spec.eos_id = v.eos_id;
    spec.eot_id = v.eot_id;
    spec.pad_id = v.pad_id;
    spec.unk_id = v.unk_id;
    spec.add_bos = v.add_bos;
    spec.add_eos = v.add_eos;
    return from_spec(std::move(spec));
}

}  // namespace purbo
