// An example flowrun plugin: a `multiply` transform that multiplies integer
// items by a factor. Built exactly as an outside user builds a plugin (see
// CMakeLists.txt beside this file).
#include <flowrun/sdk.h>

namespace {

class Multiply : public flowrun::TransformStage {
 public:
  static flowrun::Schema schema() {
    return flowrun::Schema("multiply", "multiplies integer items by `factor` (example plugin)")
        .param(flowrun::Int("factor", "the multiplier").def(int64_t{2}).range(-1000000, 1000000));
  }
  explicit Multiply(const flowrun::StageInit& init) : factor_(init.params.get_int("factor")) {}
  void process(flowrun::Item& item) override { item.set<int64_t>(item.get<int64_t>() * factor_); }

 private:
  int64_t factor_;
};

}  // namespace

FLOWRUN_PLUGIN("example") { registry.add<Multiply>(); }
