#include "stages/adapt/importance_weights.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "pipeline/atomic_file.h"
#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "stages/tensor/batch_data.h"

namespace flowrun::stages {

namespace {

// log(1 + e^s) and 1 / (1 + e^-s) without overflow.
double softplus(double s) { return s > 0 ? s + std::log1p(std::exp(-s)) : std::log1p(std::exp(s)); }
double sigmoid(double s) {
  if (s >= 0) return 1 / (1 + std::exp(-s));
  const double e = std::exp(s);
  return e / (1 + e);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// Rows of a [N, D] float32 or float64 CPU tensor, read as double: one template for both.
template <class F>
void with_rows(const torch::Tensor& features, const char* what, F&& f) {
  if (features.dim() != 2 || !features.device().is_cpu())
    throw std::invalid_argument(std::string(what) + ": features must be [N, D] on the CPU");
  const torch::Tensor x = features.contiguous();
  if (x.scalar_type() == torch::kFloat)
    f(x.data_ptr<float>());
  else if (x.scalar_type() == torch::kDouble)
    f(x.data_ptr<double>());
  else
    throw std::invalid_argument(std::string(what) + ": features must be float32 or float64");
}

// The logistic loss and its gradient at theta = (w, b) in standardised
// coordinates, computed from the raw rows: s_i = x_i . (w / sd) + (b - mu . (w / sd)).
struct Objective {
  int64_t n, d;
  double l2;
  const std::vector<double>& mean;
  const std::vector<double>& inv_sd;
  const std::vector<uint8_t>& target;

  template <class T>
  double operator()(const T* x, const std::vector<double>& theta, std::vector<double>& grad) const {
    std::vector<double> w(static_cast<size_t>(d));
    double c = theta[d];
    for (int64_t j = 0; j < d; ++j) {
      w[j] = theta[j] * inv_sd[j];
      c -= mean[j] * w[j];
    }
    std::vector<double> acc(static_cast<size_t>(d), 0.0);
    double loss = 0, residual_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T* row = x + i * d;
      double s = c;
      for (int64_t j = 0; j < d; ++j) s += row[j] * w[j];
      const double t = target[i];
      loss += softplus(s) - t * s;
      const double r = sigmoid(s) - t;
      residual_sum += r;
      for (int64_t j = 0; j < d; ++j) acc[j] += r * row[j];
    }
    double penalty = 0;
    for (int64_t j = 0; j < d; ++j) {
      grad[j] = inv_sd[j] * (acc[j] - mean[j] * residual_sum) / n + l2 * theta[j];
      penalty += theta[j] * theta[j];
    }
    grad[d] = residual_sum / n;
    return loss / n + 0.5 * l2 * penalty;
  }
};

// Minimises f from theta (in place) by L-BFGS: `history` correction pairs,
// a backtracking line search on Armijo's condition; at most `steps`
// iterations. Returns the iterations taken.
template <class Eval>
int64_t lbfgs(const Eval& f, std::vector<double>& theta, int64_t steps, size_t history = 10) {
  const size_t m = theta.size();
  std::vector<double> grad(m), next(m), next_grad(m), direction(m);
  double value = f(theta, grad);
  std::deque<std::vector<double>> s_list, y_list;
  std::deque<double> rho_list;
  int64_t iteration = 0;
  for (; iteration < steps; ++iteration) {
    double grad_max = 0, grad_l1 = 0;
    for (double g : grad) {
      grad_max = std::max(grad_max, std::abs(g));
      grad_l1 += std::abs(g);
    }
    if (grad_max <= 1e-10) break;
    // Two-loop recursion: direction = -H grad.
    for (size_t i = 0; i < m; ++i) direction[i] = -grad[i];
    std::vector<double> alpha(s_list.size());
    for (size_t k = s_list.size(); k-- > 0;) {
      alpha[k] = rho_list[k] * dot(s_list[k], direction);
      for (size_t i = 0; i < m; ++i) direction[i] -= alpha[k] * y_list[k][i];
    }
    if (!s_list.empty()) {
      const double gamma = dot(s_list.back(), y_list.back()) / dot(y_list.back(), y_list.back());
      for (double& v : direction) v *= gamma;
    }
    for (size_t k = 0; k < s_list.size(); ++k) {
      const double beta = rho_list[k] * dot(y_list[k], direction);
      for (size_t i = 0; i < m; ++i) direction[i] += (alpha[k] - beta) * s_list[k][i];
    }
    double slope = dot(grad, direction);
    if (!(slope < 0)) {  // not a descent direction (rounding): start again from the gradient
      s_list.clear(), y_list.clear(), rho_list.clear();
      for (size_t i = 0; i < m; ++i) direction[i] = -grad[i];
      slope = -dot(grad, grad);
    }
    // The first step, along the bare gradient, is scaled as PyTorch's LBFGS scales it.
    double step = s_list.empty() ? std::min(1.0, 1.0 / grad_l1) : 1.0;
    double next_value = 0;
    bool accepted = false;
    for (int tries = 0; tries < 50; ++tries, step *= 0.5) {
      for (size_t i = 0; i < m; ++i) next[i] = theta[i] + step * direction[i];
      next_value = f(next, next_grad);
      if (std::isfinite(next_value) && next_value <= value + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
    }
    if (!accepted) break;  // no decrease left to find: as converged as float64 allows
    std::vector<double> s(m), y(m);
    for (size_t i = 0; i < m; ++i) {
      s[i] = next[i] - theta[i];
      y[i] = next_grad[i] - grad[i];
    }
    const double sy = dot(s, y);
    theta.swap(next);
    grad.swap(next_grad);
    const double change = value - next_value;
    value = next_value;
    if (sy > 1e-12) {
      s_list.push_back(std::move(s));
      y_list.push_back(std::move(y));
      rho_list.push_back(1.0 / sy);
      if (s_list.size() > history) s_list.pop_front(), y_list.pop_front(), rho_list.pop_front();
    }
    if (change <= 1e-15 * std::max(1.0, std::abs(value))) {
      ++iteration;
      break;
    }
  }
  return iteration;
}

}  // namespace

DomainClassifier fit_domain_classifier(const torch::Tensor& features, const torch::Tensor& is_target, double l2,
                                       int64_t steps) {
  const char* what = "fit_domain_classifier";
  if (!(l2 > 0)) throw std::invalid_argument("fit_domain_classifier: l2 must be > 0 (the domains may be separable)");
  if (features.dim() != 2) throw std::invalid_argument("fit_domain_classifier: features must be [N, D]");
  const int64_t n = features.size(0), d = features.size(1);
  if (is_target.dim() != 1 || is_target.size(0) != n)
    throw std::invalid_argument("fit_domain_classifier: is_target must be [N], N = " + std::to_string(n));
  const torch::Tensor flags = is_target.to(torch::kCPU).to(torch::kUInt8).contiguous();
  std::vector<uint8_t> target(flags.data_ptr<uint8_t>(), flags.data_ptr<uint8_t>() + n);
  int64_t targets = 0;
  for (uint8_t& t : target) {
    t = t != 0;
    targets += t;
  }
  if (targets == 0 || targets == n)
    throw std::invalid_argument("fit_domain_classifier: needs rows of both domains (" + std::to_string(n - targets) +
                                " source, " + std::to_string(targets) + " target)");
  // Per-column mean and deviation over all rows, two passes in row order.
  std::vector<double> mean(static_cast<size_t>(d), 0.0), inv_sd(static_cast<size_t>(d), 0.0);
  with_rows(features, what, [&](const auto* x) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) mean[j] += x[i * d + j];
    for (double& m : mean) m /= n;
    std::vector<double> var(static_cast<size_t>(d), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) {
        const double e = x[i * d + j] - mean[j];
        var[j] += e * e;
      }
    for (int64_t j = 0; j < d; ++j) {
      const double sd = std::sqrt(var[j] / n);
      // A column constant up to rounding tells nothing; scaling it up would only amplify noise.
      inv_sd[j] = sd > 1e-12 * std::max(1.0, std::abs(mean[j])) ? 1 / sd : 0.0;
    }
  });
  const Objective objective{n, d, l2, mean, inv_sd, target};
  std::vector<double> theta(static_cast<size_t>(d + 1), 0.0);
  DomainClassifier out;
  with_rows(features, what, [&](const auto* x) {
    out.iterations =
        lbfgs([&](const std::vector<double>& t, std::vector<double>& g) { return objective(x, t, g); }, theta, steps);
  });
  // Back to the features as given: logit = x . (w / sd) + b - mu . (w / sd).
  out.weight = torch::empty({d}, torch::kDouble);
  double* weight = out.weight.data_ptr<double>();
  out.bias = theta[d];
  for (int64_t j = 0; j < d; ++j) {
    weight[j] = theta[j] * inv_sd[j];
    out.bias -= mean[j] * weight[j];
  }
  return out;
}

