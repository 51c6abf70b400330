#include "stages/tensor/batch.h"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "pipeline/run_state.h"
#include "pipeline/trace.h"
#include "stages/tensor/device.h"

namespace flowrun::stages {

Schema BatchStage::schema() {
  return Schema("batch", "collates normalized samples into [N,C,H,W] float and [N] label tensors, in order")
      .param(Int("size", "samples per batch (of each source, in a flow that joins sources)").def(int64_t{32}).range(1, 1 << 20))
      .param(Bool("drop_last", "drop the last, smaller batch of an epoch").def(false))
      .param(String("pin", "pin host memory: auto = when CUDA is available").def(std::string("auto"))
                 .one_of({"auto", "yes", "no"}))
      .param(Int("pool", "batch buffers kept for reuse (unpinned memory)").def(int64_t{8}).range(0, 1024));
}

BatchStage::BatchStage(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      size_(init.params.get_int("size")),
      drop_last_(init.params.get_bool("drop_last")),
      pool_size_(static_cast<size_t>(init.params.get_int("pool"))) {
  const std::string pin = init.params.get_string("pin");
  pin_ = pin == "yes" || (pin == "auto" && cuda_available());
  if (pin_ && !cuda_available()) throw std::runtime_error("pin=yes needs CUDA, and there is " + no_cuda_device_reason());
  pending_.reserve(static_cast<size_t>(size_));
  counts_.assign(sources_, 0);
}

void BatchStage::begin_epoch(const EpochInfo&) {
  number_ = 0;
  sources_ = 1;
  if (const ResolvedGraph* graph = stages_.resolved_graph())
    for (const auto& chain : graph->chains)
      if (std::find(chain.begin(), chain.end(), name_) != chain.end()) sources_ = graph->sources_of(chain.front()).size();
  counts_.assign(sources_, 0);
}

bool BatchStage::ready(bool complete) const {
  for (int64_t count : counts_)
    if (complete ? count < size_ : count == 0) return false;
  return true;
}

bool BatchStage::save_state(std::string& out) const {
  out = std::to_string(number_);
  return true;
}

void BatchStage::load_state(const std::string& in) {
  auto count = parse_saved_count(in);
  if (!count) throw std::runtime_error("saved batch count '" + in + "' is not a count");
  number_ = static_cast<int64_t>(*count);
}

void BatchStage::end_epoch(const EpochInfo&) { last_ns_ = now_ns(); }

namespace {
struct Shape {
  int c = 0, h = 0, w = 0;
  bool operator!=(const Shape& o) const { return c != o.c || h != o.h || w != o.w; }
  std::string text() const { return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w); }
};
// The float tensor a sample will occupy in the batch.
Shape shape_of(const Sample& s) {
  if (!s.tensor.empty()) return {s.tensor.channels, s.tensor.height, s.tensor.width};
  return {s.image.channels, s.image.height, s.image.width};
}
}  // namespace

void BatchStage::process(Item& item, const Emit& emit) {
  if (!first_ns_) first_ns_ = now_ns();
  Sample& sample = item.get<Sample>();
  if (!sample.normalization || (sample.tensor.empty() && sample.image.empty()))
    throw std::runtime_error(sample.describe() + " is not normalized (put normalize before batch)");
  if (!pending_.empty() && shape_of(sample) != shape_of(pending_.front()))
    throw std::runtime_error(sample.describe() + " is " + shape_of(sample).text() + " but the batch is " +
                             shape_of(pending_.front()).text() + " (add resize/center_crop so all samples match)");
  if (item.origin >= counts_.size())  // an engine bug, never to pass silently
    throw std::logic_error(sample.describe() + " comes from source " + std::to_string(item.origin) + " of a flow of " +
                           std::to_string(counts_.size()));
  pending_.push_back(std::move(sample));
  origins_.push_back(item.origin);
  ++counts_[item.origin];
  if (ready(/*complete=*/true)) emit_batch(emit);
}

void BatchStage::flush(const Emit& emit) {
  // A joined flow's last batch needs a sample of every source (a step adapts the domains it sees).
  if (!pending_.empty() && !drop_last_ && ready(/*complete=*/false)) emit_batch(emit);
  pending_.clear();
  origins_.clear();
  counts_.assign(sources_, 0);
}

void BatchStage::emit_batch(const Emit& emit) {
  if (sources_ > 1) {
    // Grouped by source, each in stream order: the first source's samples first.
    std::vector<size_t> order(pending_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return origins_[a] < origins_[b]; });
    std::vector<Sample> grouped;
    grouped.reserve(pending_.size());
    for (size_t i : order) grouped.push_back(std::move(pending_[i]));
    pending_ = std::move(grouped);
  }
  const Shape shape = shape_of(pending_.front());
  const int64_t n = static_cast<int64_t>(pending_.size());
  Batch batch;
  batch.images = pin_ ? at::empty({n, shape.c, shape.h, shape.w}, at::TensorOptions().dtype(at::kFloat).pinned_memory(true))
                      : images_tensor(n, shape.c, shape.h, shape.w);
  batch.labels = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(pin_));
  float* images = batch.images.data_ptr<float>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const size_t per_sample = static_cast<size_t>(shape.c) * shape.h * shape.w;
  // Samples are written in parallel: other threads help this serial stage.
  tbb::parallel_for(int64_t{0}, n, [&](int64_t i) {
    const Sample& s = pending_[i];
    float* out = images + i * per_sample;
    if (!s.tensor.empty()) std::memcpy(out, s.tensor.data.data(), per_sample * sizeof(float));
    else s.normalization->apply(s.image, out);
  });
  bool padded = false;
  for (int64_t i = 0; i < n; ++i) {
    const Sample& s = pending_[i];
    labels[i] = s.label;
    batch.indices.push_back(s.index);
    batch.paths.push_back(s.path);
    padded |= s.padding;
  }
  if (padded)
    for (const Sample& s : pending_) batch.padding.push_back(s.padding ? 1 : 0);
  if (const size_t tasks = pending_.front().task_labels.size(); tasks > 0) {
    batch.task_labels = at::empty({n, static_cast<int64_t>(tasks)}, at::TensorOptions().dtype(at::kLong));
    int64_t* out = batch.task_labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      const Sample& s = pending_[i];
      // A joined source without the tasks (a target): no labels for them.
      for (size_t t = 0; t < tasks; ++t) out[i * tasks + t] = t < s.task_labels.size() ? s.task_labels[t] : -1;
    }
  }
  batch.dataset = pending_.front().dataset;
  batch.mean = pending_.front().normalization->mean;
  batch.std = pending_.front().normalization->std;
  batch.number = number_++;
  if (sources_ > 1) batch.domain_counts = counts_;
  // The first source's samples define the epoch (the others start over).
  if (int64_t samples = pending_.front().epoch_size; samples > 0)
    batch.batches_in_epoch = drop_last_ ? samples / size_ : (samples + size_ - 1) / size_;
  pending_.clear();
  origins_.clear();
  counts_.assign(sources_, 0);
  images_ += n;
  ++batches_;
  Item out;
  out.set(std::move(batch));
  emit(out);
}

at::Tensor BatchStage::images_tensor(int64_t n, int64_t c, int64_t h, int64_t w) {
  for (auto& tensor : pool_)
    if (tensor.use_count() == 1 && tensor.storage().use_count() == 1 && tensor.size(0) == n && tensor.size(1) == c &&
        tensor.size(2) == h && tensor.size(3) == w)
      return tensor;
  at::Tensor fresh = at::empty({n, c, h, w}, at::TensorOptions().dtype(at::kFloat));
  if (pool_.size() < pool_size_) pool_.push_back(fresh);
  return fresh;
}

void BatchStage::report(Report& report) const {
  report.set("images", static_cast<double>(images_));
  report.set("batches", static_cast<double>(batches_));
  int64_t end = last_ns_ > first_ns_ ? last_ns_ : now_ns();
  if (first_ns_ && end > first_ns_) report.set("images_per_s", images_ / ((end - first_ns_) / 1e9));
}

FLOWRUN_REGISTER_STAGE(BatchStage);

}  // namespace flowrun::stages
