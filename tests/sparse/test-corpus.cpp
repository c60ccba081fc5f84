// The text corpus: documents from the machine's files (and a fake root where they are
// missing), the train / held-out split by family, and the cutting of token streams into
// sequences.
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "model/model.h"
#include "sparse/corpus.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

// A fake machine under `root` holding only the listed corpus files, each with `text`.
void write_sources(const fs::path& root, const std::vector<std::string>& names,
                   const std::string& text) {
    for (const CorpusSource& s : corpus_sources()) {
        if (std::find(names.begin(), names.end(), s.name) == names.end()) continue;
        const fs::path p = root / fs::path(s.path).relative_path();
        fs::create_directories(p.parent_path());
        std::ofstream(p, std::ios::binary) << text;
    }
}

TEST(Corpus, SourcesHaveUniqueNamesAndFamiliesOnOneSideOfTheSplit) {
    std::set<std::string> names;
    std::map<std::string, bool> family_held_out;
    for (const CorpusSource& s : corpus_sources()) {
        EXPECT_TRUE(names.insert(s.name).second) << s.name;
        auto [it, inserted] = family_held_out.emplace(s.family, s.held_out);
        EXPECT_EQ(it->second, s.held_out) << "family " << s.family << " is split by " << s.name;
    }
    EXPECT_GE(names.size(), 14u);
}

TEST(Corpus, ReadsPresentFilesSkipsMissingOnesAndCleansText) {
    const fs::path root = test::temp_dir("corpus_fake_root");
    write_sources(root, {"GPL-3", "MPL-1.1", "GPL-2"}, "Terms\r\nand\fconditions\n");
    CorpusOptions o;
    o.root = root.string();
    auto all = corpus_documents(o);
    ASSERT_TRUE(all.is_ok()) << all.status().message();
    ASSERT_EQ(all->size(), 3u);
    // Corpus order, not the order written.
    EXPECT_EQ((*all)[0].name, "GPL-3");
    EXPECT_EQ((*all)[1].name, "MPL-1.1");
    EXPECT_EQ((*all)[2].name, "GPL-2");
    EXPECT_EQ((*all)[0].text, "Terms\nandconditions\n");
    EXPECT_EQ((*all)[0].path, root.string() + "/usr/share/common-licenses/GPL-3");

    o.split = CorpusSplit::kHeldOut;
    auto held = corpus_documents(o);
    ASSERT_TRUE(held.is_ok());
    ASSERT_EQ(held->size(), 1u);
    EXPECT_EQ((*held)[0].name, "MPL-1.1");
    o.split = CorpusSplit::kTrain;
    auto train = corpus_documents(o);
    ASSERT_TRUE(train.is_ok());
    EXPECT_EQ(train->size(), 2u);

    o.min_documents = 3;
    auto too_few = corpus_documents(o);
    ASSERT_FALSE(too_few.is_ok());
    EXPECT_EQ(too_few.status().code(), StatusCode::kNotFound);
    EXPECT_NE(too_few.status().message().find("2 documents found, 3 needed"), std::string::npos)
        << too_few.status().message();
    EXPECT_NE(too_few.status().message().find("LGPL-2.1"), std::string::npos)
        << "names a missing file";
}

