#include "common.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/log.h"
#include "core/timer.h"

namespace purbo::cli {

std::string default_model_path() {
    namespace fs = std::filesystem;
    if (const char* env = std::getenv("PURBO_MODEL"); env != nullptr && *env != '\0') return env;
    const fs::path name = fs::path("models") / "SmolLM2-135M-Instruct.Q4_1.gguf";
    const fs::path in_source = fs::path(PURBO_SOURCE_DIR) / name;
    std::error_code ec;
    if (fs::exists(in_source, ec)) return in_source.string();
    return name.string();
}

void add_model_flags(OptionSet& set, ModelFlags& flags) {
    set.options.push_back({"--model", "-m", "PATH", "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct)", &flags.model});
    set.options.push_back({"--device", "", "NAME", "cpu (default), cpu-ref (fp32 oracle, slow) or cuda", &flags.device});
    set.options.push_back({"--threads", "-t", "N", "CPU threads (default: all cores)", &flags.threads});
    set.options.push_back({"--ctx-size", "-c", "N", "context size in tokens (default 4096)", &flags.ctx});
    set.options.push_back({"--batch-size", "-b", "N", "prompt tokens per forward pass (default 512)", &flags.batch});
    set.options.push_back({"--q8-activations", "", "",
                           "cpu decode: quantise activations to 8 bits (faster, llama.cpp's numerics; "
                           "default: exact fp32)", &flags.q8_activations});
    set.options.push_back({"--verbose", "-v", "", "log loading and timing details", &flags.verbose});
}

SessionOptions session_options(const ModelFlags& flags) {
    SessionOptions o;
    o.backend = flags.device;
    o.n_threads = flags.threads;
    o.n_ctx = flags.ctx;
    o.n_batch = flags.batch;
    o.gemv_activations = flags.q8_activations ? ActivationPrecision::kQ8 : ActivationPrecision::kF32;
    return o;
}

Result<Model> load_model(ModelFlags& flags, double* load_ms) {
    if (flags.verbose) log_set_level(LogLevel::kInfo);
    if (flags.model.empty()) flags.model = default_model_path();
    const double t0 = time_now_ms();
    Result<Model> m = model_load(flags.model);
    if (!m.is_ok() && m.status().code() == StatusCode::kNotFound && flags.model == default_model_path()) {
        return error(StatusCode::kNotFound, "{} (fetch the default model with scripts/fetch-model.sh, or pass -m)",
                     m.status().message());
    }
    if (load_ms != nullptr) *load_ms = time_now_ms() - t0;
    return m;
}

int report_error(const char* command, const Status& status) {
    std::fprintf(stderr, "purbo %s: %s\n", command, status.to_string().c_str());
    return 1;
}

}  // namespace purbo::cli
