// A plugin whose `explode` stage throws when it meets the value `at`: lets
// the command-line tests see a failing run.
#include <flowrun/sdk.h>

#include <stdexcept>

namespace {
class Explode : public flowrun::TransformStage {
 public:
  static flowrun::Schema schema() {
    return flowrun::Schema("explode", "throws at one value").param(flowrun::Int("at", "the value").def(int64_t{0}));
  }
  explicit Explode(const flowrun::StageInit& init) : at_(init.params.get_int("at")) {}
  void process(flowrun::Item& item) override {
    if (item.get<int64_t>() == at_) throw std::runtime_error("exploded at " + std::to_string(at_));
  }

 private:
  int64_t at_;
};
}  // namespace

FLOWRUN_PLUGIN("explode") { registry.add<Explode>(); }
