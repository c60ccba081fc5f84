// purbo inspect: what a model file or an adapter file holds.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string_view>
#include <vector>

#include "common.h"
#include "model/gguf.h"
#include "sparse/adapter.h"

namespace purbo::cli {
namespace {

// An adapter is a safetensors file: one named so, or any file that does not start with the
// GGUF magic (adapters written under another name). Folders are Hugging Face models.
bool is_adapter_file(const std::string& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return false;
    if (path.ends_with(".safetensors")) return true;
    std::ifstream in(path, std::ios::binary);
    char magic[4] = {};
    return in.read(magic, 4) && std::string_view(magic, 4) != "GGUF";
}

std::string join_ints(const std::vector<int>& v) {
    std::string s;
    for (int x : v) {
        if (!s.empty()) s += ' ';
        s += std::to_string(x);
    }
    return s.empty() ? "-" : s;
}

// KV head g serves query heads [g * n_gqa, (g + 1) * n_gqa) (grouped-query attention); when all
// of them are local its cache only needs the sinks and the window.
std::vector<int> local_kv_heads(const Adapter& a, int layer) {
    std::vector<int> out;
    const int n_gqa = a.n_head / a.n_head_kv;
    for (int g = 0; g < a.n_head_kv; ++g) {
        bool all_local = true;
        for (int h = g * n_gqa; h < (g + 1) * n_gqa; ++h) all_local = all_local && !a.is_retrieval(layer, h);
        if (all_local) out.push_back(g);
    }
    return out;
}

int inspect_adapter(const std::string& path, bool list_heads) {
    Result<Adapter> loaded = adapter_load(path);
    if (!loaded.is_ok()) return report_error("inspect", loaded.status());
    const Adapter& a = *loaded;
    const SparseSettings& s = a.settings;
    const int n_heads = a.n_layer * a.n_head;
    const int n_kv_heads = a.n_layer * a.n_head_kv;
    const auto percent = [](int part, int whole) { return whole == 0 ? 0.0 : 100.0 * part / whole; };

    std::printf("adapter:          %s\n", path.c_str());
    std::printf("base model:       %d layers, %d query heads, %d key/value (group of %d), head dim %d\n", a.n_layer,
                a.n_head, a.n_head_kv, a.n_head / a.n_head_kv, a.head_dim);
    std::printf("fingerprint:      %s\n",
                a.base_fingerprint.empty() ? "unknown (not checked against the model)" : a.base_fingerprint.c_str());
    std::printf("settings:         window %d, sinks %d, top-p %g, block %d, indexer rank %d\n", s.window, s.n_sink,
                static_cast<double>(s.top_p), s.block_size, s.rank);
    const int n_retrieval = static_cast<int>(a.retrieval.size());
    std::printf("retrieval heads:  %d of %d (%.1f%%)\n", n_retrieval, n_heads, percent(n_retrieval, n_heads));
    int n_local_kv = 0;
    for (int l = 0; l < a.n_layer; ++l) n_local_kv += static_cast<int>(local_kv_heads(a, l).size());
    std::printf("local kv heads:   %d of %d (%.1f%%) keep only %d sink + %d window tokens\n", n_local_kv, n_kv_heads,
                percent(n_local_kv, n_kv_heads), s.n_sink, s.window);
    if (a.has_indexer()) {
        std::printf("indexer:          %d heads x wq, wk (%d, %d) f32, %zu bytes\n", n_retrieval, s.rank, a.head_dim,
                    a.wq.nbytes() + a.wk.nbytes());
    } else {
        std::printf("indexer:          none (head classes only: retrieval heads decode dense)\n");
    }
    std::printf("calibration:      %s\n", a.calibration_info.empty() ? "-" : a.calibration_info.c_str());
    std::printf("training:         %s\n", a.training_info.empty() ? "-" : a.training_info.c_str());

    // Heads by score, highest first; ties in (layer, head) order.
    std::vector<int> order(static_cast<size_t>(n_heads));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return a.scores[static_cast<size_t>(x)] > a.scores[static_cast<size_t>(y)]; });
    const auto print_scores = [&](const char* label, auto begin, auto end) {
        std::printf("%-17s", label);
        for (auto it = begin; it != end; ++it) {
            std::printf(" L%d.H%d %.4f", *it / a.n_head, *it % a.n_head, static_cast<double>(a.scores[static_cast<size_t>(*it)]));
        }
        std::printf("\n");
    };
    const int n_show = std::min(5, n_heads);
    print_scores("top scores:", order.begin(), order.begin() + n_show);
    print_scores("bottom scores:", order.rbegin(), order.rbegin() + n_show);  // lowest first

