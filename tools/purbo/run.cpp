// purbo run: generate from a prompt, printing llama.cpp-style timings.
#include <cstdio>
#include <random>
#include <set>

#include "common.h"
#include "core/mapped-file.h"
#include "core/timer.h"
#include "model/safetensors.h"
#include "runtime/generate.h"

namespace purbo::cli {
namespace {

struct RunFlags {
    ModelFlags model;
    SparseFlags sparse;
    std::string prompt;
    std::string prompt_file;
    std::string system;
    int n_predict = 128;
    float temp = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    int seed = -1;
    bool chat = false;
    bool ignore_eos = false;
    bool no_display_prompt = false;
    std::vector<std::string> stop;
    std::string dump_tensors;
};

// Records every named intermediate of the first forward pass (the prompt) as host copies,
// "layer.<il>.<name>" or "<name>", for comparison with another implementation.
class TensorDump {
public:
    void record(Backend& backend, std::string_view name, int layer, const Tensor& t) {
        const std::string key = layer < 0 ? std::string(name) : "layer." + std::to_string(layer) + "." + std::string(name);
        if (seen_.count(key) != 0) return;  // later passes (decode steps) are not recorded
        const Tensor host = tensor_cpu(DType::kF32, std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)), key);
        if (backend.to_host(t, host).is_ok()) {
            seen_.insert(key);
            tensors_.emplace_back(key, host);
        }
    }
    Status write(const std::string& path) const { return safetensors_write(path, tensors_); }
    size_t size() const { return tensors_.size(); }

private:
    std::set<std::string> seen_;
    std::vector<std::pair<std::string, Tensor>> tensors_;
};

void print_timings(double load_ms, const SessionTimings& t) {
    auto line = [](const char* what, double ms, int64_t n, const char* unit) {
        const double per = n > 0 ? ms / static_cast<double>(n) : 0.0;
        const double tps = ms > 0 ? 1e3 * static_cast<double>(n) / ms : 0.0;
        std::fprintf(stderr, "purbo: %16s = %10.2f ms / %5lld %s (%8.2f ms per token, %8.2f tokens per second)\n", what,
                     ms, static_cast<long long>(n), unit, per, tps);
    };
    std::fprintf(stderr, "\npurbo: %16s = %10.2f ms\n", "load time", load_ms);
    line("prompt eval time", t.prompt_ms, t.prompt_tokens, "tokens");
    line("eval time", t.eval_ms, t.eval_tokens, "runs  ");
    std::fprintf(stderr, "purbo: %16s = %10.2f ms / %5lld tokens\n", "total time", load_ms + t.prompt_ms + t.eval_ms,
                 static_cast<long long>(t.prompt_tokens + t.eval_tokens));
}

}  // namespace

