#include "sparse/corpus.h"

#include <algorithm>
#include <array>
#include <filesystem>

#include "core/mapped-file.h"

namespace purbo {
namespace {

// String-literal concatenation keeps the table one line per file.
#define PURBO_LICENCE(name, family, held_out, calibration) \
    CorpusSource { name, "/usr/share/common-licenses/" name, family, held_out, calibration }
#define PURBO_COPYRIGHT(package)                                                         \
    CorpusSource {                                                                       \
        "copyright/" package, "/usr/share/doc/" package "/copyright", "debian-copyright", \
            false, false                                                                 \
    }

// Licence texts of base-files (Debian and Ubuntu, every install). Order = calibration order:
// the families alternate so that the first few documents already differ in wording.
// Families group texts that share whole sections (GPL-2's terms reappear in LGPL-2/2.1,
// GFDL-1.2 and 1.3 differ in a few clauses): a split keeps a family on one side.
// Held out: the GFDL and MPL families (about a third of the licence tokens), whose wording
// the GNU and Apache texts do not share.
// clang-format off
constexpr std::array kSources = {
    //            name          family      held out  calibration
    PURBO_LICENCE("GPL-3",      "gnu-v3",   false,    true),
    PURBO_LICENCE("MPL-1.1",    "mpl",      true,     true),
    PURBO_LICENCE("LGPL-2.1",   "gnu-v2",   false,    true),
    PURBO_LICENCE("GFDL-1.3",   "gfdl",     true,     true),
    PURBO_LICENCE("Apache-2.0", "apache",   false,    true),
    PURBO_LICENCE("GPL-2",      "gnu-v2",   false,    true),
    PURBO_LICENCE("MPL-2.0",    "mpl",      true,     true),
    PURBO_LICENCE("Artistic",   "artistic", false,    true),
    PURBO_LICENCE("GFDL-1.2",   "gfdl",     true,     true),
    PURBO_LICENCE("LGPL-2",     "gnu-v2",   false,    true),
    PURBO_LICENCE("GPL-1",      "gnu-v2",   false,    true),
    PURBO_LICENCE("LGPL-3",     "gnu-v3",   false,    true),
    PURBO_LICENCE("CC0-1.0",    "cc0",      false,    false),
    PURBO_LICENCE("BSD",        "bsd",      false,    false),
    // Copyright files of packages in every minimal Debian/Ubuntu image (Ubuntu's minimised
    // images drop /usr/share/doc but keep these). Semi-structured (file lists, names, years,
    // licence excerpts): variety for training, not calibration prose. They quote the GNU
    // licences' notices, so they stay on the training side.
    PURBO_COPYRIGHT("libc6"), PURBO_COPYRIGHT("findutils"), PURBO_COPYRIGHT("util-linux"),
    PURBO_COPYRIGHT("mawk"), PURBO_COPYRIGHT("diffutils"), PURBO_COPYRIGHT("liblzma5"),
    PURBO_COPYRIGHT("libsystemd0"), PURBO_COPYRIGHT("gpgv"), PURBO_COPYRIGHT("bash"),
    PURBO_COPYRIGHT("debianutils"), PURBO_COPYRIGHT("sed"), PURBO_COPYRIGHT("dpkg"),
    PURBO_COPYRIGHT("apt"), PURBO_COPYRIGHT("login"), PURBO_COPYRIGHT("coreutils"),
    PURBO_COPYRIGHT("procps"), PURBO_COPYRIGHT("tar"), PURBO_COPYRIGHT("gzip"),
};
// clang-format on
#undef PURBO_LICENCE
#undef PURBO_COPYRIGHT

bool in_split(const CorpusSource& s, CorpusSplit split) {
    switch (split) {
        case CorpusSplit::kAll:
            return true;
        case CorpusSplit::kTrain:
            return !s.held_out;
        case CorpusSplit::kHeldOut:
            return s.held_out;
    }
    return false;
}

// Page breaks (form feeds in GPL-1 and LGPL-2/2.1) and carriage returns carry no text; removing
// them keeps the documents plain.
std::string clean_text(std::string text) {
    std::erase_if(text, [](char c) { return c == '\f' || c == '\r'; });
    return text;
}

// Appends documents[i]'s tokens to `out` (after `separator` when `out` is not empty) until it
// holds `limit` tokens; returns whether any token was taken.
bool append_capped(std::vector<int32_t>& out, std::span<const int32_t> separator,
                   std::span<const int32_t> tokens, size_t limit) {
    const size_t before = out.size();
    if (!out.empty()) {
        for (int32_t t : separator) {
            if (out.size() == limit) break;
            out.push_back(t);
        }
    }
    const size_t take = std::min(tokens.size(), limit - out.size());
    out.insert(out.end(), tokens.begin(), tokens.begin() + static_cast<ptrdiff_t>(take));
    return take > 0 || out.size() > before;
}

}  // namespace

const char* corpus_split_name(CorpusSplit split) {
    switch (split) {
        case CorpusSplit::kAll:
            return "all";
        case CorpusSplit::kTrain:
            return "train";
        case CorpusSplit::kHeldOut:
            return "held-out";
    }
    return "?";
}

std::span<const CorpusSource> corpus_sources() {
    return kSources;
}

Result<std::vector<TextDocument>> corpus_documents(const CorpusOptions& options) {
    std::vector<TextDocument> docs;
    std::vector<std::string> missing;
    for (const CorpusSource& s : kSources) {
        if (!in_split(s, options.split) || (options.calibration_only && !s.calibration)) continue;
        const std::string path = options.root + s.path;
        Result<std::string> text = read_text_file(path);
        if (!text.is_ok()) {
            missing.push_back(path);
            continue;
        }
        std::string cleaned = clean_text(std::move(*text));
        if (cleaned.empty()) {
            missing.push_back(path + " (empty)");
            continue;
        }
        docs.push_back({s.name, path, s.family, s.held_out, s.calibration, std::move(cleaned)});
    }
    if (static_cast<int>(docs.size()) < options.min_documents) {
        std::string list;
        for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
        return error(StatusCode::kNotFound,
                     "text corpus ({} split{}): {} documents found, {} needed{}{}",
                     corpus_split_name(options.split),
                     options.calibration_only ? ", calibration documents" : "", docs.size(),
                     options.min_documents, list.empty() ? "" : "; missing: ", list);
    }
    return docs;
}

std::vector<TokenizedDocument> corpus_tokenize(const Tokenizer& tokenizer,
                                               std::span<const TextDocument> documents) {
    std::vector<TokenizedDocument> out;
    out.reserve(documents.size());
    for (const TextDocument& d : documents)
        out.push_back(
            {d.name, tokenizer.encode(d.text, /*add_special=*/false, /*parse_special=*/false)});
    return out;
}

std::vector<int32_t> corpus_separator(const Tokenizer& tokenizer) {
    return tokenizer.encode("\n\n", /*add_special=*/false, /*parse_special=*/false);
}

Result<std::vector<TokenSequence>> corpus_sequences(std::span<const TokenizedDocument> documents,
                                                    std::span<const int32_t> separator,
                                                    int n_tokens, int count, int32_t bos) {
    const int per_sequence = n_tokens - (bos >= 0 ? 1 : 0);
    if (per_sequence < 1 || count < 1)
        return error(StatusCode::kInvalidArgument,
                     "corpus sequences: {} sequences of {} tokens requested", count, n_tokens);
    // The stream and, for each document, where it starts in the stream.
    std::vector<int32_t> stream;
    std::vector<size_t> starts;
    for (const TokenizedDocument& d : documents) {
        if (d.tokens.empty()) continue;
        if (!stream.empty()) stream.insert(stream.end(), separator.begin(), separator.end());
        starts.push_back(stream.size());
        stream.insert(stream.end(), d.tokens.begin(), d.tokens.end());
    }
    const size_t need = static_cast<size_t>(per_sequence) * static_cast<size_t>(count);
    if (stream.size() < need)
        return error(StatusCode::kInvalidArgument,
                     "corpus sequences: {} documents hold {} tokens, enough for {} sequences of {} "
                     "tokens, not {}",
                     documents.size(), stream.size(),
                     stream.size() / static_cast<size_t>(per_sequence), n_tokens, count);
    // Document of each start offset, to name the sequences.
    std::vector<const TokenizedDocument*> with_tokens;
    for (const TokenizedDocument& d : documents)
        if (!d.tokens.empty()) with_tokens.push_back(&d);
    std::vector<TokenSequence> out(static_cast<size_t>(count));
    for (size_t i = 0; i < out.size(); ++i) {
        const size_t begin = i * static_cast<size_t>(per_sequence);
        const size_t end = begin + static_cast<size_t>(per_sequence);
        TokenSequence& s = out[i];
        if (bos >= 0) s.tokens.push_back(bos);
        s.tokens.insert(s.tokens.end(), stream.begin() + static_cast<ptrdiff_t>(begin),
                        stream.begin() + static_cast<ptrdiff_t>(end));
        for (size_t k = 0; k < starts.size(); ++k) {
            const size_t doc_end = k + 1 < starts.size() ? starts[k + 1] : stream.size();
            if (starts[k] < end && doc_end > begin)
                s.name += (s.name.empty() ? "" : "+") + with_tokens[k]->name;
        }
    }
    return out;
}

Result<TokenSequence> corpus_document_sequence(std::span<const TokenizedDocument> documents,
                                               size_t first, std::span<const int32_t> separator,
                                               int n_tokens, int32_t bos) {
    if (first >= documents.size())
        return error(StatusCode::kInvalidArgument, "corpus: document {} of {} requested", first,
                     documents.size());
    if (n_tokens < 1)
        return error(StatusCode::kInvalidArgument, "corpus: {} tokens requested", n_tokens);
    TokenSequence s;
    if (bos >= 0) s.tokens.push_back(bos);
    const size_t limit = static_cast<size_t>(n_tokens);
    std::vector<int32_t> body;  // without bos: the separator goes between documents only
    const size_t body_limit = limit - s.tokens.size();
    for (size_t k = 0; k < documents.size() && body.size() < body_limit; ++k) {
        const TokenizedDocument& d = documents[(first + k) % documents.size()];
        if (d.tokens.empty()) continue;
        if (append_capped(body, separator, d.tokens, body_limit))
            s.name += (s.name.empty() ? "" : "+") + d.name;
    }
    if (body.size() < body_limit)
        return error(StatusCode::kInvalidArgument,
                     "corpus: {} documents hold {} tokens, fewer than the {} requested",
                     documents.size(), body.size(), n_tokens);
    s.tokens.insert(s.tokens.end(), body.begin(), body.end());
    return s;
}

Result<std::vector<TokenSequence>> corpus_token_sequences(const Tokenizer& tokenizer,
                                                          CorpusSplit split, int n_tokens,
                                                          int count) {
    CorpusOptions options;
    options.split = split;
    PURBO_ASSIGN_OR_RETURN(std::vector<TextDocument> docs, corpus_documents(options));
    const std::vector<TokenizedDocument> tokens = corpus_tokenize(tokenizer, docs);
    const std::vector<int32_t> separator = corpus_separator(tokenizer);
    Result<std::vector<TokenSequence>> r = corpus_sequences(
        tokens, separator, n_tokens, count, tokenizer.add_bos() ? tokenizer.bos_id() : -1);
    if (!r.is_ok())
        return r.status().with_context(fmt::format("{} split", corpus_split_name(split)));
    return r;
}

}  // namespace purbo
