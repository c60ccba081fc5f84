#include "eval/heatmap-svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <iterator>

#include "core/mapped-file.h"

namespace purbo {
namespace {

// Geometry in SVG user units (pixels).
constexpr int kCellW = 26;
constexpr int kCellH = 16;
constexpr int kGroupGap = 6;  // between the query heads of two KV heads
constexpr int kLeft = 70;     // row labels
constexpr int kTop = 84;      // title, subtitle, column labels
constexpr int kLegendGap = 34;
constexpr int kLegendBarW = 16;
constexpr int kLegendW = 150;  // bar, tick labels and captions
constexpr int kBottom = 44;
constexpr int kMinLegendH = 160;
constexpr int kTitleFont = 16;
constexpr int kSubtitleFont = 11;
constexpr const char* kOutlineColour = "#ff2050";  // visible on every viridis colour
constexpr const char* kMissingColour = "#bbbbbb";  // a score that is not a number

// Viridis (matplotlib) at 9 evenly spaced points; colours in between are interpolated.
constexpr std::array<std::array<int, 3>, 9> kViridis = {{{0x44, 0x01, 0x54},
                                                         {0x47, 0x2d, 0x7b},
                                                         {0x3b, 0x52, 0x8b},
                                                         {0x2c, 0x72, 0x8e},
                                                         {0x21, 0x91, 0x8c},
                                                         {0x28, 0xae, 0x80},
                                                         {0x5e, 0xc9, 0x62},
                                                         {0xad, 0xdc, 0x30},
                                                         {0xfd, 0xe7, 0x25}}};

// Scores are attention masses in [0, 1] with a heavy tail (SmolLM2: median ~0.02, best ~0.9):
// a linear scale would paint all but a handful of heads the same dark colour. The colour
// position is sqrt(score), on a fixed [0, 1] scale so that maps of two models compare.
double colour_position(float score) {
    return std::sqrt(std::clamp(static_cast<double>(score), 0.0, 1.0));
}

std::string viridis(double x) {
    const double f = std::clamp(x, 0.0, 1.0) * (kViridis.size() - 1);
    const size_t i = std::min(static_cast<size_t>(f), kViridis.size() - 2);
    const double w = f - static_cast<double>(i);
    std::array<int, 3> c{};
    for (size_t k = 0; k < 3; ++k)
        c[k] = static_cast<int>(std::lround(kViridis[i][k] * (1 - w) + kViridis[i + 1][k] * w));
    return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

std::string xml_escape(std::string_view text) {
    std::string out;
    for (char ch : text) {
        switch (ch) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            default:
                out += ch;
        }
    }
    return out;
}

}  // namespace

std::string heatmap_svg(std::span<const float> scores, int n_layer, int n_head,
                        std::span<const HeadId> outlined, const HeatmapSvgOptions& options) {
    PURBO_ASSERT(
        n_layer > 0 && n_head > 0 && scores.size() == static_cast<size_t>(n_layer * n_head),
        "{} scores for {} x {} heads", scores.size(), n_layer, n_head);
    const int group = options.n_head_kv > 0 && n_head % options.n_head_kv == 0
                          ? n_head / options.n_head_kv
                          : n_head;
    const auto cell_x = [&](int h) { return kLeft + h * kCellW + (h / group) * kGroupGap; };
    const auto cell_y = [&](int l) { return kTop + l * kCellH; };
    const int grid_w = cell_x(n_head - 1) + kCellW - kLeft;
    const int grid_h = n_layer * kCellH;
    const int legend_x = kLeft + grid_w + kLegendGap;
    const int legend_h = std::max(grid_h, kMinLegendH);
    // Wide enough for the title lines too: no text measurement in plain SVG, so an upper
    // bound of the average sans-serif glyph width (0.6 em) stands in for it.
    const auto text_w = [](const std::string& t, int font_size) {
        return 20 + static_cast<int>(0.6 * font_size * static_cast<double>(t.size()));
    };
    const int width = std::max({legend_x + kLegendW, text_w(options.title, kTitleFont),
                                text_w(options.subtitle, kSubtitleFont)});
    const int height = kTop + legend_h + kBottom;

    std::string svg;
    auto out = std::back_inserter(svg);
    fmt::format_to(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fmt::format_to(out,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
                   "viewBox=\"0 0 {} {}\" "
                   "font-family=\"sans-serif\" font-size=\"11\">\n",
                   width, height, width, height);
    fmt::format_to(out, "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (size_t i = 0; i < kViridis.size(); ++i)
        fmt::format_to(out, "<stop offset=\"{:.3f}\" stop-color=\"{}\"/>",
                       static_cast<double>(i) / (kViridis.size() - 1),
                       viridis(static_cast<double>(i) / (kViridis.size() - 1)));
    fmt::format_to(out, "</linearGradient></defs>\n");
    fmt::format_to(out, "<rect width=\"{}\" height=\"{}\" fill=\"white\"/>\n", width, height);
    fmt::format_to(out, "<text x=\"10\" y=\"24\" font-size=\"{}\" font-weight=\"bold\">{}</text>\n",
                   kTitleFont, xml_escape(options.title));
    fmt::format_to(out, "<text x=\"10\" y=\"44\" font-size=\"{}\">{}</text>\n", kSubtitleFont,
                   xml_escape(options.subtitle));

    // Axes: column (query head) and row (layer) labels.
    fmt::format_to(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">query head</text>\n",
                   kLeft + grid_w / 2, kTop - 22);
    for (int h = 0; h < n_head; ++h)
        fmt::format_to(
            out, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
            cell_x(h) + kCellW / 2, kTop - 6, h);
    fmt::format_to(out,
                   "<text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 "
                   "{})\">layer</text>\n",
                   kTop + grid_h / 2, kTop + grid_h / 2);
    for (int l = 0; l < n_layer; ++l)
        fmt::format_to(out,
                       "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">{}</text>\n",
                       kLeft - 6, cell_y(l) + kCellH - 4, l);

    // Cells, with the exact score as a tooltip.
    fmt::format_to(out, "<g stroke=\"white\" stroke-width=\"0.5\">\n");
    for (int l = 0; l < n_layer; ++l) {
        for (int h = 0; h < n_head; ++h) {
            const float s = scores[static_cast<size_t>(l * n_head + h)];
            fmt::format_to(
                out,
                "<rect class=\"cell\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">"
                "<title>layer {} head {}: {:.4f}</title></rect>\n",
                cell_x(h), cell_y(l), kCellW, kCellH,
                std::isnan(s) ? kMissingColour : viridis(colour_position(s)), l, h, s);
        }
    }
    fmt::format_to(out, "</g>\n");
    // Outlines on top of every cell, so neighbours do not paint over them.
    fmt::format_to(out, "<g fill=\"none\" stroke=\"{}\" stroke-width=\"2\">\n", kOutlineColour);
    for (const HeadId& id : outlined) {
        if (id.layer < 0 || id.layer >= n_layer || id.head < 0 || id.head >= n_head) continue;
        fmt::format_to(out,
                       "<rect class=\"retrieval\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>\n",
                       cell_x(id.head) + 1, cell_y(id.layer) + 1, kCellW - 2, kCellH - 2);
    }
    fmt::format_to(out, "</g>\n");

    // Legend: the colour bar on the sqrt scale with ticks at round scores, then the outline.
    const int bar_top = kTop;
    fmt::format_to(out, "<text x=\"{}\" y=\"{}\">score</text>\n", legend_x, bar_top - 22);
    fmt::format_to(out, "<text x=\"{}\" y=\"{}\" font-size=\"9\">(sqrt scale)</text>\n", legend_x,
                   bar_top - 8);
    fmt::format_to(
        out,
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"url(#scale)\" stroke=\"#444\" "
        "stroke-width=\"0.5\"/>\n",
        legend_x, bar_top, kLegendBarW, legend_h);
    for (double tick : {0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0}) {
        const double y = bar_top + legend_h * (1.0 - colour_position(static_cast<float>(tick)));
        fmt::format_to(out,
                       "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#444\"/>\n",
                       legend_x + kLegendBarW, y, legend_x + kLegendBarW + 4, y);
        fmt::format_to(out, "<text x=\"{}\" y=\"{:.1f}\" font-size=\"10\">{:g}</text>\n",
                       legend_x + kLegendBarW + 7, y + 3.5, tick);
    }
    const int key_y = bar_top + legend_h + 16;
    fmt::format_to(out,
                   "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{}\" "
                   "stroke-width=\"2\"/>\n",
                   kLeft, key_y, kCellW - 2, kCellH - 2, kOutlineColour);
    fmt::format_to(out, "<text x=\"{}\" y=\"{}\">retrieval head ({})</text>\n", kLeft + kCellW + 6,
                   key_y + kCellH - 4, outlined.size());
    fmt::format_to(out, "</svg>\n");
    return svg;
}

Status heatmap_svg_write(const std::string& path, std::span<const float> scores, int n_layer,
                         int n_head, std::span<const HeadId> outlined,
                         const HeatmapSvgOptions& options) {
    if (n_layer < 1 || n_head < 1 || scores.size() != static_cast<size_t>(n_layer * n_head))
        return error(StatusCode::kInvalidArgument, "{}: {} scores for a heat map of {} x {} heads",
                     path, scores.size(), n_layer, n_head);
    const std::string svg = heatmap_svg(scores, n_layer, n_head, outlined, options);
    return write_file_atomic(path,
                             std::span(reinterpret_cast<const uint8_t*>(svg.data()), svg.size()));
}

}  // namespace purbo
