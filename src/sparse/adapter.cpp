// The adapter in memory: settings and consistency checks, the model check and the base-model
// fingerprint. The file itself is read and written in adapter-file.cpp.
#include "sparse/adapter.h"

#include <cmath>
#include <functional>
#include <span>
#include <vector>

#include "model/unicode.h"

namespace purbo {

namespace {

// Letters: R = retrieval heads, r = indexer rank, d = head_dim.

Status bad_value(const std::string& source, std::string_view field, const std::string& value,
                 std::string_view why) {
    return error(StatusCode::kInvalidArgument, "{}: field '{}': value {} {}", source, field, value,
                 why);
}

Status check_at_least(const std::string& source, std::string_view field, int value, int min) {
    if (value >= min) return Status::ok();
    return bad_value(source, field, std::to_string(value), fmt::format("must be at least {}", min));
}

// The first non-finite element of `values` as an error, read as an array of `shape`.
Status check_finite(const std::string& source, std::string_view tensor, const float* values,
                    std::span<const int64_t> shape,
                    const std::function<std::string(int64_t)>& what) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    for (int64_t i = 0; i < n; ++i) {
        if (std::isfinite(values[i])) continue;
        std::string index;
        int64_t rest = i;
        std::vector<int64_t> idx(shape.size());
        for (size_t k = shape.size(); k-- > 0;) {
            idx[k] = rest % shape[k];
            rest /= shape[k];
        }
        for (size_t k = 0; k < idx.size(); ++k) index += fmt::format("{}{}", k ? ", " : "", idx[k]);
        return error(StatusCode::kInvalidArgument, "{}: tensor '{}': element [{}] ({}) is {}",
                     source, tensor, index, what(i), values[i]);
    }
    return Status::ok();
}

Status check_indexer_tensor(const std::string& source, std::string_view name, const Tensor& t,
                            const Adapter& a) {
    const int64_t n_retrieval = static_cast<int64_t>(a.retrieval.size());
    const int64_t r = a.settings.rank, d = a.head_dim;
    if (t.empty()) {
        return error(StatusCode::kInvalidArgument,
                     "{}: tensor '{}' is missing while the other indexer tensor is present", source,
                     name);
    }
    if (t.device != Device::kCpu || t.dtype != DType::kF32) {
        return error(StatusCode::kInvalidArgument, "{}: tensor '{}' is {}, not a host f32 tensor",
                     source, name, t.describe());
    }
    if (t.ndim != 3 || t.dim(0) != n_retrieval || t.dim(1) != r || t.dim(2) != d) {
        return error(StatusCode::kInvalidArgument,
                     "{}: tensor '{}': shape {} does not match (retrieval heads, rank, head_dim) = "
                     "({}, {}, {})",
                     source, name, t.describe(), n_retrieval, r, d);
    }
    const int64_t shape[] = {n_retrieval, r, d};
    return check_finite(source, name, t.f32(), shape, [&](int64_t i) {
        const HeadId& h = a.retrieval[static_cast<size_t>(i / (r * d))];
        return fmt::format("retrieval head layer {} head {}", h.layer, h.head);
    });
}

bool is_lower_hex(std::string_view s) {
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

// FNV-1a, 64 bits: simple, stable across platforms and compilers, fast enough for the few MB
// the fingerprint reads. Not cryptographic: it detects a wrong model, not a forged one.
class Fnv1a64 {
  public:
    void add(const void* data, size_t n) {
        const auto* p = static_cast<const uint8_t*>(data);
        for (size_t i = 0; i < n; ++i) {
            hash_ ^= p[i];
            hash_ *= kPrime;
        }
    }
    void add_int(int64_t v) {
        uint8_t le[8];  // little-endian, so the hash does not depend on the host's byte order
        for (int i = 0; i < 8; ++i)
            le[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
        add(le, sizeof(le));
    }
    void add_string(std::string_view s) {
        add_int(static_cast<int64_t>(s.size()));
        add(s.data(), s.size());
    }
    uint64_t value() const { return hash_; }

  private:
    static constexpr uint64_t kOffsetBasis = 0xcbf29ce484222325ull;
    static constexpr uint64_t kPrime = 0x100000001b3ull;
    uint64_t hash_ = kOffsetBasis;
};

// A tensor's dtype, shape and the stored bytes of rows [begin, end).
void hash_rows(Fnv1a64& h, const Tensor& t, int64_t begin, int64_t end) {
    h.add_string(t.empty() ? "absent" : dtype_name(t.dtype));
    if (t.empty()) return;
    PURBO_ASSERT(t.device == Device::kCpu, "model_fingerprint needs host weights, '{}' is not",
                 t.name);
    h.add_int(t.ndim);
    for (int i = 0; i < t.ndim; ++i) h.add_int(t.dim(i));
    for (int64_t r = begin; r < end; ++r) h.add(t.row_ptr(r), t.row_bytes());
}

}  // namespace

Status SparseSettings::validate(const std::string& source) const {
    PURBO_TRY(check_at_least(source, "window", window, 1));
    PURBO_TRY(check_at_least(source, "n_sink", n_sink, 0));
    PURBO_TRY(check_at_least(source, "block_size", block_size, 1));
    PURBO_TRY(check_at_least(source, "rank", rank, 1));
    if (!(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f)) {
        return bad_value(source, "top_p", fmt::format("{}", top_p), "must be in (0, 1]");
    }
    return Status::ok();
}

bool Adapter::is_retrieval(int layer, int head) const {
    return retrieval_index(layer, head) >= 0;
}

Adapter adapter_for_model(const ModelConfig& config, const SparseSettings& settings) {
    Adapter a;
    a.settings = settings;
    a.n_layer = config.n_layer;
    a.n_head = config.n_head;
    a.n_head_kv = config.n_head_kv;
    a.head_dim = config.head_dim;
    a.scores.assign(static_cast<size_t>(config.n_layer * config.n_head), 0.0f);
    return a;
}

int Adapter::retrieval_index(int layer, int head) const {
    // `retrieval` is sorted by (layer, head): binary search.
    size_t lo = 0, hi = retrieval.size();
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        const HeadId& m = retrieval[mid];
        if (m.layer < layer || (m.layer == layer && m.head < head)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < retrieval.size() && retrieval[lo] == HeadId{layer, head}) return static_cast<int>(lo);
    return -1;
}

Status Adapter::validate_fields(const std::string& source) const {
    PURBO_TRY(settings.validate(source));
    PURBO_TRY(check_at_least(source, "n_layer", n_layer, 1));
    PURBO_TRY(check_at_least(source, "n_head", n_head, 1));
    PURBO_TRY(check_at_least(source, "n_head_kv", n_head_kv, 1));
    PURBO_TRY(check_at_least(source, "head_dim", head_dim, 1));
    if (n_head % n_head_kv != 0) {
        return bad_value(source, "n_head_kv", std::to_string(n_head_kv),
                         fmt::format("does not divide n_head {}", n_head));
    }
    // The indexer projects a d-dim query/key to r dims; more than d dims carry nothing new.
    if (settings.rank > head_dim) {
        return bad_value(source, "rank", std::to_string(settings.rank),
                         fmt::format("exceeds head_dim {}", head_dim));
    }
    // Empty = unknown (an adapter imported from a headwise_config); else model_fingerprint().
    if (!base_fingerprint.empty() &&
        (base_fingerprint.size() != 16 || !is_lower_hex(base_fingerprint))) {
        return bad_value(source, "base_fingerprint", "'" + base_fingerprint + "'",
                         "is not 16 lowercase hex digits");
    }
    for (const auto& [field, text] :
         {std::pair<const char*, const std::string&>{"calibration_info", calibration_info},
          {"training_info", training_info}}) {
        if (!unicode::utf8_is_valid(text)) {
            return error(StatusCode::kInvalidArgument, "{}: field '{}' is not valid UTF-8", source,
                         field);
        }
    }
    for (size_t i = 0; i < retrieval.size(); ++i) {
        const HeadId& h = retrieval[i];
        if (h.layer < 0 || h.layer >= n_layer || h.head < 0 || h.head >= n_head) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field 'retrieval_heads': entry {} [{}, {}] is outside {} layers x {} "
                         "heads",
                         source, i, h.layer, h.head, n_layer, n_head);
        }
        if (i == 0) continue;
        const HeadId& p = retrieval[i - 1];
        if (p == h) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field 'retrieval_heads': entry {} [{}, {}] appears twice", source, i,
                         h.layer, h.head);
        }
        if (p.layer > h.layer || (p.layer == h.layer && p.head > h.head)) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field 'retrieval_heads': entry {} [{}, {}] comes after [{}, {}]; the "
                         "list must ascend by (layer, head)",
                         source, i, h.layer, h.head, p.layer, p.head);
        }
    }
    return Status::ok();
}

