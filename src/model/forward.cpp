#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace purbo {
namespace {

// Logits are computed for at most this many rows at a time: a (rows, n_vocab) buffer for a
// whole 512-token micro-batch would be 100 MB at a 49K vocabulary.
constexpr int kLogitChunk = 32;
// Batches of up to this many tokens go through step graphs: decode steps, of one sequence or
// a few; a prefill chunk's launches are few next to its work.
constexpr int kMaxGraphTokens = 16;

Status check_batch(const ForwardBatch& batch, const KvCache& cache, int max_batch) {
    const size_t n = batch.tokens.size();
    if (n == 0 || n > static_cast<size_t>(max_batch)) {
        return error(StatusCode::kInvalidArgument, "forward: batch of {} tokens (expected 1..{})", n, max_batch);
    }
    if (batch.place.seq.size() != n || batch.place.pos.size() != n) {
        return error(StatusCode::kInvalidArgument, "forward: {} tokens but {} sequence ids and {} positions", n,
                     batch.place.seq.size(), batch.place.pos.size());
    }
    for (size_t i = 0; i < n; ++i) {
        if (batch.place.seq[i] < 0 || batch.place.seq[i] >= cache.n_seq) {
            return error(StatusCode::kInvalidArgument, "forward: token {} has sequence slot {} (cache has {})", i,
                         batch.place.seq[i], cache.n_seq);
        }
        if (batch.place.pos[i] < 0 || batch.place.pos[i] >= cache.n_ctx) {
            return error(StatusCode::kInvalidArgument,
                         "forward: token {} at position {} is outside the context of {} tokens", i,
                         batch.place.pos[i], cache.n_ctx);
        }
    }
    for (size_t i = 0; i < batch.logit_rows.size(); ++i) {
        if (batch.logit_rows[i] < 0 || static_cast<size_t>(batch.logit_rows[i]) >= n) {
            return error(StatusCode::kInvalidArgument, "forward: logit row {} outside the batch of {}",
                         batch.logit_rows[i], n);
        }
    }
    return Status::ok();
}

// Whether `parts` can be stacked row-wise into one matrix: 2-d host matrices of one dtype and
// one row length.
bool stackable(std::span<const Tensor* const> parts) {
    const Tensor& first = *parts.front();
    for (const Tensor* t : parts) {
        if (t->empty() || t->ndim != 2 || t->device != Device::kCpu || t->dtype != first.dtype ||
            t->row_size() != first.row_size()) {
            return false;
        }
    }
    return true;
}

// A host matrix whose rows are the rows of `parts`, in order. Rows are whole blocks for the
// quantised types, so the bytes move unchanged.
Tensor stack_rows(std::span<const Tensor* const> parts) {
    const Tensor& first = *parts.front();
    int64_t rows = 0;
    std::string name;
    for (const Tensor* t : parts) {
        rows += t->n_rows();
        name += (name.empty() ? "" : "|") + t->name;
    }
    Tensor stack = tensor_cpu(first.dtype, {rows, first.row_size()}, std::move(name));
    uint8_t* dst = stack.ptr<uint8_t>();
    for (const Tensor* t : parts) {
        std::memcpy(dst, t->data, t->nbytes());
        dst += t->nbytes();
    }
    return stack;
}

// Contiguous columns [begin, end) of the single row of `row` (1, m): a view, no copy.
// `unit` divides begin, end and m (views come from rows() of a (m / unit, unit) reshape).
Tensor row_slice(const Tensor& row, int64_t begin, int64_t end, int64_t unit) {
    const int64_t m = row.row_size();
    return row.reshaped({m / unit, unit}).rows(begin / unit, end / unit).reshaped({1, end - begin});
}

}  // namespace

