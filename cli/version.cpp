#include "version.h"

#include "stages/dist/job.h"
#include "stages/tensor/device.h"

namespace flowrun::cli {

std::string version_text() {
  std::string text = std::string("flowrun ") + FLOWRUN_VERSION + "\n" + stages::torch_build_info();
  const std::string nccl = stages::nccl_build_info();
  if (!nccl.empty()) text += ", " + nccl;
  return text + "; " + stages::cuda_devices_info() + "\n";
}

}  // namespace flowrun::cli
