// The purbo program as a user runs it: exit status and the one-line error for bad input
// (every malformed file names the file and the field), and generation from the default model
// and from a Hugging Face folder.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/safetensors.h"
#include "model/unicode.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

using test::run_purbo;
using RunResult = test::ProgramResult;

void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out << bytes;
}

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A byte-level BPE tokenizer.json with one token per byte (ids 0..255), no merges and one
// special token (256): small enough for the tiny checkpoints' 320-row vocabulary.
std::string byte_tokenizer_json() {
    nlohmann::json vocab = nlohmann::json::object();
    const auto& table = unicode::byte_to_unicode_utf8();
    for (int b = 0; b < 256; ++b) vocab[table[static_cast<size_t>(b)]] = b;
    nlohmann::json j = {
        {"version", "1.0"},
        {"added_tokens", {{{"id", 256}, {"content", "<|endoftext|>"}, {"special", true}, {"single_word", false},
                           {"lstrip", false}, {"rstrip", false}, {"normalized", false}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
        {"post_processor", nullptr},
        {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}, {"dropout", nullptr},
                   {"unk_token", nullptr}, {"byte_fallback", false}, {"ignore_merges", false}}}};
    return j.dump();
}

// A runnable Hugging Face folder: a tiny checkpoint with the byte tokenizer.
fs::path make_hf_folder(const std::string& test_name) {
    const fs::path dir = test::temp_dir(test_name);
    const fs::path src = test::fixture_path("hf/llama-llama3rope-tied");
    for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src / f, dir / f);
    write_file(dir / "tokenizer.json", byte_tokenizer_json());
    return dir;
}

TEST(Cli, HelpAndUnknownCommand) {
    EXPECT_EQ(run_purbo("--help").status, 0);
    EXPECT_EQ(run_purbo("run --help").status, 0);
    const RunResult r = run_purbo("frobnicate");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.output.find("unknown command 'frobnicate'"), std::string::npos) << r.output;
}

TEST(Cli, BadFlagsNameTheFlagAndValue) {
    const fs::path dir = make_hf_folder("cli_bad_flags");
    struct Case {
        std::string args, expect;
    } cases[] = {
        {"run -m " + dir.string() + " --temp abc", "--temp: 'abc' is not a number"},
        {"run -m " + dir.string() + " -n 1x", "--n-predict: '1x' is not an integer"},
        {"run -m " + dir.string() + " --top-p 1.5", "--top-p: 1.5"},
        {"run -m " + dir.string() + " --bogus", "unknown option '--bogus'"},
        {"run -m " + dir.string() + " -p", "-p needs a value"},
        {"run -m " + dir.string() + " --device tpu -p hi", "unknown backend 'tpu'"},
        {"bench -m " + dir.string() + " -p 1,x", "--n-prompt: '1,x'"},
        {"bench -m " + dir.string() + " -o xml", "--output: 'xml'"},
        {"run -m " + dir.string() + " --cache-type q8 -p hi", "--cache-type 'q8': expected f32 or bf16"},
        {"run -m " + dir.string() + " --device cpu-ref --cache-type bf16 -p hi",
         "KV cache type bf16: the cpu-ref backend keeps caches in f32"},
    };
    for (const Case& c : cases) {
        const RunResult r = run_purbo(c.args);
        EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
        EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
    }
}

TEST(Cli, MalformedModelFilesGiveOneClearError) {
    const fs::path dir = test::temp_dir("cli_malformed");
    const std::string gguf = read_file(test::fixture_path("gguf/small.gguf"));
    ASSERT_GT(gguf.size(), 200u);

    // GGUF: truncated, bad magic, a file that is no GGUF at all, a missing file.
    write_file(dir / "truncated.gguf", gguf.substr(0, gguf.size() / 2));
    std::string bad_magic = gguf;
    bad_magic[0] = 'X';
    write_file(dir / "magic.gguf", bad_magic);
    write_file(dir / "empty.gguf", "");

    // Hugging Face folders, each broken in one place.
    auto hf = [&](const std::string& name) {
        const fs::path d = make_hf_folder("cli_malformed_" + name);
        return d;
    };
    const fs::path bad_config = hf("config");
    {
        nlohmann::json cfg = nlohmann::json::parse(read_file(bad_config / "config.json"));
        cfg["hidden_size"] = -64;
        write_file(bad_config / "config.json", cfg.dump());
    }
    const fs::path unknown_arch = hf("arch");
    {
        nlohmann::json cfg = nlohmann::json::parse(read_file(unknown_arch / "config.json"));
        cfg["model_type"] = "gpt_neox";
        cfg.erase("architectures");
        write_file(unknown_arch / "config.json", cfg.dump());
    }
    const fs::path bad_tokenizer = hf("tokenizer");
    write_file(bad_tokenizer / "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [");
    const fs::path truncated_weights = hf("weights");
    {
        const std::string st = read_file(truncated_weights / "model.safetensors");
        write_file(truncated_weights / "model.safetensors", st.substr(0, st.size() - 100));
    }

    struct Case {
        fs::path model;
        std::vector<std::string> expect;  // substrings the one-line error must contain
    } cases[] = {
        {dir / "truncated.gguf", {"truncated.gguf"}},
        {dir / "magic.gguf", {"magic.gguf", "magic"}},
        {dir / "empty.gguf", {"empty.gguf"}},
        {dir / "missing.gguf", {"missing.gguf"}},
        {bad_config, {"config.json", "hidden_size", "-64"}},
        {unknown_arch, {"config.json", "model_type", "gpt_neox"}},
        {bad_tokenizer, {"tokenizer.json"}},
        {truncated_weights, {"model.safetensors"}},
    };
    for (const Case& c : cases) {
        for (const char* cmd : {"inspect", "run -n 2 -p hi"}) {
            const RunResult r = run_purbo(std::string(cmd) + " -m " + c.model.string());
            SCOPED_TRACE(std::string(cmd) + " " + c.model.string() + "\n" + r.output);
            EXPECT_EQ(r.status, 1);  // an error exit, not a crash (128 + signal)
            for (const std::string& e : c.expect) EXPECT_NE(r.output.find(e), std::string::npos) << e;
        }
    }
}

