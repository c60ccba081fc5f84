// The weights of a model, named by role. Tensors are host views (into a mapped file) after
// loading, and backend tensors after Backend::prepare_weight.
#pragma once

#include <memory>
#include <vector>

#include "core/tensor.h"

namespace purbo {

// Shapes with e = n_embd, q = n_head * head_dim, kv = n_head_kv * head_dim, f = n_ff.
struct LayerWeights {
    Tensor attn_norm;  // (e,)
    Tensor wq;         // (q, e)
    Tensor wk;         // (kv, e)
    Tensor wv;         // (kv, e)
    Tensor wo;         // (e, q)
    Tensor bq, bk, bv;       // (q,), (kv,), (kv,) Qwen2 only
    Tensor q_norm, k_norm;   // (head_dim,) Qwen3 only
    Tensor ffn_norm;   // (e,)
    Tensor w_gate;     // (f, e)
    Tensor w_up;       // (f, e)
    Tensor w_down;     // (e, f)
};

struct ModelWeights {
    Tensor tok_embd;  // (n_vocab, e)
    std::vector<LayerWeights> layers;
    Tensor out_norm;  // (e,)
    Tensor lm_head;   // (n_vocab, e); the same tensor as tok_embd when embeddings are tied
};

// Calls fn(tensor) for every non-empty tensor (for conversion, upload, inspection).
template <class Fn>
void weights_for_each(ModelWeights& w, Fn&& fn) {
    auto visit = [&](Tensor& t) {
        if (!t.empty()) fn(t);
    };
    visit(w.tok_embd);
    for (LayerWeights& l : w.layers) {
        for (Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.q_norm,
                          &l.k_norm, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
            visit(*t);
        }
    }
    visit(w.out_norm);
    visit(w.lm_head);
}

}  // namespace purbo