torch::Tensor domain_logits(const torch::Tensor& features, const DomainClassifier& classifier) {
  if (features.dim() != 2 || !classifier.weight.defined() || classifier.weight.numel() != features.size(1))
    throw std::invalid_argument("domain_logits: features must be [N, D] with D the classifier's " +
                                std::to_string(classifier.weight.defined() ? classifier.weight.numel() : 0));
  const int64_t n = features.size(0), d = features.size(1);
  const torch::Tensor w = classifier.weight.to(torch::kCPU).to(torch::kDouble).contiguous();
  const double* weight = w.data_ptr<double>();
  torch::Tensor logits = torch::empty({n}, torch::kDouble);
  double* out = logits.data_ptr<double>();
  with_rows(features, "domain_logits", [&](const auto* x) {
    for (int64_t i = 0; i < n; ++i) {
      double s = classifier.bias;
      for (int64_t j = 0; j < d; ++j) s += x[i * d + j] * weight[j];
      out[i] = s;
    }
  });
  return logits;
}

torch::Tensor importance_weights_from_logits(const torch::Tensor& target_logits, double prior_ratio, double lo,
                                             double hi) {
  if (!(lo > 0 && lo < hi)) throw std::invalid_argument("importance weights: clip must be [lo, hi] with 0 < lo < hi");
  if (!(prior_ratio > 0 && std::isfinite(prior_ratio)))
    throw std::invalid_argument("importance weights: the prior ratio n_source / n_target must be > 0");
  // std::exp per element, not a vectorised kernel: the weights are the formula to the last bit.
  const torch::Tensor logits = target_logits.to(torch::kCPU).to(torch::kDouble).contiguous().reshape({-1});
  torch::Tensor weights = torch::empty_like(logits);
  const double* logit = logits.data_ptr<double>();
  double* weight = weights.data_ptr<double>();
  for (int64_t i = 0; i < logits.numel(); ++i) weight[i] = std::min(hi, std::max(lo, std::exp(logit[i]) * prior_ratio));
  return weights;
}

