// rtp-llm's headwise_config (src/sparse/headwise-config.cpp): import of its object form and of a
// plain list, export into a new or an existing config.json, the round trip, and one clear error
// per kind of malformed file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "sparse/adapter.h"
#include "test-util.h"

namespace purbo {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// 2 layers x 4 query heads (2 KV heads), d = 8.
ModelConfig tiny_config() {
    ModelConfig c;
    c.n_layer = 2;
    c.n_embd = 32;
    c.n_head = 4;
    c.n_head_kv = 2;
    c.head_dim = 8;
    c.n_vocab = 40;
    return c;
}

std::string write_text(const std::string& dir, const std::string& name, const std::string& text) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_error(const Status& s, std::initializer_list<std::string> parts) {
    ASSERT_FALSE(s.is_ok()) << "expected an error with '" << *parts.begin() << "'";
    for (const std::string& p : parts) {
        EXPECT_NE(s.message().find(p), std::string::npos)
            << "'" << p << "' not in: " << s.message();
    }
}

// A config.json as rtp-llm's RTPurbo checkpoints carry it: model keys plus headwise_config.
const char* kRtpConfig = R"({
  "model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4,
  "headwise_config": {
    "sink_token_num": 8, "swa_token_num": 2048, "seqlen_threshold": 16384,
    "0": [0, 1, 0, 0],
    "1": [1, 0, 0, 1]
  }
})";

TEST(AdapterHeadwise, ImportsRtpLlmObject) {
    const std::string dir = test::temp_dir("adapter_headwise_import");
    const std::string path = write_text(dir, "config.json", kRtpConfig);
    Result<Adapter> a = adapter_from_headwise_config(path, tiny_config());
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    EXPECT_EQ(a->settings.n_sink, 8);
    EXPECT_EQ(a->settings.window, 2048);
    EXPECT_EQ(a->retrieval, (std::vector<HeadId>{{0, 1}, {1, 0}, {1, 3}}));
    EXPECT_EQ(a->scores, (std::vector<float>{0, 1, 0, 0, 1, 0, 0, 1}));
    EXPECT_FALSE(a->has_indexer());
    EXPECT_TRUE(a->base_fingerprint.empty());
    EXPECT_EQ(a->n_layer, 2);
    EXPECT_EQ(a->n_head_kv, 2);
    EXPECT_EQ(a->head_dim, 8);
    EXPECT_NE(a->calibration_info.find("headwise_config"), std::string::npos);
    EXPECT_TRUE(a->validate("x").is_ok());
    // What rtp-llm assumes when the settings are absent: 4 sinks, a window of 8192.
    const std::string bare =
        write_text(dir, "bare.json", R"({"headwise_config": {"0": [0,0,0,0], "1": [0,0,0,0]}})");
    Result<Adapter> b = adapter_from_headwise_config(bare, tiny_config());
    ASSERT_TRUE(b.is_ok()) << b.status().to_string();
    EXPECT_EQ(b->settings.n_sink, 4);
    EXPECT_EQ(b->settings.window, 8192);
    EXPECT_TRUE(b->retrieval.empty());
}

TEST(AdapterHeadwise, ImportsPlainList) {
    const std::string dir = test::temp_dir("adapter_headwise_list");
    const std::string path =
        write_text(dir, "c.json", R"({"headwise_config": [[1,1,0,0], [0,0,0,1]]})");
    Result<Adapter> a = adapter_from_headwise_config(path, tiny_config());
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    EXPECT_EQ(a->retrieval, (std::vector<HeadId>{{0, 0}, {0, 1}, {1, 3}}));
}

