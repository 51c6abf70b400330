#include "stages/train/onecycle.h"

#include <cmath>

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema OneCycle::schema() {
  return Schema("onecycle", "one-cycle learning rate (PyTorch's OneCycleLR), stepped per batch")
      .provides("scheduler")
      .param(Float("pct_start", "share of the steps spent warming up").def(0.3).range(0, 1))
      .param(Float("div_factor", "start lr = peak / div_factor").def(25.0).at_least(1e-12))
      .param(Float("final_div_factor", "final lr = start lr / final_div_factor").def(1e4).at_least(1e-12))
      .param(String("anneal", "cos or linear").def(std::string("cos")).one_of({"cos", "linear"}))
      .param(Bool("cycle_momentum", "cycle momentum (SGD) / beta1 (Adam) inversely").def(true))
      .param(Float("base_momentum", "momentum at the peak lr").def(0.85).range(0, 1))
      .param(Float("max_momentum", "momentum at the start and end").def(0.95).range(0, 1));
}

OneCycle::OneCycle(const StageInit& init)
    : pct_start_(init.params.get_float("pct_start")),
      div_factor_(init.params.get_float("div_factor")),
      final_div_factor_(init.params.get_float("final_div_factor")),
      cosine_(init.params.get_string("anneal") == "cos"),
      cycle_momentum_(init.params.get_bool("cycle_momentum")),
      base_momentum_(init.params.get_float("base_momentum")),
      max_momentum_(init.params.get_float("max_momentum")) {}

double OneCycle::anneal(double start, double end, double pct) const {
  if (cosine_) return end + (start - end) / 2.0 * (std::cos(M_PI * pct) + 1);
  return (end - start) * pct + start;
}

// As torch.optim.lr_scheduler.OneCycleLR.get_lr (1.13), with max_lr = 1.
double OneCycle::lr_factor(int64_t step, int64_t total) const {
  const double initial = 1.0 / div_factor_, minimum = initial / final_div_factor_;
  const double end_up = pct_start_ * static_cast<double>(total) - 1, end_down = static_cast<double>(total) - 1;
  const double s = static_cast<double>(std::min(step, total - 1));
  if (s <= end_up) return anneal(initial, 1.0, end_up > 0 ? s / end_up : 1.0);
  return anneal(1.0, minimum, (s - end_up) / (end_down - end_up));
}

std::optional<double> OneCycle::momentum(int64_t step, int64_t total) const {
  if (!cycle_momentum_) return std::nullopt;
  const double end_up = pct_start_ * static_cast<double>(total) - 1, end_down = static_cast<double>(total) - 1;
  const double s = static_cast<double>(std::min(step, total - 1));
  if (s <= end_up) return anneal(max_momentum_, base_momentum_, end_up > 0 ? s / end_up : 1.0);
  return anneal(base_momentum_, max_momentum_, (s - end_up) / (end_down - end_up));
}

FLOWRUN_REGISTER_STAGE(OneCycle);

}  // namespace flowrun::stages
