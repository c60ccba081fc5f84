#include "core/status.h"

namespace purbo {

const char* status_code_name(StatusCode code) {
    switch (code) {
        case StatusCode::kOk: return "ok";
        case StatusCode::kInvalidArgument: return "invalid argument";
        case StatusCode::kNotFound: return "not found";
        case StatusCode::kIoError: return "i/o error";
        case StatusCode::kParseError: return "parse error";
        case StatusCode::kUnsupported: return "unsupported";
        case StatusCode::kOutOfMemory: return "out of memory";
        case StatusCode::kInternal: return "internal error";
    }
    return "unknown";
}

std::string Status::to_string() const {
    if (is_ok()) return "ok";
    return std::string(status_code_name(code_)) + ": " + message_;
}

Status Status::with_context(std::string_view context) const {
    if (is_ok()) return *this;
    return Status(code_, std::string(context) + ": " + message_);
}

void assert_fail(const char* file, int line, const char* expr, const std::string& msg) {
    std::fprintf(stderr, "%s:%d: assertion failed: %s%s%s\n", file, line, expr,
                 msg.empty() ? "" : ": ", msg.c_str());
    std::fflush(stderr);
    std::abort();
}

}  // namespace purbo
