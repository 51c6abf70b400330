// The flowrun stage SDK: everything a plugin needs to add stages.
//
//   #include <flowrun/sdk.h>
//   class Multiply : public flowrun::TransformStage { ... static flowrun::Schema schema(); ... };
//   FLOWRUN_PLUGIN("my-plugin") { registry.add<Multiply>(); }
//
// Build it as a shared library linked to flowrun::pipeline (find_package(flowrun))
// and load it with `plugin "libmine.so"` in a graph or `flowrun --plugin`.
// A plugin is trusted native code: it runs inside the flowrun process.
// Stages that work on samples, images or samplers include <flowrun/data.h>
// (and link flowrun::data); on batches and models, <flowrun/model.h>
// (flowrun::model, which brings LibTorch).
#pragma once

#include "pipeline/item.h"
#include "pipeline/plugin_abi.h"
#include "pipeline/registry.h"
#include "pipeline/schema.h"
#include "pipeline/stage.h"

namespace flowrun::plugin_detail {
// The stage API version a plugin uses: 0 unless <flowrun/data.h> (which
// declares a better match) was included before FLOWRUN_PLUGIN.
constexpr uint32_t stage_api_version_used(...) { return 0; }
}  // namespace flowrun::plugin_detail

// Defines the plugin's one exported C entry point; the braces that follow are
// the body of a function given `flowrun::Registry& registry`.
#define FLOWRUN_PLUGIN(plugin_name)                                                                     \
  static void flowrun_plugin_register_stages(::flowrun::Registry& registry);                           \
  extern "C" __attribute__((visibility("default"))) const flowrun_plugin_info* flowrun_plugin_entry(void) { \
    static const flowrun_plugin_info info = {                                                           \
        FLOWRUN_PLUGIN_API_VERSION, FLOWRUN_CXX_ABI, plugin_name, &flowrun_plugin_register_stages,       \
        ::flowrun::plugin_detail::stage_api_version_used(0)};                                           \
    return &info;                                                                                       \
  }                                                                                                     \
  static void flowrun_plugin_register_stages(::flowrun::Registry& registry)
