// The progress line: durations, and plain lines when the output is not a terminal.
#include <cstdio>
#include <string>

#include "core/progress.h"
#include "test-util.h"

namespace purbo {
namespace {

TEST(Progress, FormatDuration) {
    EXPECT_EQ(format_duration(0.04), "0.0s");
    EXPECT_EQ(format_duration(12.34), "12.3s");
    EXPECT_EQ(format_duration(185), "3m05s");
    EXPECT_EQ(format_duration(3720), "1h02m");
    EXPECT_EQ(format_duration(-1), "?");
}

std::string read_all(FILE* f) {
    std::rewind(f);
    std::string s;
    for (int c; (c = std::fgetc(f)) != EOF;) s += static_cast<char>(c);
    return s;
}

TEST(Progress, PlainLinesWhenNotATerminal) {
    FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    {
        // Interval 0: every update prints. Resumed at 2 of 4.
        ProgressLine p("train", 4, 2, f, 0.0);
        p.update(3, "loss 0.5");
        p.update(4, "loss 0.4");
    }
    const std::string out = read_all(f);
    std::fclose(f);
    EXPECT_EQ(out.find('\r'), std::string::npos);
    EXPECT_NE(out.find("train 3/4 [###############.....]"), std::string::npos) << out;
    EXPECT_NE(out.find("ETA"), std::string::npos) << out;
    EXPECT_NE(out.find("| loss 0.5\n"), std::string::npos) << out;
    EXPECT_NE(out.find("train 4/4 [####################]"), std::string::npos) << out;
    EXPECT_NE(out.find(" in "), std::string::npos) << out;  // the last line says the total time

    FILE* g = std::tmpfile();
    ASSERT_NE(g, nullptr);
    {
        // A long interval: only the first update and the last one print.
        ProgressLine p("x", 3, 0, g, 3600.0);
        p.update(1);
        p.update(2);
        p.update(3);
    }
    const std::string sparse = read_all(g);
    std::fclose(g);
    EXPECT_NE(sparse.find("x 1/3"), std::string::npos);
    EXPECT_EQ(sparse.find("x 2/3"), std::string::npos);
    EXPECT_NE(sparse.find("x 3/3"), std::string::npos);
}

}  // namespace
}  // namespace purbo
