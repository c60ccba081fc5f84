#include "options.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace purbo::cli {
namespace {

Status parse_int(const std::string& flag, const std::string& text, int* out) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || v < INT32_MIN || v > INT32_MAX) {
        return error(StatusCode::kInvalidArgument, "{}: '{}' is not an integer", flag, text);
    }
    *out = static_cast<int>(v);
    return Status::ok();
}

Status parse_float(const std::string& flag, const std::string& text, float* out) {
    errno = 0;
    char* end = nullptr;
    const float v = std::strtof(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(v)) {
        return error(StatusCode::kInvalidArgument, "{}: '{}' is not a number", flag, text);
    }
    *out = v;
    return Status::ok();
}

}  // namespace

bool OptionSet::was_given(std::string_view long_name) const {
    return std::find(given.begin(), given.end(), long_name) != given.end();
}

Status options_parse(OptionSet& set, int argc, char** argv, int first, bool* help_shown) {
    *help_shown = false;
    for (int i = first; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            std::fputs(options_help(set).c_str(), stdout);
            *help_shown = true;
            return Status::ok();
        }
        if (arg.size() < 2 || arg[0] != '-' || (arg[1] >= '0' && arg[1] <= '9')) {
            if (!set.allow_positional) {
                return error(StatusCode::kInvalidArgument, "unexpected argument '{}' (see --help)", arg);
            }
            set.positional.push_back(arg);
            continue;
        }
        std::string inline_value;
        bool has_inline = false;
        if (const size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            has_inline = true;
        }
        Option* opt = nullptr;
        for (Option& o : set.options) {
            if (arg == o.long_name || (!o.short_name.empty() && arg == o.short_name)) opt = &o;
        }
        if (opt == nullptr) return error(StatusCode::kInvalidArgument, "unknown option '{}' (see --help)", arg);
        set.given.push_back(opt->long_name);
        if (opt->value_name.empty()) {
            if (has_inline) return error(StatusCode::kInvalidArgument, "{} takes no value", arg);
            *std::get<bool*>(opt->target) = true;
            continue;
        }
        std::string value;
        if (has_inline) {
            value = inline_value;
        } else {
            if (i + 1 >= argc) return error(StatusCode::kInvalidArgument, "{} needs a value ({})", arg, opt->value_name);
            value = argv[++i];
        }
        Status st = std::visit(
            [&](auto* target) -> Status {
                using T = std::remove_pointer_t<decltype(target)>;
                if constexpr (std::is_same_v<T, int>) return parse_int(opt->long_name, value, target);
                else if constexpr (std::is_same_v<T, float>) return parse_float(opt->long_name, value, target);
                else if constexpr (std::is_same_v<T, std::string>) { *target = value; return Status::ok(); }
                else if constexpr (std::is_same_v<T, std::vector<std::string>>) { target->push_back(value); return Status::ok(); }
                else return error(StatusCode::kInternal, "{}: switch given a value", opt->long_name);
            },
            opt->target);
        PURBO_TRY(st);
    }
    return Status::ok();
}

std::string options_help(const OptionSet& set) {
    std::string out = "usage: " + set.usage + "\n\n" + set.description + "\n\noptions:\n";
    for (const Option& o : set.options) {
        std::string flags = o.short_name.empty() ? "    " + o.long_name : o.short_name + ", " + o.long_name;
        if (!o.value_name.empty()) flags += " " + o.value_name;
        out += fmt::format("  {:<28} {}\n", flags, o.help);
    }
    out += fmt::format("  {:<28} {}\n", "-h, --help", "show this help");
    return out;
}

}  // namespace purbo::cli
