// `flowrun --version`: what this build carries and which devices it sees.
#pragma once

#include <string>

namespace flowrun::cli {

// Two lines, e.g.
//   flowrun 0.1.0
//   LibTorch 2.11.0, CUDA 13.0 compiled in, cuDNN 9.19.0, NCCL 2.28.9; no CUDA device
std::string version_text();

}  // namespace flowrun::cli
