// libFuzzer target: adapter_parse must return a Status for any input, never crash; an adapter
// it accepts must be internally consistent (validate passes) and its tensors readable.
#include <cstddef>
#include <cstdint>
#include <span>

#include "sparse/adapter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto adapter = purbo::adapter_parse(std::span<const uint8_t>(data, size), "fuzz");
    if (!adapter.is_ok()) return 0;
    if (!adapter->validate("fuzz").is_ok()) __builtin_trap();
    volatile float sink = 0;
    for (float s : adapter->scores) sink = sink + s;
    if (adapter->has_indexer() && adapter->wq.numel() > 0)
        sink = sink + adapter->wq.f32()[adapter->wq.numel() - 1] + adapter->wk.f32()[0];
    (void)sink;
    return 0;
}
