#include "stages/train/lr_finder.h"

#include <cairo.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <iomanip>

#include "pipeline/atomic_file.h"
#include "stages/model/model.h"
#include "stages/report/image_grid.h"

namespace flowrun::stages {

namespace {
constexpr double kBeta = 0.98;  // fastai's loss smoothing

// fastai's rules with the first num_it / 10 points left out, num_it the
// sweep's planned steps as in fastai's Learner.lr_find (a sweep that
// diverged early recorded fewer: a tenth of those would keep points fastai
// drops and move the valley).
LrSuggestion suggest(const std::vector<double>& all_lrs, const std::vector<double>& all_losses, size_t num_it) {
  // fastai looks at the curve without its first tenth and last five points
  // (the start is noise, the end divergence), when that leaves enough.
  size_t n = all_losses.size(), first = num_it / 10, last = n > 5 ? n - 5 : n;
  if (last <= first + 2) first = 0, last = n;
  std::vector<double> lrs(all_lrs.begin() + first, all_lrs.begin() + last);
  std::vector<double> losses(all_losses.begin() + first, all_losses.begin() + last);
  LrSuggestion out;
  if (losses.empty()) return out;
  // valley: the longest stretch over which the loss keeps falling (a longest
  // decreasing subsequence); fastai takes the point half way down it.
  const size_t m = losses.size();
  std::vector<size_t> length(m, 1);
  size_t max_start = 0, max_end = 0;
  for (size_t i = 1; i < m; ++i) {
    for (size_t j = 0; j < i; ++j)
      if (losses[i] < losses[j] && length[i] < length[j] + 1) length[i] = length[j] + 1;
    if (length[max_end] < length[i]) {
      max_end = i;
      max_start = max_end - length[max_end];
    }
  }
  const double sections = static_cast<double>(max_end - max_start) / 3;
  const size_t valley = std::min(m - 1, max_start + static_cast<size_t>(sections) + static_cast<size_t>(sections / 2));
  out.valley = lrs[valley];
  // steep: where the loss falls fastest against log(lr).
  size_t steepest = 0;
  double best = INFINITY;
  for (size_t i = 0; i + 1 < m; ++i) {
    double slope = (losses[i + 1] - losses[i]) / (std::log(lrs[i + 1]) - std::log(lrs[i]));
    if (slope < best) best = slope, steepest = i;
  }
  out.steep = lrs[steepest];
  return out;
}

}  // namespace

LrSuggestion suggest_learning_rates(const std::vector<double>& lrs, const std::vector<double>& losses) {
  return suggest(lrs, losses, losses.size());
}

LrFinder::LrFinder(int64_t steps, double start, double end, std::string out_dir)
    : steps_(steps), start_(start), end_(end), out_dir_(std::move(out_dir)) {}

void LrFinder::begin(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  saved_.clear();
  for (const auto& [key, tensor] : state_dict(model)) saved_.push_back(tensor.detach().clone());
}

double LrFinder::lr(int64_t step) const {
  return start_ * std::pow(end_ / start_, steps_ > 1 ? static_cast<double>(step) / (steps_ - 1) : 0.0);
}

bool LrFinder::record(double lr, double loss) {
  if (!std::isfinite(loss)) return !(finished_ = true);
  average_ = kBeta * average_ + (1 - kBeta) * loss;
  const double smoothed = average_ / (1 - std::pow(kBeta, static_cast<double>(raw_.size() + 1)));
  lrs_.push_back(lr);
  raw_.push_back(loss);
  smoothed_.push_back(smoothed);
  if (raw_.size() == 1 || smoothed < best_) best_ = smoothed;
  finished_ = static_cast<int64_t>(raw_.size()) >= steps_ || smoothed > 4 * best_;
  return !finished_;
}

LrSuggestion LrFinder::finish(torch::nn::Module& model) {
  finished_ = true;
  {
    torch::NoGradGuard no_grad;
    StateDict now = state_dict(model);
    for (size_t i = 0; i < now.size() && i < saved_.size(); ++i) now[i].second.copy_(saved_[i]);
  }
  LrSuggestion suggestion = suggest(lrs_, smoothed_, static_cast<size_t>(steps_));
  if (!out_dir_.empty()) {
    write_csv();
    write_plot(suggestion);
  }
  return suggestion;
}

void LrFinder::write_csv() const {
  write_file_atomically(out_dir_ + "/lr_find.csv", [&](std::ostream& out) {
    out << "step,lr,loss,smoothed_loss\n" << std::setprecision(9);
    for (size_t i = 0; i < lrs_.size(); ++i) out << i << "," << lrs_[i] << "," << raw_[i] << "," << smoothed_[i] << "\n";
  });
}

void LrFinder::write_plot(const LrSuggestion& suggestion) const {
  const int width = 720, height = 440;
  const double left = 64, right = 16, top = 36, bottom = 44;
  // The curve without its last five points (divergence), as fastai plots it.
  const size_t n = smoothed_.size() > 10 ? smoothed_.size() - 5 : smoothed_.size();
  double lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; ++i) lo = std::min(lo, smoothed_[i]), hi = std::max(hi, smoothed_[i]);
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1;
  const double pad = (hi - lo) * 0.05, x_lo = std::log10(lrs_.empty() ? start_ : lrs_.front()),
               x_hi = std::log10(lrs_.empty() ? end_ : std::max(lrs_.back(), lrs_.front() * 10));
  lo -= pad, hi += pad;
  auto px = [&](double lr) { return left + (width - left - right) * (std::log10(lr) - x_lo) / (x_hi - x_lo); };
  auto py = [&](double loss) { return top + (height - top - bottom) * (1 - (loss - lo) / (hi - lo)); };
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_set_font_size(cr, 13);
  char text[160];
  std::snprintf(text, sizeof text, "learning-rate finder: valley %.2e, steep %.2e", suggestion.valley, suggestion.steep);
  cairo_move_to(cr, left, 22);
  cairo_show_text(cr, text);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, left, top, width - left - right, height - top - bottom);
  cairo_stroke(cr);
  cairo_set_font_size(cr, 10);
  for (int k = 0; k <= 4; ++k) {  // loss ticks
    double v = lo + (hi - lo) * k / 4;
    std::snprintf(text, sizeof text, "%.3g", v);
    cairo_move_to(cr, 20, py(v) + 3);
    cairo_show_text(cr, text);
  }
  for (int e = static_cast<int>(std::ceil(x_lo)); e <= static_cast<int>(std::floor(x_hi)); ++e) {  // decades
    std::snprintf(text, sizeof text, "1e%d", e);
    cairo_move_to(cr, px(std::pow(10.0, e)) - 10, height - bottom + 14);
    cairo_show_text(cr, text);
  }
  cairo_move_to(cr, width / 2.0 - 60, height - 8);
  cairo_show_text(cr, "learning rate (log scale)");
  // The y axis: the loss fastai's plot shows (exponentially smoothed, bias-corrected).
  cairo_save(cr);
  cairo_move_to(cr, 12, top + (height - top - bottom) / 2.0 + 50);
  cairo_rotate(cr, -M_PI / 2);
  cairo_show_text(cr, "loss (smoothed)");
  cairo_restore(cr);
  cairo_set_source_rgb(cr, 0.12, 0.47, 0.71);
  cairo_set_line_width(cr, 2);
  for (size_t i = 0; i < n; ++i) {
    if (i == 0) cairo_move_to(cr, px(lrs_[i]), py(smoothed_[i]));
    else cairo_line_to(cr, px(lrs_[i]), py(smoothed_[i]));
  }
  cairo_stroke(cr);
  // The suggestions, on the curve.
  auto mark = [&](double lr, double r, double g, double b, const char* name) {
    size_t at = 0;
    for (size_t i = 0; i < n; ++i)
      if (lrs_[i] <= lr) at = i;
    if (n == 0) return;
    cairo_set_source_rgb(cr, r, g, b);
    cairo_arc(cr, px(lrs_[at]), py(smoothed_[at]), 5, 0, 2 * M_PI);
    cairo_fill(cr);
    cairo_move_to(cr, px(lrs_[at]) + 7, py(smoothed_[at]) - 7);
    cairo_show_text(cr, name);
  };
  mark(suggestion.valley, 0.84, 0.15, 0.16, "valley");
  mark(suggestion.steep, 1.0, 0.5, 0.05, "steep");
  cairo_destroy(cr);
  try {
    write_png(out_dir_ + "/lr_find.png", surface);
  } catch (...) {
    cairo_surface_destroy(surface);
    throw;
  }
  cairo_surface_destroy(surface);
}

}  // namespace flowrun::stages
