// Chat templates against jinja2 renderings (tests/fixtures/tokenizer/chat-templates.json,
// written by scripts/gen_tokenizer_fixtures.py).
#include <nlohmann/json.hpp>

#include "core/mapped-file.h"
#include "model/chat-template.h"
#include "model/tokenizer.h"
#include "test-util.h"

namespace purbo {
namespace {

using Json = nlohmann::json;
using test::load_json;

TEST(ChatTemplate, MatchesJinjaRenderings) {
    const Json entries = load_json(test::fixture_path("tokenizer/chat-templates.json"));
    ASSERT_GE(entries.size(), 3u);
    for (const Json& e : entries) {
        const std::string name = e["name"].get<std::string>();
        SCOPED_TRACE(name);
        auto tmpl = ChatTemplate::from_text(e["template"].get<std::string>(), name,
                                            e["bos_token"].get<std::string>());
        ASSERT_TRUE(tmpl.is_ok()) << tmpl.status().to_string();
        EXPECT_EQ(tmpl->name(), e["expected_name"].get<std::string>());
        EXPECT_EQ(tmpl->default_system_prompt(), e["default_system"].get<std::string>());
        for (const Json& c : e["cases"]) {
            std::vector<ChatMessage> messages;
            for (const Json& m : c["messages"]) {
                messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
            }
            EXPECT_EQ(tmpl->apply(messages, c["add_generation_prompt"].get<bool>()),
                      c["expected"].get<std::string>());
        }
    }
}

TEST(ChatTemplate, SmolLM2TemplateFromGguf) {
    // The template stored in the default model (copied into the fixture by the script).
    const Json j = load_json(test::fixture_path("tokenizer/smollm2-gguf-tokenizers.json"));
    auto tmpl = ChatTemplate::from_text(j["chat_template"].get<std::string>(), "smollm2");
    ASSERT_TRUE(tmpl.is_ok()) << tmpl.status().to_string();
    EXPECT_EQ(tmpl->name(), "chatml");
    EXPECT_EQ(tmpl->default_system_prompt(),
              "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST(ChatTemplate, DefaultSystemPromptOnlyFromLiterals) {
    // An expression, not a literal: no default prompt.
    EXPECT_EQ(chatml_default_system_prompt(
                  "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"),
              "");
    // Qwen3-style templates have no default system prompt, only thinking parts.
    const std::string qwen3 =
        "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content "
        "+ '<|im_end|>\\n' }}{%- endif %}{%- if enable_thinking is defined and enable_thinking "
        "is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}";
    auto tmpl = ChatTemplate::from_text(qwen3, "qwen3");
    ASSERT_TRUE(tmpl.is_ok());
    EXPECT_EQ(tmpl->default_system_prompt(), "");
    const ChatMessage user{"user", "Hi"};
    EXPECT_EQ(tmpl->apply({&user, 1}, true),
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    // Escaped quotes stay inside the literal and are unescaped.
    EXPECT_EQ(chatml_default_system_prompt("{{ '<|im_start|>system\\nYou\\'re kind.<|im_end|>' }}"),
              "You're kind.");
}

TEST(ChatTemplate, UnknownTemplateIsUnsupported) {
    const std::string mistral =
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}";
    auto tmpl = ChatTemplate::from_text(mistral, "mistral/tokenizer_config.json");
    ASSERT_FALSE(tmpl.is_ok());
    EXPECT_EQ(tmpl.status().code(), StatusCode::kUnsupported);
    const std::string& msg = tmpl.status().message();
    EXPECT_NE(msg.find("mistral/tokenizer_config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unknown chat template"), std::string::npos) << msg;
    EXPECT_NE(msg.find(mistral.substr(0, 80)), std::string::npos) << msg;
    EXPECT_EQ(msg.find(mistral.substr(0, 81)), std::string::npos) << msg;
}

// A rendered Llama-3 prompt starts with the bos text: encode(add_special) must not double it.
TEST(ChatTemplate, Llama3BosNotDoubled) {
    const Json j = load_json(test::fixture_path("tokenizer/llama3.tokenizer.json"));
    Json tj = j;
    // Give the fixture vocabulary Llama-3's bos and header tokens as special added tokens.
    int32_t next = static_cast<int32_t>(tj["model"]["vocab"].size()) + 16;
    for (const char* t :
         {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}) {
        tj["added_tokens"].push_back({{"id", next++},
                                      {"content", t},
                                      {"special", true},
                                      {"lstrip", false},
                                      {"rstrip", false},
                                      {"normalized", false},
                                      {"single_word", false}});
    }
    const int32_t bos = next - 4;
    const Json special = {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}};
    const Json sequence = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
    tj["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {special, sequence}},
        {"pair", Json::array()},
        {"special_tokens",
         {{"<|begin_of_text|>",
           {{"id", "<|begin_of_text|>"}, {"ids", {bos}}, {"tokens", {"<|begin_of_text|>"}}}}}}};
    auto tok = Tokenizer::from_hf_json(tj.dump(), "llama3-chat");
    ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
    const Json entries = load_json(test::fixture_path("tokenizer/chat-templates.json"));
    auto tmpl = ChatTemplate::from_text(entries[2]["template"].get<std::string>(), "llama3");
    ASSERT_TRUE(tmpl.is_ok());
    const ChatMessage user{"user", "Hello"};
    const auto ids = tok->encode(tmpl->apply({&user, 1}, true), true, true);
    ASSERT_GE(ids.size(), 2u);
    EXPECT_EQ(ids[0], bos);
    EXPECT_NE(ids[1], bos);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), bos), 1);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tok->token_id("<|eot_id|>").value()), 1);
}

}  // namespace
}  // namespace purbo
