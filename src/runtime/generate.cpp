#include "runtime/generate.h"

#include <algorithm>

namespace purbo {

const char* stop_reason_name(StopReason reason) {
    switch (reason) {
        case StopReason::kLength: return "length";
        case StopReason::kEndOfGeneration: return "end of generation";
        case StopReason::kStopString: return "stop string";
        case StopReason::kContextFull: return "context full";
        case StopReason::kCallback: return "stopped by caller";
    }
    return "unknown";
}

size_t utf8_complete_prefix(std::string_view text) {
    // Walk back over at most 3 continuation bytes to the last lead byte and check whether its
    // sequence is complete.
    const size_t n = text.size();
    size_t i = n;
    int back = 0;
    while (i > 0 && back < 4) {
        const unsigned char c = static_cast<unsigned char>(text[i - 1]);
        if ((c & 0xC0u) != 0x80u) {
            size_t need = 1;
            if ((c & 0xE0u) == 0xC0u) need = 2;
            else if ((c & 0xF0u) == 0xE0u) need = 3;
            else if ((c & 0xF8u) == 0xF0u) need = 4;
            return (n - (i - 1) >= need) ? n : i - 1;
        }
        --i;
        ++back;
    }
    return n;  // only continuation bytes (invalid UTF-8): pass through as is
}

namespace {

// How many trailing bytes of `text` could still grow into a stop string.
size_t stop_holdback(std::string_view text, const std::vector<std::string>& stops) {
    size_t hold = 0;
    for (const std::string& s : stops) {
        for (size_t len = std::min(s.size() - 1, text.size()); len > hold; --len) {
            if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
                hold = len;
                break;
            }
        }
    }
    return hold;
}

}  // namespace

Result<GenerateResult> generate(Session& session, int seq, const Tokenizer& tokenizer,
                                std::span<const int32_t> prompt, const GenerateParams& params,
                                const TextCallback& on_text) {
    if (prompt.empty()) return error(StatusCode::kInvalidArgument, "generate: the prompt has no tokens");
    for (const std::string& s : params.stop_strings) {
        if (s.empty()) return error(StatusCode::kInvalidArgument, "generate: empty stop string");
    }
    GenerateResult result;
    std::vector<float> logits;
    PURBO_TRY(session.prefill(seq, prompt, logits));
    Sampler sampler(params.sampler);
    const std::span<const int32_t> stop_ids = tokenizer.stop_ids();
    size_t emitted = 0;  // bytes of result.text already passed to on_text

    for (int i = 0; params.n_predict < 0 || i < params.n_predict; ++i) {
        const int32_t token = sampler.sample(logits);
        result.tokens.push_back(token);
        if (!params.ignore_eos && std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
            result.stop_reason = StopReason::kEndOfGeneration;
            break;
        }
        result.text += tokenizer.token_to_piece(token);
        size_t stop_at = std::string::npos;
        for (const std::string& s : params.stop_strings) {
            const size_t from = emitted > s.size() ? emitted - s.size() : 0;
            const size_t at = result.text.find(s, from);
            if (at != std::string::npos) stop_at = std::min(stop_at, at);
        }
        if (stop_at != std::string::npos) {
            result.text.resize(stop_at);
            result.stop_reason = StopReason::kStopString;
            break;
        }
        // Pass on what can no longer change.
        const std::string_view text = result.text;
        size_t ready = utf8_complete_prefix(text);
        ready -= std::min(ready, stop_holdback(text.substr(0, ready), params.stop_strings));
        if (on_text && ready > emitted) {
            if (!on_text(text.substr(emitted, ready - emitted))) {
                emitted = ready;
                result.stop_reason = StopReason::kCallback;
                break;
            }
            emitted = ready;
        }
        if (params.n_predict >= 0 && i + 1 == params.n_predict) break;
        if (session.length(seq) >= session.n_ctx()) {
            result.stop_reason = StopReason::kContextFull;
            break;
        }
        const DecodeItem item{seq, token};
        PURBO_TRY(session.decode({&item, 1}, logits));
    }
    if (on_text && result.text.size() > emitted) on_text(std::string_view(result.text).substr(emitted));
    return result;
}

}  // namespace purbo
