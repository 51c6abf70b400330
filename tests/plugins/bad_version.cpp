// A plugin that claims a plugin API version flowrun does not speak.
#include <flowrun/sdk.h>

static void register_nothing(flowrun::Registry&) {}

extern "C" __attribute__((visibility("default"))) const flowrun_plugin_info* flowrun_plugin_entry(void) {
  static const flowrun_plugin_info info = {FLOWRUN_PLUGIN_API_VERSION + 41, FLOWRUN_CXX_ABI, "bad-version",
                                           &register_nothing};
  return &info;
}
