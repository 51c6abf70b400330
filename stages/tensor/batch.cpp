#include "stages/tensor/batch.h"

#include <cstring>
#include <stdexcept>

#include "pipeline/registry.h"
#include "pipeline/trace.h"
#include "stages/tensor/device.h"

namespace flowrun::stages {

Schema BatchStage::schema() {
  return Schema("batch", "collates normalized samples into [N,C,H,W] float and [N] label tensors, in order")
      .param(Int("size", "samples per batch").def(int64_t{32}).range(1, 1 << 20))
      .param(Bool("drop_last", "drop the last, smaller batch of an epoch").def(false))
      .param(String("pin", "pin host memory: auto = when CUDA is available").def(std::string("auto"))
                 .one_of({"auto", "yes", "no"}));
}

BatchStage::BatchStage(const StageInit& init)
    : size_(init.params.get_int("size")), drop_last_(init.params.get_bool("drop_last")) {
  const std::string pin = init.params.get_string("pin");
  pin_ = pin == "yes" || (pin == "auto" && cuda_available());
  if (pin_ && !cuda_available()) throw std::runtime_error("pin=yes needs CUDA, which this machine or build lacks");
  pending_.reserve(static_cast<size_t>(size_));
}

void BatchStage::begin_epoch(const EpochInfo&) { number_ = 0; }

void BatchStage::end_epoch(const EpochInfo&) { last_ns_ = now_ns(); }

void BatchStage::process(Item& item, const Emit& emit) {
  if (!first_ns_) first_ns_ = now_ns();
  Sample& sample = item.get<Sample>();
  if (sample.tensor.empty())
    throw std::runtime_error(sample.describe() + " is not normalized (put normalize before batch)");
  if (!pending_.empty()) {
    const FloatImage& a = pending_.front().tensor;
    const FloatImage& b = sample.tensor;
    if (a.channels != b.channels || a.height != b.height || a.width != b.width)
      throw std::runtime_error(sample.describe() + " is " + std::to_string(b.channels) + "x" + std::to_string(b.height) +
                               "x" + std::to_string(b.width) + " but the batch is " + std::to_string(a.channels) +
                               "x" + std::to_string(a.height) + "x" + std::to_string(a.width) +
                               " (add resize/center_crop so all samples match)");
  }
  pending_.push_back(std::move(sample));
  if (static_cast<int64_t>(pending_.size()) == size_) emit_batch(emit);
}

void BatchStage::flush(const Emit& emit) {
  if (!pending_.empty() && !drop_last_) emit_batch(emit);
  pending_.clear();
}

void BatchStage::emit_batch(const Emit& emit) {
  const FloatImage& first = pending_.front().tensor;
  const int64_t n = static_cast<int64_t>(pending_.size());
  auto options = at::TensorOptions().dtype(at::kFloat).pinned_memory(pin_);
  Batch batch;
  batch.images = at::empty({n, first.channels, first.height, first.width}, options);
  batch.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(pin_));
  float* images = batch.images.data_ptr<float>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const size_t per_sample = first.data.size();
  for (int64_t i = 0; i < n; ++i) {
    const Sample& s = pending_[i];
    std::memcpy(images + i * per_sample, s.tensor.data.data(), per_sample * sizeof(float));
    labels[i] = s.label;
    batch.indices.push_back(s.index);
    batch.paths.push_back(s.path);
  }
  batch.dataset = pending_.front().dataset;
  batch.mean = pending_.front().mean;
  batch.std = pending_.front().std;
  batch.number = number_++;
  pending_.clear();
  images_ += n;
  ++batches_;
  Item out;
  out.set(std::move(batch));
  emit(out);
}

void BatchStage::report(Report& report) const {
  report.set("images", static_cast<double>(images_));
  report.set("batches", static_cast<double>(batches_));
  int64_t end = last_ns_ > first_ns_ ? last_ns_ : now_ns();
  if (first_ns_ && end > first_ns_) report.set("images_per_s", images_ / ((end - first_ns_) / 1e9));
}

FLOWRUN_REGISTER_STAGE(BatchStage);

}  // namespace flowrun::stages
