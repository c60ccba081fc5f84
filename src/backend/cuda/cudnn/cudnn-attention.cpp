// cuDNN fused SDPA (flash attention forward) for prefill chunks, through the cudnn-frontend
// graph API. See cuda-cudnn.h for the contract.
//
// Layouts given to cuDNN (dims are always (batch, heads, sequence, head dim)):
//  - Q and O: our (n_pad, h, d) rows, i.e. strides (-, d, h d, 1).
//  - K and V: the sequence's cache heads, (g, c, d) with strides (-, c d, d, 1); g < h is
//    cuDNN's grouped-query attention.
//  - The true lengths (n queries, pos0 + n keys) come as 1-element int32 device tensors with
//    the padding mask on; the causal diagonal is bottom-right aligned to them, so query i
//    (position pos0 + i) sees keys <= pos0 + i, and with a window only those > pos0 + i -
//    window: the same rule as attention_key_visible.
//  - A call from position 0 whose padded rows fit the cache (a prompt's first chunk) needs no
//    lengths: the causal diagonal aligned to the top left lets query i see keys <= i, and the
//    rows past n (junk in, junk out) see only keys past the prompt's. Its graph leaves the
//    padding mask out, as PyTorch's dense SDPA does.
//
// Paged calls (block-sparse prefill's selected heads, cuda-cudnn.h): Q and O (b, 1, rows, d),
// the cache a container (pages, 1, page, d), a page table (b, 1, max_pages, 1) and per-item
// lengths (b, 1, 1, 1), the same bottom-right causal diagonal.
//
// Graphs are cached per shape (heads, head dim, padded rows, capacity, window, scale, row
// width, with or without the log-sum-exp, from position 0 or not; for paged calls items, page,
// pages): building one takes 0.1-1 s, a call only binds pointers.
#include <cudnn.h>
#include <cudnn_frontend.h>

#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backend/cuda/cuda-cudnn.h"
#include "core/env.h"
#include "core/log.h"

namespace purbo::cuda {
namespace {

namespace fe = cudnn_frontend;

enum Uid : int64_t { kQ = 1, kK, kV, kO, kSeqQ, kSeqKv, kLse, kPageTable };

// (hq, hk, d, n_pad, c, window, scale bits, q row width, with lse, from position 0)
using GraphKey = std::tuple<int, int, int, int, int64_t, int, uint32_t, int64_t, bool, bool>;
// (items, query rows, page, max pages, d, container pages, scale bits)
using PagedKey = std::tuple<int, int, int, int, int, int64_t, uint32_t>;

// A call whose graph needs no lengths (see the layouts above).
bool from_start(const CudnnPrefill& call) {
    return call.pos0 == 0 && call.n_pad <= call.c;
}

uint32_t float_bits(float x) {
    uint32_t bits = 0;
    std::memcpy(&bits, &x, 4);
    return bits;
}

class CudnnAttentionImpl final : public CudnnAttention {
public:
    CudnnAttentionImpl(cudnnHandle_t handle, cudaStream_t stream) : handle_(handle), stream_(stream) {}

    ~CudnnAttentionImpl() override {
        if (workspace_ != nullptr) (void)cudaFree(workspace_);
        if (lengths_ != nullptr) (void)cudaFree(lengths_);
        cudnnDestroy(handle_);
    }

    Status prefill(const CudnnPrefill& call) override {
        PURBO_ASSIGN_OR_RETURN(fe::graph::Graph * graph, graph_for(call));
        std::unordered_map<int64_t, void*> pack = {{kQ, const_cast<uint16_t*>(call.q)},
                                                   {kK, const_cast<void*>(call.k)},
                                                   {kV, const_cast<void*>(call.v)},
                                                   {kO, call.out}};
        if (!from_start(call)) {
            if (lengths_ == nullptr && cudaMalloc(&lengths_, 2 * sizeof(int32_t)) != cudaSuccess)
                return error(StatusCode::kOutOfMemory, "cuDNN attention: length buffer");
            // Pageable source: copied out before the call returns (the runtime stages it).
            const int32_t lengths[2] = {call.n, call.pos0 + call.n};
            if (cudaMemcpyAsync(lengths_, lengths, sizeof(lengths), cudaMemcpyHostToDevice,
                                stream_) != cudaSuccess)
                return error(StatusCode::kInternal, "cuDNN attention: copying the lengths");
            pack[kSeqQ] = lengths_;
            pack[kSeqKv] = lengths_ + 1;
        }
        if (call.lse != nullptr) pack[kLse] = call.lse;
        if (tune_dense_)
            PURBO_TRY(
                tune(graph, pack, fmt::format("dense: heads {} rows {}", call.hq, call.n_pad)));
        return execute(graph, pack);
    }

