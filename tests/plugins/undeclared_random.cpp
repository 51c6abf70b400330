// A random augmentation written from the plugin walkthrough but without
// Schema::randomized(): flowrun must refuse it at its first draw rather
// than take it as deterministic (precompute would cache its first draw).
#include <flowrun/data.h>

namespace {
class Jiggle : public flowrun::stages::RandomImageOp {
 public:
  static flowrun::Schema schema() {
    return flowrun::Schema("jiggle", "flips a coin per sample (no randomized(): wrong on purpose)")
        .param(flowrun::Float("p", "probability").def(0.5).range(0, 1));
  }
  explicit Jiggle(const flowrun::StageInit& init) : RandomImageOp(init, "jiggle") {}
  void process(flowrun::Item& item) override {
    auto& sample = item.get<flowrun::stages::Sample>();
    flowrun::stages::Rng rng = rng_for(sample);
    (void)rng.chance(0.5);
  }
};

// Not an image op: a plain transform that takes its generator from a
// RandomStream (there is no other way to an Rng), again without randomized().
class Wobble : public flowrun::TransformStage {
 public:
  static flowrun::Schema schema() {
    return flowrun::Schema("wobble", "draws a number per item (no randomized(): wrong on purpose)");
  }
  explicit Wobble(const flowrun::StageInit& init) : stream_(init, "wobble") {}
  void process(flowrun::Item& item) override {
    const auto index = static_cast<uint64_t>(item.get<flowrun::stages::Sample>().index);
    (void)stream_.draw(0, index).uniform();
  }

 private:
  flowrun::stages::RandomStream stream_;
};
}  // namespace

FLOWRUN_PLUGIN("undeclared_random") {
  registry.add<Jiggle>();
  registry.add<Wobble>();
}
