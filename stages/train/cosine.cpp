#include "stages/train/cosine.h"

#include <cmath>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Cosine::schema() {
  return Schema("cosine", "linear warm-up, then cosine decay of the learning rate, stepped per batch")
      .provides("scheduler")
      .param(Float("warmup", "share of the steps spent warming up from 0").def(0.0).range(0, 1))
      .param(Float("final", "final lr as a share of the peak").def(0.0).range(0, 1));
}

double Cosine::lr_factor(int64_t step, int64_t total) const {
  const double warm = warmup_ * static_cast<double>(total);
  const double s = static_cast<double>(step);
  if (s < warm) return (s + 1) / warm;
  const double pct = total - warm > 1 ? std::min(1.0, (s - warm) / (total - warm - 1)) : 1.0;
  return final_ + (1 - final_) * 0.5 * (1 + std::cos(M_PI * pct));
}

FLOWRUN_REGISTER_STAGE(Cosine);

}  // namespace flowrun::stages
