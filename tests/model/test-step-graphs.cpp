// Decode steps replayed as CUDA graphs (Backend::begin_graph_step) against the same steps
// launched op by op: the same kernels with the same arguments, so the logits must be equal
// bit for bit, across the steps where the recording has to be made again (the attention
// plan gains a split every 128 positions here). Skipped where no CUDA device is visible.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "backend/backend.h"
#include "model/hf-loader.h"
#include "runtime/session.h"
#include "test-util.h"

#if defined(PURBO_HAVE_CUDA)
#include "backend/cuda/cuda-backend.h"
#endif

namespace purbo {
namespace {

bool cuda_available() {
    const auto names = backend_available();
    return std::find(names.begin(), names.end(), "cuda") != names.end();
}

#define SKIP_WITHOUT_CUDA() \
    if (!cuda_available()) GTEST_SKIP() << "no CUDA device visible: step graphs are a cuda feature"

// A tiny checkpoint the cuda attention kernels accept (head dim 32).
const char* kModel = "hf/qwen3-headdim32";

struct DecodeRun {
    std::vector<float> logits;  // every step's logits, concatenated
    int64_t replayed = 0, recorded = 0, fell_back = 0;
};

// The session's step-graph counts (replays, recordings, fallbacks) into `run`.
void read_counts(Session& session, DecodeRun& run) {
#if defined(PURBO_HAVE_CUDA)
    const auto& counts = dynamic_cast<CudaBackend&>(session.backend()).step_graph().counts();
    run.replayed = counts.replayed;
    run.recorded = counts.recorded;
    run.fell_back = counts.fell_back;
#else
    (void)session, (void)run;
#endif
}

// A prefill of 5 tokens, then `steps` decode steps of one token each.
DecodeRun decode(const HfModel& m, bool graphs, int steps) {
    SessionOptions so;
    so.backend = "cuda";
    so.n_ctx = 1024;
    so.n_batch = 64;
    so.step_graphs = graphs;
    auto s = Session::create(m.config, m.weights, so);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    DecodeRun run;
    if (!s.is_ok()) return run;
    std::vector<int32_t> tokens;
    for (int i = 0; i < steps + 5; ++i) tokens.push_back((i * 7919 + 11) % m.config.n_vocab);
    std::vector<float> logits;
    EXPECT_TRUE((*s)->prefill(0, std::span<const int32_t>(tokens).first(5), logits).is_ok());
    for (size_t i = 5; i < tokens.size(); ++i) {
        const DecodeItem item{0, tokens[i]};
        const Status st = (*s)->decode({&item, 1}, logits);
        EXPECT_TRUE(st.is_ok()) << st.to_string();
        run.logits.insert(run.logits.end(), logits.begin(), logits.end());
    }
    read_counts(**s, run);
    return run;
}

TEST(StepGraphs, ReplayedDecodeStepsEqualEagerOnesBitForBit) {
    SKIP_WITHOUT_CUDA();
    auto m = hf_model_load(test::fixture_path(kModel));
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    constexpr int kSteps = 600;
    const DecodeRun eager = decode(*m, false, kSteps);
    const DecodeRun graphs = decode(*m, true, kSteps);
    ASSERT_EQ(eager.logits.size(), graphs.logits.size());
    size_t differing = 0;
    for (size_t i = 0; i < eager.logits.size(); ++i) differing += std::memcmp(&eager.logits[i], &graphs.logits[i], 4) != 0;
    EXPECT_EQ(differing, 0u) << "of " << eager.logits.size() << " logits";
    // The path was taken: graphs off launched everything op by op; graphs on replayed most
    // steps and recorded again as the split count grew (at positions 224, 352 and 480).
    EXPECT_EQ(eager.replayed + eager.recorded, 0);
    EXPECT_GE(graphs.recorded, 4);
    EXPECT_GE(graphs.replayed, kSteps - 2 * graphs.recorded);
    // Every step was one of the three; the 5-token prefill is a graph step too.
    EXPECT_EQ(graphs.replayed + graphs.recorded + graphs.fell_back, kSteps + 1);
}

// Steps of two shapes in turn (sequence 0 alone, then sequences 0 and 1 together): each shape
// keeps its own recording, so both replay instead of recording at every change.
DecodeRun alternate(const HfModel& m, bool graphs, int rounds) {
    SessionOptions so;
    so.backend = "cuda";
    so.n_ctx = 512;
    so.n_batch = 64;
    so.n_seq = 2;
    so.step_graphs = graphs;
    auto s = Session::create(m.config, m.weights, so);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    DecodeRun run;
    if (!s.is_ok()) return run;
    std::vector<float> logits;
    const std::vector<int32_t> prompt = {11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27};
    for (int seq : {0, 1}) EXPECT_TRUE((*s)->prefill(seq, prompt, logits).is_ok());
    for (int i = 0; i < rounds; ++i) {
        const int32_t token = (i * 7919 + 11) % m.config.n_vocab;
        const DecodeItem one{0, token};
        EXPECT_TRUE((*s)->decode({&one, 1}, logits).is_ok());
        run.logits.insert(run.logits.end(), logits.begin(), logits.end());
        const DecodeItem two[] = {{0, token}, {1, (token + 1) % m.config.n_vocab}};
        EXPECT_TRUE((*s)->decode(two, logits).is_ok());
        run.logits.insert(run.logits.end(), logits.begin(), logits.end());
    }
    read_counts(**s, run);
    return run;
}

TEST(StepGraphs, AlternatingShapesEachReplayTheirOwnGraph) {
    SKIP_WITHOUT_CUDA();
    auto m = hf_model_load(test::fixture_path(kModel));
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    constexpr int kRounds = 40;  // positions 17..97: no new split-KV split
    const DecodeRun eager = alternate(*m, false, kRounds);
    const DecodeRun graphs = alternate(*m, true, kRounds);
    ASSERT_EQ(eager.logits.size(), graphs.logits.size());
    EXPECT_EQ(std::memcmp(eager.logits.data(), graphs.logits.data(), eager.logits.size() * sizeof(float)), 0);
    // One recording per shape (n = 1 and n = 2); every other step of either shape replays.
    EXPECT_EQ(graphs.recorded, 2);
    EXPECT_EQ(graphs.fell_back, 0);
    EXPECT_EQ(graphs.replayed, 2 * kRounds - 2);
}

TEST(StepGraphs, CpuBackendsHaveNone) {
    for (const char* name : {"cpu", "cpu-ref"}) {
        auto b = backend_create(name);
        ASSERT_TRUE(b.is_ok()) << b.status().to_string();
        EXPECT_FALSE((*b)->begin_graph_step(1)) << name;
    }
}

TEST(StepGraphs, OffWhenAsked) {
    SKIP_WITHOUT_CUDA();
    BackendOptions o;
    o.step_graphs = false;
    auto b = backend_create("cuda", o);
    ASSERT_TRUE(b.is_ok()) << b.status().to_string();
    EXPECT_FALSE((*b)->begin_graph_step(1));
}

// A host read inside a step is refused, and the step reports that its ops did not run.
TEST(StepGraphs, HostReadInsideAStepFallsBack) {
    SKIP_WITHOUT_CUDA();
    auto b = backend_create("cuda");
    ASSERT_TRUE(b.is_ok()) << b.status().to_string();
    Backend& be = **b;
    const Tensor x = be.alloc(DType::kF32, {1, 64}, "x");
    const Tensor w = be.alloc(DType::kF32, {64}, "w");
    Tensor host = tensor_cpu(DType::kF32, {1, 64});
    ASSERT_TRUE(be.begin_graph_step(1));
    Status ops = be.rms_norm(x, w, 1e-6f, x);
    EXPECT_TRUE(ops.is_ok()) << ops.to_string();
    const Status read = be.to_host(x, host);
    EXPECT_FALSE(read.is_ok());
    EXPECT_NE(read.message().find("graph step"), std::string::npos) << read.to_string();
    auto done = be.end_graph_step(read.is_ok());
    ASSERT_TRUE(done.is_ok()) << done.status().to_string();
    EXPECT_FALSE(*done);
    // The stream works as before: the same op outside a step, and a read.
    EXPECT_TRUE(be.rms_norm(x, w, 1e-6f, x).is_ok());
    EXPECT_TRUE(be.to_host(x, host).is_ok());
}

}  // namespace
}  // namespace purbo
