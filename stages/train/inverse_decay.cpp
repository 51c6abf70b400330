#include "stages/train/inverse_decay.h"

#include <algorithm>
#include <cmath>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema InverseDecay::schema() {
  return Schema("inverse_decay",
                "lr · (1 + gamma·p)^-power over the phase's progress p, stepped per batch (Ganin & Lempitsky, "
                "ICML 2015: DANN's annealing)")
      .provides("scheduler")
      .param(Float("gamma", "how fast the rate falls (the paper: 10)").def(10.0).range(0, 1e6))
      .param(Float("power", "the decay's exponent (the paper: 0.75)").def(0.75).range(0, 100));
}

double InverseDecay::lr_factor(int64_t step, int64_t total) const {
  const double p = total > 0 ? std::clamp(static_cast<double>(step) / static_cast<double>(total), 0.0, 1.0) : 0.0;
  return std::pow(1 + gamma_ * p, -power_);
}

FLOWRUN_REGISTER_STAGE(InverseDecay);

}  // namespace flowrun::stages
