#include "pipeline/summary.h"

#include <cmath>

namespace flowrun {

namespace {

// Figures are doubles; counts (items, samples, steps) are written as JSON
// integers, as a reader expects them: every figure with an integral value.
nlohmann::json number(double value) {
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 9007199254740992.0)
    return static_cast<int64_t>(value);
  return value;
}

nlohmann::json numbers(const std::map<std::string, double>& figures) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : figures) out[key] = number(value);
  return out;
}

// Where the run ended, in the words a user reads: a complete 8-epoch run
// ended at the end of epoch 8 (its position is the start of epoch 9).
std::string stopped_at(const RunPosition& position) {
  if (!position.at_epoch_start()) return position.describe();
  if (position.epoch == 0) return "before epoch 1";
  return "end of epoch " + std::to_string(position.epoch);
}

}  // namespace

nlohmann::json summary_json(const RunResult& result) {
  nlohmann::json summary;
  summary["elapsed_s"] = result.elapsed_s;
  summary["interrupted"] = result.interrupted;
  summary["epochs"] = result.epochs_run;
  summary["stopped_at"] = stopped_at(result.stopped_at);
  summary["stop_reason"] = result.stop_reason;
  if (result.resumed_from) summary["resumed_from"] = result.resumed_from->describe();
  summary["bottleneck"] = result.bottleneck;
  summary["max_in_flight"] = result.max_in_flight;
  summary["peak_rss_mb"] = result.peak_rss_mb;
  nlohmann::json stages = nlohmann::json::object();
  auto lift = [&](const std::map<std::string, double>& figures) {
    for (const auto& [key, value] : figures)
      if (!summary.contains(key)) summary[key] = number(value);
  };
  for (const auto& s : result.stages) {
    nlohmann::json& entry = stages[s.name];
    entry["type"] = s.type;
    entry["kind"] = to_string(s.kind);
    entry["concurrency"] = s.concurrency;
    entry["items_in"] = s.items_in;
    entry["bound_s"] = s.bound_s;
    entry["items_out"] = s.items_out;
    entry["dropped"] = s.dropped;
    entry["busy_s"] = s.busy_s;
    entry["wait_input_s"] = s.wait_input_s;
    entry["wait_output_s"] = s.wait_output_s;
    entry["output_queue_ms"] = s.output_queue_ms;
    entry["utilization"] = s.utilization;
    entry["figures"] = numbers(s.figures);
  }
  summary["stages"] = stages;
  nlohmann::json components = nlohmann::json::object();
  for (const auto& [name, figures] : result.component_figures) components[name] = numbers(figures);
  summary["components"] = components;
  for (const auto& s : result.stages) lift(s.figures);
  for (const auto& [name, figures] : result.component_figures) lift(figures);
  return summary;
}

}  // namespace flowrun
