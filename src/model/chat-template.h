// Chat templates: the model's Jinja template is recognised by its markers and rendered by a
// fixed C++ renderer per family (a Jinja subset comes later).
//   chatml  SmolLM2, Qwen2/2.5/3: <|im_start|>{role}\n{content}<|im_end|>\n per message, and
//           <|im_start|>assistant\n as the generation prompt. A default system prompt written
//           literally in the template (SmolLM2, Qwen2.5) is found generically and injected
//           when the first message is not a system message. Qwen3's thinking parts
//           (<think> stripping in history, enable_thinking=false) are not rendered: the
//           output is the plain ChatML that Qwen3's template gives with thinking enabled for
//           conversations without reasoning content.
//   llama3  Llama-3 Instruct: bos_token, then
//           <|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|> per message.
//           The bos is part of the rendered text; Tokenizer::encode(add_special=true) sees it
//           at the front and does not add a second one (llama.cpp avoids the double bos too).
//           Llama-3.1's dated default system prompt is not reproduced.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "core/status.h"

namespace purbo {

struct ChatMessage {
    std::string role;  // "system", "user", "assistant" (others are framed the same way)
    std::string content;
};

class ChatTemplate {
  public:
    // kUnsupported "unknown chat template (...)" for anything that is neither ChatML nor
    // Llama-3. bos_token is what the template's `bos_token` variable holds.
    static Result<ChatTemplate> from_text(std::string_view jinja_text, std::string source,
                                          std::string bos_token = "<|begin_of_text|>");

    std::string apply(std::span<const ChatMessage> messages, bool add_generation_prompt) const;
    std::string_view name() const { return name_; }  // "chatml" | "llama3"
    // The literal default system prompt found in the template ("" when none).
    const std::string& default_system_prompt() const { return default_system_; }

  private:
    std::string name_;
    std::string default_system_;
    std::string bos_;  // rendered in front (llama3 only)
    std::string source_;
};

// The default system prompt written literally in a ChatML template, e.g. SmolLM2's
// '<|im_start|>system\nYou are ...<|im_end|>\n' inside a Jinja string: the text between
// "<|im_start|>system" + newline (real, or the escape \n) and "<|im_end|>", accepted only when
// it stays inside one string literal (no Jinja expression, no closing quote). "" when none.
std::string chatml_default_system_prompt(std::string_view jinja_text);

}  // namespace purbo