    std::printf("\nretrieval heads by layer (query heads | kv heads whose query heads are all local):\n");
    std::vector<std::string> lists;
    size_t width = 1;
    for (int l = 0; l < a.n_layer; ++l) {
        std::vector<int> heads;
        for (int h = 0; h < a.n_head; ++h) {
            if (a.is_retrieval(l, h)) heads.push_back(h);
        }
        lists.push_back(join_ints(heads));
        width = std::max(width, lists.back().size());
    }
    for (int l = 0; l < a.n_layer; ++l) {
        std::printf("  layer %2d:  %-*s | local kv %s\n", l, static_cast<int>(width), lists[static_cast<size_t>(l)].c_str(),
                    join_ints(local_kv_heads(a, l)).c_str());
    }

    if (list_heads) {
        std::printf("\nheads:\n  layer  head  kv  score     class\n");
        const int n_gqa = a.n_head / a.n_head_kv;
        for (int l = 0; l < a.n_layer; ++l) {
            for (int h = 0; h < a.n_head; ++h) {
                std::printf("  %5d  %4d  %2d  %.6f  %s\n", l, h, h / n_gqa, static_cast<double>(a.score(l, h)),
                            a.is_retrieval(l, h) ? "retrieval" : "local");
            }
        }
    }
    return 0;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
    ModelFlags mf;
    bool tensors = false;
    bool metadata = false;
    bool heads = false;
    OptionSet set;
    set.usage = "purbo inspect [MODEL | ADAPTER.safetensors] [options]";
    set.description =
        "Prints a model's architecture, shapes, dtypes, tokenizer and chat template facts, or an adapter's settings, "
        "head classes, scores and provenance.";
    set.allow_positional = true;
    set.options.push_back({"--model", "-m", "PATH", "GGUF file, Hugging Face folder or adapter (default: SmolLM2-135M-Instruct)", &mf.model});
    set.options.push_back({"--tensors", "", "", "list every tensor", &tensors});
    set.options.push_back({"--metadata", "", "", "list every GGUF metadata key", &metadata});
    set.options.push_back({"--heads", "", "", "adapter: list every head with its score and class", &heads});
    std::string export_headwise;
    set.options.push_back({"--export-headwise", "", "CONFIG",
                           "adapter: write its head classes as rtp-llm's headwise_config into a config.json "
                           "(created, or updated keeping its other keys)",
                           &export_headwise});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok()) return report_error("inspect", st);
    if (help) return 0;
    if (set.positional.size() > 1) {
        return report_error("inspect", error(StatusCode::kInvalidArgument, "give one model, got {}", set.positional.size()));
    }
    if (!set.positional.empty()) mf.model = set.positional[0];
    // Models are GGUF files or folders; any other lone file is an adapter.
    if (!export_headwise.empty()) {
        if (!is_adapter_file(mf.model))
            return report_error("inspect", error(StatusCode::kInvalidArgument,
                                                 "--export-headwise: '{}' is not an adapter (.safetensors)", mf.model));
        Result<Adapter> a = adapter_load(mf.model);
        if (!a.is_ok()) return report_error("inspect", a.status());
        if (Status st = adapter_export_headwise_config(*a, export_headwise); !st.is_ok())
            return report_error("inspect", st);
        std::printf("wrote headwise_config of %zu retrieval heads to %s\n", a->retrieval.size(),
                    export_headwise.c_str());
        return 0;
    }
    if (is_adapter_file(mf.model)) return inspect_adapter(mf.model, heads);
    double load_ms = 0;
    Result<Model> model = load_model(mf, &load_ms);
    if (!model.is_ok()) return report_error("inspect", model.status());
    const Model& m = *model;
    const ModelConfig& c = m.config;

    std::printf("model:            %s\n", m.path.c_str());
    for (const auto& [k, v] : m.facts) std::printf("%-17s %s\n", (k + ":").c_str(), v.c_str());
    std::printf("name:             %s\n", c.name.c_str());
    std::printf("architecture:     %s\n", arch_name(c.arch));
    std::printf("layers:           %d\n", c.n_layer);
    std::printf("hidden size:      %d\n", c.n_embd);
    std::printf("heads:            %d query, %d key/value (group of %d), head dim %d\n", c.n_head, c.n_head_kv,
                c.n_gqa(), c.head_dim);
    std::printf("mlp size:         %d\n", c.n_ff);
    std::printf("vocabulary:       %d\n", c.n_vocab);
    std::printf("context (train):  %d\n", c.n_ctx_train);
    std::printf("rms norm eps:     %g\n", static_cast<double>(c.rms_eps));
    std::printf("rope:             theta %g, %d rotary dims, scaling %s", static_cast<double>(c.rope.theta),
                c.rope.rotary_dim, rope_scaling_name(c.rope.scaling));
    if (c.rope.scaling != RopeScaling::kNone) std::printf(" x%g", static_cast<double>(c.rope.factor));
    std::printf("\n");
    std::printf("qkv bias:         %s\n", c.attn_qkv_bias ? "yes" : "no");
    std::printf("q/k norm:         %s\n", c.attn_qk_norm ? "yes" : "no");
    std::printf("tied embeddings:  %s\n", c.tied_embeddings ? "yes" : "no");

    // Weights by dtype.
    std::map<std::string, std::pair<int, size_t>> by_dtype;
    int64_t n_params = 0;
    ModelWeights w = m.weights;
    weights_for_each(w, [&](Tensor& t) {
        if (&t == &w.lm_head && c.tied_embeddings) return;
        auto& e = by_dtype[std::string(dtype_name(t.dtype))];
        e.first += 1;
        e.second += t.nbytes();
        n_params += t.numel();
    });
    std::printf("parameters:       %.2f M, %.2f MiB\n", static_cast<double>(n_params) / 1e6,
                static_cast<double>(m.weight_bytes()) / (1024.0 * 1024.0));
    for (const auto& [name, e] : by_dtype) {
        std::printf("  %-6s          %d tensors, %.2f MiB\n", name.c_str(), e.first, static_cast<double>(e.second) / (1024.0 * 1024.0));
    }
    const Tokenizer& tok = *m.tokenizer;
    std::printf("tokenizer:        %d tokens, bos %d, eos %d, stop ids:", tok.n_vocab(), tok.bos_id(), tok.eos_id());
    for (int32_t id : tok.stop_ids()) std::printf(" %d (%s)", id, tok.token_to_piece(id).c_str());
    std::printf("\n");
    if (m.chat_template) {
        std::printf("chat template:    %s\n", std::string(m.chat_template->name()).c_str());
    } else {
        std::printf("chat template:    none (%s)\n", m.chat_template_status.message().c_str());
    }
    std::printf("load time:        %.1f ms\n", load_ms);
    if (heads) std::printf("\n(--heads applies to adapters)\n");

    if (tensors || metadata) {
        if (m.format != "gguf") {
            if (metadata) std::printf("\n(--metadata applies to GGUF files)\n");
            if (tensors) {
                std::printf("\ntensors:\n");
                ModelWeights ww = m.weights;
                weights_for_each(ww, [&](Tensor& t) { std::printf("  %-40s %s\n", t.name.c_str(), t.describe().c_str()); });
            }
            return 0;
        }
        Result<GgufFile> file = GgufFile::open(m.path);
        if (!file.is_ok()) return report_error("inspect", file.status());
        if (metadata) {
            std::printf("\nmetadata:\n");
            for (const auto& [key, value] : file->metadata()) {
                std::printf("  %-45s %s\n", key.c_str(), value.to_string(4).c_str());
            }
        }
        if (tensors) {
            std::printf("\ntensors:\n");
            for (const GgufTensorInfo& t : file->tensors()) {
                std::string shape;
                for (int64_t d : t.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
                std::printf("  %-32s %-6s (%s)\n", t.name.c_str(), gguf_ggml_type_name(t.ggml_type).c_str(), shape.c_str());
            }
        }
    }
    return 0;
}

}  // namespace purbo::cli
