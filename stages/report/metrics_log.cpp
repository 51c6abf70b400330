#include "stages/report/metrics_log.h"

#include <cairo.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>

#include "pipeline/atomic_file.h"
#include "stages/report/chart.h"
#include "stages/report/image_grid.h"

namespace flowrun::stages {

std::shared_ptr<MetricsLog> MetricsLog::of(const StageInit& init) {
  static std::mutex mutex;  // stages are built on one thread, but be safe
  std::lock_guard<std::mutex> lock(mutex);
  auto log = init.services.find<MetricsLog>("metrics");
  if (!log) {
    log = std::make_shared<MetricsLog>(init.run.job.writes_files() ? init.run.run_dir : "");  // rank 0 writes
    log->tensorboard_ = TensorBoardWriter::of(init);
    init.services.provide("metrics", log);
  }
  return log;
}

void MetricsLog::record(const EpochInfo& epoch, const std::map<std::string, double>& figures) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto row = std::find_if(rows_.begin(), rows_.end(), [&](const Row& r) { return r.epoch == epoch.epoch + 1; });
  if (row == rows_.end()) {
    rows_.push_back({epoch.epoch + 1, epoch.phase, {}});
    row = rows_.end() - 1;
  }
  for (const auto& [key, value] : figures) row->figures[key] = value;
  if (!run_dir_.empty()) write();
  if (tensorboard_) {
    for (const auto& [key, value] : figures) tensorboard_->metric("epoch/" + key, row->epoch, value);
    tensorboard_->flush();  // at every epoch's end: a running TensorBoard sees it
  }
}

void MetricsLog::stopped(bool interrupted) {
  if (tensorboard_) tensorboard_->session_end(!interrupted);
}

std::string MetricsLog::to_json() const {
  std::lock_guard<std::mutex> lock(mutex_);
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : rows_) rows.push_back({{"epoch", row.epoch}, {"phase", row.phase}, {"figures", row.figures}});
  return rows.dump();
}

void MetricsLog::restore(const std::string& json) {
  std::vector<Row> rows;
  try {
    for (const auto& row : nlohmann::json::parse(json))
      rows.push_back({row.at("epoch").get<int>(), row.at("phase").get<std::string>(),
                      row.at("figures").get<std::map<std::string, double>>()});
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("saved metrics are malformed: ") + e.what());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  rows_ = std::move(rows);
  if (!run_dir_.empty()) write();
}

ValueAxis chart_value_axis(const std::vector<double>& values, bool accuracy) {
  double lo = 1e300, hi = -1e300;
  for (double value : values) lo = std::min(lo, value), hi = std::max(hi, value);
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1;
  const double pad = (hi - lo) * 0.05;
  // Losses and accuracies are never negative (nor accuracies above 1): the
  // padding does not take the axis past those bounds.
  const bool nonnegative = lo >= 0, fraction = hi <= 1 && accuracy;
  lo -= pad, hi += pad;
  if (nonnegative) lo = std::max(lo, 0.0);
  if (fraction) hi = std::min(hi, 1.0);
  ValueAxis axis{lo, hi, {}};
  for (int k = 0; k <= 4; ++k) axis.ticks.push_back(lo + (hi - lo) * k / 4);
  return axis;
}

ChartLayout chart_layout(double x0, double y0, double w, double h, size_t series) {
  // The legend goes in a band under the axis (below the epoch ticks and
  // label), two entries a row: inside the plot it hid the curves.
  const int legend_rows = static_cast<int>((series + 1) / 2);
  const double left = 50, right = 10, top = 28, bottom = 34 + 14.0 * legend_rows;
  ChartLayout layout;
  layout.plot_left = x0 + left;
  layout.plot_top = y0 + top;
  layout.plot_right = x0 + w - right;
  layout.plot_bottom = y0 + h - bottom;
  for (size_t s = 0; s < series; ++s)
    layout.legend.push_back({layout.plot_left + (s % 2) * (w - left - right) / 2, layout.plot_bottom + 44 + 14.0 * (s / 2)});
  return layout;
}

