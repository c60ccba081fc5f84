// The adapter file (src/sparse/adapter*.cpp): round trips, the base-model fingerprint, one error
// per kind of malformed file (naming the file, the field and the value), the model check, and
// `purbo inspect` on an adapter. rtp-llm's headwise_config: test-adapter-headwise.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/mapped-file.h"
#include "model/safetensors.h"
#include "sparse/adapter.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

// Letters: L = layers, H = query heads, R = retrieval heads, r = indexer rank, d = head_dim.
constexpr int kLayers = 2, kHeads = 4, kKvHeads = 2, kHeadDim = 8, kRank = 4;

// A model shape to match: 2 layers x 4 query heads (2 KV heads), d = 8, e = 32, vocab 40.
ModelConfig tiny_config() {
    ModelConfig c;
    c.arch = Arch::kLlama;
    c.n_layer = kLayers;
    c.n_embd = 32;
    c.n_head = kHeads;
    c.n_head_kv = kKvHeads;
    c.head_dim = kHeadDim;
    c.n_ff = 48;
    c.n_vocab = 40;
    c.n_ctx_train = 256;
    return c;
}

// Host weights of `c` filled with a fixed pattern (no RNG: the golden fingerprint below must
// not depend on the standard library's distributions).
ModelWeights tiny_weights(const ModelConfig& c) {
    const auto filled = [](std::initializer_list<int64_t> shape, float scale) {
        Tensor t = tensor_cpu(DType::kF32, shape);
        for (int64_t i = 0; i < t.numel(); ++i)
            t.f32()[i] = static_cast<float>(i % 17) * scale - 1.0f;
        return t;
    };
    ModelWeights w;
    w.tok_embd = filled({c.n_vocab, c.n_embd}, 0.125f);  // (vocab, e)
    for (int l = 0; l < c.n_layer; ++l) {
        LayerWeights lw;
        lw.wq = filled({c.n_head * c.head_dim, c.n_embd},
                       0.0625f * static_cast<float>(l + 1));          // (q, e)
        lw.wk = filled({c.n_head_kv * c.head_dim, c.n_embd}, 0.25f);  // (kv, e)
        w.layers.push_back(lw);
    }
    w.lm_head = w.tok_embd;
    return w;
}

// A valid adapter for tiny_config(): retrieval heads (0, 1), (1, 0), (1, 3); with an indexer
// of 3 heads x (r, d) when asked.
Adapter tiny_adapter(bool with_indexer) {
    Adapter a;
    a.settings.window = 16;
    a.settings.n_sink = 2;
    a.settings.top_p = 0.9f;  // not exact in binary: the text form must still read back bit-exact
    a.settings.block_size = 8;
    a.settings.rank = kRank;
    a.n_layer = kLayers;
    a.n_head = kHeads;
    a.n_head_kv = kKvHeads;
    a.head_dim = kHeadDim;
    const ModelConfig c = tiny_config();
    a.base_fingerprint = model_fingerprint(c, tiny_weights(c));
    std::mt19937 rng(7);
    a.scores = test::random_floats(rng, kLayers * kHeads, 0.5f);
    for (float& s : a.scores) s += 0.5f;  // attention mass: [0, 1]
    a.retrieval = {{0, 1}, {1, 0}, {1, 3}};
    if (with_indexer) {
        const int64_t n = static_cast<int64_t>(a.retrieval.size()) * kRank * kHeadDim;
        a.wq = test::host_f32({3, kRank, kHeadDim}, test::random_floats(rng, n));  // (R, r, d)
        a.wk = test::host_f32({3, kRank, kHeadDim}, test::random_floats(rng, n));  // (R, r, d)
    }
    a.calibration_info = "needle calibration, 4 documents \xc3\x97 3 depths, 8192 tokens";  // "×"
    a.training_info = with_indexer ? "stage 1, 600 steps, lr 1e-3" : "";
    return a;
}

// Expects an error whose message contains every one of `parts`.
void expect_error(const Status& s, std::initializer_list<std::string> parts) {
    ASSERT_FALSE(s.is_ok()) << "expected an error with '" << *parts.begin() << "'";
    for (const std::string& p : parts) {
        EXPECT_NE(s.message().find(p), std::string::npos)
            << "'" << p << "' not in: " << s.message();
    }
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out << bytes;
}

bool same_floats(const float* a, const float* b, size_t n) {
    return std::memcmp(a, b, n * sizeof(float)) == 0;
}

