// Data-parallel gradients, as PyTorch's DistributedDataParallel does them,
// with c10d's own Reducer: the trainable parameters' gradients go into
// buckets (1 MB first, then 25 MB, last layers first), and each bucket is
// all-reduced and averaged over the ranks as soon as backward has filled it,
// while backward goes on with the layers below. When loss.backward()
// returns, every rank holds the same averaged gradients, so clipping, the
// schedule and the optimizer step then run identically everywhere. Frozen
// parameters take no part. BatchNorm: each rank normalises its batch with
// its own statistics; the running statistics are rank 0's, broadcast before
// every step (DDP's broadcast_buffers).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

namespace c10d {
class Reducer;
}

namespace flowrun::stages {

class Job;

class GradientSync {
 public:
  // Over `model`'s parameters that require gradients now (rebuild it when
  // that set changes).
  GradientSync(Job& job, torch::nn::Module& model);
  ~GradientSync();
  // Before the forward pass: buffers from rank 0, buckets in the order the
  // first step's gradients came (once).
  void before_forward();
  // Between the loss and loss.backward().
  void before_backward();

 private:
  Job& job_;
  std::vector<torch::Tensor> buffers_;
  std::unique_ptr<c10d::Reducer> reducer_;
};

}  // namespace flowrun::stages
