// Stands in for a LibTorch header that Debian's libtorch-dev 1.13 does not
// ship, though c10d/reducer.hpp includes it. The Reducer only keeps a
// shared_ptr to a distributed-autograd context and names its callback type
// (both declared here exactly as LibTorch 1.13 declares them); the class's
// layout does not depend on the context's members, which flowrun never
// touches. CMake adds this folder to the include path only when the real
// header is missing (stages/CMakeLists.txt).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};
using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
