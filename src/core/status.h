// Errors in two tiers.
//  - Status / Result<T>: anything caused by input (files, JSON, flags, HTTP, memory). The
//    message names the file, the field and the offending value. Crosses module boundaries.
//  - PURBO_ASSERT: a broken invariant of our own code; prints file:line and aborts.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fmt/format.h>
#include <string>
#include <utility>
#include <variant>

namespace purbo {

enum class StatusCode {
    kOk = 0,
    kInvalidArgument,  // a flag, a request field or an API argument is wrong
    kNotFound,         // a file, tensor or key is missing
    kIoError,          // the OS refused a read/write/mmap
    kParseError,       // a file is malformed (truncated, bad offset, bad JSON)
    kUnsupported,      // well-formed but not handled (architecture, dtype, template)
    kOutOfMemory,
    kInternal,
};

const char* status_code_name(StatusCode code);

class [[nodiscard]] Status {
public:
    Status() = default;
    Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

    static Status ok() { return Status(); }

    bool is_ok() const { return code_ == StatusCode::kOk; }
    StatusCode code() const { return code_; }
    const std::string& message() const { return message_; }
    // "parse error: model.gguf: tensor 'blk.0.attn_q.weight': offset 123 beyond file size 100"
    std::string to_string() const;

    // Adds context in front of the message: with_context("loading x.gguf").
    Status with_context(std::string_view context) const;

private:
    StatusCode code_ = StatusCode::kOk;
    std::string message_;
};

template <class... Args>
Status error(StatusCode code, fmt::format_string<Args...> format, Args&&... args) {
    return Status(code, fmt::format(format, std::forward<Args>(args)...));
}

// A value or the Status that explains why there is none.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
    Result(Status status) : v_(std::move(status)) {
        if (std::get<Status>(v_).is_ok()) {
            v_ = Status(StatusCode::kInternal, "Result constructed from an ok Status");
        }
    }

    bool is_ok() const { return std::holds_alternative<T>(v_); }
    const Status& status() const {
        static const Status kOk;
        return is_ok() ? kOk : std::get<Status>(v_);
    }
    T& value() & { return std::get<T>(v_); }
    const T& value() const& { return std::get<T>(v_); }
    T&& value() && { return std::get<T>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }

private:
    std::variant<T, Status> v_;
};

[[noreturn]] void assert_fail(const char* file, int line, const char* expr, const std::string& msg);

}  // namespace purbo

#define PURBO_CONCAT_INNER(a, b) a##b
#define PURBO_CONCAT(a, b) PURBO_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when `expr` is not ok.
#define PURBO_TRY(expr)                                 \
    do {                                                \
        ::purbo::Status purbo_status_ = (expr);         \
        if (!purbo_status_.is_ok()) return purbo_status_; \
    } while (0)

// PURBO_ASSIGN_OR_RETURN(auto x, f()); declares x from a Result or returns its Status.
#define PURBO_ASSIGN_OR_RETURN(lhs, expr) \
    PURBO_ASSIGN_OR_RETURN_IMPL(PURBO_CONCAT(purbo_result_, __LINE__), lhs, expr)
#define PURBO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
    auto tmp = (expr);                              \
    if (!tmp.is_ok()) return tmp.status();          \
    lhs = std::move(tmp).value()

// Invariants of our own code (never input errors): abort with file:line.
#define PURBO_ASSERT(cond, ...)                                                   \
    do {                                                                          \
        if (!(cond)) ::purbo::assert_fail(__FILE__, __LINE__, #cond,              \
                                          std::string(__VA_OPT__(fmt::format(__VA_ARGS__)))); \
    } while (0)