int cmd_run(int argc, char** argv) {
    RunFlags f;
    OptionSet set;
    set.usage = "purbo run [options] [-p PROMPT | -f FILE]";
    set.description = "Generates text from a prompt with the given model (default: SmolLM2-135M-Instruct).";
    add_model_flags(set, f.model);
    add_sparse_flags(set, f.sparse);
    set.options.push_back({"--prompt", "-p", "TEXT", "prompt text", &f.prompt});
    set.options.push_back({"--file", "-f", "FILE", "read the prompt from a file", &f.prompt_file});
    set.options.push_back({"--n-predict", "-n", "N", "tokens to generate (default 128; -1 = until the context is full)", &f.n_predict});
    set.options.push_back({"--temp", "", "T", "temperature (default 0.8; 0 = greedy)", &f.temp});
    set.options.push_back({"--top-k", "", "N", "top-k sampling (default 40; 0 = off)", &f.top_k});
    set.options.push_back({"--top-p", "", "P", "top-p sampling (default 0.95; 1 = off)", &f.top_p});
    set.options.push_back({"--min-p", "", "P", "min-p sampling (default 0.05; 0 = off)", &f.min_p});
    set.options.push_back({"--seed", "-s", "N", "random seed (default: random)", &f.seed});
    set.options.push_back({"--chat", "", "", "wrap the prompt in the model's chat template as a user message", &f.chat});
    set.options.push_back({"--system", "", "TEXT", "system message for --chat", &f.system});
    set.options.push_back({"--stop", "", "TEXT", "stop before this text (repeatable)", &f.stop});
    set.options.push_back({"--ignore-eos", "", "", "keep generating after end-of-generation tokens", &f.ignore_eos});
    set.options.push_back({"--no-display-prompt", "", "", "print only the generated text", &f.no_display_prompt});
    set.options.push_back({"--dump-tensors", "", "FILE",
                           "write every named intermediate of the prompt's forward pass to a safetensors file",
                           &f.dump_tensors});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok()) return report_error("run", st);
    if (help) return 0;
    if (!f.prompt_file.empty()) {
        if (!f.prompt.empty()) return report_error("run", error(StatusCode::kInvalidArgument, "give -p or -f, not both"));
        Result<std::string> text = read_text_file(f.prompt_file);
        if (!text.is_ok()) return report_error("run", text.status());
        f.prompt = *text;
    }
    if (f.prompt.empty() && !f.chat) f.prompt = "Once upon a time";
    if (f.top_p <= 0.0f || f.top_p > 1.0f) {
        return report_error("run", error(StatusCode::kInvalidArgument, "--top-p: {} is not in (0, 1]", f.top_p));
    }
    if (f.min_p < 0.0f || f.min_p > 1.0f) {
        return report_error("run", error(StatusCode::kInvalidArgument, "--min-p: {} is not in [0, 1]", f.min_p));
    }

    double load_ms = 0;
    Result<Model> model = load_model(f.model, &load_ms);
    if (!model.is_ok()) return report_error("run", model.status());
    const Tokenizer& tok = *model->tokenizer;

    std::string text = f.prompt;
    bool add_special = true;
    if (f.chat) {
        if (!model->chat_template) return report_error("run", model->chat_template_status);
        std::vector<ChatMessage> messages;
        if (!f.system.empty()) messages.push_back({"system", f.system});
        messages.push_back({"user", f.prompt});
        text = model->chat_template->apply(messages, true);
        add_special = false;  // the template writes its own special tokens
    }
    const std::vector<int32_t> prompt = tok.encode(text, add_special, /*parse_special=*/f.chat);
    if (prompt.empty()) return report_error("run", error(StatusCode::kInvalidArgument, "the prompt has no tokens"));

    SessionOptions so = session_options(f.model);
    so.n_ctx = std::min(so.n_ctx, std::max(model->config.n_ctx_train, 1));
    const double t0 = time_now_ms();
    Adapter adapter;
    Result<AttentionPolicyFactory> policy = sparse_policy_from_flags(f.sparse, *model, &adapter);
    if (!policy.is_ok()) return report_error("run", policy.status());
    Result<std::unique_ptr<Session>> session = Session::create(model->config, model->weights, so, *policy);
    if (!session.is_ok()) return report_error("run", session.status());
    load_ms += time_now_ms() - t0;

    GenerateParams gp;
    gp.n_predict = f.n_predict;
    gp.ignore_eos = f.ignore_eos;
    gp.stop_strings = f.stop;
    gp.sampler.temperature = f.temp;
    gp.sampler.top_k = f.top_k;
    gp.sampler.top_p = f.top_p;
    gp.sampler.min_p = f.min_p;
    gp.sampler.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed) : std::random_device{}();
    if (f.model.verbose) {
        std::fprintf(stderr, "purbo: %s, %d prompt tokens, seed %llu\n", model->config.name.c_str(),
                     static_cast<int>(prompt.size()), static_cast<unsigned long long>(gp.sampler.seed));
    }
    TensorDump dump;
    if (!f.dump_tensors.empty()) {
        Session& s = **session;
        s.forward().set_tap([&dump, &s](std::string_view name, int layer, const Tensor& t) {
            dump.record(s.backend(), name, layer, t);
        });
    }
    if (!f.no_display_prompt) {
        std::fputs(text.c_str(), stdout);
        std::fflush(stdout);
    }
    Result<GenerateResult> r = generate(**session, 0, tok, prompt, gp, [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
    });
    std::fputs("\n", stdout);
    if (!r.is_ok()) return report_error("run", r.status());
    if (!f.dump_tensors.empty()) {
        if (Status st = dump.write(f.dump_tensors); !st.is_ok()) return report_error("run", st);
        std::fprintf(stderr, "purbo: wrote %zu tensors to %s\n", dump.size(), f.dump_tensors.c_str());
    }
    print_timings(load_ms, (*session)->timings());
    if (f.sparse.enabled()) print_sparsity(**session, adapter);
    return 0;
}

}  // namespace purbo::cli