void expect_same_adapter(const Adapter& got, const Adapter& want) {
    EXPECT_EQ(got.settings.window, want.settings.window);
    EXPECT_EQ(got.settings.n_sink, want.settings.n_sink);
    EXPECT_EQ(std::memcmp(&got.settings.top_p, &want.settings.top_p, sizeof(float)), 0)
        << got.settings.top_p << " vs " << want.settings.top_p;
    EXPECT_EQ(got.settings.block_size, want.settings.block_size);
    EXPECT_EQ(got.settings.rank, want.settings.rank);
    EXPECT_EQ(got.n_layer, want.n_layer);
    EXPECT_EQ(got.n_head, want.n_head);
    EXPECT_EQ(got.n_head_kv, want.n_head_kv);
    EXPECT_EQ(got.head_dim, want.head_dim);
    EXPECT_EQ(got.base_fingerprint, want.base_fingerprint);
    ASSERT_EQ(got.scores.size(), want.scores.size());
    EXPECT_TRUE(same_floats(got.scores.data(), want.scores.data(), want.scores.size()));
    EXPECT_EQ(got.retrieval, want.retrieval);
    EXPECT_EQ(got.calibration_info, want.calibration_info);
    EXPECT_EQ(got.training_info, want.training_info);
    ASSERT_EQ(got.has_indexer(), want.has_indexer());
    if (want.has_indexer()) {
        for (const auto& [g, w] : {std::pair{&got.wq, &want.wq}, std::pair{&got.wk, &want.wk}}) {
            EXPECT_EQ(g->dtype, DType::kF32);
            EXPECT_TRUE(same_shape(*g, *w)) << g->describe() << " vs " << w->describe();
            EXPECT_TRUE(same_floats(g->f32(), w->f32(), static_cast<size_t>(w->numel())));
        }
    }
}

TEST(AdapterFile, RoundTripWithIndexer) {
    const std::string path = test::temp_dir("adapter_roundtrip") + "/a.safetensors";
    const Adapter want = tiny_adapter(true);
    ASSERT_TRUE(want.validate("tiny").is_ok()) << want.validate("tiny").to_string();
    const Status saved = adapter_save(path, want);
    ASSERT_TRUE(saved.is_ok()) << saved.to_string();
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    Result<Adapter> got = adapter_load(path);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    expect_same_adapter(*got, want);
    // The loaded indexer is an owned copy that training may write to.
    got->wq.f32()[0] += 1.0f;
    EXPECT_TRUE(adapter_load(path).is_ok());

    // The file is what docs/file-formats.md says.
    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.is_ok());
    const auto& meta = (*file)->metadata();
    EXPECT_EQ(meta.at("purbo.format"), "purbo-adapter");
    EXPECT_EQ(meta.at("purbo.version"), "1");
    EXPECT_EQ(meta.at("top_p"), "0.9");
    EXPECT_EQ(meta.at("retrieval_heads"), "[[0,1],[1,0],[1,3]]");
    EXPECT_EQ((*file)->find("indexer.wq")->shape, (std::vector<int64_t>{3, kRank, kHeadDim}));
    EXPECT_EQ((*file)->find("head_scores")->shape, (std::vector<int64_t>{kLayers, kHeads}));
}

TEST(AdapterFile, RoundTripWithoutIndexer) {
    const std::string path = test::temp_dir("adapter_roundtrip_noidx") + "/a.safetensors";
    Adapter want = tiny_adapter(false);
    want.retrieval.clear();         // no retrieval heads at all is a valid (fully local) adapter
    want.base_fingerprint.clear();  // unknown base model
    ASSERT_TRUE(adapter_save(path, want).is_ok());
    Result<Adapter> got = adapter_load(path);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    EXPECT_FALSE(got->has_indexer());
    expect_same_adapter(*got, want);
    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.is_ok());
    EXPECT_EQ((*file)->entries().size(), 1u);  // head_scores only
}

TEST(AdapterFile, ShapedForAModel) {
    SparseSettings settings;
    settings.window = 96;
    settings.rank = 4;
    const Adapter a = adapter_for_model(tiny_config(), settings);
    EXPECT_EQ(a.n_layer, kLayers);
    EXPECT_EQ(a.n_head, kHeads);
    EXPECT_EQ(a.n_head_kv, kKvHeads);
    EXPECT_EQ(a.head_dim, kHeadDim);
    EXPECT_EQ(a.settings.window, 96);
    EXPECT_EQ(a.settings.rank, 4);
    EXPECT_EQ(a.scores, std::vector<float>(static_cast<size_t>(kLayers * kHeads), 0.0f));
    EXPECT_TRUE(a.retrieval.empty());
    EXPECT_FALSE(a.has_indexer());
}