TEST(Corpus, SequencesCutTheStreamInOrder) {
    const std::vector<TokenizedDocument> docs = {
        {"a", {1, 2, 3, 4, 5}}, {"b", {}}, {"c", {6, 7, 8}}};
    const std::vector<int32_t> sep = {0};
    // Stream: 1 2 3 4 5 0 6 7 8 (the empty document adds nothing).
    auto s = corpus_sequences(docs, sep, 4, 2);
    ASSERT_TRUE(s.is_ok()) << s.status().message();
    EXPECT_EQ((*s)[0].tokens, (std::vector<int32_t>{1, 2, 3, 4}));
    EXPECT_EQ((*s)[0].name, "a");
    EXPECT_EQ((*s)[1].tokens, (std::vector<int32_t>{5, 0, 6, 7}));
    EXPECT_EQ((*s)[1].name, "a+c");
    // With bos, each sequence holds one stream token fewer.
    auto b = corpus_sequences(docs, sep, 4, 3, /*bos=*/99);
    ASSERT_TRUE(b.is_ok());
    EXPECT_EQ((*b)[2].tokens, (std::vector<int32_t>{99, 6, 7, 8}));
    auto too_long = corpus_sequences(docs, sep, 4, 3);
    ASSERT_FALSE(too_long.is_ok());
    EXPECT_NE(too_long.status().message().find("enough for 2 sequences"), std::string::npos)
        << too_long.status().message();
    EXPECT_FALSE(corpus_sequences(docs, sep, 0, 1).is_ok());
}

TEST(Corpus, DocumentSequenceCropsOrContinuesCyclically) {
    const std::vector<TokenizedDocument> docs = {{"a", {1, 2, 3, 4, 5}}, {"b", {6, 7}}, {"c", {8}}};
    const std::vector<int32_t> sep = {0};
    auto crop = corpus_document_sequence(docs, 0, sep, 3);
    ASSERT_TRUE(crop.is_ok());
    EXPECT_EQ(crop->tokens, (std::vector<int32_t>{1, 2, 3}));
    EXPECT_EQ(crop->name, "a");
    auto cont = corpus_document_sequence(docs, 1, sep, 7, /*bos=*/99);
    ASSERT_TRUE(cont.is_ok()) << cont.status().message();
    EXPECT_EQ(cont->tokens, (std::vector<int32_t>{99, 6, 7, 0, 8, 0, 1}));
    EXPECT_EQ(cont->name, "b+c+a");
    EXPECT_FALSE(corpus_document_sequence(docs, 0, sep, 20).is_ok());
    EXPECT_FALSE(corpus_document_sequence(docs, 3, sep, 2).is_ok());
}

// The real machine's corpus with the default model's tokenizer: enough text for the uses
// the corpus serves (4 calibration documents of 4K tokens, held-out evaluation at 8K).
TEST(Corpus, MachineCorpusWithTheDefaultTokenizer) {
    PURBO_REQUIRE_DEFAULT_MODEL(path);
    CorpusOptions o;
    o.calibration_only = true;
    auto cal = corpus_documents(o);
    if (!cal.is_ok())
        GTEST_SKIP() << "no licence texts on this machine: " << cal.status().message();
    auto m = model_load(path);
    ASSERT_TRUE(m.is_ok()) << m.status().message();
    const auto tokens = corpus_tokenize(*m->tokenizer, *cal);
    int long_docs = 0;
    for (const TokenizedDocument& d : tokens) long_docs += d.tokens.size() >= 4000 ? 1 : 0;
    EXPECT_GE(long_docs, 4);
    auto held = corpus_token_sequences(*m->tokenizer, CorpusSplit::kHeldOut, 8192, 2);
    ASSERT_TRUE(held.is_ok()) << held.status().message();
    EXPECT_EQ((*held)[1].tokens.size(), 8192u);
    auto train = corpus_token_sequences(*m->tokenizer, CorpusSplit::kTrain, 8192, 4);
    ASSERT_TRUE(train.is_ok()) << train.status().message();
    // Deterministic: the same files give the same sequences.
    auto again = corpus_token_sequences(*m->tokenizer, CorpusSplit::kTrain, 8192, 4);
    ASSERT_TRUE(again.is_ok());
    for (size_t i = 0; i < train->size(); ++i) EXPECT_EQ((*train)[i].tokens, (*again)[i].tokens);
    // Held-out text never appears in a training sequence's name.
    for (const TokenSequence& s : *train) {
        EXPECT_EQ(s.name.find("MPL"), std::string::npos) << s.name;
        EXPECT_EQ(s.name.find("GFDL"), std::string::npos) << s.name;
    }
}

}  // namespace
}  // namespace purbo
