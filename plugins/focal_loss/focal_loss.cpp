// `focal_loss`: the softmax focal loss of Lin et al. (2017) as a flowrun
// plugin, for class-imbalanced fine-tuning. Per sample, with p_t the
// softmax probability of the true class:
//     FL = -alpha * (1 - p_t)^gamma * log(p_t),
// averaged over the batch. gamma = 0, alpha = 1 is cross-entropy. A train
// stage uses it with `loss=STAGE`:
//     plugin "libflowrun_focal_loss.so"
//     focal = focal_loss gamma=2
//     train = train loss=focal
#include <flowrun/model.h>

namespace {

class FocalLoss : public flowrun::stages::LossStage {
 public:
  static flowrun::Schema schema() {
    return flowrun::Schema("focal_loss", "softmax focal loss -alpha (1-p_t)^gamma log p_t (plugin)")
        .param(flowrun::Float("gamma", "focusing exponent; 0 = cross-entropy").def(2.0).range(0, 100))
        .param(flowrun::Float("alpha", "weight of every sample's loss").def(1.0).range(0, 1e6))
        .provides("loss");
  }
  explicit FocalLoss(const flowrun::StageInit& init)
      : gamma_(init.params.get_float("gamma")), alpha_(init.params.get_float("alpha")) {}

  torch::Tensor loss(const torch::Tensor& logits, const torch::Tensor& labels) override {
    // In float32 even under bf16 autocast: (1 - p_t)^gamma of a confident
    // prediction is a small difference of numbers near 1.
    torch::Tensor log_p = torch::log_softmax(logits.to(torch::kFloat), 1).gather(1, labels.unsqueeze(1)).squeeze(1);
    torch::Tensor weight = gamma_ == 0 ? torch::ones_like(log_p) : torch::pow(1 - log_p.exp(), gamma_);
    return -(alpha_ * weight * log_p).mean();
  }

 private:
  double gamma_, alpha_;
};

}  // namespace

FLOWRUN_PLUGIN("focal_loss") { registry.add<FocalLoss>(); }
