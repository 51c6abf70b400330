#include "stages/adapt/coral.h"

#include <stdexcept>

#include <spdlog/spdlog.h>

#include "pipeline/registry.h"
#include "stages/train/state_bytes.h"

namespace flowrun::stages {

namespace {
torch::Tensor covariance(const torch::Tensor& x) {
  const int64_t n = x.size(0);
  const torch::Tensor sum = x.sum(0, /*keepdim=*/true);  // 1^T X: [1, d]
  return (x.t().mm(x) - sum.t().mm(sum) / static_cast<double>(n)) / static_cast<double>(n - 1);
}
}  // namespace

torch::Tensor coral_loss(const torch::Tensor& source, const torch::Tensor& target) {
  if (source.dim() != 2 || target.dim() != 2 || source.size(1) != target.size(1))
    throw std::runtime_error("CORAL needs source and target features of one width, [N, D]");
  if (source.size(0) < 2 || target.size(0) < 2)
    throw std::runtime_error("CORAL needs at least 2 samples of each domain in a batch (a covariance), got " +
                             std::to_string(source.size(0)) + " source and " + std::to_string(target.size(0)) +
                             " target");
  const torch::Tensor s = source.to(torch::kFloat), t = target.to(torch::kFloat);
  const double d = static_cast<double>(s.size(1));
  return (covariance(s) - covariance(t)).pow(2).sum() / (4 * d * d);
}

Schema Coral::schema() {
  return Schema("coral", "Deep CORAL (Sun & Saenko 2016): aligns the covariances of source and target features; the "
                         "train stage names it (adaptation=) in a flow joining a source and a target")
      .provides("adaptation")
      .param(Float("weight", "the loss's weight (the paper's lambda)").def(1.0).range(0, 1e6));
}

Coral::Coral(const StageInit& init) : name_(init.name), weight_(init.params.get_float("weight")) {}

void Coral::begin_epoch(const EpochInfo&) {
  loss_sum_ = torch::Tensor();
  steps_ = 0;
}

torch::Tensor Coral::loss(const torch::Tensor& source, const torch::Tensor& target, double) {
  if (source.size(0) < 2 || target.size(0) < 2) {
    // An epoch's last, small batch: no covariance to align; the step trains on the source's loss alone.
    if (!warned_small_++)
      spdlog::warn("{}: a batch of {} source and {} target samples has no covariance to align; such steps train "
                   "without CORAL's loss (batch size >= 2, with drop_last=true for an epoch's last batch, avoids them)", name_, source.size(0), target.size(0));
    return torch::zeros({}, source.options().dtype(torch::kFloat));
  }
  torch::Tensor loss = coral_loss(source, target) * weight_;
  const torch::Tensor value = loss.detach().to(torch::kDouble);
  loss_sum_ = loss_sum_.defined() ? loss_sum_ + value.to(loss_sum_.device()) : value;
  ++steps_;
  return loss;
}

std::map<std::string, double> Coral::epoch_figures() const {
  if (!steps_) return {};
  return {{name_ + "_loss", loss_sum_.item<double>() / static_cast<double>(steps_)}};
}

bool Coral::save_state(std::string& out) const {
  torch::serialize::OutputArchive archive;
  archive.write("loss_sum", loss_sum_.defined() ? loss_sum_.cpu() : torch::zeros({}, torch::kDouble));
  archive.write("steps", c10::IValue(steps_));
  out = archive_bytes(archive);
  return true;
}

void Coral::load_state(const std::string& in) {
  torch::serialize::InputArchive archive;
  load_archive(archive, in, "coral '" + name_ + "'");
  torch::Tensor sum;
  archive.read("loss_sum", sum);
  steps_ = read_int(archive, "steps");
  loss_sum_ = steps_ ? sum : torch::Tensor();
}

FLOWRUN_REGISTER_STAGE(Coral);

}  // namespace flowrun::stages