TEST(Cli, RunsAHuggingFaceFolder) {
    const fs::path dir = make_hf_folder("cli_hf_run");
    const RunResult r = run_purbo("run -m " + dir.string() + " -p abc -n 8 --temp 0 --ignore-eos");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("prompt eval time"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("eval time ="), std::string::npos) << r.output;
    // Every named intermediate of the prompt's forward pass, for comparison with other engines.
    const std::string dump = (dir / "dump.safetensors").string();
    const RunResult d = run_purbo("run -m " + dir.string() + " -p abc -n 2 --temp 0 --dump-tensors " + dump);
    ASSERT_EQ(d.status, 0) << d.output;
    auto file = SafetensorsFile::open(dump);
    ASSERT_TRUE(file.is_ok()) << file.status().to_string();
    for (const char* name : {"embedding", "layer.0.attn_norm", "layer.0.q", "layer.2.layer", "final_norm"}) {
        EXPECT_NE((*file)->find(name), nullptr) << name;
    }
    EXPECT_EQ((*file)->find("layer.0.q")->shape, (std::vector<int64_t>{3, 4, 16}));  // (tokens, heads, head_dim)
    const RunResult i = run_purbo("inspect " + dir.string());
    EXPECT_EQ(i.status, 0) << i.output;
    EXPECT_NE(i.output.find("architecture:     llama"), std::string::npos) << i.output;
    EXPECT_NE(i.output.find("llama3 x8"), std::string::npos) << i.output;
}

// A bf16 KV cache on the cpu backend runs the same tiny model to the end.
TEST(Cli, RunsWithABf16Cache) {
    const fs::path dir = make_hf_folder("cli_bf16_cache");
    const RunResult r = run_purbo("run -m " + dir.string() + " --cache-type bf16 -p abc -n 8 --temp 0 --ignore-eos");
    EXPECT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("eval time ="), std::string::npos) << r.output;
}

TEST(Cli, DefaultModelGreedyRunIsDeterministic) {
    PURBO_REQUIRE_DEFAULT_MODEL(model);
    const std::string args = "run -m " + model + " -p \"The capital of France is\" -n 8 --temp 0 --no-display-prompt";
    const RunResult a = run_purbo(args), b = run_purbo(args);
    ASSERT_EQ(a.status, 0) << a.output;
    // transformers' greedy continuation of this prompt starts " Paris." (tests/fixtures/smollm2).
    EXPECT_EQ(a.output.rfind(" Paris.", 0), 0u) << a.output;
    EXPECT_EQ(a.output.substr(0, a.output.find("purbo:")), b.output.substr(0, b.output.find("purbo:")));
    const RunResult s = run_purbo("run -m " + model + " -p \"Once upon a time\" -n 16 --seed 7 --no-display-prompt");
    const RunResult t = run_purbo("run -m " + model + " -p \"Once upon a time\" -n 16 --seed 7 --no-display-prompt");
    ASSERT_EQ(s.status, 0) << s.output;
    EXPECT_EQ(s.output.substr(0, s.output.find("purbo:")), t.output.substr(0, t.output.find("purbo:")))
        << "the same seed must give the same text";
}

// The committed adapter runs with the default model: a short prompt fits the window of every
// head, so the sparse model answers as the dense one does, and the run reports its figures.
TEST(Cli, DefaultModelSparseRun) {
    PURBO_REQUIRE_DEFAULT_MODEL(model);
    const RunResult r =
        run_purbo("run -m " + model + " --sparse -p \"The capital of France is\" -n 8 --temp 0 --no-display-prompt");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(r.output.rfind(" Paris.", 0), 0u) << r.output;
    EXPECT_NE(r.output.find("42 retrieval heads of 270"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("compute sparsity"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("MiB of index keys"), std::string::npos) << r.output;
    // Index keys in f8: the same answer.
    const RunResult f8 = run_purbo("run -m " + model +
                                   " --sparse --index-keys f8 -p \"The capital of France is\" -n 8 "
                                   "--temp 0 --no-display-prompt");
    ASSERT_EQ(f8.status, 0) << f8.output;
    EXPECT_EQ(f8.output.rfind(" Paris.", 0), 0u) << f8.output;
    // An adapter made for another model is refused with one line.
    const RunResult bad = run_purbo("run -m " + test::tiny_byte_model("cli_sparse_other_model") + " --sparse -p hi -n 1");
    EXPECT_EQ(bad.status, 1) << bad.output;
    EXPECT_NE(bad.output.find("SmolLM2-135M-Instruct.adapter.safetensors"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace purbo
