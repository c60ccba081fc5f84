#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/fp16.h"
#include "core/mapped-file.h"
#include "model/safetensors.h"
#include "test-util.h"

namespace purbo {
namespace {

// Raw file bytes: little-endian header length, header text, data.
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data = {}) {
    std::vector<uint8_t> out(8 + header.size() + data.size());
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
    std::memcpy(out.data() + 8, header.data(), header.size());
    if (!data.empty()) std::memcpy(out.data() + 8 + header.size(), data.data(), data.size());
    return out;
}

Status parse_status(const std::vector<uint8_t>& bytes) {
    return SafetensorsFile::parse(bytes, "bad.safetensors").status();
}

// Expects an error of `code` whose message contains every one of `parts`.
void expect_error(const Status& s, StatusCode code, std::initializer_list<std::string> parts) {
    ASSERT_FALSE(s.is_ok());
    EXPECT_EQ(s.code(), code) << s.to_string();
    for (const std::string& p : parts) {
        EXPECT_NE(s.message().find(p), std::string::npos)
            << "'" << p << "' not in: " << s.message();
    }
}

Tensor f32_tensor(std::initializer_list<int64_t> shape, float start) {
    Tensor t = tensor_cpu(DType::kF32, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = start + static_cast<float>(i) * 0.5f;
    return t;
}

TEST(Safetensors, RoundTripAllDtypesAndMetadata) {
    const std::string path = test::temp_dir("st_roundtrip") + "/a.safetensors";
    Tensor a = f32_tensor({2, 3}, -1.0f);
    Tensor h = tensor_cpu(DType::kF16, {4});
    Tensor b = tensor_cpu(DType::kBF16, {2, 1, 2});
    Tensor n = tensor_cpu(DType::kI32, {3});
    for (int i = 0; i < 4; ++i) {
        h.ptr<uint16_t>()[i] = f32_to_f16(0.25f * static_cast<float>(i + 1));
        b.ptr<uint16_t>()[i] = f32_to_bf16(-2.0f * static_cast<float>(i));
    }
    for (int i = 0; i < 3; ++i) n.ptr<int32_t>()[i] = -7 + i;
    const std::vector<std::pair<std::string, Tensor>> tensors = {
        {"a", a}, {"layers.0.h", h}, {"b", b}, {"n", n}};
    ASSERT_TRUE(safetensors_write(path, tensors, {{"format", "pt"}, {"purbo.W", "128"}}).is_ok());

    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.is_ok()) << file.status().to_string();
    EXPECT_EQ((*file)->entries().size(), 4u);
    EXPECT_EQ((*file)->metadata().at("format"), "pt");
    EXPECT_EQ((*file)->metadata().at("purbo.W"), "128");
    for (const auto& [name, want] : tensors) {
        auto got = (*file)->tensor(name);
        ASSERT_TRUE(got.is_ok()) << got.status().to_string();
        EXPECT_EQ(got->dtype, want.dtype);
        EXPECT_TRUE(same_shape(*got, want)) << got->describe() << " vs " << want.describe();
        EXPECT_EQ(got->name, name);
        EXPECT_EQ(std::memcmp(got->data, want.data, want.nbytes()), 0) << name;
    }
    // The view keeps the mapping alive after the file object is gone.
    Tensor kept = (*file)->tensor("a").value();
    file = Result<std::shared_ptr<SafetensorsFile>>(Status(StatusCode::kInternal, "dropped"));
    EXPECT_EQ(kept.f32()[5], -1.0f + 2.5f);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Safetensors, WriterRejectsDuplicateAndUnsupported) {
    const std::string path = test::temp_dir("st_writer_bad") + "/a.safetensors";
    Tensor a = f32_tensor({2}, 0.0f);
    const std::vector<std::pair<std::string, Tensor>> dup = {{"x", a}, {"x", a}};
    expect_error(safetensors_write(path, dup), StatusCode::kInvalidArgument, {"'x'"});
    const std::vector<std::pair<std::string, Tensor>> q = {{"q", tensor_cpu(DType::kQ8_0, {32})}};
    expect_error(safetensors_write(path, q), StatusCode::kUnsupported, {"'q'", "q8_0"});
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Safetensors, ReadsFileWrittenByReferenceLibrary) {
    // Written by scripts/gen_hf_test_checkpoints.py with the `safetensors` Python package.
    const std::string path = test::fixture_path("hf/reference.safetensors");
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "fixture missing: " << path;
    auto file = SafetensorsFile::open(path);
    ASSERT_TRUE(file.is_ok()) << file.status().to_string();
    EXPECT_EQ((*file)->metadata().at("note"), "reference");
    auto w = (*file)->tensor("w");  // arange(6).reshape(2, 3) as f32
    ASSERT_TRUE(w.is_ok());
    ASSERT_EQ(w->ndim, 2);
    EXPECT_EQ(w->dim(0), 2);
    EXPECT_EQ(w->dim(1), 3);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(w->f32()[i], static_cast<float>(i));
    auto h = (*file)->tensor("h");  // [1.5, -2] as f16
    ASSERT_TRUE(h.is_ok());
    EXPECT_EQ(f16_to_f32(h->ptr<uint16_t>()[0]), 1.5f);
    EXPECT_EQ(f16_to_f32(h->ptr<uint16_t>()[1]), -2.0f);
    auto bf = (*file)->tensor("bf");  // [3, 0.5] as bf16
    ASSERT_TRUE(bf.is_ok());
    EXPECT_EQ(bf16_to_f32(bf->ptr<uint16_t>()[0]), 3.0f);
    EXPECT_EQ(bf16_to_f32(bf->ptr<uint16_t>()[1]), 0.5f);
    // I64 is parsed and size-checked but not handed out as a tensor.
    ASSERT_TRUE((*file)->contains("ids"));
    expect_error((*file)->tensor("ids").status(), StatusCode::kUnsupported,
                 {"reference.safetensors", "'ids'", "I64"});
}

TEST(Safetensors, EveryTruncationIsAnError) {
    const std::string path = test::temp_dir("st_trunc") + "/a.safetensors";
    const std::vector<std::pair<std::string, Tensor>> tensors = {{"a", f32_tensor({3}, 1.0f)},
                                                                 {"b", f32_tensor({2, 2}, 0.0f)}};
    ASSERT_TRUE(safetensors_write(path, tensors).is_ok());
    auto mapped = MappedFile::open(path);
    ASSERT_TRUE(mapped.is_ok());
    const std::span<const uint8_t> all = (*mapped)->bytes();
    ASSERT_TRUE(SafetensorsFile::parse(all, "a.safetensors").is_ok());
    for (size_t n = 0; n < all.size(); ++n) {
        // A copy of exactly n bytes, so any read past the end is caught by ASan builds.
        std::vector<uint8_t> prefix(all.begin(), all.begin() + static_cast<ptrdiff_t>(n));
        const Status s = SafetensorsFile::parse(prefix, "a.safetensors").status();
        EXPECT_FALSE(s.is_ok()) << "prefix of " << n << " bytes parsed";
        EXPECT_EQ(s.code(), StatusCode::kParseError) << s.to_string();
        EXPECT_NE(s.message().find("a.safetensors"), std::string::npos);
    }
}

TEST(Safetensors, HeaderLengthChecks) {
    std::vector<uint8_t> huge = make_file("{}");
    huge[4] = 0x01;  // 2^32 + 2 bytes
    expect_error(parse_status(huge), StatusCode::kParseError, {"bad.safetensors", "4294967298"});
    std::vector<uint8_t> past_end = make_file("{}");
    past_end[0] = 200;
    expect_error(parse_status(past_end), StatusCode::kParseError, {"bad.safetensors", "200"});
    expect_error(parse_status({1, 2, 3}), StatusCode::kParseError, {"bad.safetensors", "3 bytes"});
    EXPECT_TRUE(parse_status(make_file("{}")).is_ok());
    EXPECT_TRUE(parse_status(make_file("{}      ")).is_ok());  // space padding is legal
}

TEST(Safetensors, MalformedHeaders) {
    const std::vector<uint8_t> data(16, 0);
    struct Case {
        std::string header;
        StatusCode code;
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases = {
        {"{\"a\": ", StatusCode::kParseError, {"not valid JSON"}},
        {"[1, 2]", StatusCode::kParseError, {"not a JSON object"}},
        {R"({"a": 5})", StatusCode::kParseError, {"'a'", "5"}},
        {R"({"a": {"shape": [2], "data_offsets": [0, 8]}})",
         StatusCode::kParseError,
         {"'a'", "dtype"}},
        {R"({"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}})",
         StatusCode::kUnsupported,
         {"'a'", "F99"}},
        {R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})",
         StatusCode::kParseError,
         {"'a'", "shape", "-2"}},
        {R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})",
         StatusCode::kParseError,
         {"'a'", "shape", "2.5"}},
        {R"({"a": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})",
         StatusCode::kParseError,
         {"'a'", "shape"}},
        {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 24]}})",
         StatusCode::kParseError,
         {"'a'", "[0, 24)", "16 bytes"}},
        {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 4]}})",
         StatusCode::kParseError,
         {"'a'", "[8, 4)"}},
        {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})",
         StatusCode::kParseError,
         {"'a'", "data_offsets"}},
        {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-1, 7]}})",
         StatusCode::kParseError,
         {"'a'", "data_offsets"}},
        {R"({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 8]}})",
         StatusCode::kParseError,
         {"'a'", "8 bytes", "F16", "need 4"}},
        {R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
         StatusCode::kParseError,
         {"'a'", "overflow"}},
        {R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
         StatusCode::kParseError,
         {"'a'", "twice"}},
        {R"({"__metadata__": {"k": 1}})", StatusCode::kParseError, {"__metadata__", "'k'"}},
        {R"({"__metadata__": "x"})", StatusCode::kParseError, {"__metadata__"}},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.header);
        const Status s = parse_status(make_file(c.header, data));
        ASSERT_FALSE(s.is_ok());
        EXPECT_EQ(s.code(), c.code) << s.to_string();
        EXPECT_NE(s.message().find("bad.safetensors"), std::string::npos) << s.message();
        for (const std::string& p : c.parts) {
            EXPECT_NE(s.message().find(p), std::string::npos)
                << "'" << p << "' not in " << s.message();
        }
    }
}