TEST(AdapterFile, HeadLookups) {
    const Adapter a = tiny_adapter(false);
    EXPECT_TRUE(a.is_retrieval(0, 1));
    EXPECT_FALSE(a.is_retrieval(0, 0));
    EXPECT_FALSE(a.is_retrieval(1, 2));
    EXPECT_EQ(a.retrieval_index(0, 1), 0);
    EXPECT_EQ(a.retrieval_index(1, 0), 1);
    EXPECT_EQ(a.retrieval_index(1, 3), 2);
    EXPECT_EQ(a.retrieval_index(1, 1), -1);
    EXPECT_EQ(a.retrieval_index(5, 0), -1);
    EXPECT_EQ(a.score(1, 2), a.scores[6]);
}

TEST(AdapterValidate, EveryBrokenFieldIsNamed) {
    struct Case {
        std::string what;
        std::function<void(Adapter&)> edit;
        std::vector<std::string> expect;
    };
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<Case> cases = {
        {"window", [](Adapter& a) { a.settings.window = 0; }, {"'window'", "0", "at least 1"}},
        {"sinks", [](Adapter& a) { a.settings.n_sink = -1; }, {"'n_sink'", "-1"}},
        {"block", [](Adapter& a) { a.settings.block_size = 0; }, {"'block_size'", "0"}},
        {"top_p high", [](Adapter& a) { a.settings.top_p = 1.5f; }, {"'top_p'", "1.5", "(0, 1]"}},
        {"top_p zero", [](Adapter& a) { a.settings.top_p = 0.0f; }, {"'top_p'", "0"}},
        {"top_p nan", [&](Adapter& a) { a.settings.top_p = nan; }, {"'top_p'", "nan"}},
        {"rank", [](Adapter& a) { a.settings.rank = 16; }, {"'rank'", "16", "head_dim 8"}},
        {"layers", [](Adapter& a) { a.n_layer = 0; }, {"'n_layer'", "0"}},
        {"gqa", [](Adapter& a) { a.n_head_kv = 3; }, {"'n_head_kv'", "3", "n_head 4"}},
        {"fingerprint",
         [](Adapter& a) { a.base_fingerprint = "ABCDEF0123456789"; },
         {"'base_fingerprint'", "ABCDEF0123456789"}},
        {"info utf8",
         [](Adapter& a) { a.training_info = "bad \xff byte"; },
         {"'training_info'", "UTF-8"}},
        {"scores size",
         [](Adapter& a) { a.scores.pop_back(); },
         {"'head_scores'", "7 values", "8 heads"}},
        {"score nan",
         [&](Adapter& a) { a.scores[6] = nan; },
         {"'head_scores'", "[1, 2]", "layer 1 head 2", "nan"}},
        {"score inf", [&](Adapter& a) { a.scores[0] = -inf; }, {"'head_scores'", "[0, 0]", "-inf"}},
        {"head range",
         [](Adapter& a) {
             a.retrieval.push_back({2, 0});
         },
         {"'retrieval_heads'", "[2, 0]", "2 layers"}},
        {"head negative",
         [](Adapter& a) {
             a.retrieval[0] = {0, -1};
         },
         {"'retrieval_heads'", "[0, -1]"}},
        {"duplicate",
         [](Adapter& a) {
             a.retrieval.insert(a.retrieval.begin() + 1, {0, 1});
         },
         {"'retrieval_heads'", "entry 1 [0, 1]", "twice"}},
        {"unsorted",
         [](Adapter& a) { std::swap(a.retrieval[0], a.retrieval[1]); },
         {"'retrieval_heads'", "entry 1 [0, 1]", "after [1, 0]", "ascend"}},
        {"wq shape",
         [](Adapter& a) {
             a.wq = a.wq.rows(0, 2 * kRank).reshaped({2, kRank, kHeadDim});
         },
         {"'indexer.wq'", "(2, 4, 8)", "(3, 4, 8)"}},
        {"wq 4-d",
         [](Adapter& a) {
             a.wq = a.wq.reshaped({3, kRank, kHeadDim, 1});
         },
         {"'indexer.wq'", "(3, 4, 8, 1)"}},
        {"wk missing", [](Adapter& a) { a.wk = Tensor{}; }, {"'indexer.wk'", "missing"}},
        {"wq dtype",
         [](Adapter& a) {
             a.wq = tensor_cpu(DType::kF16, {3, kRank, kHeadDim});
         },
         {"'indexer.wq'", "f16"}},
        {"wk inf",
         [&](Adapter& a) { a.wk.f32()[1 * kRank * kHeadDim + 3] = inf; },
         {"'indexer.wk'", "[1, 0, 3]", "layer 1 head 0", "inf"}},
        {"indexer after retrieval change",
         [](Adapter& a) { a.retrieval.pop_back(); },
         {"'indexer.wq'", "(3, 4, 8)", "(2, 4, 8)"}},
    };
    const std::string dir = test::temp_dir("adapter_validate");
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        Adapter a = tiny_adapter(true);
        c.edit(a);
        const Status s = a.validate("mem");
        ASSERT_FALSE(s.is_ok());
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
        for (const std::string& p : c.expect)
            EXPECT_NE(s.message().find(p), std::string::npos) << p << " | " << s.message();
        // An invalid adapter is never written.
        const std::string path = dir + "/x.safetensors";
        expect_error(adapter_save(path, a), {path});
        EXPECT_FALSE(fs::exists(path));
    }
}