TEST(AdapterHeadwise, ExportImportRoundTrip) {
    const std::string dir = test::temp_dir("adapter_headwise_roundtrip");
    Adapter a;
    a.settings.window = 512;
    a.settings.n_sink = 2;
    a.n_layer = 2;
    a.n_head = 4;
    a.n_head_kv = 2;
    a.head_dim = 8;
    a.settings.rank = 8;
    a.scores = {0.1f, 0.9f, 0.2f, 0.3f, 0.8f, 0.0f, 0.6f, 0.4f};
    a.retrieval = {{0, 1}, {1, 0}, {1, 2}};
    const std::string path = dir + "/headwise.json";
    ASSERT_TRUE(adapter_export_headwise_config(a, path).is_ok());
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    const std::string text = read_text(path);
    // rtp-llm's keys and order, one line per layer.
    EXPECT_NE(text.find("\"sink_token_num\": 2,\n    \"swa_token_num\": 512,\n    \"0\": "
                        "[0,1,0,0],\n    \"1\": [1,0,1,0]\n"),
              std::string::npos)
        << text;
    const json j = test::load_json(path);
    ASSERT_TRUE(j.contains("headwise_config"));
    EXPECT_EQ(j["headwise_config"]["1"], json::parse("[1,0,1,0]"));
    EXPECT_FALSE(j["headwise_config"].contains("seqlen_threshold"));  // rtp-llm keeps its default

    Result<Adapter> back = adapter_from_headwise_config(path, tiny_config());
    ASSERT_TRUE(back.is_ok()) << back.status().to_string();
    EXPECT_EQ(back->retrieval, a.retrieval);
    EXPECT_EQ(back->settings.window, 512);
    EXPECT_EQ(back->settings.n_sink, 2);
    // Scores do not survive (the format holds flags), classes do.
    EXPECT_EQ(back->scores, (std::vector<float>{0, 1, 0, 0, 1, 0, 1, 0}));

    // A second export over the file: same bytes.
    ASSERT_TRUE(adapter_export_headwise_config(a, path).is_ok());
    EXPECT_EQ(read_text(path), text);
}

TEST(AdapterHeadwise, ExportIntoExistingConfigKeepsOtherKeys) {
    const std::string dir = test::temp_dir("adapter_headwise_merge");
    const std::string path = write_text(dir, "config.json", kRtpConfig);
    Result<Adapter> a = adapter_from_headwise_config(path, tiny_config());
    ASSERT_TRUE(a.is_ok());
    a->retrieval = {{1, 1}};
    ASSERT_TRUE(adapter_export_headwise_config(*a, path).is_ok());
    const std::string text = read_text(path);
    EXPECT_LT(text.find("\"model_type\""), text.find("\"num_hidden_layers\"")) << "key order kept";
    const json j = test::load_json(path);
    EXPECT_EQ(j["model_type"], "llama");
    EXPECT_EQ(j["num_attention_heads"], 4);
    EXPECT_EQ(j["headwise_config"]["0"], json::parse("[0,0,0,0]"));
    EXPECT_EQ(j["headwise_config"]["1"], json::parse("[0,1,0,0]"));
    EXPECT_EQ(j["headwise_config"]["swa_token_num"], 2048);

    // A file that is not a JSON object is not overwritten.
    const std::string other = write_text(dir, "notes.txt", "not json");
    expect_error(adapter_export_headwise_config(*a, other), {"notes.txt", "not a JSON object"});
    EXPECT_EQ(read_text(other), "not json");
    // Nor is an invalid adapter exported.
    a->retrieval = {{1, 1}, {0, 0}};
    expect_error(adapter_export_headwise_config(*a, dir + "/x.json"), {"'retrieval_heads'"});
    EXPECT_FALSE(fs::exists(dir + "/x.json"));
}

