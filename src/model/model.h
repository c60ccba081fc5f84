// A loaded model: configuration, host weights (views into mapped files), tokenizer and chat
// template, from a GGUF file or a Hugging Face folder.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/chat-template.h"
#include "model/model-config.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace purbo {

struct Model {
    std::string path;
    std::string format;  // "gguf" or "hf"
    ModelConfig config;
    ModelWeights weights;  // host tensors
    std::shared_ptr<Tokenizer> tokenizer;
    std::string chat_template_text;               // as found in the model (may be empty)
    std::optional<ChatTemplate> chat_template;    // when recognised
    Status chat_template_status;                  // why chat_template is empty, if it is
    std::vector<std::pair<std::string, std::string>> facts;  // file-level facts for `inspect`
    std::vector<std::shared_ptr<const void>> keep_alive;     // mappings behind the weights

    // Total bytes of the weights as stored.
    size_t weight_bytes() const;
};

// Loads a .gguf file or a folder with config.json + safetensors + tokenizer.json.
Result<Model> model_load(const std::string& path);

// GGUF-specific part (exposed for tests): the model from an opened GGUF file.
class GgufFile;
Result<Model> model_from_gguf(const GgufFile& file);
// The tokenizer.ggml.* keys of a GGUF file.
Result<TokenizerVocab> tokenizer_vocab_from_gguf(const GgufFile& file);

}  // namespace purbo
