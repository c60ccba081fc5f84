// purbo bench: prompt processing (ppN) and token generation (tgN, optionally at a depth of
// already-cached tokens) in tokens per second, as llama-bench measures and prints them.
#include <cmath>
#include <cstdio>
#include <ctime>
#include <numeric>
#include <random>
#include <sstream>
#include <string_view>
#include <thread>

#include "common.h"
#include "core/timer.h"

namespace purbo::cli {
namespace {

struct BenchTest {
    int n_prompt = 0;
    int n_gen = 0;
    int n_depth = 0;
    std::string name() const {
        std::string s = n_prompt > 0 ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen);
        if (n_depth > 0) s += " @ d" + std::to_string(n_depth);
        return s;
    }
};

Result<std::vector<int>> parse_list(const std::string& flag, const std::string& text) {
    std::vector<int> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        char* end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v < 0 || v > (1 << 24)) {
            return error(StatusCode::kInvalidArgument, "{}: '{}' is not a list of non-negative integers", flag, text);
        }
        out.push_back(static_cast<int>(v));
    }
    return out;
}

// Random token ids (excluding the first few, often special); what llama-bench feeds too.
std::vector<int32_t> random_tokens(int n, int n_vocab, std::mt19937& rng) {
    std::uniform_int_distribution<int32_t> dist(100, n_vocab - 1);
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (int32_t& x : t) x = dist(rng);
    return t;
}

// One timed repetition; returns tokens per second.
Result<double> run_once(Session& s, const BenchTest& t, int n_vocab, std::mt19937& rng) {
    s.clear(0);
    std::vector<float> logits;
    if (t.n_depth > 0) PURBO_TRY(s.prefill(0, random_tokens(t.n_depth, n_vocab, rng), logits));
    if (t.n_prompt > 0) {
        const std::vector<int32_t> prompt = random_tokens(t.n_prompt, n_vocab, rng);
        const double t0 = time_now_ms();
        PURBO_TRY(s.prefill(0, prompt, logits));
        s.backend().synchronize();
        return 1e3 * t.n_prompt / (time_now_ms() - t0);
    }
    const std::vector<int32_t> tokens = random_tokens(t.n_gen, n_vocab, rng);
    const double t0 = time_now_ms();
    for (int i = 0; i < t.n_gen; ++i) {
        const DecodeItem item{0, tokens[static_cast<size_t>(i)]};
        PURBO_TRY(s.decode({&item, 1}, logits));
    }
    s.backend().synchronize();
    return 1e3 * t.n_gen / (time_now_ms() - t0);
}

}  // namespace