TEST(AdapterHeadwise, MalformedFilesNameFieldAndValue) {
    const std::string dir = test::temp_dir("adapter_headwise_bad");
    struct Case {
        std::string text;
        std::vector<std::string> expect;
    };
    const std::vector<Case> cases = {
        {R"({"headwise_config": {"0": [0,1,0,0]}})",
         {"'headwise_config'", "1 layers", "has 2", "layer 1 is missing"}},
        {R"({"headwise_config": {"0": [0,1,0,0], "1": [0,0,0,0], "2": [0,0,0,0]}})",
         {"'headwise_config.2'", "layer 2", "2 layers"}},
        {R"({"headwise_config": {"0": [0,1,0], "1": [0,0,0,0]}})",
         {"'headwise_config.0'", "3 head flags", "4 query heads"}},
        {R"({"headwise_config": {"0": [0,1,0,0,1], "1": [0,0,0,0]}})",
         {"'headwise_config.0'", "5 head flags"}},
        {R"({"headwise_config": {"0": [0,1,0,0], "1": [0,0,2,0]}})",
         {"'headwise_config.1'", "head 2", "is 2", "not 0 or 1"}},
        {R"({"headwise_config": {"0": [0,1,0,0], "1": [0,-1,0,0]}})",
         {"'headwise_config.1'", "head 1", "is -1"}},
        {R"({"headwise_config": {"0": [true,1,0,0], "1": [0,0,0,0]}})",
         {"'headwise_config.0'", "head 0", "is true"}},
        {R"({"headwise_config": {"0": [0,0.5,0,0], "1": [0,0,0,0]}})",
         {"'headwise_config.0'", "head 1", "is 0.5"}},
        {R"({"headwise_config": {"0": "0100", "1": [0,0,0,0]}})",
         {"'headwise_config.0'", "\"0100\"", "not a list"}},
        {R"({"headwise_config": {"00": [0,1,0,0], "1": [0,0,0,0]}})",
         {"'headwise_config.00'", "not a layer key"}},
        {R"({"headwise_config": {"0": [0,1,0,0], "1": [0,0,0,0], "sink_token_num": -1}})",
         {"'headwise_config.sink_token_num'", "-1"}},
        {R"({"headwise_config": {"0": [0,1,0,0], "1": [0,0,0,0], "swa_token_num": "8192"}})",
         {"'headwise_config.swa_token_num'", "\"8192\""}},
        {R"({"headwise_config": [[0,1,0,0]]})", {"'headwise_config'", "1 layers", "has 2"}},
        {R"({"headwise_config": [[0,1,0,0], [0,0,3,0]]})",
         {"'headwise_config[1]'", "head 2", "is 3"}},
        {R"({"headwise_config": "all"})", {"'headwise_config'", "\"all\""}},
        {R"({"headwise_config": null})", {"'headwise_config'", "missing"}},
        {R"({"model_type": "llama"})", {"'headwise_config'", "missing"}},
        {R"([1, 2])", {"top level", "[1,2]", "not a JSON object"}},
        {R"({"headwise_config": {"0": [0,1,0,0],)", {"not valid JSON"}},
        {"", {"not valid JSON"}},
    };
    for (size_t i = 0; i < cases.size(); ++i) {
        SCOPED_TRACE(cases[i].text);
        const std::string path = write_text(dir, fmt::format("c{}.json", i), cases[i].text);
        const Result<Adapter> a = adapter_from_headwise_config(path, tiny_config());
        expect_error(a.status(), {path});
        for (const std::string& p : cases[i].expect) {
            EXPECT_NE(a.status().message().find(p), std::string::npos)
                << p << " | " << a.status().message();
        }
    }
    const Result<Adapter> missing = adapter_from_headwise_config(dir + "/none.json", tiny_config());
    expect_error(missing.status(), {"none.json"});
    EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(AdapterHeadwise, ModelWithTinyHeadsStillImports) {
    // head_dim 4 is below the default indexer rank 16: the rank shrinks to the head.
    const std::string dir = test::temp_dir("adapter_headwise_small");
    ModelConfig c = tiny_config();
    c.head_dim = 4;
    const std::string path =
        write_text(dir, "c.json", R"({"headwise_config": {"0": [0,1,0,0], "1": [0,0,0,0]}})");
    Result<Adapter> a = adapter_from_headwise_config(path, c);
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    EXPECT_EQ(a->settings.rank, 4);
}

}  // namespace
}  // namespace purbo