Status Adapter::validate(const std::string& source) const {
    PURBO_TRY(validate_fields(source));
    const int64_t n_heads = static_cast<int64_t>(n_layer) * n_head;
    if (static_cast<int64_t>(scores.size()) != n_heads) {
        return error(StatusCode::kInvalidArgument,
                     "{}: tensor 'head_scores': {} values for n_layer {} x n_head {} = {} heads",
                     source, scores.size(), n_layer, n_head, n_heads);
    }
    const int64_t score_shape[] = {n_layer, n_head};
    PURBO_TRY(check_finite(source, "head_scores", scores.data(), score_shape, [&](int64_t i) {
        return fmt::format("layer {} head {}", i / n_head, i % n_head);
    }));
    if (!wq.empty() || !wk.empty()) {
        PURBO_TRY(check_indexer_tensor(source, "indexer.wq", wq, *this));
        PURBO_TRY(check_indexer_tensor(source, "indexer.wk", wk, *this));
    }
    return Status::ok();
}

Status Adapter::check_model(const ModelConfig& config, const std::string& fingerprint,
                            const std::string& source) const {
    const std::pair<const char*, std::pair<int, int>> shape[] = {
        {"n_layer", {n_layer, config.n_layer}},
        {"n_head", {n_head, config.n_head}},
        {"n_head_kv", {n_head_kv, config.n_head_kv}},
        {"head_dim", {head_dim, config.head_dim}},
    };
    for (const auto& [field, values] : shape) {
        if (values.first != values.second) {
            return error(StatusCode::kInvalidArgument,
                         "{}: field '{}': the adapter was made for {} but the model has {}", source,
                         field, values.first, values.second);
        }
    }
    if (!base_fingerprint.empty() && base_fingerprint != fingerprint) {
        return error(StatusCode::kInvalidArgument,
                     "{}: field 'base_fingerprint': the adapter was made for model {} but this "
                     "model is {} (same shape, other weights)",
                     source, base_fingerprint, fingerprint);
    }
    return Status::ok();
}

std::string model_fingerprint(const ModelConfig& config, const ModelWeights& weights) {
    Fnv1a64 h;
    h.add_string("purbo-fingerprint-1");  // bump when what is hashed changes
    h.add_string(arch_name(config.arch));
    for (int v : {config.n_layer, config.n_head, config.n_head_kv, config.head_dim, config.n_embd,
                  config.n_vocab}) {
        h.add_int(v);
    }
    // The embedding's first and last rows, and the first layer's query projection: a few MB at
    // most (32 MiB for an 8B model in bf16), and any fine-tune or requantisation changes them.
    const Tensor& emb = weights.tok_embd;
    if (emb.empty() || emb.n_rows() == 0) {
        hash_rows(h, Tensor{}, 0, 0);
    } else {
        hash_rows(h, emb, 0, 1);
        hash_rows(h, emb, emb.n_rows() - 1, emb.n_rows());
    }
    const Tensor wq = weights.layers.empty() ? Tensor{} : weights.layers[0].wq;
    hash_rows(h, wq, 0, wq.empty() ? 0 : wq.n_rows());
    return fmt::format("{:016x}", h.value());
}

}  // namespace purbo
