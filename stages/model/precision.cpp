#include "stages/model/precision.h"

#include "stages/model/autocast_compat.h"

namespace flowrun::stages {

AutocastScope::AutocastScope(bool enabled) : active_(enabled) {
  if (active_) compat::set_cuda_bf16_autocast(true);
}

void AutocastScope::end() {
  if (!active_) return;
  active_ = false;
  compat::set_cuda_bf16_autocast(false);
  at::autocast::clear_cache();
}

}  // namespace flowrun::stages
