// Wall-clock time for timing lines and benchmarks.
#pragma once

#include <chrono>

namespace purbo {

inline double time_now_ms() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double, std::milli>(clock::now().time_since_epoch()).count();
}

}  // namespace purbo
