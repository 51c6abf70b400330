// Mixed precision on the GPU: bf16 autocast around the forward pass and the
// loss (no loss scaling needed for bf16). LibTorch has no RAII guard, and its
// API changed in 2.x, so the calls live here. Autocast caches casts of the
// weights: the cache is cleared after each forward, or the next forward would
// use the weights from before the optimizer step (libtorch-notes.md).
#pragma once

namespace flowrun::stages {

class AutocastScope {
 public:
  // Enables CUDA bf16 autocast on this thread when `enabled`.
  explicit AutocastScope(bool enabled);
  // Disables it and clears the cast cache (before backward).
  void end();
  ~AutocastScope() { end(); }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_;
};

}  // namespace flowrun::stages
