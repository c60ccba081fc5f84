// The histogram of block masses behind the fast top-p block selection (method.md section 4),
// defined once for the cpu backend (cpu-select.cpp) and the cuda one (cuda-select.cu).
// Includes nothing, so the device compiler can take it.
//
// A block's mass is kept as its unnormalised log2 mass a_b = m_b + log2(l_b), with
// m_b = max_t z_t and l_b = sum_t 2^(z_t - m_b) over its keys (z in the log2 domain:
// scale * log2(e) * iq . k). Bins are keyed on how far a block lies below the heaviest block
// A = max_b a_b, in eighths of an octave:
//     bin(b) = min(kSelectBins - 1, floor((A - a_b) * kSelectBinsPerOctave))
// Bin 0 holds the blocks within a factor 2^(1/8) of the heaviest, bin k those k/8 to (k+1)/8
// octaves below it, and the last bin everything 31.875 or more octaves below (mass under
// 3.2e-10 of the heaviest block: a few thousand such blocks together stay under 1e-6).
// Each bin accumulates the masses 2^(a_b - A) of its blocks.
//
// Selection then starts from the mass of the always-kept blocks (block 0 and the block of the
// query's position, which are not in the histogram), adds whole bins in the order 0, 1, 2, ...
// while the kept mass stays below the target (the always-kept mass plus top_p times the rest,
// backend.h), and resolves the bin that would reach it (the boundary bin) exactly: its blocks by
// decreasing a_b, ties (equal f32 a_b) lower block id first, the reference's tie rule, until the
// kept mass reaches the target.
//
// Why the bins are keyed on the block mass and not on the block max m_b as in the paper: the
// selection ranks blocks by mass, and m_b does not order blocks by mass (one sharp key against
// many moderately high ones), so whole bins above a boundary keyed on m_b are not the blocks
// the exact sort takes, and the result would differ from the reference even in exact
// arithmetic (measured: with bins keyed on m_b, 27 of the 48 select_blocks cases of
// tests/backend/test-backend-ops.cpp keep other blocks than cpu-ref). Keyed on a_b (one log2 per
// block more), the bin order is the sort order: every block of a bin outweighs every block of a
// later bin, so only the boundary bin needs ordering, and the result equals the reference's except
// where rounding flips a comparison at the boundary.
#pragma once

#if defined(__CUDACC__)
#define PURBO_SELECT_HOST_DEVICE __host__ __device__
#else
#define PURBO_SELECT_HOST_DEVICE
#endif

namespace purbo {

constexpr int kSelectBins = 256;
constexpr int kSelectBinsPerOctave = 8;
static_assert(kSelectBins % kSelectBinsPerOctave == 0, "the bins cover whole octaves");

// log2(e): scores are taken in the log2 domain, 2^(scale log2(e) q.k) = e^(scale q.k).
constexpr float kSelectLog2e = 1.4426950408889634f;

// The bin of a block whose log2 mass lies `below` = A - a_b >= 0 octaves under the heaviest
// block's. Monotone: a lighter block never lands in an earlier bin than a heavier one. NaN
// (from non-finite inputs) lands in the last bin.
PURBO_SELECT_HOST_DEVICE inline int select_mass_bin(float below) {
    const float scaled = below * static_cast<float>(kSelectBinsPerOctave);
    return scaled < static_cast<float>(kSelectBins - 1) ? static_cast<int>(scaled)
                                                        : kSelectBins - 1;
}

}  // namespace purbo
