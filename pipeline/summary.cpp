#include "pipeline/summary.h"

namespace flowrun {

nlohmann::json summary_json(const RunResult& result) {
  nlohmann::json summary;
  summary["elapsed_s"] = result.elapsed_s;
  summary["interrupted"] = result.interrupted;
  summary["epochs"] = result.epochs_run;
  summary["stopped_at"] = result.stopped_at.describe();
  if (result.resumed_from) summary["resumed_from"] = result.resumed_from->describe();
  summary["bottleneck"] = result.bottleneck;
  summary["max_in_flight"] = result.max_in_flight;
  summary["peak_rss_mb"] = result.peak_rss_mb;
  nlohmann::json stages = nlohmann::json::object();
  auto lift = [&](const std::map<std::string, double>& figures) {
    for (const auto& [key, value] : figures)
      if (!summary.contains(key)) summary[key] = value;
  };
  for (const auto& s : result.stages) {
    nlohmann::json& entry = stages[s.name];
    entry["type"] = s.type;
    entry["kind"] = to_string(s.kind);
    entry["concurrency"] = s.concurrency;
    entry["items_in"] = s.items_in;
    entry["items_out"] = s.items_out;
    entry["dropped"] = s.dropped;
    entry["busy_s"] = s.busy_s;
    entry["wait_input_s"] = s.wait_input_s;
    entry["wait_output_s"] = s.wait_output_s;
    entry["output_queue_ms"] = s.output_queue_ms;
    entry["utilization"] = s.utilization;
    entry["figures"] = s.figures;
  }
  summary["stages"] = stages;
  nlohmann::json components = nlohmann::json::object();
  for (const auto& [name, figures] : result.component_figures) components[name] = figures;
  summary["components"] = components;
  for (const auto& s : result.stages) lift(s.figures);
  for (const auto& [name, figures] : result.component_figures) lift(figures);
  return summary;
}

}  // namespace flowrun