    Status paged_prefill(const CudnnPagedPrefill& call) override {
        PURBO_ASSIGN_OR_RETURN(fe::graph::Graph * graph, paged_graph_for(call));
        std::unordered_map<int64_t, void*> pack = {
            {kQ, const_cast<uint16_t*>(call.q)},
            {kK, const_cast<void*>(call.k)},
            {kV, const_cast<void*>(call.v)},
            {kO, call.out},
            {kSeqQ, const_cast<int32_t*>(call.seq_q)},
            {kSeqKv, const_cast<int32_t*>(call.seq_kv)},
            {kPageTable, const_cast<int32_t*>(call.page_table)}};
        // Every engine cuDNN offers for the shape, timed on the first call's data, the
        // fastest kept: its first choice for short paged items is not always the fastest.
        PURBO_TRY(tune(
            graph, pack,
            fmt::format("paged items {} page {} pages {}", call.b, call.page, call.max_pages)));
        return execute(graph, pack);
    }

  private:
    // On a graph's first call: every plan it was built with timed on this call's data, the
    // fastest kept first.
    Status tune(fe::graph::Graph* graph, std::unordered_map<int64_t, void*>& pack,
                const std::string& shape) {
        if (!tuned_.insert(graph).second || graph->get_execution_plan_count() <= 1)
            return Status::ok();
        PURBO_TRY(reserve_workspace(graph->get_autotune_workspace_size()));
        if (fe::error_t e = graph->autotune(handle_, pack, workspace_); e.is_bad())
            return error(StatusCode::kInternal, "cuDNN attention: autotune: {}", e.get_message());
        std::string name;
        (void)graph->get_plan_name_at_index(0, name);
        PURBO_LOG_INFO("cuDNN attention: {}: fastest of {} plans {}", shape,
                       graph->get_execution_plan_count(), name);
        return Status::ok();
    }

    Status reserve_workspace(int64_t workspace_bytes) {
        if (workspace_bytes > workspace_size_) {
            if (workspace_ != nullptr)
                (void)cudaFree(workspace_);  // waits for work that may use it
            workspace_ = nullptr;
            workspace_size_ = 0;
            if (cudaMalloc(&workspace_, static_cast<size_t>(workspace_bytes)) != cudaSuccess)
                return error(StatusCode::kOutOfMemory, "cuDNN attention: workspace of {} bytes",
                             workspace_bytes);
            workspace_size_ = workspace_bytes;
        }
        return Status::ok();
    }

    Status execute(fe::graph::Graph* graph, std::unordered_map<int64_t, void*>& pack) {
        int64_t workspace_bytes = 0;
        if (fe::error_t e = graph->get_workspace_size(workspace_bytes); e.is_bad())
            return error(StatusCode::kInternal, "cuDNN attention: workspace size: {}",
                         e.get_message());
        PURBO_TRY(reserve_workspace(workspace_bytes));
        if (fe::error_t e = graph->execute(handle_, pack, workspace_); e.is_bad())
            return error(StatusCode::kInternal, "cuDNN attention: execute: {}", e.get_message());
        return Status::ok();
    }

    // Validates and plans a built graph; a shape cuDNN has no engine for is remembered as
    // null in `cache`, so that it falls back at once next time.
    // A graph of the cache: planned before, or null where cuDNN had no engine for its shape.
    static Result<fe::graph::Graph*> built(const std::unique_ptr<fe::graph::Graph>& graph) {
        if (!graph)
            return error(StatusCode::kUnsupported, "cuDNN attention: no engine for this shape");
        return graph.get();
    }

