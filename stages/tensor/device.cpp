#include "stages/tensor/device.h"

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
