// purbo calibrate as a user runs it: one clear line and exit 1 for bad flags, and a whole
// calibration of a tiny checkpoint (with a byte-level tokenizer) that writes a loadable
// adapter and a heat map.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/mapped-file.h"
#include "model/hf-loader.h"
#include "sparse/adapter.h"
#include "sparse/corpus.h"
#include "sparse/head-selection.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

using test::run_purbo;

// A tiny Llama checkpoint with a byte tokenizer (test-util.h).
fs::path make_model(const std::string& test_name) {
    return test::tiny_byte_model(test_name);
}

size_t count_lines(const std::string& s) {
    return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

TEST(CalibrateCli, BadFlagsGiveOneClearLine) {
    const fs::path dir = make_model("calibrate_cli_bad_flags");
    const std::string m = "calibrate -c 1024 -m " + dir.string();
    const std::string out = " -o " + (dir / "out.safetensors").string();
    struct Case {
        std::string args, expect;
    } cases[] = {
        {m, "give the adapter to write with -o FILE"},
        {m + out + " --ratio 1.5", "--ratio: 1.5 is not in [0, 1]"},
        {m + out + " --ratio x", "--ratio: 'x' is not a number"},
        {m + out + " --docs 0", "--docs: 0 (at least 1)"},
        {m + out + " --depths 2x", "--depths: '2x' is not an integer"},
        {m + out + " -c 100", "--ctx-size: 100 (at least 256)"},
        {m + out + " --top-p 2", "'top_p': value 2 must be in (0, 1]"},
        {m + out + " --window 0", "'window'"},
        {m + out + " --rank 17", "--rank: 17 exceeds the model's head_dim 16"},
        {m + out + " --docs 99", "99 needed"},
        {m + out + " --device tpu", "unknown backend 'tpu'"},
        {m + out + " --kv-groups=yes", "--kv-groups takes no value"},
        {"calibrate -m " + (dir / "missing").string() + out, "missing"},
    };
    for (const Case& c : cases) {
        const test::ProgramResult r = run_purbo(c.args);
        EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
        EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
        EXPECT_EQ(count_lines(r.output), 1u) << c.args << "\n" << r.output;
        EXPECT_EQ(r.output.rfind("purbo calibrate: ", 0), 0u) << r.output;
    }
    EXPECT_FALSE(fs::exists(dir / "out.safetensors"));
}

TEST(CalibrateCli, TinyCheckpointWritesAdapterAndHeatMap) {
    CorpusOptions co;
    co.calibration_only = true;
    co.min_documents = 2;
    if (auto texts = corpus_documents(co); !texts.is_ok())
        GTEST_SKIP() << "no licence texts on this machine: " << texts.status().message();
    const fs::path dir = make_model("calibrate_cli_tiny");
    const std::string adapter_path = (dir / "a.safetensors").string();
    const std::string svg_path = (dir / "a.svg").string();
    const test::ProgramResult r =
        run_purbo("calibrate -m " + dir.string() +
                  " -c 1024 --docs 2 --depths 2 --kv-groups --window 256 -o " + adapter_path +
                  " --svg " + svg_path);
    ASSERT_EQ(r.status, 0) << r.output;
    for (const char* expect : {"[ 1/4] GPL-3", "[ 4/4] MPL-1.1", "top heads",
                               "retrieval heads:", "local KV heads:", "histogram:", "adapter:"})
        EXPECT_NE(r.output.find(expect), std::string::npos) << expect << "\n" << r.output;

    auto a = adapter_load(adapter_path);
    ASSERT_TRUE(a.is_ok()) << a.status().message();
    EXPECT_EQ(a->n_layer, 3);
    EXPECT_EQ(a->n_head, 4);
    EXPECT_EQ(a->n_head_kv, 2);
    EXPECT_EQ(a->settings.window, 256);
    EXPECT_EQ(a->settings.n_sink, SparseSettings{}.n_sink);
    EXPECT_FALSE(a->has_indexer());
    ASSERT_EQ(a->scores.size(), 12u);
    for (float s : a->scores) {
        EXPECT_GE(s, 0.0f);
        EXPECT_LE(s, 1.0f);
    }
    // Budget round(0.15 * 12) = 2 query heads = one whole KV group of 2.
    ASSERT_EQ(a->retrieval.size(), 2u);
    EXPECT_EQ(a->retrieval[0].layer, a->retrieval[1].layer);
    EXPECT_EQ(a->retrieval[0].head / 2, a->retrieval[1].head / 2);
    EXPECT_NE(a->calibration_info.find("2 documents (GPL-3, MPL-1.1) x 2 depths, 1024 tokens"),
              std::string::npos)
        << a->calibration_info;
    EXPECT_NE(a->calibration_info.find("whole KV groups"), std::string::npos)
        << a->calibration_info;
    auto hf = hf_model_load(dir.string());
    ASSERT_TRUE(hf.is_ok());
    EXPECT_TRUE(a->check_model(hf->config, model_fingerprint(hf->config, hf->weights), adapter_path)
                    .is_ok());

    auto svg = read_text_file(svg_path);
    ASSERT_TRUE(svg.is_ok());
    size_t cells = 0;
    for (size_t i = svg->find("class=\"cell\""); i != std::string::npos;
         i = svg->find("class=\"cell\"", i + 1))
        ++cells;
    EXPECT_EQ(cells, 12u);

    // The same machine files and model give the same scores.
    const std::string again_path = (dir / "b.safetensors").string();
    const test::ProgramResult r2 =
        run_purbo("calibrate -m " + dir.string() +
                  " -c 1024 --docs 2 --depths 2 --kv-groups --window 256 -o " + again_path);
    ASSERT_EQ(r2.status, 0) << r2.output;
    auto b = adapter_load(again_path);
    ASSERT_TRUE(b.is_ok());
    EXPECT_EQ(a->scores, b->scores);
}

// --from: the heads chosen again from an adapter's stored scores, without the model. The
// committed adapter of the default model has a trained indexer: the same heads and rank keep
// it, other heads drop it; settings not given stay the adapter's.
TEST(CalibrateCli, FromStoredScoresChoosesAgainWithoutTheModel) {
    const std::string committed =
        std::string(PURBO_SOURCE_DIR) + "/adapters/SmolLM2-135M-Instruct.adapter.safetensors";
    auto source = adapter_load(committed);
    ASSERT_TRUE(source.is_ok()) << source.status().message();
    ASSERT_TRUE(source->has_indexer());
    const std::string dir = test::temp_dir("calibrate_from");

    // The same choice and a new window: heads, scores and indexer kept.
    const auto same = run_purbo("calibrate --from " + committed + " --kv-groups --window 1536 -o " +
                                dir + "/same.sft");
    ASSERT_EQ(same.status, 0) << same.output;
    EXPECT_NE(same.output.find("indexer:          kept"), std::string::npos) << same.output;
    auto kept = adapter_load(dir + "/same.sft");
    ASSERT_TRUE(kept.is_ok()) << kept.status().message();
    EXPECT_EQ(kept->retrieval, source->retrieval);
    EXPECT_EQ(kept->scores, source->scores);
    EXPECT_EQ(kept->base_fingerprint, source->base_fingerprint);
    ASSERT_NE(source->settings.window, 1536);
    EXPECT_EQ(kept->settings.window, 1536);
    EXPECT_EQ(kept->settings.n_sink, source->settings.n_sink);
    EXPECT_EQ(kept->settings.top_p, source->settings.top_p);
    ASSERT_TRUE(kept->has_indexer());
    EXPECT_EQ(kept->wq.numel(), source->wq.numel());
    EXPECT_EQ(0, std::memcmp(kept->wq.data, source->wq.data, source->wq.nbytes()));
    EXPECT_EQ(kept->training_info, source->training_info);

    // Twice the ratio, by query head: round(0.3 * 270) = 81 heads, the top 81 by score; the
    // indexer (42 rows of other heads) is dropped.
    const auto more =
        run_purbo("calibrate --from " + committed + " --ratio 0.3 -o " + dir + "/more.sft");
    ASSERT_EQ(more.status, 0) << more.output;
    EXPECT_NE(more.output.find("indexer:          dropped"), std::string::npos) << more.output;
    auto wider = adapter_load(dir + "/more.sft");
    ASSERT_TRUE(wider.is_ok()) << wider.status().message();
    EXPECT_EQ(wider->retrieval.size(), 81u);
    EXPECT_FALSE(wider->has_indexer());
    EXPECT_TRUE(wider->training_info.empty());
    EXPECT_EQ(wider->settings.window, source->settings.window);
    EXPECT_NE(
        wider->calibration_info.find("ratio 0.3 by query head (chosen again from stored scores)"),
        std::string::npos)
        << wider->calibration_info;
    EXPECT_EQ(wider->calibration_info.find("whole KV groups"), std::string::npos)
        << wider->calibration_info;
    const std::vector<HeadId> ranked = rank_heads(source->scores, source->n_layer, source->n_head);
    for (size_t i = 0; i < 81; ++i)
        EXPECT_TRUE(wider->is_retrieval(ranked[i].layer, ranked[i].head)) << i;

    // Flags that only a calibration run uses, and a file that is not an adapter: one clear line.
    struct Case {
        std::string args, expect;
    } cases[] = {
        {"calibrate --from " + committed + " --docs 2 -o " + dir + "/x.sft",
         "--docs: not used with --from"},
        {"calibrate --from " + committed + " -m x.gguf -o " + dir + "/x.sft",
         "--model: not used with --from"},
        {"calibrate --from " + committed + " --rank 65 -o " + dir + "/x.sft",
         "--rank: 65 exceeds the model's head_dim 64"},
        {"calibrate --from " + dir + "/missing.sft -o " + dir + "/x.sft", "missing.sft"},
    };
    for (const Case& c : cases) {
        const test::ProgramResult r = run_purbo(c.args);
        EXPECT_EQ(r.status, 1) << c.args << "\n" << r.output;
        EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
        EXPECT_EQ(count_lines(r.output), 1u) << c.args << "\n" << r.output;
    }
    EXPECT_FALSE(std::filesystem::exists(dir + "/x.sft"));
}

// rtp-llm's headwise_config through the program: inspect --export-headwise writes the head
// classes of an adapter, calibrate --import-headwise makes an adapter of them for a model.
TEST(CalibrateCli, HeadwiseConfigRoundTrip) {
    PURBO_REQUIRE_DEFAULT_MODEL(model);
    const std::string dir = test::temp_dir("calibrate_headwise");
    const std::string adapter = dir + "/heads.safetensors";
    std::filesystem::copy_file(test::fixture_path("adapter/smollm2-heads.adapter"), adapter);
    const auto exported = test::run_purbo("inspect " + adapter + " --export-headwise " + dir + "/config.json");
    ASSERT_EQ(exported.status, 0) << exported.output;
    const nlohmann::json config = test::load_json(dir + "/config.json");
    ASSERT_TRUE(config.contains("headwise_config")) << config.dump();
    const auto imported = test::run_purbo("calibrate -m " + model + " --import-headwise " + dir + "/config.json -o " +
                                          dir + "/imported.safetensors");
    ASSERT_EQ(imported.status, 0) << imported.output;
    auto original = adapter_load(adapter);
    auto back = adapter_load(dir + "/imported.safetensors");
    ASSERT_TRUE(original.is_ok() && back.is_ok());
    EXPECT_EQ(back->retrieval, original->retrieval);
    EXPECT_EQ(back->settings.window, original->settings.window);
    EXPECT_EQ(back->settings.n_sink, original->settings.n_sink);
    EXPECT_EQ(back->base_fingerprint, original->base_fingerprint);  // the same model
    // Not an adapter: one clear line.
    const auto bad = test::run_purbo("inspect " + model + " --export-headwise " + dir + "/x.json");
    EXPECT_EQ(bad.status, 1);
    EXPECT_NE(bad.output.find("not an adapter"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace purbo
