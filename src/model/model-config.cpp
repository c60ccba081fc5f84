#include "model/model-config.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace purbo {

const char* arch_name(Arch arch) {
    switch (arch) {
        case Arch::kLlama:
            return "llama";
        case Arch::kMistral:
            return "mistral";
        case Arch::kQwen2:
            return "qwen2";
        case Arch::kQwen3:
            return "qwen3";
    }
    return "unknown";
}

const char* rope_scaling_name(RopeScaling scaling) {
    switch (scaling) {
        case RopeScaling::kNone:
            return "none";
        case RopeScaling::kLinear:
            return "linear";
        case RopeScaling::kLlama3:
            return "llama3";
        case RopeScaling::kYarn:
            return "yarn";
    }
    return "unknown";
}

}  // namespace purbo

namespace purbo {

// ---- validation ----------------------------------------------------------------------------

Status ModelConfig::validate(const std::string& source) const {
    auto bad = [&](std::string_view field, auto value, std::string_view why) {
        return error(StatusCode::kInvalidArgument, "{}: {} = {} {}", source, field, value, why);
    };
    if (n_layer <= 0) return bad("n_layer", n_layer, "must be positive");
    if (n_embd <= 0) return bad("n_embd", n_embd, "must be positive");
    if (n_head <= 0) return bad("n_head", n_head, "must be positive");
    if (n_head_kv <= 0) return bad("n_head_kv", n_head_kv, "must be positive");
    if (n_head % n_head_kv != 0) {
        return bad("n_head_kv", n_head_kv, fmt::format("does not divide n_head {}", n_head));
    }
    if (head_dim <= 0 || head_dim % 2 != 0) {
        return bad("head_dim", head_dim, "must be positive and even");
    }
    if (n_ff <= 0) return bad("n_ff", n_ff, "must be positive");
    if (n_vocab <= 0) return bad("n_vocab", n_vocab, "must be positive");
    if (n_ctx_train <= 0) return bad("n_ctx_train", n_ctx_train, "must be positive");
    if (!(rms_eps > 0.0f) || !std::isfinite(rms_eps)) {
        return bad("rms_eps", rms_eps, "must be positive and finite");
    }
    if (sliding_window < 0) return bad("sliding_window", sliding_window, "must not be negative");
    if (!(rope.theta > 0.0f) || !std::isfinite(rope.theta)) {
        return bad("rope.theta", rope.theta, "must be positive and finite");
    }
    if (rope.rotary_dim <= 0 || rope.rotary_dim % 2 != 0 || rope.rotary_dim > head_dim) {
        return bad("rope.rotary_dim", rope.rotary_dim,
                   fmt::format("must be positive, even and at most head_dim {}", head_dim));
    }
    if (rope.scaling != RopeScaling::kNone &&
        (!(rope.factor > 0.0f) || !std::isfinite(rope.factor))) {
        return bad("rope.factor", rope.factor, "must be positive and finite");
    }
    if (rope.scaling == RopeScaling::kLlama3) {
        if (!(rope.low_freq_factor > 0.0f)) {
            return bad("rope.low_freq_factor", rope.low_freq_factor, "must be positive");
        }
        if (!(rope.high_freq_factor > rope.low_freq_factor)) {
            return bad("rope.high_freq_factor", rope.high_freq_factor,
                       fmt::format("must exceed low_freq_factor {}", rope.low_freq_factor));
        }
    }
    if (rope.scaling == RopeScaling::kLlama3 || rope.scaling == RopeScaling::kYarn) {
        if (rope.original_max_position <= 0) {
            return bad("rope.original_max_position", rope.original_max_position,
                       "must be positive");
        }
    }
    if (rope.scaling == RopeScaling::kYarn) {
        if (!(rope.beta_fast > 0.0f))
            return bad("rope.beta_fast", rope.beta_fast, "must be positive");
        if (!(rope.beta_slow > 0.0f))
            return bad("rope.beta_slow", rope.beta_slow, "must be positive");
        if (rope.attention_factor < 0.0f) {
            return bad("rope.attention_factor", rope.attention_factor, "must not be negative");
        }
    }
    return Status::ok();
}

// ---- RoPE frequencies ----------------------------------------------------------------------
// Each step below is one float32 tensor operation of transformers' modeling_rope_utils.py,
// rounded where torch rounds, so that the tables match Hugging Face's bit for bit where the
// libm agrees. Two torch details matter: a Python scalar meeting a float32 tensor is first
// rounded to float32, and `scalar / tensor` is evaluated as reciprocal(tensor) * scalar
// (Tensor.__rtruediv__), i.e. with two roundings. Python-level scalar arithmetic (YaRN's
// correction range and attention factor) is done in double, as Python does.

// No fused multiply-add: torch rounds after every multiplication, and -march=native would
// otherwise let the compiler fuse a * b + c (GCC does so across statements by default).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace {

// base ** (arange(0, dim, 2).float() / dim), then 1.0 / that.
std::vector<float> rope_default_inv_freq(float theta, int dim) {
    std::vector<float> inv_freq(static_cast<size_t>(dim / 2));
    for (int i = 0; i < dim / 2; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
        inv_freq[static_cast<size_t>(i)] = 1.0f / std::pow(theta, exponent);
    }
    return inv_freq;
}

// Llama 3.1: wavelengths above original_max / low_freq_factor are divided by factor, below
// original_max / high_freq_factor kept, and blended smoothly in between.
void rope_apply_llama3(const RopeConfig& rope, std::vector<float>& inv_freq) {
    const double old_context = rope.original_max_position;
    const float factor = rope.factor;
    const float low_freq_wavelen = static_cast<float>(old_context / rope.low_freq_factor);
    const float high_freq_wavelen = static_cast<float>(old_context / rope.high_freq_factor);
    const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
    const float smooth_denominator =
        static_cast<float>(static_cast<double>(rope.high_freq_factor) - rope.low_freq_factor);
    for (float& f : inv_freq) {
        const float wavelen = (1.0f / f) * two_pi;
        const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
        const float smooth =
            ((1.0f / wavelen) * static_cast<float>(old_context) - rope.low_freq_factor) /
            smooth_denominator;
        const float smoothed = ((1.0f - smooth) * scaled) / factor + smooth * scaled;
        const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
        f = is_medium ? smoothed : scaled;
    }
}

double yarn_mscale(double scale, double mscale) {
    return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// Dimension at which a frequency completes `n_rotations` turns over the original context.
double yarn_correction_dim(double n_rotations, int dim, double base, double max_position) {
    return (dim * std::log(max_position / (n_rotations * 2.0 * std::numbers::pi))) /
           (2.0 * std::log(base));
}

// YaRN (arXiv:2309.00071): interpolate low frequencies (divide by factor), extrapolate high
// ones (keep), with a linear ramp over the pair indices between the correction bounds.
RopeTables rope_yarn(const RopeConfig& rope) {
    const int dim = rope.rotary_dim;
    const double base = rope.theta;
    const double factor = rope.factor;
    RopeTables tables;
    if (rope.attention_factor > 0.0f) {
        tables.attn_factor = rope.attention_factor;
    } else if (rope.mscale != 0.0f && rope.mscale_all_dim != 0.0f) {
        tables.attn_factor = static_cast<float>(yarn_mscale(factor, rope.mscale) /
                                                yarn_mscale(factor, rope.mscale_all_dim));
    } else {
        tables.attn_factor = static_cast<float>(yarn_mscale(factor, 1.0));
    }

    double low = yarn_correction_dim(rope.beta_fast, dim, base, rope.original_max_position);
    double high = yarn_correction_dim(rope.beta_slow, dim, base, rope.original_max_position);
    if (rope.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
    }
    low = std::max(low, 0.0);
    high = std::min(high, static_cast<double>(dim - 1));
    if (low == high) high += 0.001;  // as transformers: avoids a zero-width ramp

    const float factor_f = rope.factor;
    const float low_f = static_cast<float>(low);
    const float ramp_width = static_cast<float>(high - low);
    tables.inv_freq.resize(static_cast<size_t>(dim / 2));
    for (int i = 0; i < dim / 2; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
        const float pos_freq = std::pow(rope.theta, exponent);
        const float extrapolation = 1.0f / pos_freq;
        const float interpolation = 1.0f / (factor_f * pos_freq);
        const float ramp = std::clamp((static_cast<float>(i) - low_f) / ramp_width, 0.0f, 1.0f);
        const float extrapolation_weight = 1.0f - ramp;
        const float a = interpolation * (1.0f - extrapolation_weight);
        const float b = extrapolation * extrapolation_weight;
        tables.inv_freq[static_cast<size_t>(i)] = a + b;
    }
    return tables;
}

}  // namespace

RopeTables rope_tables(const RopeConfig& rope) {
    PURBO_ASSERT(rope.rotary_dim > 0 && rope.rotary_dim % 2 == 0, "rotary_dim {}", rope.rotary_dim);
    RopeTables tables;
    switch (rope.scaling) {
        case RopeScaling::kNone:
            tables.inv_freq = rope_default_inv_freq(rope.theta, rope.rotary_dim);
            break;
        case RopeScaling::kLinear:
            tables.inv_freq = rope_default_inv_freq(rope.theta, rope.rotary_dim);
            for (float& f : tables.inv_freq) f /= rope.factor;
            break;
        case RopeScaling::kLlama3:
            tables.inv_freq = rope_default_inv_freq(rope.theta, rope.rotary_dim);
            rope_apply_llama3(rope, tables.inv_freq);
            break;
        case RopeScaling::kYarn:
            tables = rope_yarn(rope);
            break;
    }
    if (!rope.freq_factors.empty()) {
        PURBO_ASSERT(rope.freq_factors.size() == tables.inv_freq.size(), "{} freq factors for {} pairs",
                     rope.freq_factors.size(), tables.inv_freq.size());
        for (size_t i = 0; i < tables.inv_freq.size(); ++i) tables.inv_freq[i] /= rope.freq_factors[i];
    }
    return tables;
}

}  // namespace purbo
