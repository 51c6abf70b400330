#include "stages/adapt/dann.h"

#include <cmath>
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/common/random.h"
#include "stages/train/state_bytes.h"

namespace flowrun::stages {

namespace {
struct GradientReversal : torch::autograd::Function<GradientReversal> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double lambda) {
    ctx->saved_data["lambda"] = lambda;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const double lambda = ctx->saved_data["lambda"].toDouble();
    return {grad[0] * -lambda, torch::Tensor()};
  }
};
}  // namespace

torch::Tensor reverse_gradient(const torch::Tensor& x, double lambda) { return GradientReversal::apply(x, lambda); }

double dann_lambda(double progress, double gamma, double max_lambda) {
  return max_lambda * (2.0 / (1.0 + std::exp(-gamma * progress)) - 1.0);
}

Schema Dann::schema() {
  return Schema("dann", "domain-adversarial training (Ganin & Lempitsky 2015): a domain classifier behind a gradient "
                        "reversal layer; the train stage names it (adaptation=) in a flow joining a source and a target")
      .provides("adaptation")
      .param(Int("hidden", "the domain classifier's hidden width").def(int64_t{1024}).range(1, 1 << 16))
      .param(Float("weight", "the domain loss's weight in the total loss").def(1.0).range(0, 1e6))
      .param(Float("gamma", "the lambda schedule's steepness (the paper: 10)").def(10.0).range(0, 1e4))
      .param(Float("max_lambda", "lambda at the end of the phase (the paper: 1)").def(1.0).range(0, 1e4));
}

Dann::Dann(const StageInit& init)
    : name_(init.name),
      seed_(mix64(init.run.seed ^ hash_name(init.name))),
      hidden_(init.params.get_int("hidden")),
      weight_(init.params.get_float("weight")),
      gamma_(init.params.get_float("gamma")),
      max_lambda_(init.params.get_float("max_lambda")) {}

void Dann::begin_epoch(const EpochInfo&) {
  loss_sum_ = correct_ = torch::Tensor();
  steps_ = seen_ = 0;
}

std::shared_ptr<torch::nn::Module> Dann::prepare(int64_t feature_size, const torch::Device& device) {
  if (classifier_.is_empty() || feature_size != feature_size_) {
    // Initial weights from (run seed, stage name), as a model's.
    torch::manual_seed(seed_);
    classifier_ = torch::nn::Sequential(
        torch::nn::Linear(feature_size, hidden_), torch::nn::BatchNorm1d(hidden_), torch::nn::ReLU(),
        torch::nn::Linear(hidden_, hidden_), torch::nn::BatchNorm1d(hidden_), torch::nn::ReLU(),
        torch::nn::Linear(hidden_, 1));
    feature_size_ = feature_size;
    if (!saved_.empty()) {
      torch::serialize::InputArchive archive;
      load_archive(archive, saved_, "the domain classifier of '" + name_ + "'");
      classifier_->load(archive);
      saved_.clear();
    }
  }
  classifier_->to(device);
  classifier_->train();
  return classifier_.ptr();
}

torch::Tensor Dann::loss(const torch::Tensor& source, const torch::Tensor& target, double progress) {
  if (classifier_.is_empty()) throw std::logic_error("dann: loss() before prepare()");
  lambda_ = dann_lambda(progress, gamma_, max_lambda_);
  const int64_t ns = source.size(0), nt = target.size(0);
  const torch::Tensor features = reverse_gradient(torch::cat({source, target}), lambda_);
  const torch::Tensor logits = classifier_->forward(features).squeeze(1).to(torch::kFloat);
  const torch::Tensor ls = logits.narrow(0, 0, ns), lt = logits.narrow(0, ns, nt);
  namespace F = torch::nn::functional;
  const torch::Tensor loss = (F::binary_cross_entropy_with_logits(ls, torch::ones_like(ls)) +
                              F::binary_cross_entropy_with_logits(lt, torch::zeros_like(lt))) * (0.5 * weight_);
  // Figures stay on the device: no synchronisation per step.
  torch::NoGradGuard no_grad;
  const torch::Tensor value = loss.detach().to(torch::kDouble);
  const torch::Tensor correct = (ls > 0).sum() + (lt <= 0).sum();
  loss_sum_ = loss_sum_.defined() ? loss_sum_ + value.to(loss_sum_.device()) : value;
  correct_ = correct_.defined() ? correct_ + correct.to(correct_.device()) : correct;
  ++steps_;
  seen_ += ns + nt;
  return loss;
}

std::map<std::string, double> Dann::epoch_figures() const {
  if (!steps_) return {};
  return {{name_ + "_loss", loss_sum_.item<double>() / static_cast<double>(steps_)},
          {name_ + "_domain_top1", static_cast<double>(correct_.item<int64_t>()) / static_cast<double>(seen_)},
          {name_ + "_lambda", lambda_}};
}

bool Dann::save_state(std::string& out) const {
  torch::serialize::OutputArchive archive;
  std::string classifier = saved_;
  if (!classifier_.is_empty()) {
    torch::serialize::OutputArchive weights;
    classifier_->save(weights);
    classifier = archive_bytes(weights);
  }
  archive.write("classifier", bytes_tensor(classifier));
  // The epoch's figures so far: a run resumed mid-epoch reports the whole epoch's.
  archive.write("loss_sum", loss_sum_.defined() ? loss_sum_.cpu() : torch::zeros({}, torch::kDouble));
  archive.write("correct", correct_.defined() ? correct_.cpu() : torch::zeros({}, torch::kLong));
  archive.write("steps", c10::IValue(steps_));
  archive.write("seen", c10::IValue(seen_));
  archive.write("lambda", c10::IValue(lambda_));
  out = archive_bytes(archive);
  return true;
}

void Dann::load_state(const std::string& in) {
  torch::serialize::InputArchive archive;
  load_archive(archive, in, "dann '" + name_ + "'");
  torch::Tensor bytes, loss_sum, correct;
  archive.read("classifier", bytes);
  archive.read("loss_sum", loss_sum);
  archive.read("correct", correct);
  steps_ = read_int(archive, "steps");
  seen_ = read_int(archive, "seen");
  lambda_ = read_double(archive, "lambda");
  loss_sum_ = steps_ ? loss_sum : torch::Tensor();
  correct_ = steps_ ? correct : torch::Tensor();
  saved_ = tensor_bytes(bytes);
  if (!classifier_.is_empty() && !saved_.empty()) {
    torch::serialize::InputArchive weights;
    load_archive(weights, saved_, "the domain classifier of '" + name_ + "'");
    classifier_->load(weights);
    saved_.clear();
  }
  // Otherwise built at the first step, knowing the features' width.
}

FLOWRUN_REGISTER_STAGE(Dann);

}  // namespace flowrun::stages