TEST(AdapterFingerprint, StableAndSensitive) {
    const ModelConfig c = tiny_config();
    const ModelWeights w = tiny_weights(c);
    const std::string fp = model_fingerprint(c, w);
    ASSERT_EQ(fp.size(), 16u);
    EXPECT_EQ(fp.find_first_not_of("0123456789abcdef"), std::string::npos) << fp;
    // Fixed across runs, builds and machines: saved adapters carry it. The value was checked
    // against a separate FNV-1a-64 of the same byte stream (name and shape as little-endian
    // int64s, then the f32 rows) written in Python. If it changes on purpose, every saved
    // adapter's base_fingerprint becomes stale.
    EXPECT_EQ(fp, "f7ec75dc8c70e5ff");
    EXPECT_EQ(model_fingerprint(c, tiny_weights(c)), fp);  // other memory, same bytes

    // One changed byte in each hashed range changes it.
    const auto changed = [&](const std::function<void(ModelWeights&)>& edit) {
        ModelWeights v = tiny_weights(c);
        edit(v);
        return model_fingerprint(c, v);
    };
    EXPECT_NE(changed([](ModelWeights& v) { v.tok_embd.row_ptr(0)[5] ^= 1; }), fp);
    EXPECT_NE(changed([](ModelWeights& v) { v.tok_embd.row_ptr(v.tok_embd.n_rows() - 1)[0] ^= 1; }),
              fp);
    EXPECT_NE(changed([](ModelWeights& v) { v.layers[0].wq.row_ptr(17)[3] ^= 0x80; }), fp);
    // Bytes outside those ranges are not read (the fingerprint stays cheap on big models).
    EXPECT_EQ(changed([](ModelWeights& v) { v.tok_embd.row_ptr(1)[0] ^= 1; }), fp);
    EXPECT_EQ(changed([](ModelWeights& v) { v.layers[1].wq.row_ptr(0)[0] ^= 1; }), fp);

    // The attention shape is part of it.
    for (const auto& edit : std::vector<std::function<void(ModelConfig&)>>{
             [](ModelConfig& x) { x.n_head = 8; }, [](ModelConfig& x) { x.n_head_kv = 4; },
             [](ModelConfig& x) { x.n_layer = 3; }, [](ModelConfig& x) { x.head_dim = 4; },
             [](ModelConfig& x) { x.arch = Arch::kQwen3; }}) {
        ModelConfig other = c;
        edit(other);
        EXPECT_NE(model_fingerprint(other, w), fp);
    }
}

TEST(AdapterFingerprint, QuantisedWeightsHashTheirStoredBytes) {
    ModelConfig c = tiny_config();
    ModelWeights w = tiny_weights(c);
    // (q, e) Q8_0: one 34-byte block per row of 32 elements, used as stored.
    w.layers[0].wq = tensor_cpu(DType::kQ8_0, {c.n_head * c.head_dim, c.n_embd});
    for (size_t i = 0; i < w.layers[0].wq.nbytes(); ++i)
        w.layers[0].wq.ptr<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
    const std::string fp = model_fingerprint(c, w);
    EXPECT_NE(fp, model_fingerprint(c, tiny_weights(c)));  // the dtype and bytes differ
    w.layers[0].wq.row_ptr(31)[33] ^= 1;                   // last byte of the last row
    EXPECT_NE(model_fingerprint(c, w), fp);
}

