// A plugin whose `stop_at` stage asks the run to stop, as SIGINT would, when
// the `item`-th item of global epoch `epoch` (both from 1) passes: lets tests
// interrupt a run at a chosen point and resume it.
#include <flowrun/sdk.h>

#include <atomic>

#include "pipeline/interrupt.h"

namespace {
class StopAt : public flowrun::TransformStage {
 public:
  static flowrun::Schema schema() {
    return flowrun::Schema("stop_at", "requests a stop at one item of one epoch")
        .param(flowrun::Int("epoch", "global epoch, from 1").def(int64_t{1}))
        .param(flowrun::Int("item", "item of that epoch, from 1").def(int64_t{1}));
  }
  explicit StopAt(const flowrun::StageInit& init)
      : epoch_(init.params.get_int("epoch")), item_(init.params.get_int("item")) {}
  void begin_epoch(const flowrun::EpochInfo& epoch) override {
    current_ = epoch.epoch + 1;
    seen_ = 0;
  }
  void process(flowrun::Item&) override {
    if (current_ == epoch_ && ++seen_ == item_) flowrun::request_stop();
  }

 private:
  int64_t epoch_, item_;
  int64_t current_ = 0;
  std::atomic<int64_t> seen_{0};
};
}  // namespace

FLOWRUN_PLUGIN("stop_at") { registry.add<StopAt>(); }
