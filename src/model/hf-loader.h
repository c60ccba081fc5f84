// Loads a Hugging Face model folder: config.json, model.safetensors or a sharded
// model.safetensors.index.json, and the paths of the tokenizer files.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model-config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace purbo {

struct HfModel {
    ModelConfig config;
    // Large matrices are views into `files` (in the file's dtype); norm weights and biases are
    // owned f32 copies.
    ModelWeights weights;
    std::vector<std::shared_ptr<SafetensorsFile>> files;
    std::string tokenizer_json_path;    // empty when absent
    std::string tokenizer_config_path;  // empty when absent
    std::string chat_template_path;     // chat_template.jinja; empty when absent
};

Result<HfModel> hf_model_load(const std::string& dir);

}  // namespace purbo
