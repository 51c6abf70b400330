#include "version.h"

#include "stages/dist/job.h"
#include "stages/image/pixel_kernels.h"
#include "stages/model/precision.h"
#include "stages/tensor/device.h"

namespace flowrun::cli {

std::string version_text() {
  std::string text = std::string("flowrun ") + FLOWRUN_VERSION + "\n" + stages::torch_build_info();
  const std::string nccl = stages::nccl_build_info();
  if (!nccl.empty()) text += ", " + nccl;
  text += "; " + stages::cuda_devices_info() + "\n";
  // What this CPU gives the data path and the model (benchmarks print it
  // beside their figures).
  const std::string extensions = stages::cpu_vector_extensions();
  return text + "CPU: " + (extensions.empty() ? "no AVX2 or AVX-512" : extensions) + "; pixel kernels: " +
         stages::kernels::dispatched_target() + "; precision=auto on the CPU: " +
         stages::choose_precision("auto", /*cuda=*/false).name() + "\n";
}

}  // namespace flowrun::cli
