#include "stages/model/precision.h"

#include <stdexcept>

#include "stages/model/autocast_compat.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace flowrun::stages {

namespace {

struct CpuFeatures {
  bool avx2 = false, avx512f = false, avx512bw = false, avx512vl = false, avx512_vnni = false;
  bool avx512_bf16 = false, amx_bf16 = false;
};

CpuFeatures read_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  if (!osxsave || !avx) return f;
  // Which register states the OS saves on a context switch: the features
  // that use the others are unusable, whatever CPUID says.
  unsigned xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool ymm = (xcr0_lo & 0x6) == 0x6;                   // SSE + AVX state
  const bool zmm = ymm && (xcr0_lo & 0xe0) == 0xe0;          // opmask, ZMM_Hi256, Hi16_ZMM
  const bool tiles = (xcr0_lo & 0x60000) == 0x60000;         // XTILECFG, XTILEDATA
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned leaf7_max = a;
  f.avx2 = ymm && (b & (1u << 5));
  f.avx512f = zmm && (b & (1u << 16));
  f.avx512bw = f.avx512f && (b & (1u << 30));
  f.avx512vl = f.avx512f && (b & (1u << 31));
  f.avx512_vnni = f.avx512f && (c & (1u << 11));
  // Linux also wants a process to ask for the AMX tile state
  // (arch_prctl(ARCH_REQ_XCOMP_PERM)); oneDNN does that itself before using it.
  f.amx_bf16 = tiles && (d & (1u << 22));
  if (leaf7_max >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = f.avx512f && (a & (1u << 5));
  }
#endif
  return f;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = read_cpu_features();
  return features;
}

}  // namespace

bool cpu_has_native_bf16() {
  const CpuFeatures& f = cpu_features();
  return f.avx512_bf16 || f.amx_bf16;
}

std::string cpu_vector_extensions() {
  const CpuFeatures& f = cpu_features();
  std::string out;
  auto add = [&](bool has, const char* name) {
    if (!has) return;
    if (!out.empty()) out += ' ';
    out += name;
  };
  add(f.avx2, "avx2");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512_vnni, "avx512_vnni");
  add(f.avx512_bf16, "avx512_bf16");
  add(f.amx_bf16, "amx_bf16");
#if defined(__aarch64__)
  out = "neon";
#endif
  return out;
}

Autocast choose_precision(const std::string& precision, bool cuda, std::string* why) {
  auto say = [&](std::string text) {
    if (why) *why = std::move(text);
  };
  if (precision == "fp32") {
    say("precision=fp32");
    return {};
  }
  if (precision == "bf16") {
    say(cuda || cpu_has_native_bf16() ? "precision=bf16"
                                      : "precision=bf16; this CPU has no AVX512_BF16 or AMX: LibTorch emulates bf16 "
                                        "there, slower than fp32");
    return {cuda ? Autocast::kCuda : Autocast::kCpu};
  }
  if (precision != "auto") throw std::invalid_argument("precision must be auto, fp32 or bf16, not '" + precision + "'");
  if (cuda) {
    say("precision=auto on CUDA");
    return {Autocast::kCuda};
  }
  // On the CPU auto takes bf16 only where the CPU computes it natively
  // (AVX512_BF16 or AMX): ResNet training measured ~1.5x fp32 there
  // (bench/README.md); elsewhere LibTorch emulates bf16, slower than fp32.
  const std::string extensions = cpu_vector_extensions();
  if (cpu_has_native_bf16()) {
    say("precision=auto on a CPU with native bf16 (" + extensions + "): bf16 autocast; precision=fp32 for fp32");
    return {Autocast::kCpu};
  }
  say("precision=auto on a CPU without AVX512_BF16 or AMX (" + (extensions.empty() ? "none" : extensions) +
      "): fp32, bf16 would be emulated");
  return {};
}

AutocastScope::AutocastScope(Autocast mode) : mode_(mode) {
  if (mode_.device == Autocast::kCuda) compat::set_cuda_bf16_autocast(true);
  if (mode_.device == Autocast::kCpu) compat::set_cpu_bf16_autocast(true);
}

void AutocastScope::end() {
  if (!mode_) return;
  if (mode_.device == Autocast::kCuda) compat::set_cuda_bf16_autocast(false);
  if (mode_.device == Autocast::kCpu) compat::set_cpu_bf16_autocast(false);
  mode_ = {};
  at::autocast::clear_cache();
}

}  // namespace flowrun::stages