int cmd_bench(int argc, char** argv) {
    for (int i = 2; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--attention") return cmd_bench_attention(argc, argv);
    }
    ModelFlags mf;
    SparseFlags sf;
    std::string prompts = "512,4096", gens = "128", depths = "0,4096", output = "md";
    int reps = 3;
    OptionSet set;
    set.usage = "purbo bench [options]";
    set.description =
        "Measures prompt processing (ppN: N prompt tokens in one go) and generation (tgN: N tokens one at a "
        "time, after a depth of D cached tokens) in tokens per second, mean +- sd over repetitions. With "
        "--adapter or --sparse, every test runs on the dense and on the sparse model, alternating "
        "repetitions, and the table adds their KV cache sizes.";
    add_model_flags(set, mf);
    add_sparse_flags(set, sf);
    set.options.push_back({"--n-prompt", "-p", "LIST", "prompt sizes (default 512,4096)", &prompts});
    set.options.push_back({"--n-gen", "-n", "LIST", "generation lengths (default 128)", &gens});
    set.options.push_back({"--n-depth", "-d", "LIST", "depths for generation tests (default 0,4096)", &depths});
    set.options.push_back({"--repetitions", "-r", "N", "repetitions per test (default 3)", &reps});
    set.options.push_back({"--output", "-o", "FMT", "md (default) or json", &output});
    bool attention = false;  // handled above; listed so that --help shows it
    set.options.push_back({"--attention", "", "", "one attention layer's op alone (see bench --attention --help)", &attention});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok()) return report_error("bench", st);
    if (help) return 0;
    if (output != "md" && output != "json") {
        return report_error("bench", error(StatusCode::kInvalidArgument, "--output: '{}' (expected md or json)", output));
    }
    if (reps <= 0) return report_error("bench", error(StatusCode::kInvalidArgument, "--repetitions: {} must be positive", reps));
    auto p = parse_list("--n-prompt", prompts);
    auto g = parse_list("--n-gen", gens);
    auto d = parse_list("--n-depth", depths);
    for (auto* r : {&p, &g, &d}) {
        if (!r->is_ok()) return report_error("bench", r->status());
    }
    std::vector<BenchTest> tests;
    for (int n : *p) if (n > 0) tests.push_back({n, 0, 0});
    for (int n : *g) {
        if (n <= 0) continue;
        for (int depth : *d) tests.push_back({0, n, depth});
    }
    int max_ctx = 1;
    for (const BenchTest& t : tests) max_ctx = std::max(max_ctx, t.n_depth + t.n_prompt + t.n_gen);

    double load_ms = 0;
    Result<Model> model = load_model(mf, &load_ms);
    if (!model.is_ok()) return report_error("bench", model.status());
    SessionOptions so = session_options(mf);
    so.n_ctx = max_ctx;
    // The dense session, and the sparse one when asked for: (name, session).
    std::vector<std::pair<std::string, std::unique_ptr<Session>>> sessions;
    {
        Result<std::unique_ptr<Session>> dense = Session::create(model->config, model->weights, so);
        if (!dense.is_ok()) return report_error("bench", dense.status());
        sessions.emplace_back("dense", std::move(*dense));
    }
    if (sf.enabled()) {
        Result<AttentionPolicyFactory> policy = sparse_policy_from_flags(sf, *model);
        if (!policy.is_ok()) return report_error("bench", policy.status());
        // Collecting sparsity figures costs a readback per layer; not timed here.
        Result<std::unique_ptr<Session>> sparse = Session::create(model->config, model->weights, so, *policy);
        if (!sparse.is_ok()) return report_error("bench", sparse.status());
        sessions.emplace_back("sparse", std::move(*sparse));
    }

    int64_t n_params = 0;
    ModelWeights w = model->weights;
    weights_for_each(w, [&](Tensor& t) {
        if (!(&t == &w.lm_head && model->config.tied_embeddings)) n_params += t.numel();
    });
    const double size_mib = static_cast<double>(model->weight_bytes()) / (1024.0 * 1024.0);
    const int threads = mf.threads > 0 ? mf.threads : static_cast<int>(std::thread::hardware_concurrency());
    std::string model_name = model->config.name.empty() ? model->path : model->config.name;

    std::mt19937 rng(42);
    const bool compare = sessions.size() > 1;
    if (output == "md") {
        std::printf("| model | size | params | backend | threads |%s test | t/s |\n", compare ? " attention | KV MiB |" : "");
        std::printf("| --- | ---: | ---: | --- | ---: |%s ---: | ---: |\n", compare ? " --- | ---: |" : "");
    } else {
        std::printf("[\n");
    }
    size_t rows_left = tests.size() * sessions.size();
    for (const BenchTest& t : tests) {
        // Warm-up, then the repetitions of every session alternate: a drift of the machine's
        // speed affects them alike.
        std::vector<std::vector<double>> samples(sessions.size());
        for (auto& [name, session] : sessions) {
            if (Result<double> warm = run_once(*session, t, model->config.n_vocab, rng); !warm.is_ok())
                return report_error("bench", warm.status());
        }
        for (int r = 0; r < reps; ++r) {
            for (size_t si = 0; si < sessions.size(); ++si) {
                Result<double> ts = run_once(*sessions[si].second, t, model->config.n_vocab, rng);
                if (!ts.is_ok()) return report_error("bench", ts.status());
                samples[si].push_back(*ts);
            }
        }
        for (size_t si = 0; si < sessions.size(); ++si) {
            const std::vector<double>& xs = samples[si];
            const double mean = std::accumulate(xs.begin(), xs.end(), 0.0) / static_cast<double>(xs.size());
            double var = 0;
            for (double x : xs) var += (x - mean) * (x - mean);
            const double sd = xs.size() > 1 ? std::sqrt(var / static_cast<double>(xs.size() - 1)) : 0.0;
            const double kv_mib =
                static_cast<double>(sessions[si].second->kv_bytes()) / (1024.0 * 1024.0);
            const std::string& mode = sessions[si].first;
            if (output == "md") {
                const std::string extra = compare ? fmt::format(" {} | {:.1f} |", mode, kv_mib) : "";
                std::printf("| %s | %.2f MiB | %.2f M | %s | %d |%s %s | %.2f ± %.2f |\n", model_name.c_str(), size_mib,
                            static_cast<double>(n_params) / 1e6, mf.device.c_str(), threads, extra.c_str(),
                            t.name().c_str(), mean, sd);
            } else {
                std::string list;
                for (double x : xs) list += (list.empty() ? "" : ", ") + std::to_string(x);
                std::printf(
                    "  {\"model\": \"%s\", \"model_size\": %zu, \"model_n_params\": %lld, "
                    "\"backend\": \"%s\", "
                    "\"n_threads\": %d, \"attention\": \"%s\", \"kv_bytes\": %zu, \"n_prompt\": "
                    "%d, \"n_gen\": %d, "
                    "\"n_depth\": %d, \"avg_ts\": %.4f, \"stddev_ts\": %.4f, \"samples_ts\": "
                    "[%s]}%s\n",
                    model_name.c_str(), model->weight_bytes(), static_cast<long long>(n_params),
                    mf.device.c_str(), threads, mode.c_str(), sessions[si].second->kv_bytes(),
                    t.n_prompt, t.n_gen, t.n_depth, mean, sd, list.c_str(),
                    --rows_left > 0 ? "," : "");
            }
            std::fflush(stdout);
        }
    }
    if (output == "json") std::printf("]\n");
    return 0;
}

}  // namespace purbo::cli
