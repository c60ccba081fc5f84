// Byte-level BPE tokenizer against ids produced by the Hugging Face `tokenizers` library
// (tests/fixtures/tokenizer/*, written by scripts/gen_tokenizer_fixtures.py).
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/mapped-file.h"
#include "model/bpe.h"
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "test-util.h"

namespace purbo {
namespace {

using Json = nlohmann::json;

Json load_json(const std::string& path) {
    auto text = read_text_file(path);
    EXPECT_TRUE(text.is_ok()) << text.status().to_string();
    if (!text.is_ok()) return Json();
    return Json::parse(text.value());
}

std::string ids_str(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += std::to_string(id) + " ";
    return s;
}

// Checks one tokenizer against one expected file: exact ids with and without special-token
// parsing, decode equal to tokenizers' decode, and streaming pieces equal to decode.
void check_against_expected(const Tokenizer& tok, const Json& expected, const std::string& what) {
    const auto& texts = expected["texts"];
    ASSERT_GT(texts.size(), 0u);
    for (size_t i = 0; i < texts.size(); ++i) {
        const std::string text = texts[i].get<std::string>();
        SCOPED_TRACE(what + " text[" + std::to_string(i) + "] = \"" + text.substr(0, 60) + "\"");
        const auto want = expected["ids"][i].get<std::vector<int32_t>>();
        const auto got = tok.encode(text, /*add_special=*/false, /*parse_special=*/true);
        EXPECT_EQ(ids_str(got), ids_str(want));
        if (expected.contains("ids_no_special")) {
            const auto want_plain = expected["ids_no_special"][i].get<std::vector<int32_t>>();
            EXPECT_EQ(ids_str(tok.encode(text, false, false)), ids_str(want_plain));
        }
        if (expected.contains("decoded")) {
            EXPECT_EQ(tok.decode(want), expected["decoded"][i].get<std::string>());
        }
        std::string streamed;
        for (int32_t id : want) streamed += tok.token_to_piece(id);
        EXPECT_EQ(streamed, tok.decode(want));
    }
}

const char* kFixtures[] = {"gpt2", "llama3", "qwen2", "smollm", "prefix"};

TEST(Tokenizer, MatchesTokenizersFromJson) {
    for (const char* name : kFixtures) {
        const std::string path = test::fixture_path(std::string("tokenizer/") + name +
                                                    ".tokenizer.json");
        auto tok = Tokenizer::from_hf_files(path, "");
        ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
        check_against_expected(tok.value(),
                               load_json(test::fixture_path(std::string("tokenizer/") + name +
                                                            ".expected.json")),
                               name);
    }
}

// The GGUF route: the same vocabularies given as tokenizer.ggml.* arrays, with the
// pre-tokenizer chosen by name as llama.cpp does.
TokenizerVocab vocab_from_tokenizer_json(const Json& j, const std::string& pre) {
    TokenizerVocab v;
    v.model = "gpt2";
    v.pre = pre;
    v.source = "vocab(" + pre + ")";
    for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) {
        const size_t id = it.value().get<size_t>();
        if (id >= v.tokens.size()) v.tokens.resize(id + 1);
        v.tokens[id] = it.key();
    }
    v.token_types.assign(v.tokens.size(), kTokenTypeNormal);
    for (const auto& t : j["added_tokens"]) {
        const size_t id = t["id"].get<size_t>();
        if (id >= v.tokens.size()) {
            v.tokens.resize(id + 1);
            v.token_types.resize(id + 1, kTokenTypeUnused);
        }
        v.tokens[id] = t["content"].get<std::string>();
        v.token_types[id] = t["special"].get<bool>() ? kTokenTypeControl : kTokenTypeUserDefined;
    }
    for (const auto& m : j["model"]["merges"]) {
        v.merges.push_back(m.is_string() ? m.get<std::string>()
                                         : m[0].get<std::string>() + " " + m[1].get<std::string>());
    }
    return v;
}

TEST(Tokenizer, MatchesTokenizersFromGgufVocab) {
    const std::pair<const char*, const char*> cases[] = {
        {"gpt2", "gpt2"}, {"llama3", "llama-bpe"}, {"qwen2", "qwen2"}, {"smollm", "smollm"}};
    for (const auto& [name, pre] : cases) {
        const Json j = load_json(test::fixture_path(std::string("tokenizer/") + name +
                                                    ".tokenizer.json"));
        auto tok = Tokenizer::from_vocab(vocab_from_tokenizer_json(j, pre));
        ASSERT_TRUE(tok.is_ok()) << tok.status().to_string();
        check_against_expected(tok.value(),
                               load_json(test::fixture_path(std::string("tokenizer/") + name +
                                                            ".expected.json")),
                               std::string("gguf:") + pre);
    }
}

}  // namespace
}  // namespace purbo