Schema ImportanceWeights::schema() {
  return Schema("importance_weights",
                "instance-based transfer: fits a source-vs-target classifier on the model's features over a joined "
                "flow's pass and writes each source sample's importance weight p_t(x)/p_s(x) as the CSV "
                "'index,weight' the weighted sampler reads (Bickel et al. 2007)")
      .param(StageRef("model", "the model stage whose backbone features (avgpool) the classifier sees", "model"))
      .param(Path("path", "the CSV written at the end of each pass: index,weight, one row per source dataset index"))
      .param(FloatList("clip", "[lo, hi]: weights are clipped to it (0 < lo < hi)").def(std::vector<double>{0.1, 10.0}))
      .param(Int("limit_mb", "most memory the pass's features may take (float32, D per sample)")
                 .def(int64_t{512})
                 .range(1, 1 << 24))
      .param(
          Int("steps", "L-BFGS iterations of the domain classifier's fit (at most)").def(int64_t{200}).range(1, 100000))
      .param(Float("l2", "L2 penalty of the domain classifier, on standardised features").def(1e-3).range(1e-12, 1e6))
      .check([](const Params& p) {
        const std::vector<double>& clip = p.get_float_list("clip");
        if (clip.size() != 2 || !(clip[0] > 0) || !(clip[0] < clip[1]))
          return std::string("clip must be [lo, hi] with 0 < lo < hi (weights are positive; e.g. [0.1, 10])");
        return std::string();
      });
}

