// LibTorch 1.13 and 2.x name autocast's switches differently (2.x takes the
// device type; 1.13's "gpu" and "cpu" calls are deprecated there): the one
// place that knows, as stages/dist/c10d_compat.h is for c10d.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace flowrun::stages::compat {

// bf16 autocast on CUDA on (true) or off (false) for the calling thread.
inline void set_cuda_bf16_autocast(bool enabled) {
#if TORCH_VERSION_MAJOR >= 2
  if (enabled) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
#else
  if (enabled) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
  at::autocast::set_enabled(enabled);
#endif
}

// bf16 autocast on the CPU on (true) or off (false) for the calling thread.
// (bf16 is the CPU's default autocast dtype in both; set it anyway, as
// something else in the process may have changed it.)
inline void set_cpu_bf16_autocast(bool enabled) {
#if TORCH_VERSION_MAJOR >= 2
  if (enabled) at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, enabled);
#else
  if (enabled) at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  at::autocast::set_cpu_enabled(enabled);
#endif
}

// Whether autocast is on for the CPU in the calling thread.
inline bool cpu_autocast_enabled() {
#if TORCH_VERSION_MAJOR >= 2
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}

}  // namespace flowrun::stages::compat
