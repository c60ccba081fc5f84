#include "model/model-config.h"

namespace purbo {

const char* arch_name(Arch arch) {
    switch (arch) {
        case Arch::kLlama: return "llama";
        case Arch::kMistral: return "mistral";
        case Arch::kQwen2: return "qwen2";
        case Arch::kQwen3: return "qwen3";
    }
    return "unknown";
}

const char* rope_scaling_name(RopeScaling scaling) {
    switch (scaling) {
        case RopeScaling::kNone: return "none";
        case RopeScaling::kLinear: return "linear";
        case RopeScaling::kLlama3: return "llama3";
        case RopeScaling::kYarn: return "yarn";
    }
    return "unknown";
}

}  // namespace purbo
