// UTF-8 helpers, the GPT-2 byte <-> unicode table of byte-level BPE, and NFC (ICU).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace purbo::unicode {

constexpr uint32_t kReplacementChar = 0xFFFD;

// One decoded code point; an invalid or truncated sequence decodes as (U+FFFD, len 1, !valid).
struct Utf8Char {
    uint32_t cp;
    int len;
    bool valid;
};
Utf8Char utf8_decode(std::string_view s, size_t pos);
void utf8_append(std::string& out, uint32_t cp);
bool utf8_is_valid(std::string_view s);
// Replaces every byte that is not part of a valid sequence by U+FFFD.
std::string utf8_sanitize(std::string_view s);

// GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in order, so every byte has a visible, non-space character ("Ġ" is the space).
const std::array<std::string, 256>& byte_to_unicode_utf8();
// Inverse of the table: the byte a code point stands for, or -1.
int byte_from_unicode(uint32_t cp);
// Maps raw bytes to their byte-level text.
std::string bytes_to_byte_level(std::string_view bytes);

// Rust char::is_whitespace (Unicode White_Space), which the added-token lstrip/rstrip uses.
bool is_whitespace(uint32_t cp);

// Unicode NFC of valid UTF-8 text.
Result<std::string> nfc(std::string_view text);

}  // namespace purbo::unicode
