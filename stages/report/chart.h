// The layout of metrics.png's charts (MetricsLog draws them): the value
// axis of a chart and where its plot and legend go, so that tests can check
// the picture against them.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace flowrun::stages {

// A chart's value axis: its range (the values padded by 5 %, never below 0
// when no value is, never above 1 for accuracies that are not) and its 5
// tick values, lowest first.
struct ValueAxis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
};
ValueAxis chart_value_axis(const std::vector<double>& values, bool accuracy);

// Where a chart drawn in the box (x0, y0, w, h) with `series` curves puts its
// plot frame and, under it, each legend entry's baseline (x, y).
struct ChartLayout {
  double plot_left = 0, plot_top = 0, plot_right = 0, plot_bottom = 0;
  std::vector<std::pair<double, double>> legend;
};
ChartLayout chart_layout(double x0, double y0, double w, double h, size_t series);
// metrics.png: the loss chart in the left half, accuracy in the right.
constexpr int kMetricsPlotWidth = 900, kMetricsPlotHeight = 360;

}  // namespace flowrun::stages
