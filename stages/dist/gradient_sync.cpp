#include "stages/dist/gradient_sync.h"

#include <stdexcept>

#include "stages/dist/job.h"

#ifdef FLOWRUN_WITH_DISTRIBUTED
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "stages/dist/c10d_compat.h"

namespace flowrun::stages {

GradientSync::GradientSync(Job& job, torch::nn::Module& model) : job_(job) {
  std::vector<at::Tensor> params;
  std::unordered_map<size_t, std::string> names;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;  // frozen: no gradient to average
    names[params.size()] = item.key();
    params.push_back(item.value());
  }
  if (params.empty()) throw std::runtime_error("no trainable parameters to synchronise");
  for (const auto& item : model.named_buffers(/*recurse=*/true)) buffers_.push_back(item.value());
  // DDP's bucket assignment: by size in parameter order, then reversed, since
  // backward produces the last layers' gradients first.
  const std::vector<bool> sparse(params.size(), false);
  auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
      params, {static_cast<size_t>(c10d::kDefaultFirstBucketBytes), static_cast<size_t>(c10d::kDefaultBucketBytesCap)},
      sparse, /*tensor_indices=*/{}, /*logger=*/c10::nullopt);
  std::reverse(buckets.begin(), buckets.end());
  std::reverse(limits.begin(), limits.end());
  auto group = job.group(params.front().device());
  reducer_ = compat::make_reducer(params, std::move(buckets), std::move(limits), std::move(group), sparse,
                                  std::move(names));
}

GradientSync::~GradientSync() = default;

void GradientSync::before_forward() {
  try {
    reducer_->rebuild_buckets();  // a collective; only the first call after the first step changes anything
  } catch (const std::exception& e) {
    job_.failed("the gradient buckets' broadcast", e);
  }
  reducer_->prepare_for_forward();
  job_.broadcast(buffers_, 0, "the BatchNorm statistics");
}

void GradientSync::before_backward() { reducer_->prepare_for_backward({}); }

}  // namespace flowrun::stages

#else

namespace c10d {
class Reducer {};
}  // namespace c10d

namespace flowrun::stages {
GradientSync::GradientSync(Job& job, torch::nn::Module&) : job_(job) {
  throw std::logic_error("no data-parallel jobs in this build");
}
GradientSync::~GradientSync() = default;
void GradientSync::before_forward() {}
void GradientSync::before_backward() {}
}  // namespace flowrun::stages

#endif