Result<std::unique_ptr<Forward>> Forward::create(Backend& backend, const ModelConfig& config,
                                                 const ModelWeights& host_weights, const ForwardOptions& options) {
    if (options.max_batch <= 0) {
        return error(StatusCode::kInvalidArgument, "forward: max_batch {} must be positive", options.max_batch);
    }
    std::unique_ptr<Forward> f(new Forward(backend, config, options));
    PURBO_TRY(f->prepare(host_weights));
    return f;
}

Status Forward::prepare_layer(const LayerWeights& h, LayerWeights& d, FusedWeights& fused) {
    auto convert = [&](const Tensor& t, Tensor& dst) -> Status {
        if (t.empty()) return Status::ok();
        PURBO_ASSIGN_OR_RETURN(dst, backend_.prepare_weight(t));
        return Status::ok();
    };
    // Prepares the stack of `parts` as one weight and makes each part a row view of it
    // (prepare_weight keeps a matrix's rows contiguous and in order on every backend), so the
    // stack costs no memory beyond the parts. Parts that cannot be stacked stay separate.
    using Part = std::pair<const Tensor*, Tensor*>;
    auto stack = [&](std::initializer_list<Part> parts, Tensor& stacked) -> Status {
        std::vector<const Tensor*> srcs;
        for (const Part& p : parts) srcs.push_back(p.first);
        if (!stackable(srcs)) {
            for (const Part& p : parts) PURBO_TRY(convert(*p.first, *p.second));
            return Status::ok();
        }
        int64_t rows = 0;
        for (const Tensor* t : srcs) rows += t->n_rows();
        const Tensor host_stack = stack_rows(srcs);
        PURBO_ASSIGN_OR_RETURN(stacked, backend_.prepare_weight(host_stack));
        if (stacked.ndim != 2 || stacked.n_rows() != rows ||
            stacked.row_size() != srcs[0]->row_size()) {
            return error(StatusCode::kInternal,
                         "forward: prepared stack '{}' is {}, expected ({}, {})",
                         host_stack.name, stacked.describe(), rows, srcs[0]->row_size());
        }
        int64_t r = 0;
        for (const Part& p : parts) {
            *p.second = stacked.rows(r, r + p.first->n_rows());
            p.second->name = p.first->name;
            r += p.first->n_rows();
        }
        return Status::ok();
    };
    PURBO_TRY(stack({{&h.wq, &d.wq}, {&h.wk, &d.wk}, {&h.wv, &d.wv}}, fused.wqkv));
    PURBO_TRY(stack({{&h.w_gate, &d.w_gate}, {&h.w_up, &d.w_up}}, fused.w_gate_up));
    for (auto [src, dst] : {std::pair{&h.attn_norm, &d.attn_norm}, {&h.wo, &d.wo}, {&h.bq, &d.bq},
                            {&h.bk, &d.bk}, {&h.bv, &d.bv}, {&h.q_norm, &d.q_norm},
                            {&h.k_norm, &d.k_norm},
                            {&h.ffn_norm, &d.ffn_norm}, {&h.w_down, &d.w_down}}) {
        PURBO_TRY(convert(*src, *dst));
    }
    return Status::ok();
}

