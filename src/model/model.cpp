#include "model/model.h"

#include <filesystem>

#include "core/timer.h"
#include "model/gguf.h"
#include "model/hf-loader.h"

namespace purbo {
namespace {

Result<Model> model_from_hf_folder(const std::string& dir) {
    PURBO_ASSIGN_OR_RETURN(HfModel hf, hf_model_load(dir));
    Model m;
    m.path = dir;
    m.format = "hf";
    m.config = hf.config;
    m.weights = std::move(hf.weights);
    for (auto& f : hf.files) m.keep_alive.push_back(f);
    if (hf.tokenizer_json_path.empty()) {
        return error(StatusCode::kNotFound, "{}: no tokenizer.json in the model folder", dir);
    }
    PURBO_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::from_hf_files(hf.tokenizer_json_path, hf.tokenizer_config_path));
    m.chat_template_text = std::string(tok.chat_template_text());
    m.tokenizer = std::make_shared<Tokenizer>(std::move(tok));
    if (!hf.chat_template_path.empty()) {  // chat_template.jinja takes precedence (transformers >= 4.43)
        PURBO_ASSIGN_OR_RETURN(m.chat_template_text, read_text_file(hf.chat_template_path));
    }
    m.facts.emplace_back("format", "Hugging Face folder");
    m.facts.emplace_back("safetensors files", std::to_string(hf.files.size()));
    return m;
}

}  // namespace

size_t Model::weight_bytes() const {
    size_t total = 0;
    ModelWeights copy = weights;
    const void* tied = config.tied_embeddings ? copy.tok_embd.data : nullptr;
    weights_for_each(copy, [&](Tensor& t) {
        if (&t == &copy.lm_head && t.data == tied) return;  // counted once
        total += t.nbytes();
    });
    return total;
}

Result<Model> model_load(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(path, ec)) return error(StatusCode::kNotFound, "{}: no such file or folder", path);
    Result<Model> loaded = [&]() -> Result<Model> {
        if (fs::is_directory(path, ec)) return model_from_hf_folder(path);
        PURBO_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
        PURBO_ASSIGN_OR_RETURN(Model m, model_from_gguf(file));
        m.keep_alive.push_back(std::make_shared<GgufFile>(std::move(file)));
        return m;
    }();
    if (!loaded.is_ok()) return loaded.status();
    Model& m = loaded.value();
    if (m.tokenizer->n_vocab() > m.config.n_vocab) {
        return error(StatusCode::kParseError, "{}: the tokenizer has {} tokens but the model's vocabulary has {} rows",
                     path, m.tokenizer->n_vocab(), m.config.n_vocab);
    }
    if (m.chat_template_text.empty()) {
        m.chat_template_status = error(StatusCode::kNotFound, "{}: the model has no chat template", path);
    } else if (auto t = ChatTemplate::from_text(m.chat_template_text, path); t.is_ok()) {
        m.chat_template = std::move(t.value());
    } else {
        m.chat_template_status = t.status();
    }
    return loaded;
}

}  // namespace purbo
