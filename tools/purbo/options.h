// Command-line options of a subcommand, declared as a table: each option binds a flag
// (long and optional short name) to a variable. One parser gives every subcommand the same
// errors ("--temp: 'abc' is not a number") and the same --help layout.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/status.h"

namespace purbo::cli {

struct Option {
    std::string long_name;   // "--temp"
    std::string short_name;  // "-t" or empty
    std::string value_name;  // "N", "FILE"; empty for a switch
    std::string help;
    std::variant<bool*, int*, float*, std::string*, std::vector<std::string>*> target;
};

struct OptionSet {
    std::string usage;        // "purbo run [options]"
    std::string description;  // one paragraph
    std::vector<Option> options;
    std::vector<std::string> positional;  // filled with arguments that are not flags
    bool allow_positional = false;
    std::vector<std::string> given;  // long names of the options on the command line

    // Whether the option was on the command line (its variable may still hold its default).
    bool was_given(std::string_view long_name) const;
};

// Parses argv[first..argc). --help / -h prints the help and sets *help_shown.
Status options_parse(OptionSet& set, int argc, char** argv, int first, bool* help_shown);
std::string options_help(const OptionSet& set);

}  // namespace purbo::cli