Status Forward::prepare(const ModelWeights& host) {
    const ModelConfig& c = config_;
    // Convert each distinct host tensor once: tied embeddings share tok_embd and lm_head.
    auto convert = [&](const Tensor& t, Tensor& dst) -> Status {
        if (t.empty()) return Status::ok();
        PURBO_ASSIGN_OR_RETURN(dst, backend_.prepare_weight(t));
        return Status::ok();
    };
    PURBO_TRY(convert(host.tok_embd, weights_.tok_embd));
    PURBO_TRY(convert(host.out_norm, weights_.out_norm));
    if (host.lm_head.data == host.tok_embd.data) {
        weights_.lm_head = weights_.tok_embd;
    } else {
        PURBO_TRY(convert(host.lm_head, weights_.lm_head));
    }
    weights_.layers.resize(host.layers.size());
    fused_.resize(host.layers.size());
    for (size_t il = 0; il < host.layers.size(); ++il) {
        PURBO_TRY(prepare_layer(host.layers[il], weights_.layers[il], fused_[il]));
    }
    rope_ = rope_tables(c.rope);

    const int b = options_.max_batch;
    const int64_t e = c.n_embd, f = c.n_ff, h = c.n_head, g = c.n_head_kv, d = c.head_dim;
    x_ = backend_.alloc(DType::kF32, {b, e}, "x");
    xn_ = backend_.alloc(DType::kF32, {b, e}, "xn");
    q_ = backend_.alloc(DType::kF32, {b, h, d}, "q");
    k_ = backend_.alloc(DType::kF32, {b, g, d}, "k");
    v_ = backend_.alloc(DType::kF32, {b, g, d}, "v");
    attn_ = backend_.alloc(DType::kF32, {b, h, d}, "attn");
    proj_ = backend_.alloc(DType::kF32, {b, e}, "proj");
    gate_ = backend_.alloc(DType::kF32, {b, f}, "gate");
    up_ = backend_.alloc(DType::kF32, {b, f}, "up");
    act_ = backend_.alloc(DType::kF32, {b, f}, "act");
    qkv_ = backend_.alloc(DType::kF32, {1, (h + 2 * g) * d}, "qkv");
    gate_up_ = backend_.alloc(DType::kF32, {1, 2 * f}, "gate_up");
    picked_ = backend_.alloc(DType::kF32, {std::min(b, kLogitChunk), e}, "picked");
    logits_ = backend_.alloc(DType::kF32, {std::min(b, kLogitChunk), c.n_vocab}, "logits");
    for (const Tensor* t : {&x_, &xn_, &q_, &k_, &v_, &attn_, &proj_, &gate_, &up_, &act_, &qkv_,
                            &gate_up_, &picked_, &logits_}) {
        if (t->empty()) return error(StatusCode::kOutOfMemory, "forward: cannot allocate scratch '{}'", t->name);
    }
    return Status::ok();
}