namespace {

// One chart: the series whose names end with `suffix` (loss, top1) per epoch.
void draw_chart(cairo_t* cr, double x0, double y0, double w, double h, const std::string& title,
                const std::vector<std::pair<std::string, std::vector<std::pair<int, double>>>>& series, int epochs) {
  const ChartLayout layout = chart_layout(x0, y0, w, h, series.size());
  const double left = layout.plot_left - x0, right = x0 + w - layout.plot_right, top = layout.plot_top - y0,
               bottom = y0 + h - layout.plot_bottom;
  std::vector<double> values;
  for (const auto& [name, points] : series)
    for (const auto& [epoch, value] : points) values.push_back(value);
  const ValueAxis axis = chart_value_axis(values, title.find("accuracy") != std::string::npos);
  const double lo = axis.lo, hi = axis.hi;
  auto px = [&](double epoch) { return x0 + left + (w - left - right) * (epochs > 1 ? (epoch - 1) / (epochs - 1) : 0.5); };
  auto py = [&](double value) { return y0 + top + (h - top - bottom) * (1 - (value - lo) / (hi - lo)); };
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_set_font_size(cr, 13);
  cairo_move_to(cr, x0 + left, y0 + 18);
  cairo_show_text(cr, title.c_str());
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, x0 + left, y0 + top, w - left - right, h - top - bottom);
  cairo_stroke(cr);
  cairo_set_font_size(cr, 10);
  for (double v : axis.ticks) {  // value ticks
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", v);
    cairo_move_to(cr, x0 + 4, py(v) + 3);
    cairo_show_text(cr, text);
  }
  for (int e = 1; e <= epochs; ++e) {  // epoch ticks
    char text[16];
    std::snprintf(text, sizeof text, "%d", e);
    cairo_move_to(cr, px(e) - 3, y0 + h - bottom + 14);
    cairo_show_text(cr, text);
  }
  cairo_move_to(cr, x0 + left + (w - left - right) / 2 - 15, y0 + h - bottom + 28);
  cairo_show_text(cr, "epoch");
  static const double colours[][3] = {{0.12, 0.47, 0.71}, {1.0, 0.5, 0.05}, {0.17, 0.63, 0.17}, {0.84, 0.15, 0.16},
                                      {0.58, 0.4, 0.74}, {0.55, 0.34, 0.29}};
  for (size_t s = 0; s < series.size(); ++s) {
    const auto& c = colours[s % 6];
    cairo_set_source_rgb(cr, c[0], c[1], c[2]);
    cairo_set_line_width(cr, 2);
    const auto& points = series[s].second;
    for (size_t i = 0; i < points.size(); ++i) {
      if (i == 0) cairo_move_to(cr, px(points[i].first), py(points[i].second));
      else cairo_line_to(cr, px(points[i].first), py(points[i].second));
    }
    cairo_stroke(cr);
    for (const auto& [epoch, value] : points) {
      cairo_arc(cr, px(epoch), py(value), 2.5, 0, 2 * M_PI);
      cairo_fill(cr);
    }
    // Legend: a swatch and the name, under the axis.
    const double lx = layout.legend[s].first, ly = layout.legend[s].second;
    cairo_rectangle(cr, lx, ly - 8, 14, 3);
    cairo_fill(cr);
    cairo_move_to(cr, lx + 18, ly - 3);
    cairo_show_text(cr, series[s].first.c_str());
  }
}

}  // namespace

void MetricsLog::write() const {
  std::set<std::string> keys;
  for (const auto& row : rows_)
    for (const auto& [key, value] : row.figures) keys.insert(key);
  write_file_atomically(run_dir_ + "/metrics.csv", [&](std::ostream& out) {
    out << "epoch,phase";
    for (const auto& key : keys) out << "," << key;
    out << "\n" << std::setprecision(9);
    for (const auto& row : rows_) {
      out << row.epoch << "," << row.phase;
      for (const auto& key : keys) {
        out << ",";
        auto it = row.figures.find(key);
        if (it != row.figures.end()) out << it->second;
      }
      out << "\n";
    }
  });
  write_file_atomically(run_dir_ + "/metrics.jsonl", [&](std::ostream& out) {
    for (const auto& row : rows_) {
      nlohmann::json line = row.figures;
      line["epoch"] = row.epoch;
      line["phase"] = row.phase;
      out << line.dump() << "\n";
    }
  });
  // Loss and accuracy per epoch, side by side.
  using Series = std::vector<std::pair<std::string, std::vector<std::pair<int, double>>>>;
  Series loss, accuracy;
  for (const auto& key : keys) {
    Series* target = key.size() >= 4 && key.compare(key.size() - 4, 4, "loss") == 0   ? &loss
                     : key.size() >= 4 && key.compare(key.size() - 4, 4, "top1") == 0 ? &accuracy
                                                                                       : nullptr;
    if (!target) continue;
    std::vector<std::pair<int, double>> points;
    for (const auto& row : rows_)
      if (auto it = row.figures.find(key); it != row.figures.end() && std::isfinite(it->second))
        points.emplace_back(row.epoch, it->second);
    target->emplace_back(key, points);
  }
  const int epochs = rows_.empty() ? 1 : rows_.back().epoch;
  const int width = kMetricsPlotWidth, height = kMetricsPlotHeight;
  cairo_surface_t* surface = cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height);
  cairo_t* cr = cairo_create(surface);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  draw_chart(cr, 0, 0, width / 2.0, height, "loss per epoch", loss, epochs);
  draw_chart(cr, width / 2.0, 0, width / 2.0, height, "top-1 accuracy per epoch", accuracy, epochs);
  cairo_destroy(cr);
  try {
    write_png(run_dir_ + "/metrics.png", surface);
  } catch (...) {
    cairo_surface_destroy(surface);
    throw;
  }
  cairo_surface_destroy(surface);
}

}  // namespace flowrun::stages
