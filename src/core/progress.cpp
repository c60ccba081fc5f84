#include "core/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "core/timer.h"

namespace purbo {

std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    if (seconds < 60) return fmt::format("{:.1f}s", seconds);
    const int64_t s = static_cast<int64_t>(std::llround(seconds));
    if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
    return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

ProgressLine::ProgressLine(std::string label, int64_t total, int64_t done, FILE* out,
                           double plain_interval_s)
    : label_(std::move(label)),
      total_(total),
      first_(done),
      out_(out),
      tty_(out != nullptr && isatty(fileno(out)) != 0),
      plain_interval_s_(plain_interval_s),
      start_ms_(time_now_ms()) {}

void ProgressLine::update(int64_t done, std::string_view detail) {
    if (out_ == nullptr) return;
    const double now = time_now_ms();
    const bool last = done >= total_;
    if (!tty_ && !last && now - last_print_ms_ < plain_interval_s_ * 1e3) return;
    last_print_ms_ = now;
    const double elapsed_s = (now - start_ms_) * 1e-3;
    const int64_t run = done - first_;
    const double per_item = run > 0 ? elapsed_s / static_cast<double>(run) : 0.0;
    constexpr int kBarWidth = 20;
    const int filled =
        total_ > 0 ? static_cast<int>(kBarWidth * std::min<int64_t>(done, total_) / total_) : 0;
    std::string line = fmt::format("{} {}/{} [{}{}]", label_, done, total_,
                                   std::string(static_cast<size_t>(filled), '#'),
                                   std::string(static_cast<size_t>(kBarWidth - filled), '.'));
    if (run > 0) {
        line += fmt::format(" {:.2f} s/it", per_item);
        line += last ? fmt::format(" in {}", format_duration(elapsed_s))
                     : fmt::format(" ETA {}",
                                   format_duration(per_item * static_cast<double>(total_ - done)));
    }
    if (!detail.empty()) line += fmt::format(" | {}", detail);
    if (tty_) {
        // \x1b[K clears what a longer previous line left to the right.
        std::fprintf(out_, "\r%s\x1b[K", line.c_str());
        open_line_ = true;
    } else {
        std::fprintf(out_, "%s\n", line.c_str());
    }
    std::fflush(out_);
}

void ProgressLine::finish() {
    if (open_line_) {
        std::fputc('\n', out_);
        std::fflush(out_);
        open_line_ = false;
    }
}

}  // namespace purbo
