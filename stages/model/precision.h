// Mixed precision: bf16 autocast around the forward pass and the loss (no
// loss scaling needed for bf16), on CUDA or on the CPU. LibTorch has no RAII
// guard, and its API changed in 2.x, so the calls live here. Autocast caches
// casts of the weights: the cache is cleared after each forward, or the next
// forward would use the weights from before the optimizer step
// (libtorch-notes.md).
#pragma once

#include <cstdint>
#include <string>

namespace flowrun::stages {

// Where a model's forward passes run in bf16 autocast: nowhere (fp32), on
// CUDA, or on the CPU. Converts to bool (whether it is bf16 at all), as
// ModelStage::bf16() did when it returned a bool.
struct Autocast {
  enum Device : uint8_t { kOff, kCuda, kCpu };
  Device device = kOff;
  operator bool() const { return device != kOff; }  // NOLINT: bf16() was a bool
  // "fp32" or "bf16", as the precision parameter spells them.
  const char* name() const { return device == kOff ? "fp32" : "bf16"; }
};

// Whether this CPU runs bf16 matrix work natively: AVX512_BF16 (vdpbf16ps)
// or AMX-BF16, with the OS saving the registers they need (XCR0). False on
// other architectures. Read from CPUID once.
bool cpu_has_native_bf16();

// The CPU's vector extensions that matter for the data path and LibTorch's
// kernels, as /proc/cpuinfo names them ("avx2 avx512f avx512bw avx512_bf16"),
// "" where none is known. For logs and benchmarks.
std::string cpu_vector_extensions();

// `precision` (auto, fp32 or bf16) for a model on CUDA (`cuda`) or the CPU:
// auto is bf16 on CUDA, bf16 on a CPU where cpu_has_native_bf16() (AVX512_BF16
// or AMX) and fp32 on other CPUs (there LibTorch emulates bf16, slower).
// `why` gets the reason of the choice, for the run's log line.
Autocast choose_precision(const std::string& precision, bool cuda, std::string* why = nullptr);

class AutocastScope {
 public:
  // Enables bf16 autocast on `mode`'s device for this thread (nothing for kOff).
  explicit AutocastScope(Autocast mode);
  // Disables it and clears the cast cache (before backward).
  void end();
  ~AutocastScope() { end(); }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  Autocast mode_;
};

}  // namespace flowrun::stages
