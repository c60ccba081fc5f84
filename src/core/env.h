// Switches read from the environment (speed and debugging knobs, never correctness).
#pragma once

#include <cstdlib>
#include <cstring>

namespace purbo {

// Whether the variable is set to anything but the empty string or "0".
inline bool env_flag(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' && std::strcmp(value, "0") != 0;
}

}  // namespace purbo
