// Logging to stderr with a level set once (PURBO_LOG=debug|info|warn|error or --verbose).
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace purbo {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kNone = 4 };

void log_set_level(LogLevel level);
LogLevel log_level();
void log_write(LogLevel level, std::string_view message);

template <class... Args>
void log_at(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
    if (level < log_level()) return;
    log_write(level, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace purbo

#define PURBO_LOG_DEBUG(...) ::purbo::log_at(::purbo::LogLevel::kDebug, __VA_ARGS__)
#define PURBO_LOG_INFO(...) ::purbo::log_at(::purbo::LogLevel::kInfo, __VA_ARGS__)
#define PURBO_LOG_WARN(...) ::purbo::log_at(::purbo::LogLevel::kWarn, __VA_ARGS__)
#define PURBO_LOG_ERROR(...) ::purbo::log_at(::purbo::LogLevel::kError, __VA_ARGS__)