TEST(Safetensors, ViewsAndLookups) {
    const std::vector<uint8_t> data(16, 0);
    const std::string header =
        R"({"five_d": {"dtype": "F32", "shape": [1, 1, 1, 1, 2], "data_offsets": [0, 8]},
            "scalar": {"dtype": "F32", "shape": [], "data_offsets": [8, 12]},
            "empty": {"dtype": "BF16", "shape": [0, 3], "data_offsets": [12, 12]}})";
    const std::vector<uint8_t> bytes = make_file(header, data);
    auto file = SafetensorsFile::parse(bytes, "v.safetensors");
    ASSERT_TRUE(file.is_ok()) << file.status().to_string();
    expect_error(file->tensor("five_d").status(), StatusCode::kUnsupported, {"'five_d'", "5"});
    expect_error(file->tensor("nope").status(), StatusCode::kNotFound, {"v.safetensors", "'nope'"});
    auto scalar = file->tensor("scalar");
    ASSERT_TRUE(scalar.is_ok());
    EXPECT_EQ(scalar->ndim, 0);
    EXPECT_EQ(scalar->data, bytes.data() + 8 + header.size() + 8);
    auto empty = file->tensor("empty");
    ASSERT_TRUE(empty.is_ok());
    EXPECT_EQ(empty->numel(), 0);
    // Entries come back in data order.
    EXPECT_EQ(file->entries()[0].name, "five_d");
    EXPECT_EQ(file->entries()[2].name, "empty");
}

TEST(Safetensors, OpenMissingFile) {
    auto file = SafetensorsFile::open("/nonexistent/x.safetensors");
    expect_error(file.status(), StatusCode::kNotFound, {"/nonexistent/x.safetensors"});
}

}  // namespace
}  // namespace purbo
