// A heat map of per-head scores as an SVG image: one row per layer, one column per query
// head, a colour scale with a legend, chosen heads (retrieval heads) outlined. Plain text,
// viewable in any browser; `purbo calibrate --svg` writes one.
#pragma once

#include <span>
#include <string>

#include "core/status.h"
#include "sparse/adapter.h"

namespace purbo {

struct HeatmapSvgOptions {
    std::string title;     // first line, e.g. the model's name
    std::string subtitle;  // second line, e.g. the settings
    int n_head_kv = 0;     // > 0: a gap between the query heads of different KV heads
};

// scores: (n_layer, n_head) row-major, in [0, 1] (values outside are clamped for colour, the
// tooltips show them as they are); outlined: heads drawn with a frame.
std::string heatmap_svg(std::span<const float> scores, int n_layer, int n_head,
                        std::span<const HeadId> outlined, const HeatmapSvgOptions& options);

// heatmap_svg written atomically to `path` (temporary file, then rename).
Status heatmap_svg_write(const std::string& path, std::span<const float> scores, int n_layer,
                         int n_head, std::span<const HeadId> outlined,
                         const HeatmapSvgOptions& options);

}  // namespace purbo
