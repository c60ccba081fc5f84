// `purbo train-indexer` as a user runs it: on a tiny Hugging Face folder, an adapter without an
// indexer comes back with a trained one, a log and a checkpoint, from a text file or from the
// machine's text corpus; bad flags name the flag.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/hf-loader.h"
#include "sparse/adapter.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

void write_file(const fs::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary);
    out << bytes;
}

struct TrainSetup {
    fs::path dir;
    fs::path model;
    fs::path adapter;
    fs::path data;
};

// A tiny model folder, an adapter for it with head classes only, and some text.
TrainSetup make_setup(const std::string& name) {
    TrainSetup s;
    s.dir = test::temp_dir(name);
    s.model = test::tiny_byte_model(name + "_model");

    auto m = hf_model_load(s.model.string());
    EXPECT_TRUE(m.is_ok()) << m.status().message();
    Adapter a;
    a.settings.rank = 4;
    a.n_layer = m->config.n_layer;
    a.n_head = m->config.n_head;
    a.n_head_kv = m->config.n_head_kv;
    a.head_dim = m->config.head_dim;
    a.base_fingerprint = model_fingerprint(m->config, m->weights);
    a.scores.assign(static_cast<size_t>(a.n_layer * a.n_head), 0.5f);
    a.retrieval = {{0, 1}, {2, 2}};
    s.adapter = s.dir / "in.adapter.safetensors";
    EXPECT_TRUE(adapter_save(s.adapter.string(), a).is_ok());

    std::string text;
    for (int i = 0; i < 40; ++i)
        text +=
            "The quick brown fox " + std::to_string(i * 7919 % 1000) + " jumps over the lazy dog. ";
    s.data = s.dir / "text.txt";
    write_file(s.data, text);
    return s;
}

TEST(TrainIndexer, TrainsAnAdapterWithoutIndexer) {
    const TrainSetup s = make_setup("cli_train_indexer");
    const fs::path out = s.dir / "out.adapter.safetensors", log_path = s.dir / "loss.csv",
                   ckpt = s.dir / "ckpt";
    const std::string args = "train-indexer -m " + s.model.string() + " --adapter " +
                             s.adapter.string() + " -o " + out.string() + " --data " +
                             s.data.string() + " -c 128 --steps 6 --warmup 2 --lr 1e-2 --log " +
                             log_path.string() + " --checkpoint " + ckpt.string() +
                             " --checkpoint-every 3";
    const test::ProgramResult r = test::run_purbo(args);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("stage 1 6/6"), std::string::npos)
        << r.output;  // the progress line (not a tty)
    EXPECT_NE(r.output.find("KL"), std::string::npos) << r.output;
    auto trained = adapter_load(out.string());
    ASSERT_TRUE(trained.is_ok()) << trained.status().message();
    EXPECT_TRUE(trained->has_indexer());
    EXPECT_EQ(trained->wq.dim(0), 2);
    EXPECT_NE(trained->training_info.find("stage 1: 6 steps x 128 tokens"), std::string::npos)
        << trained->training_info;
    EXPECT_TRUE(fs::exists(ckpt));
    std::ifstream in(log_path);
    int lines = 0;
    for (std::string line; std::getline(in, line);) ++lines;
    EXPECT_EQ(lines, 7);

    // Resuming a finished run trains nothing more and writes the same indexer.
    const fs::path again = s.dir / "again.adapter.safetensors";
    const std::string resume = "train-indexer -m " + s.model.string() + " --adapter " +
                               s.adapter.string() + " -o " + again.string() + " --data " +
                               s.data.string() + " -c 128 --steps 6 --warmup 2 --lr 1e-2 " +
                               "--checkpoint " + ckpt.string() + " --resume --no-progress";
    const test::ProgramResult r2 = test::run_purbo(resume);
    ASSERT_EQ(r2.status, 0) << r2.output;
    auto same = adapter_load(again.string());
    ASSERT_TRUE(same.is_ok());
    EXPECT_EQ(std::memcmp(same->wq.data, trained->wq.data, trained->wq.nbytes()), 0);
}

TEST(TrainIndexer, TrainsOnTheTextCorpusAndMeasuresHeldOut) {
    const TrainSetup s = make_setup("cli_train_indexer_corpus");
    const fs::path out = s.dir / "out.adapter.safetensors";
    const std::string base = "train-indexer -m " + s.model.string() + " --adapter " +
                             s.adapter.string() + " -o " + out.string() +
                             " -c 96 --steps 3 --warmup 1 --no-progress";
    const test::ProgramResult r = test::run_purbo(base);
    if (r.status != 0 && r.output.find("not found") != std::string::npos)
        GTEST_SKIP() << "no text corpus on this machine: " << r.output;
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("the text corpus"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("held-out = KL"), std::string::npos) << r.output;
    auto trained = adapter_load(out.string());
    ASSERT_TRUE(trained.is_ok()) << trained.status().message();
    EXPECT_NE(trained->training_info.find("held-out: KL"), std::string::npos);

    // A held-out file instead; or none.
    const test::ProgramResult e =
        test::run_purbo(base + " --data " + s.data.string() + " --eval-data " + s.data.string());
    ASSERT_EQ(e.status, 0) << e.output;
    EXPECT_NE(e.output.find("held-out = KL"), std::string::npos) << e.output;
    const test::ProgramResult n = test::run_purbo(base + " --no-eval");
    ASSERT_EQ(n.status, 0) << n.output;
    EXPECT_EQ(n.output.find("held-out"), std::string::npos) << n.output;
}

TEST(TrainIndexer, BadFlagsNameTheFlag) {
    const TrainSetup s = make_setup("cli_train_indexer_flags");
    const std::string base = "train-indexer -m " + s.model.string();
    // Written only if a case wrongly succeeds: inside the test's folder.
    const std::string out = " -o " + (s.dir / "out.safetensors").string();
    struct Case {
        std::string args, expect;
    } cases[] = {
        {base + out + " --data " + s.data.string(), "--adapter"},
        {base + " --adapter " + s.adapter.string() + " --data " + s.data.string(), "-o"},
        {base + " --adapter " + s.adapter.string() + out + " --data " + s.data.string() +
             " --init pca",
         "--init: 'pca'"},
        {base + " --adapter " + s.adapter.string() + out + " --data " + s.data.string() +
             " --resume",
         "--resume"},
        {base + " --adapter " + s.adapter.string() + out + " --data " + s.data.string() +
             " --rank 99",
         "rank"},
        {base + " --adapter " + s.adapter.string() + out + " --data " +
             (s.dir / "none.txt").string(),
         "none.txt"},
    };
    for (const Case& c : cases) {
        const test::ProgramResult r = test::run_purbo(c.args);
        EXPECT_EQ(r.status, 1) << c.args;
        EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << "\n" << r.output;
    }
}

}  // namespace
}  // namespace purbo