TEST(AdapterCheckModel, ShapeAndFingerprint) {
    const ModelConfig c = tiny_config();
    const std::string fp = model_fingerprint(c, tiny_weights(c));
    Adapter a = tiny_adapter(false);
    EXPECT_TRUE(a.check_model(c, fp, "a.safetensors").is_ok());

    ModelConfig deeper = c;
    deeper.n_layer = 3;
    expect_error(a.check_model(deeper, fp, "a.safetensors"),
                 {"a.safetensors", "'n_layer'", "made for 2", "has 3"});
    ModelConfig wider = c;
    wider.head_dim = 16;
    expect_error(a.check_model(wider, fp, "a.safetensors"), {"'head_dim'", "8", "16"});
    ModelConfig gqa = c;
    gqa.n_head_kv = 1;
    expect_error(a.check_model(gqa, fp, "a.safetensors"), {"'n_head_kv'", "2", "1"});
    const Status other = a.check_model(c, "0123456789abcdef", "a.safetensors");
    expect_error(other, {"'base_fingerprint'", fp, "0123456789abcdef"});
    EXPECT_EQ(other.code(), StatusCode::kInvalidArgument);
    a.base_fingerprint.clear();  // unknown: only the shape is checked
    EXPECT_TRUE(a.check_model(c, "0123456789abcdef", "a.safetensors").is_ok());
}

// Malformed files: a valid adapter's metadata and tensors, one thing changed, written with
// the plain safetensors writer.
class AdapterMalformed : public ::testing::Test {
  protected:
    void SetUp() override {
        // One folder per test: ctest runs the fixture's tests in parallel.
        dir_ = test::temp_dir(std::string("adapter_malformed_") +
                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
        const std::string good = dir_ + "/good.safetensors";
        ASSERT_TRUE(adapter_save(good, tiny_adapter(true)).is_ok());
        auto file = SafetensorsFile::open(good);
        ASSERT_TRUE(file.is_ok());
        file_ = *file;
        metadata_ = file_->metadata();
        for (const SafetensorsEntry& e : file_->entries())
            tensors_[e.name] = file_->tensor(e.name).value();
    }

    // Writes the (edited) parts to a new file and loads it.
    Status load_edited(const std::string& name, const std::map<std::string, std::string>& metadata,
                       const std::map<std::string, Tensor>& tensors) {
        const std::string path = dir_ + "/" + name + ".safetensors";
        std::vector<std::pair<std::string, Tensor>> list(tensors.begin(), tensors.end());
        EXPECT_TRUE(safetensors_write(path, list, metadata).is_ok());
        return adapter_load(path).status();
    }
    Status with_metadata(const std::string& key, const std::string* value) {
        std::map<std::string, std::string> m = metadata_;
        if (value == nullptr) {
            m.erase(key);
        } else {
            m[key] = *value;
        }
        return load_edited("meta", m, tensors_);
    }
    // A copy of tensor `name` with element `index` set to `value`.
    Tensor poisoned(const std::string& name, int64_t index, float value) {
        const Tensor& t = tensors_.at(name);
        Tensor copy = tensor_cpu(
            DType::kF32, std::span<const int64_t>(t.shape.data(), static_cast<size_t>(t.ndim)));
        std::memcpy(copy.data, t.data, t.nbytes());
        copy.f32()[index] = value;
        return copy;
    }

    std::string dir_;
    std::shared_ptr<SafetensorsFile> file_;
    std::map<std::string, std::string> metadata_;
    std::map<std::string, Tensor> tensors_;
};

TEST_F(AdapterMalformed, MissingMetadataFields) {
    for (const char* key :
         {"purbo.version", "window", "n_sink", "top_p", "block_size", "rank", "n_layer", "n_head",
          "n_head_kv", "head_dim", "base_fingerprint", "retrieval_heads"}) {
        SCOPED_TRACE(key);
        const Status s = with_metadata(key, nullptr);
        expect_error(s, {"meta.safetensors", std::string("'") + key + "'", "missing"});
    }
    // Provenance is optional.
    EXPECT_TRUE(with_metadata("calibration_info", nullptr).is_ok());
    EXPECT_TRUE(with_metadata("training_info", nullptr).is_ok());
}

TEST_F(AdapterMalformed, NotAnAdapterOrAnotherVersion) {
    const Status none = with_metadata("purbo.format", nullptr);
    expect_error(none, {"meta.safetensors", "not a purbo adapter", "'purbo.format'"});
    const std::string other = "purbo-model";
    expect_error(with_metadata("purbo.format", &other), {"not a purbo adapter", "'purbo-model'"});
    const std::string v2 = "2";
    const Status future = with_metadata("purbo.version", &v2);
    expect_error(future, {"'purbo.version'", "'2'", "version 1"});
    EXPECT_EQ(future.code(), StatusCode::kUnsupported);
}

TEST_F(AdapterMalformed, GarbledAndOutOfRangeValues) {
    struct Case {
        std::string key, value;
        std::vector<std::string> expect;
    };
    const std::vector<Case> cases = {
        {"window", "12x", {"'window'", "'12x'", "not an integer"}},
        {"window", "", {"'window'", "''", "not an integer"}},
        {"window", " 16", {"'window'", "' 16'"}},
        {"window", "1e3", {"'window'", "'1e3'"}},
        {"window", "99999999999", {"'window'", "'99999999999'"}},
        {"window", "0", {"'window'", "0", "at least 1"}},
        {"n_sink", "-4", {"'n_sink'", "-4", "at least 0"}},
        {"n_layer", "-1", {"'n_layer'", "-1", "at least 1"}},
        {"rank", "9", {"'rank'", "9", "head_dim 8"}},
        {"n_head_kv", "3", {"'n_head_kv'", "3", "n_head 4"}},
        {"top_p", "abc", {"'top_p'", "'abc'", "not a number"}},
        {"top_p", "1.5", {"'top_p'", "1.5", "(0, 1]"}},
        {"top_p", "nan", {"'top_p'", "nan"}},
        {"top_p", "-0.5", {"'top_p'", "-0.5"}},
        {"base_fingerprint", "xyz", {"'base_fingerprint'", "'xyz'", "16 lowercase hex"}},
        {"retrieval_heads", "[[0,1]", {"'retrieval_heads'", "'[[0,1]'", "not a JSON list"}},
        {"retrieval_heads", "{\"a\": 1}", {"'retrieval_heads'", "not a JSON list"}},
        {"retrieval_heads", "[[0,1,2]]", {"'retrieval_heads'", "entry 0", "[0,1,2]"}},
        {"retrieval_heads", "[[0,1],[1,\"a\"]]", {"'retrieval_heads'", "entry 1", "[1,\"a\"]"}},
        {"retrieval_heads", "[[0,1],[1,0.5]]", {"'retrieval_heads'", "entry 1", "0.5"}},
        {"retrieval_heads", "[[0,4294967297]]", {"'retrieval_heads'", "entry 0", "4294967297"}},
        // Shapes then disagree with the indexer; order and range are checked first when sizes
        // agree.
        {"retrieval_heads",
         "[[0,1],[0,1],[1,3]]",
         {"'retrieval_heads'", "entry 1 [0, 1]", "twice"}},
        {"retrieval_heads",
         "[[1,0],[0,1],[1,3]]",
         {"'retrieval_heads'", "entry 1 [0, 1]", "after [1, 0]"}},
        {"retrieval_heads",
         "[[0,1],[1,0],[2,3]]",
         {"'retrieval_heads'", "[2, 3]", "2 layers x 4 heads"}},
        {"retrieval_heads", "[[0,1],[1,0]]", {"'indexer.wq'", "(3, 4, 8)", "(2, 4, 8)"}},
        {"n_layer", "3", {"'head_scores'", "(2, 4)", "(3, 4)"}},
        {"head_dim", "16", {"'indexer.wq'", "(3, 4, 8)", "(3, 4, 16)"}},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.key + " = " + c.value);
        const Status s = with_metadata(c.key, &c.value);
        expect_error(s, {"meta.safetensors"});
        for (const std::string& p : c.expect)
            EXPECT_NE(s.message().find(p), std::string::npos) << p << " | " << s.message();
    }
}

