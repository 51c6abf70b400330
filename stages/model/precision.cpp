#include "stages/model/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace flowrun::stages {

AutocastScope::AutocastScope(bool enabled) : active_(enabled) {
  if (!active_) return;
#if TORCH_VERSION_MAJOR >= 2
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
  at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  at::autocast::set_enabled(true);
#endif
}

void AutocastScope::end() {
  if (!active_) return;
  active_ = false;
#if TORCH_VERSION_MAJOR >= 2
  at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
  at::autocast::set_enabled(false);
#endif
  at::autocast::clear_cache();
}

}  // namespace flowrun::stages
