// libFuzzer target: hf_config_parse must return a Status for any text, and any config it
// accepts must validate and give finite RoPE tables.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "model/hf-config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto cfg = purbo::hf_config_parse(text, "fuzz/config.json");
    if (!cfg.is_ok()) return 0;
    if (!cfg->validate("fuzz").is_ok()) std::abort();
    if (cfg->rope.rotary_dim <= 4096) {
        const purbo::RopeTables t = purbo::rope_tables(cfg->rope);
        for (float f : t.inv_freq) {
            if (std::isnan(f)) std::abort();
        }
    }
    return 0;
}
