#include "stages/tensor/to_device.h"

#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/tensor/batch_data.h"
#include "stages/tensor/device.h"

namespace flowrun::stages {

Schema ToDevice::schema() {
  return Schema("to_device", "moves batches to the GPU (side-stream copies) or leaves them on the CPU")
      .param(String("device", "auto (CUDA when available), cpu or cuda").def(std::string("auto"))
                 .one_of({"auto", "cpu", "cuda"}))
      .param(Int("index", "CUDA device index").def(int64_t{0}).range(0, 63))
      .param(Bool("non_blocking", "asynchronous copies from pinned memory").def(true));
}

ToDevice::ToDevice(const StageInit& init)
    : device_index_(static_cast<int>(init.params.get_int("index"))), non_blocking_(init.params.get_bool("non_blocking")) {
  const std::string device = init.params.get_string("device");
  to_cuda_ = device == "cuda" || (device == "auto" && cuda_available());
  if (to_cuda_ && !cuda_available()) throw std::runtime_error("device=cuda but there is " + no_cuda_device_reason());
}

void ToDevice::process(Item& item, const Emit& emit) {
  if (to_cuda_) {
    Batch& batch = item.get<Batch>();
    batch.images = upload(batch.images, device_index_, non_blocking_);
    batch.labels = upload(batch.labels, device_index_, non_blocking_);
  }
  emit(item);
}

FLOWRUN_REGISTER_STAGE(ToDevice);

}  // namespace flowrun::stages