TEST_F(AdapterMalformed, BadTensors) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto edited = [&](const std::function<void(std::map<std::string, Tensor>&)>& edit) {
        std::map<std::string, Tensor> t = tensors_;
        edit(t);
        return load_edited("tensors", metadata_, t);
    };
    expect_error(edited([](auto& t) { t.erase("head_scores"); }),
                 {"tensors.safetensors", "'head_scores'", "missing"});
    expect_error(edited([](auto& t) {
                     t["head_scores"] = tensor_cpu(DType::kF32, {kLayers + 1, kHeads});
                 }),
                 {"'head_scores'", "(3, 4)", "(2, 4)"});
    expect_error(edited([](auto& t) {
                     t["head_scores"] = tensor_cpu(DType::kF16, {kLayers, kHeads});
                 }),
                 {"'head_scores'", "F16", "F32"});
    expect_error(edited([&](auto& t) { t["head_scores"] = poisoned("head_scores", 5, nan); }),
                 {"'head_scores'", "[1, 1]", "layer 1 head 1", "nan"});
    expect_error(edited([&](auto& t) {
                     t["indexer.wq"] = poisoned("indexer.wq", 2 * kRank * kHeadDim + 1, -INFINITY);
                 }),
                 {"'indexer.wq'", "[2, 0, 1]", "layer 1 head 3", "-inf"});
    expect_error(edited([](auto& t) { t.erase("indexer.wk"); }),
                 {"'indexer.wk'", "missing", "'indexer.wq'"});
    expect_error(edited([](auto& t) { t.erase("indexer.wq"); }),
                 {"'indexer.wq'", "missing", "'indexer.wk'"});
    expect_error(edited([](auto& t) { t["indexer.wv"] = t["indexer.wk"]; }),
                 {"'indexer.wv'", "not part of an adapter"});
    expect_error(edited([](auto& t) {
                     t["indexer.wk"] = tensor_cpu(DType::kF32, {3, kRank * kHeadDim});
                 }),
                 {"'indexer.wk'", "(3, 32)", "(3, 4, 8)"});
}

