#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace purbo {
namespace {

LogLevel level_from_env() {
    const char* env = std::getenv("PURBO_LOG");
    if (env == nullptr) return LogLevel::kWarn;
    if (std::strcmp(env, "debug") == 0) return LogLevel::kDebug;
    if (std::strcmp(env, "info") == 0) return LogLevel::kInfo;
    if (std::strcmp(env, "error") == 0) return LogLevel::kError;
    if (std::strcmp(env, "none") == 0) return LogLevel::kNone;
    return LogLevel::kWarn;
}

LogLevel g_level = level_from_env();
std::mutex g_mutex;

}  // namespace

void log_set_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_write(LogLevel level, std::string_view message) {
    static const char* kPrefix[] = {"debug", "info", "warn", "error", ""};
    std::lock_guard<std::mutex> lock(g_mutex);
    std::fprintf(stderr, "purbo %s: %.*s\n", kPrefix[static_cast<int>(level)],
                 static_cast<int>(message.size()), message.data());
}

}  // namespace purbo
