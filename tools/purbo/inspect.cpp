// purbo inspect: what a model file holds.
#include <cstdio>
#include <map>

#include "common.h"
#include "model/gguf.h"

namespace purbo::cli {

int cmd_inspect(int argc, char** argv) {
    ModelFlags mf;
    bool tensors = false;
    bool metadata = false;
    OptionSet set;
    set.usage = "purbo inspect [MODEL] [options]";
    set.description = "Prints a model's architecture, shapes, dtypes, tokenizer and chat template facts.";
    set.allow_positional = true;
    set.options.push_back({"--model", "-m", "PATH", "GGUF file or Hugging Face folder (default: SmolLM2-135M-Instruct)", &mf.model});
    set.options.push_back({"--tensors", "", "", "list every tensor", &tensors});
    set.options.push_back({"--metadata", "", "", "list every GGUF metadata key", &metadata});
    bool help = false;
    if (Status st = options_parse(set, argc, argv, 2, &help); !st.is_ok()) return report_error("inspect", st);
    if (help) return 0;
    if (set.positional.size() > 1) {
        return report_error("inspect", error(StatusCode::kInvalidArgument, "give one model, got {}", set.positional.size()));
    }
    if (!set.positional.empty()) mf.model = set.positional[0];
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
