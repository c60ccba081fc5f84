// Passkey retrieval: trials from a seed, the scorer on hand cases, and (with the default
// model's tokenizer) the prompts: exact length, the needle once at the requested depth, the
// same prompt for the same trial; one short run end to end.
#include <gtest/gtest.h>

#include <set>

#include "eval/passkey.h"
#include "model/model.h"
#include "test-util.h"

namespace purbo {
namespace {

size_t count_of(const std::string& text, const std::string& part) {
    size_t n = 0;
    for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
    return n;
}

TEST(PasskeyTrials, AreDeterministicFiveDigitKeysAtEvenDepths) {
    const std::vector<PasskeyTrial> a = passkey_trials(5, 7), b = passkey_trials(5, 7),
                                    c = passkey_trials(5, 8);
    ASSERT_EQ(a.size(), 5u);
    std::set<std::string> keys;
    for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_EQ(a[i].index, static_cast<int>(i));
        EXPECT_EQ(a[i].key, b[i].key);
        ASSERT_EQ(a[i].key.size(), 5u);
        EXPECT_GE(std::stoi(a[i].key), 10000);
        EXPECT_DOUBLE_EQ(a[i].depth, static_cast<double>(i) / 4);
        keys.insert(a[i].key);
    }
    EXPECT_EQ(keys.size(), 5u);
    EXPECT_NE(a[0].key, c[0].key);  // another seed, other keys
    EXPECT_DOUBLE_EQ(passkey_trials(1, 7)[0].depth, 0.5);
}

TEST(PasskeyScore, FindsTheKeyInARunOfDigits) {
    EXPECT_TRUE(passkey_score(" 12345.", "12345"));
    EXPECT_TRUE(passkey_score(" 12345 is the pass key", "12345"));
    EXPECT_TRUE(passkey_score("12345", "12345"));
    EXPECT_TRUE(passkey_score("The answer: 0123456", "12345"));  // inside a longer run
    EXPECT_TRUE(passkey_score(" 99999, no: 12345", "12345"));
    EXPECT_FALSE(passkey_score(" 1234", "12345"));
    EXPECT_FALSE(passkey_score(" 12 345", "12345"));  // split runs
    EXPECT_FALSE(passkey_score(" 1234-5", "12345"));
    EXPECT_FALSE(passkey_score(" 54321", "12345"));
    EXPECT_FALSE(passkey_score("", "12345"));
    EXPECT_FALSE(passkey_score("12345", ""));
}

class PasskeyPromptTest : public ::testing::Test {
  protected:
    void SetUp() override {
        PURBO_REQUIRE_DEFAULT_MODEL(path);
        auto m = model_load(path);
        ASSERT_TRUE(m.is_ok()) << m.status().to_string();
        model_ = std::make_unique<Model>(std::move(*m));
        auto f = passkey_corpus_filler(*model_->tokenizer, CorpusSplit::kHeldOut);
        if (!f.is_ok())
            GTEST_SKIP() << "no held-out corpus on this machine: " << f.status().message();
        filler_ = std::move(*f);
    }
    const Tokenizer& tok() const { return *model_->tokenizer; }

