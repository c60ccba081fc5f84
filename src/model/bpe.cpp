#include "model/bpe.h"

#include <queue>

#include "model/unicode.h"

namespace purbo {
namespace {

// Bounds of the word cache: pieces longer than this are rare (long digit or space runs) and
// would only bloat it; the cache is cleared when full rather than tracking recency.
constexpr size_t kCacheMaxPieceBytes = 256;
constexpr size_t kCacheMaxEntries = 1 << 16;

}  // namespace

Result<std::unique_ptr<BpeModel>> BpeModel::build(
    std::vector<std::string> tokens, const std::vector<std::pair<std::string, std::string>>& merges,
    bool ignore_merges, int32_t unk_id, std::string_view source) {
    auto model = std::unique_ptr<BpeModel>(new BpeModel());
    model->ignore_merges_ = ignore_merges;
    model->unk_id_ = unk_id;
    model->token_to_id_.reserve(tokens.size());
    for (size_t id = 0; id < tokens.size(); ++id) {
        if (tokens[id].empty()) continue;
        // The first id wins for duplicated texts, like a JSON object keeps one key.
        model->token_to_id_.emplace(tokens[id], static_cast<int32_t>(id));
    }
    model->tokens_ = std::move(tokens);
    const auto& byte_text = unicode::byte_to_unicode_utf8();
    for (int b = 0; b < 256; ++b) model->byte_ids_[b] = model->token_id(byte_text[b]);

    // Load factor at most 1/2 keeps probe sequences short.
    size_t capacity = 16;
    uint32_t bits = 4;
    while (capacity < merges.size() * 2) capacity *= 2, ++bits;
    model->merge_table_.assign(capacity, {kEmptyKey, Merge{0, 0}});
    model->merge_shift_ = 64 - bits;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& [left, right] = merges[rank];
        const int32_t a = model->token_id(left);
        const int32_t b = model->token_id(right);
        const int32_t ab = model->token_id(left + right);
        if (a < 0 || b < 0 || ab < 0) {
            return error(StatusCode::kParseError,
                         "{}: merges[{}] '{} {}': {} is not in the vocabulary", source, rank, left,
                         right,
                         a < 0   ? "'" + left + "'"
                         : b < 0 ? "'" + right + "'"
                                 : "'" + left + right + "'");
        }
        model->insert_merge(pair_key(a, b), Merge{static_cast<int32_t>(rank), ab});
    }
    return model;
}

namespace {
// Fibonacci hashing: spreads the (left id, right id) keys over the table's power-of-2 size.
inline size_t slot_of(uint64_t key, uint32_t shift) {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift);
}
}  // namespace

void BpeModel::insert_merge(uint64_t key, Merge m) {
    const size_t mask = merge_table_.size() - 1;
    for (size_t i = slot_of(key, merge_shift_);; i = (i + 1) & mask) {
        if (merge_table_[i].first == key) return;  // a repeated pair keeps its first rank
        if (merge_table_[i].first == kEmptyKey) {
            merge_table_[i] = {key, m};
            return;
        }
    }
}

const BpeModel::Merge* BpeModel::find_merge(int32_t a, int32_t b) const {
    const uint64_t key = pair_key(a, b);
    const size_t mask = merge_table_.size() - 1;
    for (size_t i = slot_of(key, merge_shift_);; i = (i + 1) & mask) {
        if (merge_table_[i].first == key) return &merge_table_[i].second;
        if (merge_table_[i].first == kEmptyKey) return nullptr;
    }
}

int32_t BpeModel::token_id(std::string_view byte_level_text) const {
    auto it = token_to_id_.find(std::string(byte_level_text));
    return it == token_to_id_.end() ? -1 : it->second;
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.size() > kCacheMaxPieceBytes) {
        encode_piece_uncached(piece, out);
        return;
    }
    std::string key(piece);
    {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        auto it = cache_.find(key);
        if (it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    const size_t first = out.size();
    encode_piece_uncached(piece, out);
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheMaxEntries) cache_.clear();
    cache_.emplace(std::move(key), std::vector<int32_t>(out.begin() + first, out.end()));
}

void BpeModel::encode_piece_uncached(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.empty()) return;
    if (ignore_merges_) {
        const int32_t whole = token_id(unicode::bytes_to_byte_level(piece));
        if (whole >= 0) {
            out.push_back(whole);
            return;
        }
    }
    // One symbol per byte, in a doubly linked list so merges are O(1).
    struct Symbol {
        int32_t id;
        int32_t prev, next;  // -1 at the ends
        bool alive;
    };
    std::vector<Symbol> symbols;
    symbols.reserve(piece.size());
    for (const char c : piece) {
        const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
        // A byte without a token: the unknown token when there is one, else dropped
        // (tokenizers does the same when the vocabulary lacks a character).
        const int32_t use = id >= 0 ? id : unk_id_;
        if (use < 0) continue;
        const int32_t n = static_cast<int32_t>(symbols.size());
        symbols.push_back({use, n - 1, -1, true});
        if (n > 0) symbols[n - 1].next = n;
    }

    struct Candidate {
        int32_t rank;
        int32_t pos;  // left symbol
        int32_t left, right, result;
        bool operator>(const Candidate& o) const {
            return rank != o.rank ? rank > o.rank : pos > o.pos;
        }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    auto push_pair = [&](int32_t pos) {
        if (pos < 0) return;
        const int32_t next = symbols[pos].next;
        if (next < 0) return;
        const Merge* m = find_merge(symbols[pos].id, symbols[next].id);
        if (!m) return;
        queue.push({m->rank, pos, symbols[pos].id, symbols[next].id, m->result});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol& left = symbols[top.pos];
        // Stale entries: either side merged since. Ids only ever grow longer, so equal ids
        // mean the same pair is still there.
        if (!left.alive || left.id != top.left || left.next < 0) continue;
        Symbol& right = symbols[left.next];
        if (right.id != top.right) continue;
        left.id = top.result;
        right.alive = false;
        left.next = right.next;
        if (right.next >= 0) symbols[right.next].prev = top.pos;
        push_pair(left.prev);
        push_pair(top.pos);
    }
    for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
        out.push_back(symbols[i].id);
    }
}

}  // namespace purbo
