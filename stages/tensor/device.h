// Where CUDA is: the only place that asks. CUDA code compiles only where
// LibTorch has CUDA (FLOWRUN_WITH_CUDA, set by CMake); elsewhere the answers
// are "no".
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace flowrun::stages {

bool cuda_available();

// Why CUDA cannot be used here, for errors: "no CUDA device: this flowrun
// was built without CUDA (LibTorch 1.13.0, CPU only)" or "no CUDA device:
// none is visible (CUDA is compiled in)".
std::string no_cuda_device_reason();

// What this build carries, for `flowrun --version`: the LibTorch version and
// whether CUDA is compiled in, with the CUDA runtime's and cuDNN's versions
// as LibTorch reports them, e.g. "LibTorch 2.11.0, CUDA 13.0 compiled in,
// cuDNN 9.19.0" or "LibTorch 1.13.0, CUDA not compiled in".
std::string torch_build_info();

// The CUDA devices this process sees: "no CUDA device", or
// "1 CUDA device: NVIDIA H200 (sm_90, 139.8 GiB)". Never throws: a driver
// that cannot be asked is reported as such.
std::string cuda_devices_info();

// Copies `host` to the GPU without blocking the caller: on a side stream
// when CUDA is built in, after which the compute stream waits for it.
// Without CUDA it throws.
at::Tensor upload(const at::Tensor& host, int device_index, bool non_blocking);

}  // namespace flowrun::stages
