// The one C entry point a plugin exports. Its first field is the plugin API
// version, read before anything else, so a plugin built for another flowrun
// is refused with a clear message instead of crashing. Plugins are C++ code
// that derives from flowrun's stage classes, so the C++ ABI must match too.
#pragma once

#include <cstdint>

#define FLOWRUN_PLUGIN_API_VERSION 5u  // 2: Stage::save_state/load_state, SourceStage::skip; 3: RunInfo::compute_threads,
                                       // StageDirectory::busy_threads_besides; 4: stage_api_version, Schema::randomized,
                                       // StageDirectory::resolved_graph; 5: Schema::graph_check
// The stage API: the built-in stages' public types a plugin may use
// (<flowrun/data.h>: Sample, Image, Rng, RandomImageOp, SamplerOp;
// <flowrun/model.h>: Batch, ModelStage, NetworkImpl, the loss hook). Bumped whenever one
// of them changes layout or meaning. The engine compares it as a number.
// 2: Rng only through RandomStream (a stage's declared randomness) or
// SamplerOp::rng; RandomImageOp holds a RandomStream. 3: LossStage gains
// batch_loss(LossContext), wants_features, begin_phase, epoch_figures (its
// vtable changed; a loss overriding loss(logits, labels) alone builds as before).
// 4: multi-task: Sample::task_labels, DatasetInfo::tasks, Batch::task_labels,
// ModelStage's extra heads (its layout changed), NetworkImpl::block; and
// ModelStage::bf16() returns an Autocast (which device's autocast; still
// converts to bool), held in the byte that was a bool: CPU bf16 is 2 there.
#define FLOWRUN_STAGE_API_VERSION 4u
#define FLOWRUN_PLUGIN_ENTRY_SYMBOL "flowrun_plugin_entry"

#define FLOWRUN_STRINGIFY_INNER(x) #x
#define FLOWRUN_STRINGIFY(x) FLOWRUN_STRINGIFY_INNER(x)
#if defined(_GLIBCXX_USE_CXX11_ABI)
#define FLOWRUN_CXX_ABI "libstdc++ cxx11abi=" FLOWRUN_STRINGIFY(_GLIBCXX_USE_CXX11_ABI)
#else
#define FLOWRUN_CXX_ABI "other"
#endif

namespace flowrun {
class Registry;
}

extern "C" {
struct flowrun_plugin_info {
  uint32_t api_version;   // FLOWRUN_PLUGIN_API_VERSION the plugin was built with
  const char* cxx_abi;    // FLOWRUN_CXX_ABI the plugin was built with
  const char* name;       // shown by --list-stages
  void (*register_stages)(flowrun::Registry& registry);
  uint32_t stage_api_version;  // FLOWRUN_STAGE_API_VERSION it was built against; 0: the engine's API alone
};
typedef const flowrun_plugin_info* (*flowrun_plugin_entry_fn)(void);
}
