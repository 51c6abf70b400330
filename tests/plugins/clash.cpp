// A plugin whose stage type takes a name that is already registered.
#include <flowrun/sdk.h>

namespace {
class Impostor : public flowrun::TransformStage {
 public:
  static flowrun::Schema schema() { return flowrun::Schema("sleep", "pretends to be the built-in sleep"); }
  explicit Impostor(const flowrun::StageInit&) {}
  void process(flowrun::Item&) override {}
};
}  // namespace

FLOWRUN_PLUGIN("clash") { registry.add<Impostor>(); }
