#include "model/unicode.h"

#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <vector>

namespace purbo::unicode {

Utf8Char utf8_decode(std::string_view s, size_t pos) {
    const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
    const size_t left = s.size() - pos;
    const Utf8Char invalid{kReplacementChar, 1, false};
    const uint8_t b0 = p[0];
    if (b0 < 0x80) return {b0, 1, true};
    int len = 0;
    uint32_t cp = 0;
    uint32_t min_cp = 0;
    if ((b0 & 0xE0) == 0xC0) {
        len = 2, cp = b0 & 0x1F, min_cp = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
        len = 3, cp = b0 & 0x0F, min_cp = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
        len = 4, cp = b0 & 0x07, min_cp = 0x10000;
    } else {
        return invalid;
    }
    if (left < static_cast<size_t>(len)) return invalid;
    for (int i = 1; i < len; ++i) {
        if ((p[i] & 0xC0) != 0x80) return invalid;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return invalid;
    return {cp, len, true};
}

void utf8_append(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

bool utf8_is_valid(std::string_view s) {
    for (size_t pos = 0; pos < s.size();) {
        const Utf8Char c = utf8_decode(s, pos);
        if (!c.valid) return false;
        pos += c.len;
    }
    return true;
}

std::string utf8_sanitize(std::string_view s) {
    if (utf8_is_valid(s)) return std::string(s);
    std::string out;
    out.reserve(s.size() + 16);
    for (size_t pos = 0; pos < s.size();) {
        const Utf8Char c = utf8_decode(s, pos);
        if (c.valid) {
            out.append(s.substr(pos, c.len));
        } else {
            utf8_append(out, kReplacementChar);
        }
        pos += c.len;
    }
    return out;
}

namespace {

struct ByteTables {
    std::array<std::string, 256> to_utf8;
    std::array<int, 512> from_cp;  // code points of the table are all below U+0144
};

const ByteTables& byte_tables() {
    static const ByteTables tables = [] {
        ByteTables t;
        t.from_cp.fill(-1);
        int next_extra = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable =
                (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = printable ? b : 256 + next_extra++;
            utf8_append(t.to_utf8[b], cp);
            t.from_cp[cp] = b;
        }
        return t;
    }();
    return tables;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode_utf8() {
    return byte_tables().to_utf8;
}

int byte_from_unicode(uint32_t cp) {
    const auto& t = byte_tables();
    return cp < t.from_cp.size() ? t.from_cp[cp] : -1;
}

std::string bytes_to_byte_level(std::string_view bytes) {
    const auto& table = byte_to_unicode_utf8();
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) out += table[static_cast<uint8_t>(c)];
    return out;
}

bool is_whitespace(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

Result<std::string> nfc(std::string_view text) {
    bool ascii = true;
    for (const char c : text) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
    if (ascii) return std::string(text);  // ASCII is always in NFC

    UErrorCode err = U_ZERO_ERROR;
    const UNormalizer2* norm = unorm2_getNFCInstance(&err);
    if (U_FAILURE(err)) return error(StatusCode::kInternal, "ICU NFC: {}", u_errorName(err));
    // UTF-8 -> UTF-16 (ICU's normaliser works on UTF-16), normalise, and back.
    int32_t n16 = 0;
    std::vector<UChar> src(text.size() + 1);
    u_strFromUTF8(src.data(), static_cast<int32_t>(src.size()), &n16, text.data(),
                  static_cast<int32_t>(text.size()), &err);
    if (U_FAILURE(err)) return error(StatusCode::kInvalidArgument, "NFC: text is not UTF-8");
    // NFC of a string is at most 3x as long in UTF-16 (Unicode UAX #15 expansion bound).
    std::vector<UChar> dst(static_cast<size_t>(n16) * 3 + 16);
    const int32_t n_dst =
        unorm2_normalize(norm, src.data(), n16, dst.data(), static_cast<int32_t>(dst.size()), &err);
    if (U_FAILURE(err)) return error(StatusCode::kInternal, "ICU NFC: {}", u_errorName(err));
    std::string out(static_cast<size_t>(n_dst) * 3 + 4, '\0');
    int32_t n8 = 0;
    u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &n8, dst.data(), n_dst, &err);
    if (U_FAILURE(err)) return error(StatusCode::kInternal, "ICU NFC: {}", u_errorName(err));
    out.resize(n8);
    return out;
}

}  // namespace purbo::unicode