    // every_plan: every engine the heuristics list, to be timed (paged_prefill); otherwise
    // the heuristics' first choice.
    template <class Key>
    Result<fe::graph::Graph*> plan(std::map<Key, std::unique_ptr<fe::graph::Graph>>& cache,
                                   const Key& key, std::unique_ptr<fe::graph::Graph> graph,
                                   const std::string& shape, bool every_plan = false) {
        fe::error_t e = graph->validate();
        if (e.is_good()) e = graph->build_operation_graph(handle_);
        if (e.is_good())
            e = every_plan
                    ? graph->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK})
                    : graph->create_execution_plans({fe::HeurMode_t::A});
        if (e.is_good()) e = graph->check_support();
        if (e.is_good())
            e = graph->build_plans(every_plan ? fe::BuildPlanPolicy_t::ALL
                                              : fe::BuildPlanPolicy_t::HEURISTICS_CHOICE);
        if (e.is_bad()) {
            PURBO_LOG_INFO("cuDNN attention: {}: {}", shape, e.get_message());
            cache.emplace(key, nullptr);
            return error(StatusCode::kUnsupported, "cuDNN attention: {}", e.get_message());
        }
        if (every_plan)
            PURBO_LOG_INFO("cuDNN attention: {}: {} plans", shape,
                           graph->get_execution_plan_count());
        fe::graph::Graph* raw = graph.get();
        cache.emplace(key, std::move(graph));
        return raw;
    }

    static std::unique_ptr<fe::graph::Graph> new_graph() {
        auto graph = std::make_unique<fe::graph::Graph>();
        graph->set_io_data_type(fe::DataType_t::BFLOAT16)
            .set_intermediate_data_type(fe::DataType_t::FLOAT)
            .set_compute_data_type(fe::DataType_t::FLOAT);
        return graph;
    }

