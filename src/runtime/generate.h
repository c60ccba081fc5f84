// Text generation on one sequence slot: prefill the prompt, then sample token by token
// until n_predict tokens, an end-of-generation token, a stop string or a full context.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

namespace purbo {

struct GenerateParams {
    int n_predict = 128;  // < 0: until the context is full
    SamplerParams sampler;
    std::vector<std::string> stop_strings;  // generation ends before the first occurrence
    bool ignore_eos = false;
};

enum class StopReason { kLength, kEndOfGeneration, kStopString, kContextFull, kCallback };
const char* stop_reason_name(StopReason reason);

struct GenerateResult {
    std::vector<int32_t> tokens;  // generated ids (the token that completed a stop string included)
    std::string text;             // generated text, cut before a stop string
    StopReason stop_reason = StopReason::kLength;
};

// Receives text as it becomes final: whole UTF-8 characters, never a piece that might still
// turn out to be the start of a stop string. Return false to stop generating.
using TextCallback = std::function<bool(std::string_view text)>;

Result<GenerateResult> generate(Session& session, int seq, const Tokenizer& tokenizer,
                                std::span<const int32_t> prompt, const GenerateParams& params,
                                const TextCallback& on_text = {});

// Length of the longest prefix of `text` made of complete UTF-8 sequences.
size_t utf8_complete_prefix(std::string_view text);

}  // namespace purbo