Status Forward::run_layer(int il, int n, const ForwardBatch& batch, const KvCache& cache) {
    const ModelConfig& c = config_;
    const LayerWeights& w = weights_.layers[static_cast<size_t>(il)];
    const FusedWeights& fw = fused_[static_cast<size_t>(il)];
    Backend& be = backend_;
    // Views of the scratch for the n tokens of this batch. One token with stacked weights: q, k,
    // v (and gate, up) are the consecutive parts of the single row of one matmul's output.
    const bool fuse_qkv = n == 1 && !fw.wqkv.empty();
    const bool fuse_gate_up = n == 1 && !fw.w_gate_up.empty();
    const int64_t qd = c.n_head * c.head_dim, kvd = c.n_head_kv * c.head_dim;
    const Tensor x = x_.rows(0, n);
    const Tensor xn = xn_.rows(0, n);
    const Tensor q = fuse_qkv ? row_slice(qkv_, 0, qd, c.head_dim)
                              : q_.rows(0, n * c.n_head).reshaped({n, qd});
    const Tensor k = fuse_qkv ? row_slice(qkv_, qd, qd + kvd, c.head_dim)
                              : k_.rows(0, n * c.n_head_kv).reshaped({n, kvd});
    const Tensor v = fuse_qkv ? row_slice(qkv_, qd + kvd, qd + 2 * kvd, c.head_dim)
                              : v_.rows(0, n * c.n_head_kv).reshaped({n, kvd});
    const Tensor attn = attn_.rows(0, n * c.n_head).reshaped({n, qd});
    const Tensor proj = proj_.rows(0, n);
    const Tensor gate = fuse_gate_up ? row_slice(gate_up_, 0, c.n_ff, c.n_ff) : gate_.rows(0, n);
    const Tensor up =
        fuse_gate_up ? row_slice(gate_up_, c.n_ff, 2 * c.n_ff, c.n_ff) : up_.rows(0, n);
    const Tensor act = act_.rows(0, n);
    const Tensor q3 = q.reshaped({n, c.n_head, c.head_dim});
    const Tensor k3 = k.reshaped({n, c.n_head_kv, c.head_dim});
    const Tensor v3 = v.reshaped({n, c.n_head_kv, c.head_dim});
    const Tensor attn3 = attn.reshaped({n, c.n_head, c.head_dim});

    // Attention sublayer: x += wo(attention(rope(q), rope(k), v)).
    PURBO_TRY(be.rms_norm(x, w.attn_norm, c.rms_eps, xn));
    tap("attn_norm", il, xn);
    if (fuse_qkv) {
        PURBO_TRY(be.matmul(xn, fw.wqkv, qkv_));
    } else {
        PURBO_TRY(be.matmul(xn, w.wq, q));
        PURBO_TRY(be.matmul(xn, w.wk, k));
        PURBO_TRY(be.matmul(xn, w.wv, v));
    }
    if (c.attn_qkv_bias) {
        PURBO_TRY(be.add_bias(q, w.bq));
        PURBO_TRY(be.add_bias(k, w.bk));
        PURBO_TRY(be.add_bias(v, w.bv));
    }
    if (c.attn_qk_norm) {  // Qwen3: RMSNorm over each head's d values, before RoPE
        const Tensor qh = q.reshaped({n * c.n_head, c.head_dim});
        const Tensor kh = k.reshaped({n * c.n_head_kv, c.head_dim});
        PURBO_TRY(be.rms_norm(qh, w.q_norm, c.rms_eps, qh));
        PURBO_TRY(be.rms_norm(kh, w.k_norm, c.rms_eps, kh));
    }
    tap("q_pre_rope", il, q3);
    tap("k_pre_rope", il, k3);
    AttentionParams params;
    params.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    if (policy_) PURBO_TRY(policy_->plan_layer(il, q3, k3, batch.place, params));
    const RopeParams rope{rope_.inv_freq, c.rope.rotary_dim, rope_.attn_factor};
    if (fuse_qkv) {  // q and k are adjacent heads of one row: one call rotates both
        const Tensor qk = row_slice(qkv_, 0, qd + kvd, c.head_dim).reshaped({n, c.n_head + c.n_head_kv, c.head_dim});
        PURBO_TRY(be.rope(qk, batch.place.pos, rope));
    } else {
        PURBO_TRY(be.rope(q3, batch.place.pos, rope));
        PURBO_TRY(be.rope(k3, batch.place.pos, rope));
    }
    tap("q", il, q3);
    tap("k", il, k3);
    tap("v", il, v3);
    // The layer's KV heads kept whole, then those in a ring (local heads only); each view's
    // attention writes the query heads of its KV heads.
    for (const KvCacheView* view : {&cache.layers[static_cast<size_t>(il)], &cache.rings[static_cast<size_t>(il)]}) {
        if (view->k.empty()) continue;
        PURBO_TRY(be.kv_store(k3, v3, batch.place, *view));
        PURBO_TRY(be.attention(q3, *view, batch.place, params, attn3));
    }
    tap("attn_out", il, attn3);
    PURBO_TRY(be.matmul(attn, w.wo, proj));
    tap("attn_proj", il, proj);
    PURBO_TRY(be.add(x, proj, x));
    tap("ffn_inp", il, x);

    // MLP sublayer: x += down(silu(gate(xn)) * up(xn)).
    PURBO_TRY(be.rms_norm(x, w.ffn_norm, c.rms_eps, xn));
    tap("ffn_norm", il, xn);
    if (fuse_gate_up) {
        PURBO_TRY(be.matmul(xn, fw.w_gate_up, gate_up_));
    } else {
        PURBO_TRY(be.matmul(xn, w.w_gate, gate));
        PURBO_TRY(be.matmul(xn, w.w_up, up));
    }
    PURBO_TRY(be.swiglu(gate, up, act));
    PURBO_TRY(be.matmul(act, w.w_down, proj));
    tap("ffn_out", il, proj);
    PURBO_TRY(be.add(x, proj, x));
    tap("layer", il, x);
    return Status::ok();
}

