#include "stages/tensor/device.h"

#include <torch/version.h>

#include <cstdio>
#include <stdexcept>

#ifdef FLOWRUN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace flowrun::stages {

bool cuda_available() {
#ifdef FLOWRUN_WITH_CUDA
  return at::cuda::is_available();
#else
  return false;
#endif
}

std::string no_cuda_device_reason() {
#ifdef FLOWRUN_WITH_CUDA
  return "no CUDA device: none is visible to this process (CUDA is compiled in; check the driver and "
         "CUDA_VISIBLE_DEVICES)";
#else
  return std::string("no CUDA device: this flowrun was built without CUDA (LibTorch ") + TORCH_VERSION +
         ", CPU only; scripts/torch2.sh builds one with CUDA)";
#endif
}

std::string torch_build_info() {
  std::string info = std::string("LibTorch ") + TORCH_VERSION;
#ifdef FLOWRUN_WITH_CUDA
  const auto& hooks = at::detail::getCUDAHooks();
  char text[96];
  // cudart encodes major*1000 + minor*10; cuDNN 9 major*10000 + minor*100 + patch.
  const long cudart = hooks.versionCUDART(), cudnn = hooks.versionCuDNN();
  std::snprintf(text, sizeof text, ", CUDA %ld.%ld compiled in", cudart / 1000, (cudart % 1000) / 10);
  info += text;
  if (cudnn > 0) {
    std::snprintf(text, sizeof text, ", cuDNN %ld.%ld.%ld", cudnn / 10000, (cudnn % 10000) / 100, cudnn % 100);
    info += text;
  }
#else
  info += ", CUDA not compiled in";
#endif
  return info;
}

std::string cuda_devices_info() {
#ifdef FLOWRUN_WITH_CUDA
  try {
    const int count = cuda_available() ? static_cast<int>(at::cuda::device_count()) : 0;
    if (count == 0) return "no CUDA device";
    std::string info = std::to_string(count) + (count == 1 ? " CUDA device: " : " CUDA devices: ");
    for (int i = 0; i < count; ++i) {
      const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(i));
      char memory[64];
      std::snprintf(memory, sizeof memory, "%.1f GiB", static_cast<double>(p->totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
      info += std::string(i ? ", " : "") + p->name + " (sm_" + std::to_string(p->major) + std::to_string(p->minor) +
              ", " + memory + ")";
    }
    return info;
  } catch (const std::exception& e) {
    return std::string("CUDA devices unknown (") + e.what() + ")";
  }
#else
  return "no CUDA device";
#endif
}

at::Tensor upload(const at::Tensor& host, int device_index, bool non_blocking) {
#ifdef FLOWRUN_WITH_CUDA
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_index));
  // One copy stream per thread and device; the consumer's stream waits on it.
  auto copy_stream = c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device_index));
  auto compute_stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index));
  at::Tensor device_tensor;
  {
    c10::cuda::CUDAStreamGuard stream_guard(copy_stream);
    device_tensor = host.to(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)), non_blocking);
  }
  at::cuda::CUDAEvent copied;
  copied.record(copy_stream);
  copied.block(compute_stream);
  device_tensor.record_stream(compute_stream);
  return device_tensor;
#else
  (void)host;
  (void)device_index;
  (void)non_blocking;
  throw std::runtime_error("this flowrun was built without CUDA");
#endif
}

}  // namespace flowrun::stages