// Byte-level damage: truncation, a broken header, a value edited in place.
TEST_F(AdapterMalformed, ByteEdits) {
    const std::string good = read_bytes(dir_ + "/good.safetensors");
    const std::string path = dir_ + "/bytes.safetensors";
    for (size_t n : {size_t{0}, size_t{7}, size_t{100}, good.size() / 2, good.size() - 1}) {
        SCOPED_TRACE(n);
        write_bytes(path, good.substr(0, n));
        expect_error(adapter_load(path).status(), {"bytes.safetensors"});
    }
    // The header's JSON cut open: '{' -> 'x'.
    std::string broken = good;
    broken[8] = 'x';
    write_bytes(path, broken);
    expect_error(adapter_load(path).status(), {"bytes.safetensors", "JSON"});
    // "window":"16" -> "window":"1?" in place (same length, so every offset stays right).
    std::string garbled = good;
    const size_t at = garbled.find("\"window\":\"16\"");
    ASSERT_NE(at, std::string::npos);
    garbled[at + 11] = '?';
    write_bytes(path, garbled);
    expect_error(adapter_load(path).status(), {"bytes.safetensors", "'window'", "'1?'"});
    // A NaN written over the first score, found through the header's offsets.
    const SafetensorsEntry* scores = file_->find("head_scores");
    uint64_t header_len = 0;
    std::memcpy(&header_len, good.data(), 8);
    std::string poisoned = good;
    const uint32_t nan_bits = 0x7fc00000u;
    std::memcpy(poisoned.data() + 8 + header_len + scores->begin, &nan_bits, 4);
    write_bytes(path, poisoned);
    expect_error(adapter_load(path).status(),
                 {"bytes.safetensors", "'head_scores'", "[0, 0]", "nan"});
}

// Every single-byte change of the header gives an adapter or an error naming the file, never a
// crash (run under the asan preset to catch out-of-bounds reads too).
TEST_F(AdapterMalformed, HeaderByteFlipsNeverCrash) {
    const std::string good = read_bytes(dir_ + "/good.safetensors");
    uint64_t header_len = 0;
    std::memcpy(&header_len, good.data(), 8);
    const std::string path = dir_ + "/flip.safetensors";
    int n_errors = 0;
    for (size_t i = 0; i < 8 + header_len; ++i) {
        for (const uint8_t replacement : {uint8_t{'9'}, uint8_t{'"'}}) {
            std::string bytes = good;
            if (static_cast<uint8_t>(bytes[i]) == replacement) continue;
            bytes[i] = static_cast<char>(replacement);
            write_bytes(path, bytes);
            const Result<Adapter> r = adapter_load(path);
            if (r.is_ok()) continue;
            ++n_errors;
            ASSERT_NE(r.status().message().find("flip.safetensors"), std::string::npos)
                << i << ": " << r.status().message();
        }
    }
    EXPECT_GT(n_errors, static_cast<int>(header_len));  // most edits must be caught
}

