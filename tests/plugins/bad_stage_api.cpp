// A plugin built against another stage API version: refused by name.
#include <flowrun/sdk.h>

extern "C" __attribute__((visibility("default"))) const flowrun_plugin_info* flowrun_plugin_entry(void) {
  static const flowrun_plugin_info info = {FLOWRUN_PLUGIN_API_VERSION, FLOWRUN_CXX_ABI, "old-augmentations",
                                           [](flowrun::Registry&) {}, FLOWRUN_STAGE_API_VERSION + 6};
  return &info;
}
