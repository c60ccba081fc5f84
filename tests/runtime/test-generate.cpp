// The generation loop: stop strings, end-of-generation tokens, streamed text equal to the
// final text, and UTF-8 boundaries. Runs a tiny random-weight Llama (tests/fixtures/hf) with a
// byte-level tokenizer, so the text is arbitrary but deterministic under greedy sampling.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/hf-loader.h"
#include "model/tokenizer.h"
#include "model/unicode.h"
#include "runtime/generate.h"
#include "test-util.h"

namespace purbo {
namespace {

Tokenizer byte_tokenizer() {
    nlohmann::json vocab = nlohmann::json::object();
    const auto& table = unicode::byte_to_unicode_utf8();
    for (int b = 0; b < 256; ++b) vocab[table[static_cast<size_t>(b)]] = b;
    const nlohmann::json j = {
        {"added_tokens", {{{"id", 256}, {"content", "<|endoftext|>"}, {"special", true}}}},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
    auto t = Tokenizer::from_hf_json(j.dump(), "byte-tokenizer.json");
    EXPECT_TRUE(t.is_ok()) << t.status().to_string();
    return std::move(t.value());
}

class Generate : public ::testing::Test {
protected:
    void SetUp() override {
        auto hf = hf_model_load(test::fixture_path("hf/llama-llama3rope-tied"));
        ASSERT_TRUE(hf.is_ok()) << hf.status().to_string();
        hf_ = std::make_unique<HfModel>(std::move(hf.value()));
        SessionOptions so;
        so.n_ctx = 128;
        auto s = Session::create(hf_->config, hf_->weights, so);
        ASSERT_TRUE(s.is_ok());
        session_ = std::move(s.value());
    }
    GenerateResult run(const GenerateParams& gp, std::string* streamed = nullptr) {
        session_->clear(0);
        const std::vector<int32_t> prompt = tok_.encode("hello", false, false);
        auto r = generate(*session_, 0, tok_, prompt, gp, [&](std::string_view piece) {
            if (streamed != nullptr) *streamed += piece;
            return true;
        });
        EXPECT_TRUE(r.is_ok()) << r.status().to_string();
        return r.is_ok() ? std::move(r.value()) : GenerateResult{};
    }
    Tokenizer tok_ = byte_tokenizer();
    std::unique_ptr<HfModel> hf_;
    std::unique_ptr<Session> session_;
};

GenerateParams greedy(int n) {
    GenerateParams gp;
    gp.n_predict = n;
    gp.sampler.temperature = 0.0f;
    gp.ignore_eos = true;
    return gp;
}

TEST_F(Generate, LengthAndStreamedTextEqualFinalText) {
    std::string streamed;
    const GenerateResult r = run(greedy(24), &streamed);
    EXPECT_EQ(r.tokens.size(), 24u);
    EXPECT_EQ(r.stop_reason, StopReason::kLength);
    EXPECT_EQ(streamed, r.text);
    EXPECT_EQ(r.text, tok_.decode(r.tokens));
}

TEST_F(Generate, StopsBeforeAStopString) {
    const GenerateResult full = run(greedy(24));
    ASSERT_GE(full.text.size(), 8u);
    // A stop string made of bytes 5..7 of the free-running text: the text ends right before.
    GenerateParams gp = greedy(24);
    gp.stop_strings = {full.text.substr(5, 3)};
    const size_t first = full.text.find(gp.stop_strings[0]);
    std::string streamed;
    const GenerateResult r = run(gp, &streamed);
    EXPECT_EQ(r.stop_reason, StopReason::kStopString);
    EXPECT_EQ(r.text, full.text.substr(0, first));
    EXPECT_EQ(streamed, r.text) << "no part of the stop string may have been streamed";
}

TEST_F(Generate, ContextFullStopsCleanly) {
    GenerateParams gp = greedy(-1);  // until the context is full
    const GenerateResult r = run(gp);
    EXPECT_EQ(r.stop_reason, StopReason::kContextFull);
    EXPECT_EQ(session_->length(0), session_->n_ctx());
}

TEST(Utf8, CompletePrefixHoldsBackSplitCharacters) {
    EXPECT_EQ(utf8_complete_prefix("abc"), 3u);
    EXPECT_EQ(utf8_complete_prefix("a\xC3"), 1u);              // first byte of a 2-byte char
    EXPECT_EQ(utf8_complete_prefix("a\xC3\xA9"), 3u);          // é complete
    EXPECT_EQ(utf8_complete_prefix("\xE2\x82"), 0u);           // 2 of 3 bytes of €
    EXPECT_EQ(utf8_complete_prefix("x\xF0\x9F\x98"), 1u);      // 3 of 4 bytes of an emoji
    EXPECT_EQ(utf8_complete_prefix("x\xF0\x9F\x98\x80"), 5u);  // complete emoji
}

}  // namespace
}  // namespace purbo
