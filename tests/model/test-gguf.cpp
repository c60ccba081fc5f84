// GGUF reader: a gguf-py fixture read value by value, malformed files rejected with messages
// that name the file and field, and the default model dequantised bit-exactly as gguf-py does.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/quants.h"
#include "model/gguf.h"
#include "test-util.h"

namespace purbo {
namespace {

using nlohmann::json;

json load_json(const std::string& relative) {
    Result<std::string> text = read_text_file(test::fixture_path(relative));
    PURBO_ASSERT(text.is_ok(), "{}", text.status().to_string());
    return json::parse(*text);
}

std::string small_path() {
    return test::fixture_path("gguf/small.gguf");
}

std::vector<float> dequantize_all(const Tensor& t) {
    std::vector<float> out(static_cast<size_t>(t.numel()));
    for (int64_t r = 0; r < t.n_rows(); ++r) {
        dequantize_row(t.dtype, t.row_ptr(r), out.data() + r * t.row_size(), t.row_size());
    }
    return out;
}

// ---- the gguf-py fixture ----

TEST(Gguf, ReadsEveryMetadataValue) {
    Result<GgufFile> f = GgufFile::open(small_path());
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    const json expected = load_json("gguf/small-expected.json");
    EXPECT_EQ(f->version(), expected.at("version").get<uint32_t>());
    EXPECT_EQ(f->alignment(), expected.at("alignment").get<size_t>());
    EXPECT_EQ(f->data_offset() % f->alignment(), 0u);
    ASSERT_EQ(f->metadata().size(), expected.at("metadata").size());

    for (const auto& [key, want] : expected.at("metadata").items()) {
        SCOPED_TRACE(key);
        const GgufValue* v = f->find(key);
        ASSERT_NE(v, nullptr);
        const std::string type = want.at("type");
        EXPECT_EQ(gguf_type_name(v->type), type);
        const json& value = want.at("value");
        if (type == "array") {
            const std::string elem = want.at("array_type");
            EXPECT_EQ(gguf_type_name(v->array_type), elem);
            ASSERT_EQ(v->array_size(), value.size());
            for (size_t i = 0; i < value.size(); ++i) {
                if (elem == "string") {
                    EXPECT_EQ(v->string_items[i], value[i].get<std::string>());
                } else if (elem == "f32" || elem == "f64") {
                    EXPECT_EQ(v->float_items[i], value[i].get<double>());
                } else if (elem == "bool") {
                    EXPECT_EQ(v->uint_items[i], value[i].get<bool>() ? 1u : 0u);
                } else if (elem == "u64") {
                    EXPECT_EQ(v->uint_items[i], std::stoull(value[i].get<std::string>()));
                } else if (elem == "i64") {
                    EXPECT_EQ(v->int_items[i], std::stoll(value[i].get<std::string>()));
                } else if (elem[0] == 'u') {
                    EXPECT_EQ(v->uint_items[i], value[i].get<uint64_t>());
                } else {
                    EXPECT_EQ(v->int_items[i], value[i].get<int64_t>());
                }
            }
        } else if (type == "string") {
            EXPECT_EQ(v->string_value, value.get<std::string>());
        } else if (type == "f32" || type == "f64") {
            EXPECT_EQ(v->float_value, value.get<double>());
        } else if (type == "bool") {
            EXPECT_EQ(v->uint_value, value.get<bool>() ? 1u : 0u);
        } else if (type == "u64") {
            EXPECT_EQ(v->uint_value, std::stoull(value.get<std::string>()));
        } else if (type == "i64") {
            EXPECT_EQ(v->int_value, std::stoll(value.get<std::string>()));
        } else if (type[0] == 'u') {
            EXPECT_EQ(v->uint_value, value.get<uint64_t>());
        } else {
            EXPECT_EQ(v->int_value, value.get<int64_t>());
        }
    }
}

TEST(Gguf, TypedGetters) {
    Result<GgufFile> f = GgufFile::open(small_path());
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    EXPECT_EQ(f->get_string("general.architecture").value(), "llama");
    EXPECT_EQ(f->get_int("test.u8").value(), 200);
    EXPECT_EQ(f->get_int("test.i8").value(), -100);
    EXPECT_EQ(f->get_int("test.u32").value(), 4000000000LL);
    EXPECT_EQ(f->get_int("test.i64").value(), -(1LL << 62));
    EXPECT_EQ(f->get_int("test.u64_small").value(), 123);
    EXPECT_EQ(f->get_float("test.f32").value(), 3.140625);
    EXPECT_EQ(f->get_float("test.f64").value(), 2.718281828459045);
    EXPECT_TRUE(f->get_bool("test.bool").value());
    EXPECT_EQ(f->get_string_array("test.array.string").value(),
              (std::vector<std::string>{"a", "", "\xc3\xbc", "<|endoftext|>"}));
    EXPECT_EQ(f->get_int_array("test.array.i32").value(), (std::vector<int64_t>{1, -2, 3}));
    EXPECT_EQ(f->get_int_array("test.array.u8").value(), (std::vector<int64_t>{1, 2, 255}));
    EXPECT_EQ(f->get_float_array("test.array.f32").value(), (std::vector<double>{0.5, -1.25}));

    // Errors name the file, the key and the type found.
    auto expect_error = [&](const Status& s, StatusCode code, std::vector<std::string> parts) {
        EXPECT_EQ(s.code(), code) << s.to_string();
        parts.push_back(small_path());
        for (const std::string& p : parts)
            EXPECT_NE(s.message().find(p), std::string::npos) << s.message() << " lacks " << p;
    };
    expect_error(f->get_int("test.missing").status(), StatusCode::kNotFound, {"test.missing"});
    expect_error(f->get_string("test.u32").status(), StatusCode::kInvalidArgument,
                 {"test.u32", "u32"});
    expect_error(f->get_int("test.u64").status(), StatusCode::kInvalidArgument,
                 {"test.u64", "9223372036854775813"});
    expect_error(f->get_int("test.f32").status(), StatusCode::kInvalidArgument,
                 {"test.f32", "f32"});
    expect_error(f->get_float("test.i32").status(), StatusCode::kInvalidArgument,
                 {"test.i32", "i32"});
    expect_error(f->get_bool("test.u8").status(), StatusCode::kInvalidArgument, {"test.u8", "u8"});
    expect_error(f->get_string_array("test.array.i32").status(), StatusCode::kInvalidArgument,
                 {"test.array.i32", "array of i32"});
    expect_error(f->get_int_array("test.array.u64").status(), StatusCode::kInvalidArgument,
                 {"test.array.u64", "18446744073709551615"});
    expect_error(f->get_float_array("test.string").status(), StatusCode::kInvalidArgument,
                 {"test.string", "string"});
    EXPECT_NE(f->find("test.array.string")->to_string().find("<|endoftext|>"), std::string::npos);
}

TEST(Gguf, TensorsMatchGgufPy) {
    Result<GgufFile> f = GgufFile::open(small_path());
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    const json expected = load_json("gguf/small-expected.json");
    ASSERT_EQ(f->tensors().size(), expected.at("tensors").size());
    for (size_t i = 0; i < f->tensors().size(); ++i) {
        const json& want = expected.at("tensors")[i];
        const GgufTensorInfo& info = f->tensors()[i];
        SCOPED_TRACE(info.name);
        EXPECT_EQ(info.name, want.at("name").get<std::string>());
        EXPECT_EQ(info.ggml_type, want.at("ggml_type").get<uint32_t>());
        EXPECT_EQ(info.shape, want.at("shape").get<std::vector<int64_t>>());
        Result<Tensor> t = f->tensor(info.name);
        ASSERT_TRUE(t.is_ok()) << t.status().to_string();
        EXPECT_EQ(t->ndim, static_cast<int>(info.shape.size()));
        EXPECT_EQ(t->name, info.name);
        EXPECT_NE(t->storage, nullptr);  // keeps the mapping alive
        EXPECT_EQ(t->nbytes(), info.nbytes);
        if (want.contains("ints")) {
            ASSERT_EQ(t->dtype, DType::kI32);
            const auto ints = want.at("ints").get<std::vector<int32_t>>();
            for (size_t k = 0; k < ints.size(); ++k) EXPECT_EQ(t->ptr<int32_t>()[k], ints[k]);
            continue;
        }
        const std::vector<float> got = dequantize_all(*t);
        const std::vector<double> ref = want.at("dequant").get<std::vector<double>>();
        ASSERT_EQ(got.size(), ref.size());
        for (size_t k = 0; k < got.size(); ++k) {
            ASSERT_EQ(got[k], static_cast<float>(ref[k])) << "element " << k;  // bit-exact
        }
    }
    EXPECT_EQ(f->tensor("no.such.tensor").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(f->find_tensor("no.such.tensor"), nullptr);
}

TEST(Gguf, TensorOutlivesFile) {
    Tensor t;
    {
        Result<GgufFile> f = GgufFile::open(small_path());
        ASSERT_TRUE(f.is_ok()) << f.status().to_string();
        t = f->tensor("plain.f32").value();
    }
    EXPECT_EQ(t.describe(), "(3, 5) f32");
    EXPECT_TRUE(std::isfinite(t.f32()[14]));  // still mapped (ASan would flag a dangling read)
}

// Every prefix of the fixture that cuts the header or any tensor's data is rejected cleanly.
TEST(Gguf, EveryTruncationIsAnError) {
    Result<std::string> bytes_text = read_text_file(small_path());
    ASSERT_TRUE(bytes_text.is_ok());
    const std::vector<uint8_t> bytes(bytes_text->begin(), bytes_text->end());
    Result<GgufFile> full = GgufFile::parse(bytes, "small.gguf");
    ASSERT_TRUE(full.is_ok()) << full.status().to_string();
    size_t data_end = 0;
    for (const GgufTensorInfo& t : full->tensors()) {
        data_end = std::max(data_end, full->data_offset() + t.offset + t.nbytes);
    }
    for (size_t n = 0; n < bytes.size(); ++n) {
        // A copy of exactly n bytes, so ASan sees any read past the end.
        std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
        Result<GgufFile> f = GgufFile::parse(prefix, "cut.gguf");
        if (n < data_end) {
            ASSERT_FALSE(f.is_ok()) << "prefix of " << n << " bytes parsed";
            ASSERT_EQ(f.status().message().rfind("cut.gguf: ", 0), 0u) << f.status().message();
        } else {
            ASSERT_TRUE(f.is_ok()) << n << ": " << f.status().to_string();
        }
    }
}

// ---- hand-built malformed files ----

// Writes GGUF bytes field by field.
struct Builder {
    std::vector<uint8_t> b;
    Builder& u32(uint32_t v) { return raw(&v, 4); }
    Builder& u64(uint64_t v) { return raw(&v, 8); }
    Builder& u8(uint8_t v) { return raw(&v, 1); }
    Builder& str(const std::string& s) {
        u64(s.size());
        return raw(s.data(), s.size());
    }
    Builder& raw(const void* p, size_t n) {
        const auto* c = static_cast<const uint8_t*>(p);
        b.insert(b.end(), c, c + n);
        return *this;
    }
    Builder& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
        return u32(0x46554747).u32(version).u64(n_tensors).u64(n_kv);
    }
    // A tensor info: name, dims innermost first, ggml type, offset.
    Builder& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                    uint64_t offset) {
        str(name).u32(static_cast<uint32_t>(ne.size()));
        for (uint64_t d : ne) u64(d);
        return u32(type).u64(offset);
    }
    Builder& pad_and_data(size_t alignment, size_t data_bytes) {
        while (b.size() % alignment != 0) b.push_back(0);
        b.resize(b.size() + data_bytes, 0);
        return *this;
    }
};

struct BadCase {
    const char* what;
    std::vector<uint8_t> bytes;
    std::vector<std::string> must_mention;
};

std::vector<BadCase> bad_cases() {
    constexpr uint32_t kF32 = 0, kQ4_0 = 2;
    std::vector<BadCase> c;
    c.push_back({"bad magic", Builder().u32(0x46554746).u32(3).u64(0).u64(0).b, {"magic"}});
    c.push_back({"version 1", Builder().header(0, 0, 1).b, {"version", "1"}});
    c.push_back({"version 4", Builder().header(0, 0, 4).b, {"version", "4"}});
    c.push_back({"big endian", Builder().header(0, 0, 0x03000000).b, {"version", "big-endian"}});
    c.push_back({"huge n_kv", Builder().header(0, 1ULL << 60).b, {"n_kv", "1152921504606846976"}});
    c.push_back({"huge n_tensors", Builder().header(1ULL << 60, 0).b, {"n_tensors"}});
    c.push_back({"huge key length",
                 Builder().header(0, 1).u64(1ULL << 60).u32(0).u8(0).b,
                 {"key of metadata entry 0", "1152921504606846976"}});
    c.push_back({"unknown value type",
                 Builder().header(0, 1).str("k").u32(13).u8(0).b,
                 {"key 'k'", "value type 13"}});
    c.push_back({"huge array",
                 Builder().header(0, 1).str("arr").u32(9).u32(0).u64(1ULL << 60).b,
                 {"key 'arr'", "array length", "1152921504606846976"}});
    c.push_back({"huge string array",
                 Builder().header(0, 1).str("arr").u32(9).u32(8).u64(1ULL << 40).u64(0).b,
                 {"key 'arr'", "1099511627776"}});
    c.push_back({"nested array",
                 Builder().header(0, 1).str("arr").u32(9).u32(9).u64(1).u32(0).u64(0).b,
                 {"key 'arr'", "arrays of arrays"}});
    c.push_back({"bad array item",
                 Builder().header(0, 1).str("arr").u32(9).u32(8).u64(2).str("ok").u64(99).b,
                 {"key 'arr'", "item 1 of 2", "99"}});
    c.push_back({"bool 2",
                 Builder().header(0, 1).str("flag").u32(7).u8(2).b,
                 {"key 'flag'", "bool value 2"}});
    c.push_back({"duplicate key",
                 Builder().header(0, 2).str("k").u32(0).u8(1).str("k").u32(0).u8(2).b,
                 {"key 'k'", "duplicate"}});
    c.push_back({"alignment 48",
                 Builder().header(0, 1).str("general.alignment").u32(4).u32(48).b,
                 {"general.alignment", "48"}});
    c.push_back({"alignment 0",
                 Builder().header(0, 1).str("general.alignment").u32(4).u32(0).b,
                 {"general.alignment", "0"}});
    c.push_back({"alignment string",
                 Builder().header(0, 1).str("general.alignment").u32(8).str("32").b,
                 {"general.alignment", "string"}});
    c.push_back(
        {"n_dims 5",
         Builder().header(1, 0).tensor("t", {32, 1, 1, 1, 1}, kF32, 0).pad_and_data(32, 128).b,
         {"tensor 't'", "n_dims 5"}});
    c.push_back({"n_dims 0",
                 Builder().header(1, 0).tensor("t", {}, kF32, 0).pad_and_data(32, 128).b,
                 {"tensor 't'", "n_dims 0"}});
    c.push_back({"zero dim",
                 Builder().header(1, 0).tensor("t", {32, 0}, kF32, 0).pad_and_data(32, 128).b,
                 {"tensor 't'", "ne[1] = 0"}});
    c.push_back({"negative dim",
                 Builder().header(1, 0).tensor("t", {~0ULL}, kF32, 0).pad_and_data(32, 128).b,
                 {"tensor 't'", "ne[0] = -1"}});
    c.push_back({"overflowing dims",
                 Builder()
                     .header(1, 0)
                     .tensor("t", {1ULL << 32, 1ULL << 32}, kF32, 0)
                     .pad_and_data(32, 128)
                     .b,
                 {"tensor 't'", "overflows"}});
    c.push_back({"overflowing bytes",
                 Builder()
                     .header(1, 0)
                     .tensor("t", {1ULL << 31, 1ULL << 31}, kF32, 0)
                     .pad_and_data(32, 128)
                     .b,
                 {"tensor 't'", "overflows"}});
    c.push_back({"unknown dtype",
                 Builder().header(1, 0).tensor("t", {32}, 4, 0).pad_and_data(32, 128).b,
                 {"tensor 't'", "unknown ggml type id 4"}});
    c.push_back({"unsupported dtype",
                 Builder().header(1, 0).tensor("t", {256}, 16, 0).pad_and_data(32, 128).b,
                 {"tensor 't'", "iq2_xxs"}});
    c.push_back({"row not a block multiple",
                 Builder().header(1, 0).tensor("t", {33}, kQ4_0, 0).pad_and_data(32, 128).b,
                 {"tensor 't'", "33", "q4_0"}});
    c.push_back({"misaligned offset",
                 Builder().header(1, 0).tensor("t", {4}, kF32, 16).pad_and_data(32, 128).b,
                 {"tensor 't'", "offset 16", "alignment 32"}});
    c.push_back({"offset beyond end",
                 Builder().header(1, 0).tensor("t", {4}, kF32, 1024).pad_and_data(32, 128).b,
                 {"tensor 't'", "1024", "beyond the file size"}});
    c.push_back({"offset overflow",
                 Builder().header(1, 0).tensor("t", {4}, kF32, ~0ULL - 31).pad_and_data(32, 128).b,
                 {"tensor 't'", "beyond the file size"}});
    c.push_back({"data past end",
                 Builder().header(1, 0).tensor("t", {64}, kF32, 0).pad_and_data(32, 100).b,
                 {"tensor 't'", "256 bytes"}});
    c.push_back({"duplicate tensor",
                 Builder()
                     .header(2, 0)
                     .tensor("t", {8}, kF32, 0)
                     .tensor("t", {8}, kF32, 32)
                     .pad_and_data(32, 64)
                     .b,
                 {"tensor 't'", "duplicate"}});
    return c;
}

TEST(Gguf, MalformedFilesGiveNamedErrors) {
    for (const BadCase& c : bad_cases()) {
        SCOPED_TRACE(c.what);
        Result<GgufFile> f = GgufFile::parse(c.bytes, "bad.gguf");
        ASSERT_FALSE(f.is_ok());
        const std::string& msg = f.status().message();
        EXPECT_EQ(msg.rfind("bad.gguf: ", 0), 0u) << msg;
        for (const std::string& part : c.must_mention) {
            EXPECT_NE(msg.find(part), std::string::npos)
                << "'" << msg << "' lacks '" << part << "'";
        }
    }
}

TEST(Gguf, MinimalFilesParse) {
    // Sanity check of the builder: the same shapes with valid values parse.
    const std::vector<uint8_t> ok = Builder()
                                        .header(2, 1, 2)
                                        .str("general.alignment")
                                        .u32(4)
                                        .u32(16)
                                        .tensor("a", {32, 2}, 2, 0)
                                        .tensor("b", {3}, 0, 48)
                                        .pad_and_data(16, 64)
                                        .b;
    Result<GgufFile> f = GgufFile::parse(ok, "ok.gguf");
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    EXPECT_EQ(f->version(), 2u);
    EXPECT_EQ(f->alignment(), 16u);
    EXPECT_EQ(f->tensors()[0].shape, (std::vector<int64_t>{2, 32}));
    EXPECT_EQ(f->tensors()[0].nbytes, 36u);
    EXPECT_EQ(f->tensors()[1].dtype, DType::kF32);
}

TEST(Gguf, OpenMissingFile) {
    Result<GgufFile> f = GgufFile::open("/nonexistent/model.gguf");
    ASSERT_FALSE(f.is_ok());
    EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
    EXPECT_NE(f.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

// ---- the default model against gguf-py ----

// SHA-256 (FIPS 180-4), to compare with the hashes in the reference file.
class Sha256 {
  public:
    void update(const uint8_t* p, size_t n) {
        total_ += n;
        while (n > 0) {
            const size_t take = std::min(n, 64 - fill_);
            std::memcpy(buf_ + fill_, p, take);
            fill_ += take;
            p += take;
            n -= take;
            if (fill_ == 64) {
                block(buf_);
                fill_ = 0;
            }
        }
    }
    std::string hex() {
        const uint64_t bits = total_ * 8;
        const uint8_t one = 0x80, zero = 0;
        update(&one, 1);
        while (fill_ != 56) update(&zero, 1);
        uint8_t len[8];
        for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
        update(len, 8);
        std::string out;
        for (uint32_t v : h_) out += fmt::format("{:08x}", v);
        return out;
    }

  private:
    static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
    void block(const uint8_t* p) {
        static constexpr uint32_t k[64] = {
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
            0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
            0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
            0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
            0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
            0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
            0xc67178f2};
        uint32_t w[64];
        for (int i = 0; i < 16; ++i) {
            w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 |
                   uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
        }
        for (int i = 16; i < 64; ++i) {
            const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6],
                 h = h_[7];
        for (int i = 0; i < 64; ++i) {
            const uint32_t t1 =
                h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            const uint32_t t2 =
                (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h_[0] += a;
        h_[1] += b;
        h_[2] += c;
        h_[3] += d;
        h_[4] += e;
        h_[5] += f;
        h_[6] += g;
        h_[7] += h;
    }
    uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    uint8_t buf_[64] = {};
    size_t fill_ = 0;
    uint64_t total_ = 0;
};

TEST(Gguf, Sha256KnownAnswer) {
    Sha256 s;
    s.update(reinterpret_cast<const uint8_t*>("abc"), 3);
    EXPECT_EQ(s.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Gguf, DefaultModelMatchesGgufPy) {
    PURBO_REQUIRE_DEFAULT_MODEL(path);
    Result<GgufFile> f = GgufFile::open(path);
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    const json ref = load_json("gguf/smollm2-dequant-reference.json");
    ASSERT_EQ(f->tensors().size(), ref.at("tensors").size());
    for (size_t i = 0; i < f->tensors().size(); ++i) {
        const json& want = ref.at("tensors")[i];
        const GgufTensorInfo& info = f->tensors()[i];
        SCOPED_TRACE(info.name);
        ASSERT_EQ(info.name, want.at("name").get<std::string>());
        EXPECT_EQ(info.ggml_type, want.at("ggml_type").get<uint32_t>());
        EXPECT_EQ(info.shape, want.at("shape").get<std::vector<int64_t>>());
        const std::vector<float> values = dequantize_all(f->tensor(info));
        const auto first = want.at("first").get<std::vector<double>>();
        for (size_t k = 0; k < first.size(); ++k)
            EXPECT_EQ(values[k], static_cast<float>(first[k])) << k;
        Sha256 sha;
        sha.update(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float));
        EXPECT_EQ(sha.hex(), want.at("sha256").get<std::string>());  // bit-exact, every element
    }
    // Metadata the loader relies on.
    EXPECT_EQ(f->get_string("general.architecture").value(), "llama");
    EXPECT_EQ(f->get_int("llama.embedding_length").value(), 576);
    EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens")->size(), 49152u);
}

}  // namespace
}  // namespace purbo
