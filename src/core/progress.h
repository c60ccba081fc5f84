// A progress line for long jobs (training, calibration): count, rate and ETA. On a terminal
// the line is rewritten in place (\r); otherwise (logs, CI, pipes) it prints plain lines, at
// most one per `plain_interval_s` plus the last, so a log file stays readable.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace purbo {

// "12.3s", "3m05s", "1h02m"
std::string format_duration(double seconds);

class ProgressLine {
  public:
    // `done` counts what was already done before this run (a resumed job): the rate and the
    // ETA only count what this run does.
    ProgressLine(std::string label, int64_t total, int64_t done = 0, FILE* out = stderr,
                 double plain_interval_s = 10.0);
    ~ProgressLine() { finish(); }
    ProgressLine(const ProgressLine&) = delete;
    ProgressLine& operator=(const ProgressLine&) = delete;

    // "label 12/600 [#####.....] 2.10 s/it ETA 20m31s | detail"
    void update(int64_t done, std::string_view detail = {});
    // Ends the in-place line with a newline (once).
    void finish();

  private:
    std::string label_;
    int64_t total_;
    int64_t first_;
    FILE* out_;
    bool tty_;
    double plain_interval_s_;
    double start_ms_;
    double last_print_ms_ = -1e300;
    bool open_line_ = false;
};

}  // namespace purbo
