// Passkey retrieval (Mohtashami and Jaggi, "Landmark Attention", 2023; the long-context test of
// LongLoRA, YaRN and others): a five-digit key is hidden at a chosen depth of a long filler
// text and asked for at the end; the model answers by greedy completion.
//
// Prompt of a trial, exactly n_tokens tokens (the answer's tokens come on top):
//   [chat or bos prefix] intro  filler[0, q)  needle  filler[q, F)  question  [chat suffix]
//   intro    "There is an important info hidden inside a lot of irrelevant text. Find it and
//            memorize it. I will quiz you about the important information there.\n\n"
//   needle   "The pass key is 12345. Remember it. 12345 is the pass key.\n"
//   question "\n\nWhat is the pass key? The pass key is" (plain completion), or with the chat
//            template: the question ends the user message and the assistant's turn starts
//            with "The pass key is".
// The filler is real text, not the classic "The grass is green. The sky is blue." repeated: the
// held-out split of the machine's corpus (sparse/corpus.h), which no adapter was trained on.
// Each trial reads it from its own offset (cyclically), so trials differ in text too. The
// needle goes where the filler's depth share d of F tokens lies (q = d F), moved to the nearest
// line start within kPasskeySnapTokens so that it does not cut a word.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/chat-template.h"
#include "model/tokenizer.h"
#include "runtime/session.h"
#include "sparse/corpus.h"
#include "sparse/sparse-policy.h"

namespace purbo {

// The needle moves at most this many tokens to reach a line start (licence text breaks lines
// every 10 to 20 tokens; a text without breaks gets the needle at the exact depth).
constexpr int kPasskeySnapTokens = 32;

// One trial: the key and the depth asked for.
struct PasskeyTrial {
    int index = 0;
    std::string key;   // five digits, 10000..99999
    double depth = 0;  // [0, 1]: share of the filler before the needle
};

// n trials from a seed: keys uniform over 10000..99999 (splitmix64 of seed and index, the same
// on every platform), depths i / (n - 1) evenly over [0, 1] (0.5 for a single trial).
std::vector<PasskeyTrial> passkey_trials(int n_trials, uint64_t seed);

// The haystack: a long token stream and where its lines end.
struct PasskeyFiller {
    std::string name;               // where it came from ("held-out: MPL-1.1+GFDL-1.3+...")
    std::vector<int32_t> tokens;    // (n,)
    std::vector<uint8_t> line_end;  // (n,) 1 where the token's text ends with a newline
};
PasskeyFiller passkey_filler(const Tokenizer& tokenizer, std::string name,
                             std::vector<int32_t> tokens);
// The documents of `split` on this machine, joined by a blank line.
Result<PasskeyFiller> passkey_corpus_filler(const Tokenizer& tokenizer, CorpusSplit split);

enum class PasskeyFormat { kPlain, kChat };
const char* passkey_format_name(PasskeyFormat format);

struct PasskeyPrompt {
    std::vector<int32_t> tokens;  // (n_tokens,)
    // The key hidden: the trial's, or the next one (cyclically) when the filler text already
    // holds the trial's key, so that the needle is the only place the key appears.
    std::string key;
    int needle_begin = 0;  // tokens [needle_begin, needle_end) are the needle
    int needle_end = 0;
    int filler_tokens = 0;  // F
    double depth = 0;       // where the needle landed: filler tokens before it / F
};

// The prompt of `trial` with exactly n_tokens tokens. `chat` is required for kChat.
// kInvalidArgument when n_tokens leaves no room for filler.
Result<PasskeyPrompt> passkey_prompt(const Tokenizer& tokenizer, const ChatTemplate* chat,
                                     PasskeyFormat format, const PasskeyFiller& filler,
                                     const PasskeyTrial& trial, int n_tokens);

// Whether the answer holds the key: some run of consecutive digits in `answer` contains it
// (" 12345." and " 12345 is the pass key" score, " 1234" and " 12 345" do not).
bool passkey_score(std::string_view answer, std::string_view key);

struct PasskeyOptions {
    int n_tokens = 2048;  // prompt + answer: the context length the trial tests
    int n_trials = 50;
    uint64_t seed = 0;
    PasskeyFormat format = PasskeyFormat::kPlain;
    int n_predict = 8;        // answer tokens (greedy); the key is five digit tokens
    int n_depth_buckets = 5;  // accuracy per depth range [k / n, (k + 1) / n)
};

struct PasskeyTrialResult {
    PasskeyTrial trial;  // the key actually hidden
    double depth = 0;    // where the needle landed
    std::string answer;
    bool correct = false;
    double seconds = 0;
};

struct PasskeyDepthBucket {
    double lo = 0, hi = 0;  // depths [lo, hi); the last bucket includes 1
    int n_trials = 0;
    int n_correct = 0;
};

struct PasskeyResult {
    int n_tokens = 0;
    std::vector<PasskeyTrialResult> trials;
    std::vector<PasskeyDepthBucket> buckets;
    int n_correct = 0;
    double seconds = 0;
    SparsityStats sparsity;  // decode steps of the answers (zero for a dense model)
    double accuracy() const {
        return trials.empty() ? 0 : static_cast<double>(n_correct) / trials.size();
    }
};

using PasskeyProgress = std::function<void(const PasskeyTrialResult& trial, int done, int total)>;

// Runs the trials on slot 0 of `session` (cleared before each; its context must hold n_tokens).
Result<PasskeyResult> passkey_run(Session& session, const Tokenizer& tokenizer,
                                  const ChatTemplate* chat, const PasskeyFiller& filler,
                                  const PasskeyOptions& options,
                                  const PasskeyProgress& progress = {});

}  // namespace purbo
