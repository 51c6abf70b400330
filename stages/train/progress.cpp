#include "stages/train/progress.h"

#include <unistd.h>

#include <cstdio>

#include "pipeline/trace.h"

namespace flowrun::stages {

namespace {
constexpr int64_t kTerminalInterval = 250'000'000;  // 4 redraws a second
constexpr int64_t kLogInterval = 30'000'000'000;    // a log line every 30 s

std::string clock_text(double seconds) {
  if (seconds < 0 || seconds > 1e7) return "?";
  int s = static_cast<int>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
  return text;
}
}  // namespace

Progress::Progress() : terminal_(isatty(STDERR_FILENO) == 1) {}

void Progress::begin(std::string title, int64_t total_batches) {
  title_ = std::move(title);
  total_ = total_batches;
  batches_ = images_ = 0;
  start_ns_ = last_draw_ns_ = now_ns();
  drawn_ = false;
}

void Progress::update(int64_t images, const std::function<double()>& loss) {
  ++batches_;
  images_ += images;
  int64_t now = now_ns();
  if (silent_ || now - last_draw_ns_ < (terminal_ ? kTerminalInterval : kLogInterval)) return;
  last_draw_ns_ = now;
  draw(loss(), false);
}

void Progress::draw(double loss, bool) {
  double elapsed = (now_ns() - start_ns_) / 1e9;
  double rate = elapsed > 0 ? images_ / elapsed : 0;
  double per_batch = batches_ ? elapsed / batches_ : 0;
  std::string eta = total_ > 0 ? clock_text(per_batch * (total_ - batches_)) : "?";
  if (terminal_) {
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * batches_ / std::max<int64_t>(total_, 1)) : 0;
    std::string bar(static_cast<size_t>(std::min(filled, width)), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld  %.0f img/s  loss %.4f  ETA %s\033[K", title_.c_str(), bar.c_str(),
                 static_cast<long long>(batches_), static_cast<long long>(total_), rate, loss, eta.c_str());
  } else {
    std::fprintf(stderr, "%s: batch %lld/%lld, %.0f img/s, loss %.4f, ETA %s\n", title_.c_str(),
                 static_cast<long long>(batches_), static_cast<long long>(total_), rate, loss, eta.c_str());
  }
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::end() {
  if (terminal_ && drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace flowrun::stages
