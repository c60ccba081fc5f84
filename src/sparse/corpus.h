// A text corpus found on every Debian/Ubuntu machine: the licence texts of base-files
// (/usr/share/common-licenses) and the copyright files of essential packages
// (/usr/share/doc/<package>/copyright). Calibration, indexer training and evaluation read
// long natural text from it without downloading anything. Sources and licences:
// docs/calibration.md.
//
// Deterministic: the same files give the same documents in the same order. A document is
// named by where it came from ("GPL-3", "copyright/bash"); a missing file is skipped.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/tokenizer.h"

namespace purbo {

struct TextDocument {
    std::string name;          // "GPL-3", "copyright/bash"
    std::string path;          // the file it was read from
    std::string family;        // documents that share text (GPL-2 and LGPL-2.1) share a family
    bool held_out = false;     // part of the held-out split (see corpus_split)
    bool calibration = false;  // long flowing prose: a needle calibration document
    std::string text;          // form feeds and carriage returns removed
};

// Which documents a caller wants. The split is by family, so held-out text never appears
// (even in part) in training text.
enum class CorpusSplit { kAll, kTrain, kHeldOut };
const char* corpus_split_name(CorpusSplit split);

// One file the corpus looks for.
struct CorpusSource {
    const char* name;
    const char* path;  // absolute; read under CorpusOptions::root
    const char* family;
    bool held_out;
    bool calibration;
};
// Every file the corpus looks for, in corpus order.
std::span<const CorpusSource> corpus_sources();

struct CorpusOptions {
    CorpusSplit split = CorpusSplit::kAll;
    std::string root;               // prefix of every source path ("" = the machine's own files)
    int min_documents = 1;          // fewer documents of the split present is an error
    bool calibration_only = false;  // only documents marked `calibration`
};

// The documents present on this machine, in corpus order. The error (kNotFound) lists the
// files that are missing when fewer than min_documents remain.
Result<std::vector<TextDocument>> corpus_documents(const CorpusOptions& options = {});

// A document as token ids (encoded without special tokens).
struct TokenizedDocument {
    std::string name;
    std::vector<int32_t> tokens;
};
std::vector<TokenizedDocument> corpus_tokenize(const Tokenizer& tokenizer,
                                               std::span<const TextDocument> documents);

// A run of tokens cut from the corpus, named by the documents it covers ("GPL-3",
// "GPL-2+LGPL-3").
struct TokenSequence {
    std::string name;
    std::vector<int32_t> tokens;  // (n_tokens,)
};

// The tokens that separate two documents in a stream: those of a blank line.
std::vector<int32_t> corpus_separator(const Tokenizer& tokenizer);

// Long sequences for training and evaluation: the documents, in order and joined by
// `separator`, form one stream; it is cut into `count` consecutive sequences of n_tokens
// tokens each. When bos >= 0 every sequence starts with it (and holds n_tokens - 1 stream
// tokens). Error (kInvalidArgument) when the stream is too short; the message says how many
// sequences it holds.
Result<std::vector<TokenSequence>> corpus_sequences(std::span<const TokenizedDocument> documents,
                                                    std::span<const int32_t> separator,
                                                    int n_tokens, int count, int32_t bos = -1);

// One sequence that starts at the beginning of documents[first]: a document shorter than
// n_tokens continues with the next documents (cyclically, joined by `separator`); a longer
// one is cropped. Error when all documents together are shorter than n_tokens.
Result<TokenSequence> corpus_document_sequence(std::span<const TokenizedDocument> documents,
                                               size_t first, std::span<const int32_t> separator,
                                               int n_tokens, int32_t bos = -1);

// The convenience most callers want: the split's documents from this machine, tokenised and
// cut into `count` sequences of n_tokens tokens (bos first when the tokenizer adds one).
Result<std::vector<TokenSequence>> corpus_token_sequences(const Tokenizer& tokenizer,
                                                          CorpusSplit split, int n_tokens,
                                                          int count);

}  // namespace purbo
