// purbo eval as a user runs it: one clear line and exit 1 for bad flags; all four variants on a
// tiny checkpoint with a byte tokenizer and a random indexer (the whole flow, JSON written
// atomically, in seconds); and the default model with tiny settings (< 60 s on 2 cores).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/mapped-file.h"
#include "model/hf-loader.h"
#include "sparse/adapter.h"
#include "sparse/corpus.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

using test::run_purbo;

size_t count_lines(const std::string& s) {
    return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

bool have_held_out_corpus() {
    CorpusOptions co;
    co.split = CorpusSplit::kHeldOut;
    return corpus_documents(co).is_ok();
}

// An adapter for the tiny checkpoint in `dir`: 3 retrieval heads with a random indexer (r 8),
// window 64, sinks 4, blocks of 32, p 0.9.
std::string write_adapter(const fs::path& dir, bool indexer) {
    auto hf = hf_model_load(dir.string());
    EXPECT_TRUE(hf.is_ok()) << hf.status().to_string();
    const ModelConfig& c = hf->config;
    SparseSettings settings;
    settings.window = 64;
    settings.n_sink = 4;
    settings.block_size = 32;
    settings.rank = 8;
    Adapter a = adapter_for_model(c, settings);
    a.base_fingerprint = model_fingerprint(c, hf->weights);
    a.scores.assign(a.scores.size(), 0.1f);
    a.retrieval = {{0, 1}, {1, 2}, {2, 0}};
    if (indexer) {
        std::mt19937 rng(7);
        const int64_t n = 3, r = 8, d = c.head_dim;
        a.wq = test::host_f32({n, r, d}, test::random_floats(rng, n * r * d, 0.5f));
        a.wk = test::host_f32({n, r, d}, test::random_floats(rng, n * r * d, 0.5f));
    }
    const std::string path =
        (dir / (indexer ? "indexer.safetensors" : "classes.safetensors")).string();
    const Status st = adapter_save(path, a);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    return path;
}

TEST(EvalCli, BadFlagsGiveOneClearLine) {
    const fs::path dir = test::tiny_byte_model("eval_cli_bad_flags");
    const std::string m = "eval -m " + dir.string();
    const std::string classes = write_adapter(dir, false);
    struct Case {
        std::string args, expect;
    } cases[] = {
        {m + " --tasks passkey,mmlu", "--tasks: unknown task 'mmlu' (passkey, ppl)"},
        {m + " --tasks ,", "--tasks: empty"},
        {m + " --variants dense,fast", "--variants: unknown variant 'fast'"},
        {m + " --variants sparse", "--variants: sparse needs an adapter"},
        {m + " --variants topk", "--variants: topk needs an adapter"},
        {m + " --lengths 2K,4Q", "--lengths: '4Q' is not a token count"},
        {m + " --lengths 1K --trials 0", "--trials: 0 (at least 1)"},
        {m + " --trials x", "--trials: 'x' is not an integer"},
        {m + " --ppl-ctx 512 --ppl-prefix 512",
         "--ppl-ctx: 512 leaves nothing to score after --ppl-prefix 512"},
        {m + " --ppl-prefix 0", "--ppl-prefix: 0 (at least 1)"},
        {m + " --ppl-seqs 0", "--ppl-seqs: 0 (at least 1)"},
        {m + " -o xml", "-o: 'xml' (md or json)"},
        {m + " -c 4096", "unknown option '-c'"},  // the tasks set the context
        {m + " --window 0", "--window 0"},
        {m + " --lengths 4K", "--lengths: 4K exceeds the model's context of 2048 tokens"},
        {m + " --adapter " + classes + " --variants topk", "the adapter has no indexer"},
        {m + " --adapter " + (dir / "missing.safetensors").string(), "missing.safetensors"},
        {m + " --sparse-top-p 2 --adapter " + classes, "--sparse-top-p: 2 is not in (0, 1]"},
        {m + " --prefill-top-p 1.5 --adapter " + classes, "--prefill-top-p: 1.5 is not in (0, 1]"},
        {m + " --prefill-select row --adapter " + classes,
         "--prefill-select: 'row' is not block or token"},
        {m + " --prefill-samples -1 --adapter " + classes,
         "--prefill-samples: -1 must be 0 (all) or positive"},
        {m + " --prefill-select token --prefill-samples 8 --adapter " + classes,
         "--prefill-samples applies to --prefill-select block only"},
        {m + " --index-keys f4 --adapter " + classes,
         "--index-keys 'f4': expected f32, bf16 or f8"},
        {m + " --tasks passkey --lengths 1K --device tpu", "unknown backend 'tpu'"},
        {"eval -m " + (dir / "missing").string(), "missing"},
    };
    for (const Case& c : cases) {
        const test::ProgramResult r = run_purbo(c.args);
        EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
        EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
        EXPECT_EQ(count_lines(r.output), 1u) << c.args << "\n" << r.output;
        EXPECT_EQ(r.output.rfind("purbo eval: ", 0), 0u) << r.output;
    }
}

TEST(EvalCli, TinyCheckpointRunsEveryVariantAndWritesJson) {
    if (!have_held_out_corpus()) GTEST_SKIP() << "no held-out licence texts on this machine";
    const fs::path dir = test::tiny_byte_model("eval_cli_tiny");
    const std::string adapter = write_adapter(dir, true);
    const std::string out = (dir / "results.json").string();
    const test::ProgramResult r = run_purbo(
        "eval -m " + dir.string() + " --adapter " + adapter +
            // One thread: a model this small gains nothing from two, and on a loaded
            // machine each OpenMP barrier may wait for a time slice.
            " --lengths 512,1K --trials 3 --ppl-ctx 700 --ppl-prefix 500 -t 1 -o json --out " + out,
        /*with_stderr=*/false);
    ASSERT_EQ(r.status, 0) << r.output;
    auto text = read_text_file(out);
    ASSERT_TRUE(text.is_ok());
    EXPECT_EQ(*text, r.output);  // the file holds what was printed
    const nlohmann::json j = nlohmann::json::parse(*text);
    EXPECT_EQ(j["adapter"], "indexer.safetensors");
    EXPECT_EQ(j["passkey"]["lengths"], nlohmann::json({512, 1024}));
    EXPECT_EQ(j["ppl"]["ctx"], 700);
    const nlohmann::json& v = j["variants"];
    ASSERT_EQ(v.size(), 4u);
    const char* names[] = {"dense", "sparse", "local", "topk"};
    for (size_t i = 0; i < 4; ++i) {
        SCOPED_TRACE(names[i]);
        EXPECT_EQ(v[i]["name"], names[i]);
        ASSERT_EQ(v[i]["passkey"].size(), 2u);
        for (const auto& p : v[i]["passkey"]) {
            EXPECT_EQ(p["trials"], 3);
            EXPECT_EQ(p["answers"].size(), 3u);
            EXPECT_EQ(p["depths"].size(), 5u);
        }
        EXPECT_EQ(v[i]["ppl"]["scored_tokens"], 200);
        EXPECT_GT(v[i]["ppl"]["perplexity"].get<double>(), 1.0);
    }
    EXPECT_EQ(v[0]["ppl"]["kl_vs_dense"], 0.0);
    // Window 64 of 700 tokens: the local and sparse models differ from dense.
    EXPECT_GT(v[1]["ppl"]["kl_vs_dense"].get<double>(), 0.0);
    EXPECT_GT(v[2]["ppl"]["kl_vs_dense"].get<double>(), 0.0);
    EXPECT_GT(v[2]["ppl"]["sparsity"]["compute_sparsity"].get<double>(), 0.5);
    EXPECT_EQ(v[2]["ppl"]["sparsity"]["retrieval_head_steps"], 0);  // no retrieval heads
    // topk: K is the sparse variant's mean blocks per retrieval head, and it keeps exactly K.
    const double sparse_blocks = v[1]["ppl"]["sparsity"]["blocks_per_retrieval_head"].get<double>();
    EXPECT_GT(sparse_blocks, 0.0);
    const int k = v[3]["ppl"]["top_k_blocks"].get<int>();
    EXPECT_EQ(k, std::max(1, static_cast<int>(std::lround(sparse_blocks))));
    EXPECT_DOUBLE_EQ(v[3]["ppl"]["sparsity"]["blocks_per_retrieval_head"].get<double>(), k);
    EXPECT_EQ(v[3]["description"],
              fmt::format("K {}/{}/{}", v[3]["passkey"][0]["top_k_blocks"].get<int>(),
                          v[3]["passkey"][1]["top_k_blocks"].get<int>(), k));
    EXPECT_EQ(v[1]["description"], "p 0.9");
    for (size_t i = 0; i < 2; ++i) {
        const double mean =
            v[1]["passkey"][i]["sparsity"]["blocks_per_retrieval_head"].get<double>();
        EXPECT_EQ(v[3]["passkey"][i]["top_k_blocks"],
                  std::max(1, static_cast<int>(std::lround(mean))));
    }
    // KV heads without a retrieval head keep a ring of sinks + window + batch rows.
    EXPECT_LE(v[1]["kv_bytes"].get<double>(), v[1]["dense_kv_bytes"].get<double>());
    EXPECT_LT(v[2]["kv_bytes"].get<double>(), v[2]["dense_kv_bytes"].get<double>());

    // Markdown: the header, one row per variant, the notes.
    const std::string details = (dir / "details.json").string();
    const test::ProgramResult md = run_purbo(
        "eval -m " + dir.string() + " --adapter " + adapter +
            " --variants local,dense --tasks passkey --lengths 512 --trials 2 -t 1 --out " +
            details,
        /*with_stderr=*/false);
    ASSERT_EQ(md.status, 0) << md.output;
    // A .json file gets the details whatever the screen shows.
    auto details_text = read_text_file(details);
    ASSERT_TRUE(details_text.is_ok());
    EXPECT_EQ(nlohmann::json::parse(*details_text)["variants"].size(), 2u);
    EXPECT_EQ(md.output.rfind("**purbo eval** ", 0), 0u) << md.output;
    EXPECT_NE(
        md.output.find(
            "adapter indexer.safetensors (W 64, S 4, p 0.9, B 32, r 8; 3 retrieval heads of 12)"),
        std::string::npos)
        << md.output;
    EXPECT_NE(md.output.find("| variant | passkey 512 | tokens / retrieval head |"),
              std::string::npos)
        << md.output;
    EXPECT_NE(md.output.find("\n| dense | "), std::string::npos) << md.output;
    EXPECT_NE(md.output.find("\n| local (W 64, S 4) | "), std::string::npos) << md.output;
    EXPECT_EQ(md.output.find("| sparse"), std::string::npos) << md.output;
    EXPECT_EQ(md.output.find("ppl"), std::string::npos) << md.output;
}

// Block-sparse prefill: the report names the selection's granularity and p, and counts the
// blocks prefill kept.
TEST(EvalCli, BlockSparsePrefillReportsItsSelection) {
    const fs::path dir = test::tiny_byte_model("eval_cli_block_sparse");
    const std::string adapter = write_adapter(dir, true);
    const std::string details = (dir / "block-sparse.json").string();
    const test::ProgramResult md = run_purbo("eval -m " + dir.string() + " --adapter " + adapter +
                                                 " --variants sparse --tasks passkey --lengths 512 "
                                                 "--trials 2 -t 1 --block-sparse-prefill "
                                                 "--prefill-top-p 0.8 --out " +
                                                 details,
                                             /*with_stderr=*/false);
    ASSERT_EQ(md.status, 0) << md.output;
    EXPECT_NE(md.output.find("block-sparse prefill, one selection per query block of 32, p 0.8"),
              std::string::npos)
        << md.output;
    EXPECT_NE(md.output.find("sparse: block-sparse prefill kept "), std::string::npos) << md.output;
    auto text = read_text_file(details);
    ASSERT_TRUE(text.is_ok());
    const nlohmann::json s = nlohmann::json::parse(*text)["variants"][0]["passkey"][0]["sparsity"];
    EXPECT_GT(s["prefill_blocks_kept"].get<int64_t>(), 0);
    EXPECT_LT(s["prefill_blocks_kept"].get<int64_t>(), s["prefill_blocks_visible"].get<int64_t>());

    // Query groups of two blocks: named in the report; one not a multiple of the block is
    // refused with the adapter's block size in the message.
    const std::string common = "eval -m " + dir.string() + " --adapter " + adapter +
                               " --variants sparse --tasks passkey --lengths 512 --trials 1 -t 1 "
                               "--block-sparse-prefill --prefill-query-block ";
    const test::ProgramResult groups = run_purbo(common + "64", /*with_stderr=*/false);
    ASSERT_EQ(groups.status, 0) << groups.output;
    EXPECT_NE(groups.output.find("one selection per query block of 64"), std::string::npos)
        << groups.output;
    const test::ProgramResult bad = run_purbo(common + "48", /*with_stderr=*/true);
    EXPECT_NE(bad.status, 0) << bad.output;
    EXPECT_NE(bad.output.find(
                  "prefill query block 48 must be 0 or a multiple of the adapter's block size 32"),
              std::string::npos)
        << bad.output;
}

// One thread: on two cores shared with other jobs, two OpenMP threads ran this 8x slower
// (141 s against 18 s measured), each barrier waiting for a time slice.
TEST(EvalCli, DefaultModelTinySettings) {
    PURBO_REQUIRE_DEFAULT_MODEL(model);
    if (!have_held_out_corpus()) GTEST_SKIP() << "no held-out licence texts on this machine";
    const std::string dir = test::temp_dir("eval_cli_default_model");
    const std::string out = dir + "/results.md";
    const test::ProgramResult r = run_purbo(
        "eval -m " + model +
        " --lengths 1K --trials 2 --ppl-ctx 512 --ppl-prefix 448 --window 256 -t 1 --out " + out);
    ASSERT_EQ(r.status, 0) << r.output;
    const std::vector<std::string> expected = {
        "**purbo eval** " + std::filesystem::path(model).filename().string() + "; adapter none",
        "| variant | passkey 1K | ppl | KL vs dense |",
        "\n| dense | ",
        "\n| local (W 256, S 4) | ",
        "dense  passkey 1K   [  2/2]",
        "wrote " + out};
    for (const std::string& expect : expected)
        EXPECT_NE(r.output.find(expect), std::string::npos) << expect << "\n" << r.output;
    auto text = read_text_file(out);
    ASSERT_TRUE(text.is_ok());
    EXPECT_NE(text->find("| dense | "), std::string::npos);
}

}  // namespace
}  // namespace purbo