Status Forward::run(const ForwardBatch& batch, const KvCache& cache, const Tensor& logits) {
    PURBO_TRY(check_batch(batch, cache, options_.max_batch));
    const ModelConfig& c = config_;
    const int n = static_cast<int>(batch.tokens.size());
    const int r = static_cast<int>(batch.logit_rows.size());
    if (r > 0 && (logits.dtype != DType::kF32 || logits.n_rows() != r || logits.row_size() != c.n_vocab)) {
        return error(StatusCode::kInvalidArgument, "forward: logits buffer is {}, expected ({}, {}) f32",
                     logits.describe(), r, c.n_vocab);
    }
    for (int32_t id : batch.tokens) {
        if (id < 0 || id >= c.n_vocab) {
            return error(StatusCode::kInvalidArgument, "forward: token id {} outside the vocabulary of {}", id,
                         c.n_vocab);
        }
    }
    const int chunk = static_cast<int>(picked_.n_rows());

    // A decode step (a few tokens, its logits in one chunk, nothing observed) goes through the
    // backend's step graph where it has one: recorded once, then replayed as one launch.
    const bool graph_step = n <= kMaxGraphTokens && r <= chunk && !tap_;
    // The step's shape: its token count and logit rows.
    if (graph_step && backend_.begin_graph_step(static_cast<uint64_t>(n) << 32 | static_cast<uint64_t>(r))) {
        const Status ops = run_ops(batch, cache, r);
        PURBO_ASSIGN_OR_RETURN(const bool done, backend_.end_graph_step(ops.is_ok()));
        if (!done) PURBO_TRY(run_ops(batch, cache, r));
        if (r > 0) PURBO_TRY(backend_.to_host(logits_.rows(0, r), logits));
    } else {
        PURBO_TRY(run_ops(batch, cache, 0));
        // LM head on the requested rows only, in chunks (gathering rows = an embedding lookup).
        for (int r0 = 0; r0 < r; r0 += chunk) {
            const int rn = std::min(chunk, r - r0);
            PURBO_TRY(lm_head(batch.logit_rows.subspan(static_cast<size_t>(r0), static_cast<size_t>(rn))));
            PURBO_TRY(backend_.to_host(logits_.rows(0, rn), logits.rows(r0, r0 + rn)));
        }
    }
    if (policy_) PURBO_TRY(policy_->end_batch(batch.place));
    return Status::ok();
}

Status Forward::run_ops(const ForwardBatch& batch, const KvCache& cache, int logit_rows) {
    const ModelConfig& c = config_;
    const int n = static_cast<int>(batch.tokens.size());
    const Tensor x = x_.rows(0, n);
    PURBO_TRY(backend_.embedding(weights_.tok_embd, batch.tokens, x));
    tap("embedding", -1, x);
    for (int il = 0; il < c.n_layer; ++il) {
        PURBO_TRY(run_layer(il, n, batch, cache));
    }
    PURBO_TRY(backend_.rms_norm(x, weights_.out_norm, c.rms_eps, xn_.rows(0, n)));
    tap("final_norm", -1, xn_.rows(0, n));
    if (logit_rows > 0) PURBO_TRY(lm_head(batch.logit_rows.subspan(0, static_cast<size_t>(logit_rows))));
    return Status::ok();
}

Status Forward::lm_head(std::span<const int32_t> rows) {
    const int rn = static_cast<int>(rows.size());
    const Tensor picked = picked_.rows(0, rn);
    PURBO_TRY(backend_.embedding(xn_, rows, picked));
    return backend_.matmul(picked, weights_.lm_head, logits_.rows(0, rn));
}

}  // namespace purbo
