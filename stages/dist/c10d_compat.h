// The differences between LibTorch 1.13's c10d (Debian's, build/) and 2.x's
// (PyPI's wheel, build-torch2/ and the GPU hosts), kept in one place. Both
// branches are compiled on every CI run: 1.13 in build/, 2.11 in
// build-torch2/ (scripts/torch2.sh).
// - Process groups: in 1.13 ProcessGroupGloo/NCCL are themselves a
//   c10d::ProcessGroup; from 2.0 they are a c10d::Backend that a
//   ProcessGroup dispatches to by device, made as torch.distributed's
//   _new_process_group_helper does: ProcessGroup(store, rank, size), its
//   default backend type, the backend's sequence number agreed, the backend
//   registered per device. (2.0-2.3 made the ProcessGroup from an Options
//   object instead; that form is chosen when ProcessGroup::Options exists,
//   but no 2.0-2.3 LibTorch has been compiled against here.)
// - c10d::Reducer: 1.13 takes per-bucket size limits after the buckets; 2.11
//   takes none there and three more settings at the end (checked against
//   2.11's reducer.hpp).
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#include <c10/util/Logging.h>
#include <torch/version.h>
#ifdef FLOWRUN_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace flowrun::stages::compat {

#if TORCH_VERSION_MAJOR >= 2
namespace detail {

template <class T, class = void>
struct has_options : std::false_type {};
template <class T>
struct has_options<T, std::void_t<typename T::Options>> : std::true_type {};

// A ProcessGroup on `store` whose only backend is `backend`, for `devices`.
template <class PG = c10d::ProcessGroup>
c10::intrusive_ptr<c10d::ProcessGroup> group_of(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                const c10::intrusive_ptr<c10d::Backend>& backend,
                                                typename PG::BackendType type, const std::string& name,
                                                std::chrono::milliseconds timeout,
                                                const std::vector<c10::DeviceType>& devices) {
  c10::intrusive_ptr<PG> group;
  if constexpr (has_options<PG>::value) {
    group = c10::make_intrusive<PG>(store, rank, size, c10::make_intrusive<typename PG::Options>(name, timeout));
  } else {
    group = c10::make_intrusive<PG>(store, rank, size);
    group->setDefaultBackend(type);
  }
  backend->setSequenceNumberForGroup();  // as torch.distributed does: the ranks agree on it through the store
  for (auto device : devices) group->setBackend(device, type, backend);
  return group;
}

}  // namespace detail
#endif

inline c10::intrusive_ptr<c10d::ProcessGroup> make_gloo_group(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                              int size,
                                                              c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> options) {
#if TORCH_VERSION_MAJOR >= 2
  auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
  return detail::group_of(store, rank, size, backend, c10d::ProcessGroup::BackendType::GLOO, "gloo", options->timeout,
                          {c10::DeviceType::CPU, c10::DeviceType::CUDA});
#else
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
#endif
}

#ifdef FLOWRUN_WITH_NCCL
inline c10::intrusive_ptr<c10d::ProcessGroup> make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                              int size, std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
#if TORCH_VERSION_MAJOR >= 2
  auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
  return detail::group_of(store, rank, size, backend, c10d::ProcessGroup::BackendType::NCCL, "nccl", timeout,
                          {c10::DeviceType::CUDA});
#else
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#endif
}
#endif

// LibTorch 2.x's c10d logs its errors itself (C10D_ERROR, at c10's ERROR
// level, with the exception's C++ backtrace) before throwing them; quiet
// that log (caffe2_log_level above ERROR) when `quiet`. 1.13 logs no such lines.
inline void quiet_c10d_error_log(bool quiet) {
#if TORCH_VERSION_MAJOR >= 2
  if (quiet && FLAGS_caffe2_log_level < 3) FLAGS_caffe2_log_level = 3;
#else
  (void)quiet;
#endif
}

// DDP's Reducer over `params` in `buckets` (DDP's order: reversed), with
// DDP's defaults: no unused parameters, gradients not bucket views.
inline std::unique_ptr<c10d::Reducer> make_reducer(std::vector<at::Tensor> params,
                                                   std::vector<std::vector<size_t>> buckets,
                                                   std::vector<size_t> bucket_size_limits,
                                                   c10::intrusive_ptr<c10d::ProcessGroup> group,
                                                   std::vector<bool> sparse,
                                                   std::unordered_map<size_t, std::string> names) {
#if TORCH_VERSION_MAJOR >= 2
  (void)bucket_size_limits;  // 2.x sizes its buckets from the caps below
  return std::make_unique<c10d::Reducer>(std::move(params), std::move(buckets), std::move(group), std::move(sparse),
                                         c10d::kDefaultBucketBytesCap, /*find_unused_parameters=*/false,
                                         /*gradient_as_bucket_view=*/false, std::move(names),
                                         c10d::kDefaultBucketBytesCap, /*skip_all_reduce_unused_params=*/false,
                                         /*use_python_reducer=*/false, /*bucket_bytes_cap_list=*/std::vector<int64_t>{});
#else
  return std::make_unique<c10d::Reducer>(std::move(params), std::move(buckets), std::move(bucket_size_limits),
                                         std::move(group), std::move(sparse), c10d::kDefaultBucketBytesCap,
                                         /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/false,
                                         std::move(names), c10d::kDefaultBucketBytesCap);
#endif
}

}  // namespace flowrun::stages::compat
