// The x86 intrinsics, included through here so that every file sees them the same way.
// GCC 12 reports -Wmaybe-uninitialized inside the AVX-512 headers' _mm512_undefined_*
// helpers wherever their intrinsics are inlined (GCC bug 105593, fixed in GCC 13): hundreds of
// false warnings in a full build that would hide real ones. Silenced for these headers only.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
