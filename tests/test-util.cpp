#include "test-util.h"

#include <cstring>

#include "core/mapped-file.h"
#include "model/unicode.h"

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace purbo::test {

std::string fixture_path(const std::string& relative) {
    return std::string(PURBO_SOURCE_DIR) + "/tests/fixtures/" + relative;
}

std::string temp_dir(const std::string& test_name) {
    namespace fs = std::filesystem;
    fs::path dir = fs::path(PURBO_BINARY_DIR) / "test-tmp" / test_name;
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir.string();
}

namespace {

// A byte-level BPE tokenizer.json with one token per byte (ids 0..255) and no merges.
std::string byte_tokenizer_json() {
    nlohmann::json vocab = nlohmann::json::object();
    const auto& table = unicode::byte_to_unicode_utf8();
    for (int b = 0; b < 256; ++b) vocab[table[static_cast<size_t>(b)]] = b;
    nlohmann::json j = {{"version", "1.0"},
                        {"added_tokens", nlohmann::json::array()},
                        {"normalizer", nullptr},
                        {"pre_tokenizer",
                         {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", true},
                          {"use_regex", true}}},
                        {"post_processor", nullptr},
                        {"decoder",
                         {{"type", "ByteLevel"},
                          {"add_prefix_space", true},
                          {"trim_offsets", true},
                          {"use_regex", true}}},
                        {"model",
                         {{"type", "BPE"},
                          {"vocab", vocab},
                          {"merges", nlohmann::json::array()},
                          {"dropout", nullptr},
                          {"unk_token", nullptr},
                          {"byte_fallback", false},
                          {"ignore_merges", false}}}};
    return j.dump();
}

}  // namespace

std::string tiny_byte_model(const std::string& test_name) {
    namespace fs = std::filesystem;
    const fs::path dir = temp_dir(test_name);
    const fs::path src = fixture_path("hf/llama-linear-oldspelling");
    fs::copy_file(src / "model.safetensors", dir / "model.safetensors");
    nlohmann::json cfg = load_json((src / "config.json").string());
    cfg["max_position_embeddings"] = 2048;
    std::ofstream(dir / "config.json") << cfg.dump();
    std::ofstream(dir / "tokenizer.json") << byte_tokenizer_json();
    return dir.string();
}

std::optional<std::string> default_model_path() {
    namespace fs = std::filesystem;
    if (const char* env = std::getenv("PURBO_MODEL"); env != nullptr && fs::exists(env)) return std::string(env);
    fs::path p = fs::path(PURBO_SOURCE_DIR) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
    if (fs::exists(p)) return p.string();
    return std::nullopt;
}

double nmse(std::span<const float> a, std::span<const float> reference) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size() && i < reference.size(); ++i) {
        const double d = static_cast<double>(a[i]) - reference[i];
        num += d * d;
        den += static_cast<double>(reference[i]) * reference[i];
    }
    return den == 0 ? num : num / den;
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
    double m = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
    return m;
}

std::vector<float> random_floats(std::mt19937& rng, int64_t count, float amplitude) {
    std::uniform_real_distribution<float> dist(-amplitude, amplitude);
    std::vector<float> v(static_cast<size_t>(count));
    for (float& x : v) x = dist(rng);
    return v;
}

Tensor host_f32(std::initializer_list<int64_t> shape, const std::vector<float>& values) {
    Tensor t = tensor_cpu(DType::kF32, shape);
    EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
    std::memcpy(t.data, values.data(), std::min(values.size(), static_cast<size_t>(t.numel())) * 4);
    return t;
}

nlohmann::json load_json(const std::string& path) {
    auto text = read_text_file(path);
    EXPECT_TRUE(text.is_ok()) << text.status().to_string();
    if (!text.is_ok()) return nullptr;
    nlohmann::json j = nlohmann::json::parse(text.value(), nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << path << ": not valid JSON";
    return j;
}

ProgramResult run_purbo(const std::string& args, bool with_stderr) {
    const std::string cmd =
        std::string(PURBO_BINARY_DIR) + "/bin/purbo " + args + (with_stderr ? " 2>&1" : " 2>/dev/null");
    ProgramResult r;
    FILE* pipe = popen(cmd.c_str(), "r");
    if (pipe == nullptr) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
    const int raw = pclose(pipe);
    r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
    return r;
}

}  // namespace purbo::test