ImportanceWeights::ImportanceWeights(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      model_name_(init.params.get_string("model")),
      path_(init.params.get_string("path")),
      l2_(init.params.get_float("l2")),
      limit_bytes_(init.params.get_int("limit_mb") << 20),
      steps_(init.params.get_int("steps")),
      writes_(init.run.job.writes_files()),
      compute_(init) {
  const std::vector<double>& clip = init.params.get_float_list("clip");
  if (clip.size() != 2 || !(clip[0] > 0) || !(clip[0] < clip[1]))
    throw std::runtime_error("clip must be [lo, hi] with 0 < lo < hi");
  clip_lo_ = clip[0];
  clip_hi_ = clip[1];
  // The classifier needs every sample of the pass in one place; a job's ranks each see a share.
  if (init.run.job.distributed())
    throw std::runtime_error("needs every sample of its pass in one process, but this is a job of " +
                             std::to_string(init.run.job.world_size) +
                             " processes (each rank sees a share of the samples): run it without --nproc");
}

void ImportanceWeights::begin_epoch(const EpochInfo&) {
  model_ = &find_model(stages_, model_name_);
  compute_.begin_epoch(model_->device().is_cpu());
  features_ = torch::Tensor();
  rows_ = 0;
  is_target_.clear();
  indices_.clear();
}

void ImportanceWeights::keep(const torch::Tensor& rows, int64_t expected_rows) {
  const int64_t n = rows.size(0), d = rows.size(1), row_bytes = d * static_cast<int64_t>(sizeof(float));
  const int64_t limit_rows = limit_bytes_ / row_bytes;
  if (rows_ + n > limit_rows)
    throw std::runtime_error("the features of the pass would pass limit_mb=" + std::to_string(limit_bytes_ >> 20) +
                             " (" + std::to_string(rows_) + " samples of " + std::to_string(d) +
                             " features kept so far, " + std::to_string(limit_rows) +
                             " fit); raise limit_mb or sample fewer (a subset sampler)");
  if (features_.defined() && features_.size(1) != d)
    throw std::runtime_error("the model's features changed size within a pass (" + std::to_string(features_.size(1)) +
                             ", then " + std::to_string(d) + ")");
  if (!features_.defined() || rows_ + n > features_.size(0)) {
    // Room for the epoch's expected rows at once (no regrowth then), else twice as many; never past the limit.
    const int64_t old = features_.defined() ? features_.size(0) : 0;
    const int64_t capacity = std::min(limit_rows, std::max({rows_ + n, 2 * old, expected_rows}));
    torch::Tensor grown = torch::empty({capacity, d}, torch::kFloat);
    if (rows_ > 0) grown.narrow(0, 0, rows_).copy_(features_.narrow(0, 0, rows_));
    features_ = grown;
  }
  features_.narrow(0, rows_, n).copy_(rows);
  rows_ += n;
}

void ImportanceWeights::process(Item& item, const Emit& emit) {
  const Batch& batch = item.get<Batch>();
  // A batch of one source only: the flow joins no target. (A joined flow's batch may still hold no target
  // sample, at the end of an epoch: the pass as a whole must have some, checked at flush.)
  if (batch.domain_counts.size() < 2)
    throw std::runtime_error("batch " + std::to_string(batch.number + 1) +
                             " has no target samples (its flow has one source); join a target source to the flow: "
                             "`flow SOURCE + TARGET -> ...`");
  if (batch.domain_counts.size() > 2)
    throw std::runtime_error(
        "a flow of " + std::to_string(batch.domain_counts.size()) +
        " joined sources; it weighs one source against one target (`flow SOURCE + TARGET -> ...`)");
  const int64_t n_source = batch.domain_size(0), n_target = batch.domain_size(1);
  if (n_source + n_target != batch.size() || n_source < 0 || n_target < 0)
    throw std::runtime_error("the batch's domain_counts (" + std::to_string(n_source) + " + " +
                             std::to_string(n_target) + ") do not add up to its " + std::to_string(batch.size()) +
                             " samples");
  if (static_cast<int64_t>(batch.indices.size()) != batch.size())
    throw std::runtime_error("the batch has " + std::to_string(batch.indices.size()) + " dataset indices for " +
                             std::to_string(batch.size()) + " samples");
  torch::Tensor features;
  {
    ComputeThreads::Scope compute(compute_);
    features = model_->infer_features(batch.images, "avgpool");  // eval mode, no gradients, float32
  }
  if (features.dim() != 2 || features.size(0) != batch.size() || features.size(1) == 0)
    throw std::runtime_error("model '" + model_name_ + "' gives no features [N, D] for its images (got " +
                             std::to_string(features.dim()) +
                             " dimensions); it needs a model whose backbone gives a feature vector per image");
  features = features.cpu();
  std::vector<int64_t> real;  // not padding (a job's repeats)
  for (int64_t i = 0; i < batch.size(); ++i)
    if (batch.padding.empty() || !batch.padding[i]) real.push_back(i);
  if (static_cast<int64_t>(real.size()) != batch.size())
    features = features.index_select(0, torch::tensor(real, torch::kLong));
  keep(features.contiguous(), batch.batches_in_epoch * batch.size());
  for (int64_t i : real) {
    is_target_.push_back(i >= n_source);
    indices_.push_back(batch.indices[i]);
  }
  emit(item);
}

void ImportanceWeights::flush(const Emit&) {
  if (rows_ == 0) return;  // nothing came this pass
  int64_t n_target = 0;
  for (uint8_t t : is_target_) n_target += t;
  const int64_t n_source = rows_ - n_target;
  if (n_target == 0)
    throw std::runtime_error("the pass had no target samples (" + std::to_string(n_source) +
                             " source); join a target source to the flow: `flow SOURCE + TARGET -> ...`");
  if (n_source == 0)
    throw std::runtime_error("the pass had no source samples (" + std::to_string(n_target) +
                             " target): nothing to weigh");
  const torch::Tensor features = features_.narrow(0, 0, rows_);
  const torch::Tensor is_target = torch::from_blob(is_target_.data(), {rows_}, torch::kUInt8);
  const DomainClassifier classifier = fit_domain_classifier(features, is_target, l2_, steps_);
  const torch::Tensor logits = domain_logits(features, classifier);
  const double* logit = logits.data_ptr<double>();
  int64_t right = 0;
  for (int64_t i = 0; i < rows_; ++i) right += (logit[i] > 0) == (is_target_[i] != 0);
  const torch::Tensor weights = importance_weights_from_logits(
      logits, static_cast<double>(n_source) / static_cast<double>(n_target), clip_lo_, clip_hi_);
  const double* weight = weights.data_ptr<double>();
  std::map<int64_t, double> by_index;  // a repeated index (drawn twice) keeps its first row
  for (int64_t i = 0; i < rows_; ++i)
    if (!is_target_[i]) by_index.emplace(indices_[i], weight[i]);
  double lo = std::numeric_limits<double>::infinity(), hi = -lo, sum = 0;
  for (const auto& [index, w] : by_index) {
    lo = std::min(lo, w);
    hi = std::max(hi, w);
    sum += w;
  }
  figures_ = {{"importance_weight_min", lo},
              {"importance_weight_max", hi},
              {"importance_weight_mean", sum / static_cast<double>(by_index.size())},
              {"domain_classifier_top1", static_cast<double>(right) / static_cast<double>(rows_)},
              {"domain_classifier_iterations", static_cast<double>(classifier.iterations)},
              {"importance_weights_written", 0.0}};
  if (writes_) {
    std::filesystem::path target(path_);
    std::error_code ec;
    if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
    write_file_atomically(path_, [&](std::ostream& out) {
      out << "index,weight\n" << std::setprecision(17);  // read back exactly
      for (const auto& [index, w] : by_index) out << index << "," << w << "\n";
    });
    figures_["importance_weights_written"] = static_cast<double>(by_index.size());
  }
  spdlog::info(
      "{}: {} source and {} target samples, domain classifier top-1 {:.4f} ({} L-BFGS iterations); "
      "weights {:.4g}..{:.4g}, mean {:.4g}{}",
      name_, n_source, n_target, figures_["domain_classifier_top1"], classifier.iterations, lo, hi,
      figures_["importance_weight_mean"], writes_ ? ", written to " + path_ : "");
  features_ = torch::Tensor();  // the features are the pass's alone
  rows_ = 0;
}

void ImportanceWeights::report(Report& report) const {
  for (const auto& [key, value] : figures_) report.set(key, value);
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(ImportanceWeights);

}  // namespace flowrun::stages
