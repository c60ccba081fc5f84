// The SVG heat map: well-formed XML (checked by a minimal tag parser), one cell per head,
// one outline per retrieval head, escaped titles, and an atomic write.
#include <filesystem>
#include <regex>

#include "core/mapped-file.h"
#include "eval/heatmap-svg.h"
#include "test-util.h"

namespace purbo {
namespace {

namespace fs = std::filesystem;

// Checks that every element is closed in order, attributes are quoted and there is one root
// <svg> element; returns "" or what is wrong. Enough to catch broken output, not a full XML
// parser.
std::string check_well_formed(const std::string& s) {
    std::vector<std::string> open;
    int roots = 0;
    size_t i = 0;
    while ((i = s.find('<', i)) != std::string::npos) {
        const size_t end = s.find('>', i);
        if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
        const std::string tag = s.substr(i + 1, end - i - 1);
        i = end + 1;
        if (tag.empty()) return "empty tag";
        if (tag[0] == '?' || tag[0] == '!') continue;  // declaration, comment
        if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) return "unbalanced quotes in <" + tag + ">";
        if (tag[0] == '/') {
            const std::string name = tag.substr(1);
            if (open.empty() || open.back() != name) return "</" + name + "> closes nothing open";
            open.pop_back();
            continue;
        }
        const std::string name = tag.substr(0, tag.find_first_of(" \n/"));
        if (open.empty()) {
            ++roots;
            if (name != "svg") return "root element <" + name + ">";
        }
        if (tag.back() != '/') open.push_back(name);
    }
    if (!open.empty()) return "<" + open.back() + "> not closed";
    if (roots != 1) return std::to_string(roots) + " root elements";
    // Text outside tags must not hold a raw '&' that starts no entity.
    if (std::regex_search(s, std::regex("&(?!(amp|lt|gt|quot|apos);)"))) return "raw '&'";
    return "";
}

size_t count(const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t i = s.find(what); i != std::string::npos; i = s.find(what, i + 1)) ++n;
    return n;
}

TEST(HeatmapSvg, WellFormedWithOneCellPerHeadAndOneOutlinePerRetrievalHead) {
    constexpr int kLayers = 5, kHeads = 6;
    std::vector<float> scores(kLayers * kHeads);
    for (size_t i = 0; i < scores.size(); ++i) scores[i] = static_cast<float>(i) / scores.size();
    scores[7] = std::nanf("");  // drawn grey, still a cell
    const std::vector<HeadId> retrieval = {{0, 1}, {2, 5}, {4, 0}, {4, 3}};
    HeatmapSvgOptions o;
    o.title = "Model <A & B>";
    o.subtitle = "ratio 0.15, \"kv-groups\"";
    o.n_head_kv = 3;
    const std::string svg = heatmap_svg(scores, kLayers, kHeads, retrieval, o);
    EXPECT_EQ(check_well_formed(svg), "");
    EXPECT_EQ(count(svg, "class=\"cell\""), static_cast<size_t>(kLayers * kHeads));
    EXPECT_EQ(count(svg, "class=\"retrieval\""), retrieval.size());
    EXPECT_NE(svg.find("Model &lt;A &amp; B&gt;"), std::string::npos);
    EXPECT_NE(svg.find("&quot;kv-groups&quot;"), std::string::npos);
    EXPECT_NE(svg.find("layer 2 head 5: 0.5667"), std::string::npos) << "tooltips give the score";
    EXPECT_NE(svg.find("#bbbbbb"), std::string::npos);
    EXPECT_NE(svg.find("retrieval head (4)"), std::string::npos) << "legend counts the outlines";
    // Deterministic.
    EXPECT_EQ(svg, heatmap_svg(scores, kLayers, kHeads, retrieval, o));
}

TEST(HeatmapSvg, WritesAtomically) {
    const fs::path dir = test::temp_dir("heatmap_svg_write");
    const std::string path = (dir / "scores.svg").string();
    const std::vector<float> scores = {0.1f, 0.9f, 0.0f, 0.5f};
    const std::vector<HeadId> retrieval = {{0, 1}};
    ASSERT_TRUE(heatmap_svg_write(path, scores, 2, 2, retrieval, {}).is_ok());
    auto text = read_text_file(path);
    ASSERT_TRUE(text.is_ok());
    EXPECT_EQ(check_well_formed(*text), "");
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    EXPECT_FALSE(heatmap_svg_write(path, scores, 3, 2, retrieval, {}).is_ok()) << "4 scores for 3 x 2 heads";
    EXPECT_FALSE(heatmap_svg_write((dir / "no" / "such" / "dir.svg").string(), scores, 2, 2, retrieval, {}).is_ok());
}

}  // namespace
}  // namespace purbo