    std::unique_ptr<Model> model_;
    PasskeyFiller filler_;
};

TEST_F(PasskeyPromptTest, HasTheLengthAndTheNeedleOnceAtItsDepth) {
    ASSERT_FALSE(filler_.tokens.empty());
    EXPECT_EQ(filler_.line_end.size(), filler_.tokens.size());
    for (PasskeyFormat format : {PasskeyFormat::kPlain, PasskeyFormat::kChat}) {
        for (int n_tokens : {300, 1024, 4096}) {
            for (const PasskeyTrial& trial : passkey_trials(7, 3)) {
                SCOPED_TRACE(fmt::format("{} {} tokens, trial {} depth {}",
                                         passkey_format_name(format), n_tokens, trial.index,
                                         trial.depth));
                auto p = passkey_prompt(tok(), &*model_->chat_template, format, filler_, trial,
                                        n_tokens);
                ASSERT_TRUE(p.is_ok()) << p.status().to_string();
                EXPECT_EQ(static_cast<int>(p->tokens.size()), n_tokens);
                const std::string text = tok().decode(p->tokens);
                const std::string needle = fmt::format(
                    "The pass key is {}. Remember it. {} is the pass key.", p->key, p->key);
                EXPECT_EQ(count_of(text, needle), 1u);
                EXPECT_EQ(count_of(text, p->key), 2u);  // only the needle's two mentions
                EXPECT_EQ(tok().decode(std::span(p->tokens).subspan(
                              p->needle_begin, p->needle_end - p->needle_begin)),
                          needle + "\n");
                // Within the snapping distance of the requested depth (in filler tokens).
                EXPECT_NEAR(p->depth, trial.depth, (kPasskeySnapTokens + 1.0) / p->filler_tokens);
                EXPECT_GE(p->needle_begin, 0);
                // Ends with the question, ready for the answer.
                EXPECT_EQ(text.substr(text.size() - 15), "The pass key is");
                if (format == PasskeyFormat::kChat) {
                    EXPECT_NE(text.find("<|im_start|>assistant\nThe pass key is"),
                              std::string::npos);
                }
                // The same trial gives the same prompt.
                auto again = passkey_prompt(tok(), &*model_->chat_template, format, filler_, trial,
                                            n_tokens);
                ASSERT_TRUE(again.is_ok());
                EXPECT_EQ(again->tokens, p->tokens);
            }
        }
    }
}

TEST_F(PasskeyPromptTest, DepthsZeroAndOneAreTheEdgesOfTheFiller) {
    for (double depth : {0.0, 1.0}) {
        const PasskeyTrial trial{0, "31415", depth};
        auto p = passkey_prompt(tok(), nullptr, PasskeyFormat::kPlain, filler_, trial, 2048);
        ASSERT_TRUE(p.is_ok()) << p.status().to_string();
        EXPECT_DOUBLE_EQ(p->depth, depth);
        const std::string text = tok().decode(p->tokens);
        if (depth == 0) {
            EXPECT_NE(text.find("important information there.\n\nThe pass key is 31415."),
                      std::string::npos);
        } else {
            EXPECT_NE(text.find("is the pass key.\n\n\nWhat is the pass key? The pass key is"),
                      std::string::npos);
        }
    }
}

TEST_F(PasskeyPromptTest, AKeyAlreadyInTheFillerIsReplaced) {
    const PasskeyFiller f = passkey_filler(
        tok(), "fake", tok().encode("Call 12345 for help.\nOr write to us.\n", false, false));
    const PasskeyTrial trial{0, "12345", 0.5};
    auto p = passkey_prompt(tok(), nullptr, PasskeyFormat::kPlain, f, trial, 200);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    EXPECT_EQ(p->key, "12346");
    EXPECT_EQ(static_cast<int>(p->tokens.size()), 200);  // the filler repeats cyclically
}

TEST_F(PasskeyPromptTest, RejectsALengthWithoutRoomOrAChatWithoutTemplate) {
    const PasskeyTrial trial{0, "12345", 0.5};
    auto p = passkey_prompt(tok(), nullptr, PasskeyFormat::kPlain, filler_, trial, 40);
    ASSERT_FALSE(p.is_ok());
    EXPECT_NE(p.status().message().find("40 tokens leave no room"), std::string::npos)
        << p.status().message();
    p = passkey_prompt(tok(), nullptr, PasskeyFormat::kChat, filler_, trial, 1000);
    ASSERT_FALSE(p.is_ok());
    EXPECT_NE(p.status().message().find("chat template"), std::string::npos)
        << p.status().message();
}

TEST_F(PasskeyPromptTest, RunsTrialsAndCountsThemPerDepth) {
    SessionOptions so;
    so.n_ctx = 512;
    so.n_threads = 1;  // a loaded machine makes OpenMP barriers of two threads slow
    auto session = Session::create(model_->config, model_->weights, so);
    ASSERT_TRUE(session.is_ok()) << session.status().to_string();
    PasskeyOptions o;
    o.n_tokens = 400;
    o.n_trials = 3;
    o.n_depth_buckets = 2;
    int calls = 0;
    auto r = passkey_run(**session, tok(), nullptr, filler_, o,
                         [&](const PasskeyTrialResult&, int done, int total) {
                             EXPECT_EQ(done, ++calls);
                             EXPECT_EQ(total, 3);
                         });
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(calls, 3);
    ASSERT_EQ(r->trials.size(), 3u);
    ASSERT_EQ(r->buckets.size(), 2u);
    EXPECT_EQ(r->buckets[0].n_trials, 1);  // depth 0
    EXPECT_EQ(r->buckets[1].n_trials, 2);  // depths 0.5 and 1
    int correct = 0;
    for (const PasskeyTrialResult& t : r->trials) {
        EXPECT_EQ(t.correct, passkey_score(t.answer, t.trial.key)) << t.answer;
        correct += t.correct;
    }
    EXPECT_EQ(r->n_correct, correct);
    EXPECT_EQ(r->buckets[0].n_correct + r->buckets[1].n_correct, correct);
    // A second run gives the same answers (greedy, same prompts).
    auto again = passkey_run(**session, tok(), nullptr, filler_, o);
    ASSERT_TRUE(again.is_ok());
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(again->trials[i].answer, r->trials[i].answer);
    // A context too small for the trials.
    o.n_tokens = 600;
    EXPECT_FALSE(passkey_run(**session, tok(), nullptr, filler_, o).is_ok());
}

}  // namespace
}  // namespace purbo
