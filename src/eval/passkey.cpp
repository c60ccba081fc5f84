#include "eval/passkey.h"

#include <algorithm>
#include <cmath>

#include "core/timer.h"
#include "runtime/generate.h"

namespace purbo {
namespace {

constexpr const char* kIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n\n";
constexpr const char* kQuestion = "\n\nWhat is the pass key?";
constexpr const char* kAnswerStart = "The pass key is";
// Stands in for the user message when the chat template is split around it.
constexpr const char* kChatBodyMark = "\x01PASSKEY-BODY\x01";

// Filler offsets of consecutive trials lie this far apart (a prime: over many trials they
// spread over the whole stream rather than revisiting a few places).
constexpr int64_t kFillerStride = 7919;

uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

std::string needle_text(const std::string& key) {
    return fmt::format("The pass key is {}. Remember it. {} is the pass key.\n", key, key);
}

// The next five-digit key after `key`, cyclically (99999 -> 10000).
std::string next_key(const std::string& key) {
    const int k = std::stoi(key);
    return std::to_string(k == 99999 ? 10000 : k + 1);
}

void append(std::vector<int32_t>& out, std::span<const int32_t> tokens) {
    out.insert(out.end(), tokens.begin(), tokens.end());
}

}  // namespace

std::vector<PasskeyTrial> passkey_trials(int n_trials, uint64_t seed) {
    std::vector<PasskeyTrial> trials;
    for (int i = 0; i < n_trials; ++i) {
        PasskeyTrial t;
        t.index = i;
        // 2^64 is not a multiple of 90000: the bias is below 1e-14, far from mattering.
        t.key = std::to_string(
            10000 + splitmix64(seed * 0x100000001B3ull + static_cast<uint64_t>(i)) % 90000);
        t.depth = n_trials > 1 ? static_cast<double>(i) / (n_trials - 1) : 0.5;
        trials.push_back(std::move(t));
    }
    return trials;
}

PasskeyFiller passkey_filler(const Tokenizer& tokenizer, std::string name,
                             std::vector<int32_t> tokens) {
    PasskeyFiller f;
    f.name = std::move(name);
    f.tokens = std::move(tokens);
    // Which token ids end a line, decided once per id rather than once per token.
    std::vector<int8_t> ends(static_cast<size_t>(tokenizer.n_vocab()), -1);
    for (int32_t id : f.tokens) {
        int8_t& e = ends.at(static_cast<size_t>(id));
        if (e < 0) {
            const std::string piece = tokenizer.token_to_piece(id);
            e = !piece.empty() && piece.back() == '\n' ? 1 : 0;
        }
        f.line_end.push_back(static_cast<uint8_t>(e));
    }
    return f;
}

Result<PasskeyFiller> passkey_corpus_filler(const Tokenizer& tokenizer, CorpusSplit split) {
    CorpusOptions co;
    co.split = split;
    PURBO_ASSIGN_OR_RETURN(std::vector<TextDocument> docs, corpus_documents(co));
    const std::vector<TokenizedDocument> tokenized = corpus_tokenize(tokenizer, docs);
    const std::vector<int32_t> separator = corpus_separator(tokenizer);
    std::vector<int32_t> stream;
    std::string names;
    for (const TokenizedDocument& d : tokenized) {
        if (!stream.empty()) append(stream, separator);
        append(stream, d.tokens);
        names += (names.empty() ? "" : "+") + d.name;
    }
    return passkey_filler(tokenizer, fmt::format("{}: {}", corpus_split_name(split), names),
                          std::move(stream));
}

const char* passkey_format_name(PasskeyFormat format) {
    return format == PasskeyFormat::kChat ? "chat" : "plain";
}

Result<PasskeyPrompt> passkey_prompt(const Tokenizer& tokenizer, const ChatTemplate* chat,
                                     PasskeyFormat format, const PasskeyFiller& filler,
                                     const PasskeyTrial& trial, int n_tokens) {
    if (filler.tokens.empty())
        return error(StatusCode::kInvalidArgument, "passkey: the filler text is empty");
    if (format == PasskeyFormat::kChat && chat == nullptr)
        return error(StatusCode::kInvalidArgument,
                     "passkey: the chat format needs the model's chat template");
    // The fixed parts around the body (intro, filler with the needle, question).
    std::vector<int32_t> head, tail;
    if (format == PasskeyFormat::kChat) {
        const std::vector<ChatMessage> messages = {{"user", kChatBodyMark}};
        const std::string text = chat->apply(messages, /*add_generation_prompt=*/true);
        const size_t mark = text.find(kChatBodyMark);
        if (mark == std::string::npos)
            return error(StatusCode::kInternal,
                         "passkey: the chat template dropped the user message");
        head = tokenizer.encode(text.substr(0, mark), /*add_special=*/true, /*parse_special=*/true);
        append(head, tokenizer.encode(kIntro, false, false));
        tail = tokenizer.encode(kQuestion, false, false);
        append(tail, tokenizer.encode(text.substr(mark + std::string_view(kChatBodyMark).size()),
                                      false, true));
        append(tail, tokenizer.encode(kAnswerStart, false, false));
    } else {
        head = tokenizer.encode(kIntro, /*add_special=*/true, /*parse_special=*/false);
        tail = tokenizer.encode(fmt::format("{} {}", kQuestion, kAnswerStart), false, false);
    }

    // The filler window of this trial: from the start of a line at its offset, cyclically.
    const int64_t n_stream = static_cast<int64_t>(filler.tokens.size());
    int64_t start = (int64_t{trial.index} * kFillerStride) % n_stream;
    for (int64_t k = 0;
         k < n_stream && start != 0 && !filler.line_end[static_cast<size_t>(start - 1)]; ++k)
        start = (start + 1) % n_stream;

    PasskeyPrompt p;
    p.key = trial.key;
    for (int attempt = 0;; ++attempt) {
        const std::vector<int32_t> needle = tokenizer.encode(needle_text(p.key), false, false);
        const int64_t f =
            int64_t{n_tokens} - static_cast<int64_t>(head.size() + needle.size() + tail.size());
        if (f < 1)
            return error(StatusCode::kInvalidArgument,
                         "passkey: {} tokens leave no room for filler ({} prompt, {} needle, {} "
                         "question tokens)",
                         n_tokens, head.size(), needle.size(), tail.size());
        std::vector<int32_t> window(static_cast<size_t>(f));  // (F,)
        std::vector<uint8_t> ends(static_cast<size_t>(f));
        for (int64_t k = 0; k < f; ++k) {
            window[static_cast<size_t>(k)] =
                filler.tokens[static_cast<size_t>((start + k) % n_stream)];
            ends[static_cast<size_t>(k)] =
                filler.line_end[static_cast<size_t>((start + k) % n_stream)];
        }
        // A key already in the filler (a phone number, a year range) would be a second answer.
        if (tokenizer.decode(window).find(p.key) != std::string::npos && attempt < 100) {
            p.key = next_key(p.key);
            continue;
        }
        // Needle position: the line start nearest to depth * F (0 and F count as line starts).
        const double depth = std::clamp(trial.depth, 0.0, 1.0);
        const int64_t target = std::llround(depth * static_cast<double>(f));
        int64_t q = target;
        for (int64_t delta = 0; delta <= kPasskeySnapTokens; ++delta) {
            auto line_start = [&](int64_t x) {
                return x == 0 || x == f || (x > 0 && x < f && ends[static_cast<size_t>(x - 1)]);
            };
            if (target - delta >= 0 && line_start(target - delta)) {
                q = target - delta;
                break;
            }
            if (target + delta <= f && line_start(target + delta)) {
                q = target + delta;
                break;
            }
        }
        p.tokens = head;
        p.tokens.insert(p.tokens.end(), window.begin(), window.begin() + q);
        p.needle_begin = static_cast<int>(p.tokens.size());
        append(p.tokens, needle);
        p.needle_end = static_cast<int>(p.tokens.size());
        p.tokens.insert(p.tokens.end(), window.begin() + q, window.end());
        append(p.tokens, tail);
        p.filler_tokens = static_cast<int>(f);
        p.depth = static_cast<double>(q) / static_cast<double>(f);
        return p;
    }
}

bool passkey_score(std::string_view answer, std::string_view key) {
    if (key.empty()) return false;
    size_t i = 0;
    while (i < answer.size()) {
        if (answer[i] < '0' || answer[i] > '9') {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < answer.size() && answer[j] >= '0' && answer[j] <= '9') ++j;
        if (answer.substr(i, j - i).find(key) != std::string_view::npos) return true;
        i = j;
    }
    return false;
}

Result<PasskeyResult> passkey_run(Session& session, const Tokenizer& tokenizer,
                                  const ChatTemplate* chat, const PasskeyFiller& filler,
                                  const PasskeyOptions& options, const PasskeyProgress& progress) {
    if (options.n_trials < 1 || options.n_predict < 1 || options.n_depth_buckets < 1)
        return error(StatusCode::kInvalidArgument,
                     "passkey: {} trials, {} answer tokens, {} depth buckets (each >= 1)",
                     options.n_trials, options.n_predict, options.n_depth_buckets);
    if (options.n_tokens > session.n_ctx())
        return error(StatusCode::kInvalidArgument,
                     "passkey: {} tokens exceed the session's context of {}", options.n_tokens,
                     session.n_ctx());
    const int n_prompt = options.n_tokens - options.n_predict;
    auto* sparse = dynamic_cast<SparsePolicy*>(session.policy());
    if (sparse != nullptr) sparse->reset_stats();

    PasskeyResult result;
    result.n_tokens = options.n_tokens;
    for (int k = 0; k < options.n_depth_buckets; ++k)
        result.buckets.push_back({static_cast<double>(k) / options.n_depth_buckets,
                                  static_cast<double>(k + 1) / options.n_depth_buckets, 0, 0});
    GenerateParams gp;
    gp.n_predict = options.n_predict;
    gp.sampler.temperature = 0;  // greedy
    gp.stop_strings = {"\n"};    // the answer is one line
    const double t_start = time_now_ms();
    const std::vector<PasskeyTrial> trials = passkey_trials(options.n_trials, options.seed);
    for (const PasskeyTrial& trial : trials) {
        const double t0 = time_now_ms();
        PURBO_ASSIGN_OR_RETURN(PasskeyPrompt prompt, passkey_prompt(tokenizer, chat, options.format,
                                                                    filler, trial, n_prompt));
        session.clear(0);
        PURBO_ASSIGN_OR_RETURN(GenerateResult gen,
                               generate(session, 0, tokenizer, prompt.tokens, gp));
        PasskeyTrialResult r;
        r.trial = trial;
        r.trial.key = prompt.key;
        r.depth = prompt.depth;
        r.answer = gen.text;
        r.correct = passkey_score(gen.text, prompt.key);
        r.seconds = (time_now_ms() - t0) / 1e3;
        const int bucket = std::min(options.n_depth_buckets - 1,
                                    static_cast<int>(trial.depth * options.n_depth_buckets));
        result.buckets[static_cast<size_t>(bucket)].n_trials += 1;
        result.buckets[static_cast<size_t>(bucket)].n_correct += r.correct ? 1 : 0;
        result.n_correct += r.correct ? 1 : 0;
        result.trials.push_back(r);
        if (progress) progress(r, static_cast<int>(result.trials.size()), options.n_trials);
    }
    session.clear(0);
    result.seconds = (time_now_ms() - t_start) / 1e3;
    if (sparse != nullptr) result.sparsity = sparse->stats();
    return result;
}

}  // namespace purbo
