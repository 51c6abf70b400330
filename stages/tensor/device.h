// Where CUDA is: the only place that asks. CUDA code compiles only where
// LibTorch has CUDA (FLOWRUN_WITH_CUDA, set by CMake); elsewhere the answers
// are "no".
#pragma once

#include <ATen/ATen.h>

namespace flowrun::stages {

bool cuda_available();

// Copies `host` to the GPU without blocking the caller: on a side stream
// when CUDA is built in, after which the compute stream waits for it.
// Without CUDA it throws.
at::Tensor upload(const at::Tensor& host, int device_index, bool non_blocking);

}  // namespace flowrun::stages
