// The run's final figures as one JSON object (--summary-json).
#pragma once

#include <nlohmann/json.hpp>

#include "pipeline/executor.h"

namespace flowrun {

// Keys: elapsed_s, interrupted, epochs, bottleneck, max_in_flight, stages
// (per-stage counters and the figures each stage reports), components, and
// at top level every figure a stage reports under a plain name (so later
// stages can add e.g. val_top1 without the reader knowing which stage did).
nlohmann::json summary_json(const RunResult& result);

}  // namespace flowrun
