// ModelConfig from a Hugging Face config.json (Llama, SmolLM2, Mistral, Qwen2, Qwen3), with
// RoPE settings in either spelling: transformers 4 `rope_scaling` (+ top-level `rope_theta`)
// or transformers 5 `rope_parameters` (which holds `rope_theta`).
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"
#include "model/model-config.h"

namespace purbo {

// `source` names the file in error messages; every bad value is reported with its field.
Result<ModelConfig> hf_config_parse(std::string_view json_text, const std::string& source);
Result<ModelConfig> hf_config_load(const std::string& path);

}  // namespace purbo
