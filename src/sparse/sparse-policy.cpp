#include "sparse/sparse-policy.h"

#include <algorithm>

namespace purbo {
namespace {

// Whether every token of the batch is in its own sequence: a decode step (the cpu and cuda
// attention use the same test to pick their decode path).
bool is_decode(const TokenPlacement& place) {
    for (size_t i = 1; i < place.seq.size(); ++i) {
        for (size_t j = 0; j < i; ++j) {
            if (place.seq[i] == place.seq[j]) return false;
        }
    }
    return true;
}

// The first (n, m) elements of a scratch buffer as a contiguous (n, m) tensor.
Tensor scratch_prefix(const Tensor& scratch, int64_t n, int64_t m) {
    return scratch.reshaped({scratch.numel(), 1}).rows(0, n * m).reshaped({n, m});
}

}  // namespace

DType default_index_key_type(const Backend& backend, DType kv_cache_type) {
    const std::vector<DType> kept = backend.index_key_dtypes();
    return std::find(kept.begin(), kept.end(), DType::kBF16) != kept.end() ? DType::kBF16
                                                                           : kv_cache_type;
}

Result<std::unique_ptr<SparsePolicy>> SparsePolicy::create(Backend& backend, const ModelConfig& config,
                                                           const Adapter& adapter, int n_seq, int n_ctx,
                                                           int max_batch, const SparseRunOptions& options,
                                                           std::optional<DType> key_type) {
    if (adapter.n_layer != config.n_layer || adapter.n_head != config.n_head ||
        adapter.n_head_kv != config.n_head_kv || adapter.head_dim != config.head_dim) {
        return error(StatusCode::kInvalidArgument,
                     "sparse model: adapter made for {} layers x {} heads ({} KV, d {}), the model has {} x {} ({}, d {})",
                     adapter.n_layer, adapter.n_head, adapter.n_head_kv, adapter.head_dim, config.n_layer,
                     config.n_head, config.n_head_kv, config.head_dim);
    }
    std::unique_ptr<SparsePolicy> p(new SparsePolicy(backend, config));
    p->settings_ = adapter.settings;
    p->options_ = options;
    if (options.top_p != 0) p->settings_.top_p = options.top_p;
    if (options.prefill_top_p != 0 && !(options.prefill_top_p > 0 && options.prefill_top_p <= 1))
        return error(StatusCode::kInvalidArgument,
                     "sparse model: prefill top_p {} is not in (0, 1]", options.prefill_top_p);
    if (options.prefill_samples < 0)
        return error(StatusCode::kInvalidArgument,
                     "sparse model: prefill samples {} must be 0 (all) or positive",
                     options.prefill_samples);
    if (options.prefill_query_block < 0 ||
        options.prefill_query_block % adapter.settings.block_size != 0)
        return error(StatusCode::kInvalidArgument,
                     "sparse model: prefill query block {} must be 0 or a multiple of the "
                     "adapter's block size {}",
                     options.prefill_query_block, adapter.settings.block_size);
    if (options.top_k_blocks < 0)
        return error(StatusCode::kInvalidArgument, "sparse model: top_k_blocks {} must be 0 (top-p) or positive",
                     options.top_k_blocks);
    PURBO_TRY(p->settings_.validate("sparse model options"));
    const DType index_key_type = options.index_key_type.value_or(
        default_index_key_type(backend, key_type.value_or(backend.kv_cache_dtypes().front())));
    const std::vector<DType> kept = backend.index_key_dtypes();
    if (std::find(kept.begin(), kept.end(), index_key_type) == kept.end())
        return error(StatusCode::kUnsupported,
                     "sparse model: the {} backend does not keep index keys in {}", backend.name(),
                     dtype_name(index_key_type));
    PURBO_TRY(p->prepare(adapter, n_seq, n_ctx, max_batch, index_key_type));
    return p;
}

Status SparsePolicy::prepare(const Adapter& adapter, int n_seq, int n_ctx, int max_batch, DType key_type) {
    const ModelConfig& c = config_;
    const int h = c.n_head, g = c.n_head_kv, d = c.head_dim, r = settings_.rank;
    const int heads_per_kv = h / g;
    has_indexer_ = adapter.has_indexer();
    n_retrieval_ = static_cast<int>(adapter.retrieval.size());
    max_blocks_ = (n_ctx + settings_.block_size - 1) / settings_.block_size;
    layers_.resize(static_cast<size_t>(c.n_layer));
    int max_hr = 0;
    for (int il = 0; il < c.n_layer; ++il) {
        Layer& L = layers_[static_cast<size_t>(il)];
        L.local.assign(static_cast<size_t>(h), 1);
        L.head_row.assign(static_cast<size_t>(h), -1);
        for (int hd = 0; hd < h; ++hd) {
            if (!adapter.is_retrieval(il, hd)) continue;
            L.local[static_cast<size_t>(hd)] = 0;
            L.head_row[static_cast<size_t>(hd)] = static_cast<int32_t>(L.retrieval.size());
            L.retrieval.push_back(hd);
        }
        const int hr = static_cast<int>(L.retrieval.size());
        max_hr = std::max(max_hr, hr);
        if (!has_indexer_ || hr == 0) continue;
        // Block rows: rows [j r, (j + 1) r) of wq read only the d columns of query head
        // retrieval[j]; of wk, only those of its KV head. One matmul per layer then gives every
        // retrieval head's r-dim projection (hr r rows: a few percent of the q projection).
        Tensor wq = tensor_cpu(DType::kF32, {int64_t{hr} * r, int64_t{h} * d}, fmt::format("indexer.wq.{}", il));
        Tensor wk = tensor_cpu(DType::kF32, {int64_t{hr} * r, int64_t{g} * d}, fmt::format("indexer.wk.{}", il));
        for (int j = 0; j < hr; ++j) {
            const int hd = L.retrieval[static_cast<size_t>(j)], kv = hd / heads_per_kv;
            const int index = adapter.retrieval_index(il, hd);
            const float* aq = adapter.wq.f32() + int64_t{index} * r * d;  // (r, d)
            const float* ak = adapter.wk.f32() + int64_t{index} * r * d;
            for (int row = 0; row < r; ++row) {
                std::copy_n(aq + row * d, d, wq.f32() + (int64_t{j} * r + row) * h * d + int64_t{hd} * d);
                std::copy_n(ak + row * d, d, wk.f32() + (int64_t{j} * r + row) * g * d + int64_t{kv} * d);
            }
        }
        PURBO_ASSIGN_OR_RETURN(L.wq, backend_.prepare_weight(wq));
        PURBO_ASSIGN_OR_RETURN(L.wk, backend_.prepare_weight(wk));
        L.index_keys = backend_.alloc(key_type, {n_seq, hr, n_ctx, r}, fmt::format("index_keys.{}", il));
        L.blocks = backend_.alloc(DType::kI32, {max_batch, hr, max_blocks_}, fmt::format("blocks.{}", il));
        L.counts = backend_.alloc(DType::kI32, {max_batch, hr}, fmt::format("block_counts.{}", il));
        if (L.index_keys.empty() || L.blocks.empty() || L.counts.empty())
            return error(StatusCode::kOutOfMemory, "sparse model: cannot allocate the indexer state of layer {}", il);
        L.selection.block_size = settings_.block_size;
        L.selection.head_row = L.head_row;
    }
    if (has_indexer_ && max_hr > 0) {
        iq_ = backend_.alloc(DType::kF32, {max_batch, int64_t{max_hr} * r}, "iq");
        ik_ = backend_.alloc(DType::kF32, {max_batch, int64_t{max_hr} * r}, "ik");
        if (iq_.empty() || ik_.empty()) return error(StatusCode::kOutOfMemory, "sparse model: cannot allocate indexer scratch");
    }
    return Status::ok();
}

KvLayout SparsePolicy::kv_layout() const {
    KvLayout layout;
    if (!options_.rings) return layout;
    layout.ring_sinks = settings_.n_sink;
    layout.ring_window = settings_.window;
    const int heads_per_kv = config_.n_head / config_.n_head_kv;
    for (const Layer& L : layers_) {
        std::vector<int32_t> ring;
        for (int kv = 0; kv < config_.n_head_kv; ++kv) {
            bool all_local = true;
            for (int hd = kv * heads_per_kv; hd < (kv + 1) * heads_per_kv; ++hd) all_local &= L.local[static_cast<size_t>(hd)] != 0;
            if (all_local) ring.push_back(kv);
        }
        layout.ring_heads.push_back(std::move(ring));
    }
    return layout;
}

Status SparsePolicy::plan_layer(int il, const Tensor& q_pre, const Tensor& k_pre, const TokenPlacement& place,
                                AttentionParams& params) {
    Layer& L = layers_[static_cast<size_t>(il)];
    params.window = settings_.window;
    params.n_sink = settings_.n_sink;
    params.local_heads = L.local;
    const bool decode = is_decode(place);
    const int hr = static_cast<int>(L.retrieval.size());
    if (!has_indexer_ || hr == 0) {
        if (decode) L.to_count = 1;
        return Status::ok();
    }
    // q_pre (n, h, d), k_pre (n, g, d): the indexer reads them flattened per token.
    const int64_t n = q_pre.dim(0), r = settings_.rank;
    const Tensor ik = scratch_prefix(ik_, n, hr * r);
    PURBO_TRY(backend_.matmul(k_pre.reshaped({n, k_pre.dim(1) * k_pre.dim(2)}), L.wk, ik));
    // The index keys are stored like keys (the same tensor as k and v of a one-head-per-row cache).
    const Tensor ik3 = ik.reshaped({n, hr, r});
    PURBO_TRY(backend_.kv_store(ik3, ik3, place, KvCacheView{L.index_keys, L.index_keys}));
    if (!decode && !options_.block_sparse_prefill) return Status::ok();

    const Tensor iq = scratch_prefix(iq_, n, hr * r);
    PURBO_TRY(backend_.matmul(q_pre.reshaped({n, q_pre.dim(1) * q_pre.dim(2)}), L.wq, iq));
    L.selection.blocks = scratch_prefix(L.blocks, n, hr * max_blocks_).reshaped({n, hr, max_blocks_});
    L.selection.counts = scratch_prefix(L.counts, n, hr);
    BlockSelectParams sp;
    sp.block_size = settings_.block_size;
    sp.top_p = settings_.top_p;
    L.selection.shared_by_query_group = false;
    L.selection.query_block = 0;
    if (!decode) {
        sp.per_query_block = options_.prefill_per_query_block;
        L.selection.shared_by_query_group = sp.per_query_block;
        sp.query_block_samples = options_.prefill_samples;
        sp.query_block = sp.per_query_block ? options_.prefill_query_block : 0;
        L.selection.query_block = sp.query_block;
        if (options_.prefill_top_p > 0) sp.top_p = options_.prefill_top_p;
    }
    if (options_.top_k_blocks > 0) {  // the fixed budget alone
        sp.top_p = 1.0f;
        sp.max_blocks = options_.top_k_blocks;
    }
    PURBO_TRY(backend_.select_blocks(iq.reshaped({n, hr, r}), L.index_keys, place, sp, L.selection.blocks,
                                     L.selection.counts));
    params.selection = &L.selection;
    L.to_count = decode ? 2 : 3;
    return Status::ok();
}

size_t SparsePolicy::cache_bytes() const {
    size_t total = 0;
    for (const Layer& L : layers_) total += L.index_keys.empty() ? 0 : L.index_keys.nbytes();
    return total;
}

Status SparsePolicy::end_batch(const TokenPlacement& place) {
    for (size_t il = 0; il < layers_.size(); ++il) {
        Layer& L = layers_[il];
        const uint8_t what = L.to_count;
        L.to_count = 0;
        if (what == 1 || what == 2)
            PURBO_TRY(count(static_cast<int>(il), place, L.selection.counts, what == 2));
        if (what == 3) PURBO_TRY(count_prefill(static_cast<int>(il), place, L.selection.counts));
    }
    return Status::ok();
}

// Adds one decode step of layer il to the statistics: local heads see sinks + window, dense
// retrieval heads every position, selected ones about count x block keys.
Status SparsePolicy::count(int il, const TokenPlacement& place, const Tensor& counts, bool selected) {
    if (!options_.collect_stats) return Status::ok();
    const Layer& L = layers_[static_cast<size_t>(il)];
    const int64_t n = static_cast<int64_t>(place.pos.size()), hr = static_cast<int64_t>(L.retrieval.size());
    Tensor host;
    if (selected) {
        host = tensor_cpu(DType::kI32, {n, hr});
        PURBO_TRY(backend_.to_host(counts, host));
    }
    const int64_t n_local = config_.n_head - hr;
    for (int64_t i = 0; i < n; ++i) {
        const int64_t keys = int64_t{place.pos[static_cast<size_t>(i)]} + 1;
        const int64_t local_keys = std::min<int64_t>(keys, settings_.window + settings_.n_sink);
        stats_.all_dense += keys * config_.n_head;
        stats_.all_attended += local_keys * n_local;
        for (int64_t j = 0; j < hr; ++j) {
            const int64_t blocks = selected ? host.ptr<int32_t>()[i * hr + j] : 0;
            const int64_t attended = selected ? std::min<int64_t>(keys, blocks * settings_.block_size) : keys;
            stats_.all_attended += attended;
            if (selected) {
                stats_.retrieval_blocks += blocks;
                stats_.retrieval_attended += attended;
                stats_.retrieval_dense += keys;
                stats_.retrieval_head_steps += 1;
            }
        }
    }
    if (il == 0) stats_.decode_tokens += n;
    return Status::ok();
}

// Adds one block-sparse prefill batch of layer il: the blocks each retrieval head's rows kept.
Status SparsePolicy::count_prefill(int il, const TokenPlacement& place, const Tensor& counts) {
    if (!options_.collect_stats) return Status::ok();
    const Layer& L = layers_[static_cast<size_t>(il)];
    const int64_t n = static_cast<int64_t>(place.pos.size()),
                  hr = static_cast<int64_t>(L.retrieval.size());
    Tensor host = tensor_cpu(DType::kI32, {n, hr});
    PURBO_TRY(backend_.to_host(counts, host));
    // A query group's list ends with the blocks of all its positions; a token counts the kept
    // blocks it can see, its own and those before.
    const std::vector<int64_t> groups = select_query_groups(
        place,
        options_.prefill_query_block > 0 ? options_.prefill_query_block : settings_.block_size,
        L.selection.shared_by_query_group);
    for (size_t g = 0; g + 1 < groups.size(); ++g) {
        const int64_t last_block =
            place.pos[static_cast<size_t>(groups[g + 1] - 1)] / settings_.block_size;
        for (int64_t i = groups[g]; i < groups[g + 1]; ++i) {
            const int64_t own = place.pos[static_cast<size_t>(i)] / settings_.block_size;
            for (int64_t j = 0; j < hr; ++j) {
                stats_.prefill_blocks_kept += host.ptr<int32_t>()[i * hr + j] - (last_block - own);
                stats_.prefill_blocks_visible += own + 1;
            }
        }
    }
    return Status::ok();
}

AttentionPolicyFactory sparse_policy_factory(const Adapter& adapter, const SparseRunOptions& options) {
    return [adapter, options](Backend& backend, const ModelConfig& config, const SessionOptions& session,
                              int max_batch) -> Result<std::unique_ptr<AttentionPolicy>> {
        PURBO_ASSIGN_OR_RETURN(std::unique_ptr<SparsePolicy> p,
                               SparsePolicy::create(backend, config, adapter, session.n_seq, session.n_ctx,
                                                    max_batch, options, session.cache_type));
        return std::unique_ptr<AttentionPolicy>(std::move(p));
    };
}

}  // namespace purbo
