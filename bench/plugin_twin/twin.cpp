// The built-in `color_jitter`, source for source, compiled as a plugin and
// registered as `color_jitter_plugin`: bench/plugin_bench.py runs both in
// one flowrun run to compare a plugin stage with the same stage built in.
// (Hidden visibility keeps this copy's symbols apart from the program's.)
#include <flowrun/data.h>

#include "pipeline/registry.h"
#undef FLOWRUN_REGISTER_STAGE
#define FLOWRUN_REGISTER_STAGE(T)  // registered below, under its own name
#include BUILTIN_SOURCE

namespace {

class ColorJitterPlugin : public flowrun::stages::ColorJitter {
 public:
  static flowrun::Schema schema() {
    const flowrun::Schema builtin = ColorJitter::schema();
    flowrun::Schema schema("color_jitter_plugin", builtin.doc() + " (the built-in, as a plugin)");
    for (const auto& param : builtin.params()) schema.param(param);
    for (const auto& check : builtin.checks()) schema.check(check);
    return schema.randomized();
  }
  using ColorJitter::ColorJitter;
};

}  // namespace

FLOWRUN_PLUGIN("bench_twin") { registry.add<ColorJitterPlugin>(); }