    static std::shared_ptr<fe::graph::Tensor_attributes> tensor(fe::graph::Graph& graph,
                                                                const char* name, int64_t uid,
                                                                std::vector<int64_t> dim,
                                                                std::vector<int64_t> stride) {
        return graph.tensor(
            fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dim).set_stride(
                stride));
    }

    static std::shared_ptr<fe::graph::Tensor_attributes> int_tensor(fe::graph::Graph& graph,
                                                                    const char* name, int64_t uid,
                                                                    std::vector<int64_t> dim,
                                                                    std::vector<int64_t> stride) {
        auto t = tensor(graph, name, uid, std::move(dim), std::move(stride));
        t->set_data_type(fe::DataType_t::INT32);
        return t;
    }

    // The causal diagonal aligned to the bottom right of each of the b items' true lengths
    // (kSeqQ, kSeqKv: (b,) int32 on the device), past which the padding mask hides keys.
    static void causal_to_lengths(fe::graph::Graph& graph, fe::graph::SDPA_attributes& options,
                                  int64_t b) {
        options.set_diagonal_alignment(fe::DiagonalAlignment_t::BOTTOM_RIGHT)
            .set_padding_mask(true)
            .set_seq_len_q(int_tensor(graph, "seq_q", kSeqQ, {b, 1, 1, 1}, {1, 1, 1, 1}))
            .set_seq_len_kv(int_tensor(graph, "seq_kv", kSeqKv, {b, 1, 1, 1}, {1, 1, 1, 1}));
    }

    Result<fe::graph::Graph*> paged_graph_for(const CudnnPagedPrefill& call) {
        const PagedKey key{call.b,
                           call.rows,
                           call.page,
                           call.max_pages,
                           call.d,
                           call.pages,
                           float_bits(call.scale)};
        if (auto it = paged_graphs_.find(key); it != paged_graphs_.end()) return built(it->second);
        auto graph = new_graph();
        const int64_t b = call.b, rows = call.rows, page = call.page, d = call.d,
                      pages = call.pages, max_pages = call.max_pages;
        auto q = tensor(*graph, "q", kQ, {b, 1, rows, d}, {rows * d, rows * d, d, 1});
        auto k = tensor(*graph, "k", kK, {pages, 1, page, d}, {page * d, page * d, d, 1});
        auto v = tensor(*graph, "v", kV, {pages, 1, page, d}, {page * d, page * d, d, 1});
        auto table = int_tensor(*graph, "page_table", kPageTable, {b, 1, max_pages, 1},
                                {max_pages, max_pages, 1, 1});
        auto options = fe::graph::SDPA_attributes()
                           .set_name("paged_prefill")
                           .set_generate_stats(false)
                           .set_attn_scale(call.scale)
                           .set_diagonal_band_right_bound(0)
                           .set_paged_attention_k_table(table)
                           .set_paged_attention_v_table(table)
                           .set_paged_attention_max_seq_len_kv(static_cast<int>(max_pages * page));
        causal_to_lengths(*graph, options, b);
        auto [o, stats] = graph->sdpa(q, k, v, options);
        (void)stats;
        o->set_output(true)
            .set_uid(kO)
            .set_dim({b, 1, rows, d})
            .set_stride({rows * d, rows * d, d, 1});
        return plan(paged_graphs_, key, std::move(graph),
                    fmt::format("paged: items {} rows {} page {} pages {} of {} d {}", b, rows,
                                page, max_pages, pages, d),
                    true);
    }

    Result<fe::graph::Graph*> graph_for(const CudnnPrefill& call) {
        const GraphKey key{call.hq,
                           call.hk,
                           call.d,
                           call.n_pad,
                           call.c,
                           call.window,
                           float_bits(call.scale),
                           call.q_row,
                           call.lse != nullptr,
                           from_start(call)};
        if (auto it = graphs_.find(key); it != graphs_.end()) return built(it->second);
        auto graph = new_graph();
        const int64_t h = call.hq, g = call.hk, d = call.d, n = call.n_pad, c = call.c, row = call.q_row;
        auto q = tensor(*graph, "q", kQ, {1, h, n, d}, {n * row, d, row, 1});
        auto k = tensor(*graph, "k", kK, {1, g, c, d}, {g * c * d, c * d, d, 1});
        auto v = tensor(*graph, "v", kV, {1, g, c, d}, {g * c * d, c * d, d, 1});
        auto options = fe::graph::SDPA_attributes()
                           .set_name("prefill")
                           .set_generate_stats(call.lse != nullptr)
                           .set_attn_scale(call.scale)
                           .set_diagonal_band_right_bound(0);
        if (from_start(call)) {
            options.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT);
        } else {
            causal_to_lengths(*graph, options, 1);
        }
        if (call.window > 0) options.set_diagonal_band_left_bound(call.window);
        auto [o, stats] = graph->sdpa(q, k, v, options);
        o->set_output(true).set_uid(kO).set_dim({1, h, n, d}).set_stride({n * row, d, row, 1});
        if (stats) {
            stats->set_output(true).set_uid(kLse).set_data_type(fe::DataType_t::FLOAT);
            stats->set_dim({1, h, n, 1}).set_stride({h * n, n, 1, 1});
        }

        return plan(graphs_, key, std::move(graph),
                    fmt::format("h {} g {} d {} rows {} cache {} window {}{}", h, g, d, n, c,
                                call.window, from_start(call) ? " from position 0" : ""),
                    tune_dense_);
    }

    cudnnHandle_t handle_;
    cudaStream_t stream_;
    std::map<GraphKey, std::unique_ptr<fe::graph::Graph>> graphs_;
    std::map<PagedKey, std::unique_ptr<fe::graph::Graph>> paged_graphs_;
    std::set<fe::graph::Graph*> tuned_;  // graphs whose engines have been timed
    // PURBO_CUDNN_TUNE=1: dense graphs too are built with every engine and timed on their
    // first call (for measuring; the heuristics' first choice otherwise).
    const bool tune_dense_ = env_flag("PURBO_CUDNN_TUNE");
    void* workspace_ = nullptr;
    int64_t workspace_size_ = 0;
    int32_t* lengths_ = nullptr;  // (2,): query rows, key rows of the current call
};

}  // namespace

int cudnn_padded_rows(int n) {
    int rows = 64;
    while (rows < n) rows *= 2;
    return rows;
}

std::unique_ptr<CudnnAttention> CudnnAttention::create(cudaStream_t stream) {
    cudnnHandle_t handle = nullptr;
    if (const cudnnStatus_t st = cudnnCreate(&handle); st != CUDNN_STATUS_SUCCESS) {
        PURBO_LOG_INFO("cuDNN attention: off ({})", cudnnGetErrorString(st));
        return nullptr;
    }
    if (const cudnnStatus_t st = cudnnSetStream(handle, stream); st != CUDNN_STATUS_SUCCESS) {
        PURBO_LOG_INFO("cuDNN attention: off (set stream: {})", cudnnGetErrorString(st));
        cudnnDestroy(handle);
        return nullptr;
    }
    PURBO_LOG_INFO("cuDNN attention: cuDNN {} for prefill", cudnnGetVersion());
    return std::make_unique<CudnnAttentionImpl>(handle, stream);
}

}  // namespace purbo::cuda
