// Stage 1 on the default model (SmolLM2-135M-Instruct; skipped when absent): on real text the
// SVD-initialised indexer already beats a random projection, and a short training run lowers
// the KL and raises the top-p recall on text it has not seen.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/model.h"
#include "sparse/indexer-init.h"
#include "test-util.h"
#include "train/stage1.h"

namespace purbo {
namespace {

constexpr int kSeqLen = 512;

// English prose of this repository (README and docs), tokenised: real text for real attention.
std::vector<int32_t> repo_text_tokens(const Tokenizer& tok) {
    namespace fs = std::filesystem;
    std::vector<fs::path> files = {fs::path(PURBO_SOURCE_DIR) / "README.md"};
    for (const auto& e : fs::directory_iterator(fs::path(PURBO_SOURCE_DIR) / "docs"))
        if (e.path().extension() == ".md") files.push_back(e.path());
    std::sort(files.begin() + 1, files.end());
    std::string text;
    for (const fs::path& p : files) {
        std::ifstream in(p);
        std::stringstream ss;
        ss << in.rdbuf();
        text += ss.str() + "\n\n";
    }
    return tok.encode(text, false, false);
}

Adapter smollm2_adapter(const ModelConfig& c, int rank) {
    SparseSettings settings;
    settings.rank = rank;
    Adapter a = adapter_for_model(c, settings);
    // A few heads across the depth (calibration picks the real ones; any head can be trained).
    a.retrieval = {{6, 1}, {12, 4}, {18, 7}, {24, 2}};
    return a;
}

struct Smollm2 {
    Model model;
    std::unique_ptr<Session> session;
    std::vector<int32_t> text;  // tokens
};

std::unique_ptr<Smollm2> load(const std::string& path) {
    auto m = model_load(path);
    EXPECT_TRUE(m.is_ok()) << m.status().message();
    if (!m.is_ok()) return nullptr;
    auto s = std::make_unique<Smollm2>();
    s->model = std::move(*m);
    SessionOptions so;
    so.n_ctx = kSeqLen;
    auto session = Session::create(s->model.config, s->model.weights, so);
    EXPECT_TRUE(session.is_ok()) << session.status().message();
    if (!session.is_ok()) return nullptr;
    s->session = std::move(*session);
    s->text = repo_text_tokens(*s->model.tokenizer);
    return s;
}

TEST(Stage1Smollm2, SvdInitBeatsRandomProjection) {
    PURBO_REQUIRE_DEFAULT_MODEL(path);
    auto s = load(path);
    ASSERT_TRUE(s);
    ASSERT_GE(s->text.size(), static_cast<size_t>(kSeqLen));
    const std::vector<int32_t> tokens(s->text.begin(), s->text.begin() + kSeqLen);
    Stage1Options o;
    o.metric_stride = 4;
    o.min_position = 16;

    Adapter svd = smollm2_adapter(s->model.config, 8);
    auto record = stage1_record(*s->session, svd, tokens);
    ASSERT_TRUE(record.is_ok()) << record.status().message();
    ASSERT_TRUE(adapter_init_indexer(svd, *record).is_ok());
    Adapter random = smollm2_adapter(s->model.config, 8);
    random.wq = tensor_cpu(DType::kF32, {4, 8, 64});
    random.wk = tensor_cpu(DType::kF32, {4, 8, 64});
    for (int64_t i = 0; i < 4; ++i) {
        const HeadIndexerInit init =
            indexer_init_random(8, 64, 0.125f, 100 + static_cast<uint64_t>(i));
        std::copy(init.wq.begin(), init.wq.end(), random.wq.f32() + i * 8 * 64);
        std::copy(init.wk.begin(), init.wk.end(), random.wk.f32() + i * 8 * 64);
    }
    auto with_svd = stage1_evaluate(*record, svd, o);
    auto with_random = stage1_evaluate(*record, random, o);
    ASSERT_TRUE(with_svd.is_ok() && with_random.is_ok());
    std::printf(
        "SmolLM2, 4 heads, r = 8, 512 tokens: SVD init KL %.3f recall %.3f (set %.3f, |S|/|T| "
        "%.2f); "
        "random KL %.3f recall %.3f (set %.3f, |S|/|T| %.2f)\n",
        with_svd->metrics.kl(), with_svd->metrics.mass_recall(), with_svd->metrics.set_recall(),
        with_svd->metrics.set_size_ratio(), with_random->metrics.kl(),
        with_random->metrics.mass_recall(), with_random->metrics.set_recall(),
        with_random->metrics.set_size_ratio());
    EXPECT_LT(with_svd->metrics.kl(), 0.7 * with_random->metrics.kl());
    EXPECT_GT(with_svd->metrics.mass_recall(), with_random->metrics.mass_recall() + 0.1);
}

TEST(Stage1Smollm2, ShortRunLowersKlAndRaisesRecall) {
    PURBO_REQUIRE_DEFAULT_MODEL(path);
    auto s = load(path);
    ASSERT_TRUE(s);
    // Training cycles over 4 windows (their records cached: 4 dense runs for 20 steps, which
    // keeps the test near 30 s on 2 cores); the last kSeqLen tokens are held out.
    const int64_t n = static_cast<int64_t>(s->text.size());
    ASSERT_GE(n, 3 * kSeqLen);
    const std::vector<int32_t> held_out(s->text.end() - kSeqLen, s->text.end());
    const int64_t stride = (n - 2 * kSeqLen) / 4;
    const TokenProvider data = [&](int step) -> Result<std::vector<int32_t>> {
        const auto begin = s->text.begin() + (step % 4) * stride;
        return std::vector<int32_t>(begin, begin + kSeqLen);
    };
    Adapter adapter = smollm2_adapter(s->model.config, 8);
    Stage1Options o;
    o.steps = 20;
    o.lr = 1e-2f;  // 20 steps, not 600: larger steps, short warmup
    o.warmup = 3;
    o.min_position = 16;
    o.metric_stride = 4;
    o.progress = false;
    o.final_eval = false;
    o.record_cache = 4;

    o.eval_tokens = held_out;  // measured before (the SVD init) and after training

    auto summary = stage1_train(*s->session, adapter, data, o);
    ASSERT_TRUE(summary.is_ok()) << summary.status().message();
    ASSERT_TRUE(summary->has_eval);
    const IndexerMetrics& before = summary->eval_initial;
    const IndexerMetrics& after = summary->eval_final;
    std::printf(
        "SmolLM2 stage 1, 20 steps x 512 tokens, 4 heads, r = 8: held-out KL %.4f -> %.4f, "
        "recall %.3f -> %.3f (set %.3f -> %.3f, |S|/|T| %.2f -> %.2f); train KL step 0 %.4f, "
        "step 19 %.4f; %.1f s\n",
        before.kl(), after.kl(), before.mass_recall(), after.mass_recall(), before.set_recall(),
        after.set_recall(), before.set_size_ratio(), after.set_size_ratio(), summary->initial.kl(),
        summary->last.metrics.kl(), summary->seconds);
    EXPECT_LT(after.kl(), 0.9 * before.kl());
    EXPECT_GT(after.mass_recall(), before.mass_recall());
    EXPECT_NE(adapter.training_info.find("held-out: KL"), std::string::npos)
        << adapter.training_info;
}

}  // namespace
}  // namespace purbo