TEST(AdapterFile, MissingFile) {
    const Result<Adapter> r = adapter_load("/nonexistent/a.safetensors");
    expect_error(r.status(), {"/nonexistent/a.safetensors"});
    EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(AdapterInspect, PrintsSettingsClassesAndScores) {
    const std::string dir = test::temp_dir("adapter_inspect");
    const std::string path = dir + "/a.safetensors";
    Adapter a = tiny_adapter(true);
    a.scores = {0.10f, 0.95f, 0.20f, 0.30f,   // layer 0: head 1 highest of all
                0.90f, 0.05f, 0.40f, 0.85f};  // layer 1: head 5 (L1.H1) lowest
    ASSERT_TRUE(adapter_save(path, a).is_ok());
    const test::ProgramResult r = test::run_purbo("inspect " + path);
    ASSERT_EQ(r.status, 0) << r.output;
    for (const std::string& line : {
             "adapter:          " + path + "\n",
             std::string("base model:       2 layers, 4 query heads, 2 key/value (group of 2), "
                         "head dim 8\n"),
             "fingerprint:      " + a.base_fingerprint + "\n",
             std::string(
                 "settings:         window 16, sinks 2, top-p 0.9, block 8, indexer rank 4\n"),
             std::string("retrieval heads:  3 of 8 (37.5%)\n"),
             std::string("local kv heads:   1 of 4 (25.0%) keep only 2 sink + 16 window tokens\n"),
             std::string("indexer:          3 heads x wq, wk (4, 8) f32, 768 bytes\n"),
             std::string("calibration:      needle calibration, 4 documents \xc3\x97 3 depths, "
                         "8192 tokens\n"),
             std::string("training:         stage 1, 600 steps, lr 1e-3\n"),
             std::string("top scores:       L0.H1 0.9500 L1.H0 0.9000 L1.H3 0.8500 L1.H2 0.4000 "
                         "L0.H3 0.3000\n"),
             std::string("bottom scores:    L1.H1 0.0500 L0.H0 0.1000 L0.H2 0.2000 L0.H3 0.3000 "
                         "L1.H2 0.4000\n"),
             std::string("  layer  0:  1   | local kv 1\n"),
             std::string("  layer  1:  0 3 | local kv -\n"),
         }) {
        EXPECT_NE(r.output.find(line), std::string::npos) << "missing: " << line << "\n"
                                                          << r.output;
    }
    EXPECT_EQ(r.output.find("heads:\n  layer  head"), std::string::npos) << "--heads not asked for";

    const test::ProgramResult h = test::run_purbo("inspect --heads " + path);
    ASSERT_EQ(h.status, 0) << h.output;
    EXPECT_NE(h.output.find("      0     1   0  0.950000  retrieval\n"), std::string::npos)
        << h.output;
    EXPECT_NE(h.output.find("      1     1   0  0.050000  local\n"), std::string::npos) << h.output;
    EXPECT_NE(h.output.find("      1     3   1  0.850000  retrieval\n"), std::string::npos)
        << h.output;
    size_t n_rows = 0;
    for (size_t p = h.output.find("retrieval\n"); p != std::string::npos;
         p = h.output.find("retrieval\n", p + 1))
        ++n_rows;
    for (size_t p = h.output.find("  local\n"); p != std::string::npos;
         p = h.output.find("  local\n", p + 1))
        ++n_rows;
    EXPECT_EQ(n_rows, 8u);

    // Without an indexer and without a known base model.
    a = tiny_adapter(false);
    a.base_fingerprint.clear();
    ASSERT_TRUE(adapter_save(path, a).is_ok());
    const test::ProgramResult n = test::run_purbo("inspect " + path);
    ASSERT_EQ(n.status, 0) << n.output;
    EXPECT_NE(n.output.find("indexer:          none"), std::string::npos) << n.output;
    EXPECT_NE(n.output.find("fingerprint:      unknown"), std::string::npos) << n.output;
}

TEST(AdapterInspect, BrokenAdapterGivesOneClearLine) {
    const std::string dir = test::temp_dir("adapter_inspect_broken");
    const std::string path = dir + "/broken.safetensors";
    Adapter a = tiny_adapter(false);
    ASSERT_TRUE(adapter_save(path, a).is_ok());
    std::string bytes = read_bytes(path);
    const size_t at = bytes.find("\"top_p\":\"0.9\"");
    ASSERT_NE(at, std::string::npos);
    bytes[at + 9] = '7';  // "0.9" -> "7.9"
    write_bytes(path, bytes);
    const test::ProgramResult r = test::run_purbo("inspect " + path);
    EXPECT_EQ(r.status, 1) << r.output;  // an error exit, not a crash
    EXPECT_EQ(r.output, "purbo inspect: invalid argument: " + path +
                            ": field 'top_p': value 7.9 must be in (0, 1]\n");

    write_bytes(path, bytes.substr(0, 20));
    const test::ProgramResult t = test::run_purbo("inspect -m " + path);
    EXPECT_EQ(t.status, 1) << t.output;
    EXPECT_EQ(std::count(t.output.begin(), t.output.end(), '\n'), 1) << t.output;
    EXPECT_NE(t.output.find(path), std::string::npos) << t.output;
}

}  // namespace
}  // namespace purbo
