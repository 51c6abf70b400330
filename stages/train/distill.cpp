#include "stages/train/distill.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

#include "pipeline/graph.h"
#include "pipeline/registry.h"
#include "stages/model/model.h"
#include "stages/train/state_bytes.h"

namespace flowrun::stages {

namespace F = torch::nn::functional;

torch::Tensor kd_soft_loss(const torch::Tensor& student, const torch::Tensor& teacher, double temperature) {
  if (student.dim() != 2 || !student.sizes().equals(teacher.sizes()))
    throw std::runtime_error("knowledge distillation needs student and teacher logits of one shape [N, classes]");
  const torch::Tensor log_p_student = torch::log_softmax(student.to(torch::kFloat) / temperature, 1);
  const torch::Tensor p_teacher = torch::softmax(teacher.to(torch::kFloat) / temperature, 1);
  return F::kl_div(log_p_student, p_teacher, F::KLDivFuncOptions().reduction(torch::kBatchMean)) *
         (temperature * temperature);
}

namespace {
// Pairwise Euclidean distances [N, N], the diagonal 0: the authors' pdist
// (through the Gram matrix, clamped before the root, so that the gradient of
// coinciding embeddings stays finite).
torch::Tensor pairwise_distances(const torch::Tensor& e) {
  const torch::Tensor square = e.pow(2).sum(1);
  torch::Tensor d = (square.unsqueeze(1) + square.unsqueeze(0) - 2 * e.mm(e.t())).clamp_min(1e-12).sqrt();
  return d * (1 - torch::eye(e.size(0), e.options()));
}

// Each distance over the mean of the N(N-1) off-diagonal ones.
torch::Tensor normalised_distances(const torch::Tensor& e) {
  const int64_t n = e.size(0);
  const torch::Tensor d = pairwise_distances(e);
  return d / (d.sum() / static_cast<double>(n * (n - 1)));
}

// cos of the angle at e_j between e_i and e_k, [j][i][k]: <(e_i - e_j)/|.|, (e_k - e_j)/|.|>
// (0 where i = j or k = j), as F.normalize's eps = 1e-12.
torch::Tensor triplet_cosines(const torch::Tensor& e) {
  const torch::Tensor difference = e.unsqueeze(0) - e.unsqueeze(1);  // [j][i] = e_i - e_j
  const torch::Tensor unit = difference / difference.norm(2, 2, /*keepdim=*/true).clamp_min(1e-12);
  return torch::bmm(unit, unit.transpose(1, 2));
}

void check_embeddings(const torch::Tensor& student, const torch::Tensor& teacher, const char* what) {
  if (student.dim() != 2 || teacher.dim() != 2 || student.size(0) != teacher.size(0))
    throw std::runtime_error(std::string("RKD's ") + what + " loss needs student and teacher embeddings of the same "
                             "samples, [N, D]");
  if (student.size(0) < 2) throw std::runtime_error(std::string("RKD's ") + what + " loss needs at least 2 samples");
}
}  // namespace

torch::Tensor rkd_distance_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  check_embeddings(student, teacher, "distance");
  torch::Tensor target;
  {
    torch::NoGradGuard no_grad;
    target = normalised_distances(teacher.to(torch::kFloat));
  }
  return F::smooth_l1_loss(normalised_distances(student.to(torch::kFloat)), target);  // beta 1, the mean
}

torch::Tensor rkd_angle_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  check_embeddings(student, teacher, "angle");
  torch::Tensor target;
  {
    torch::NoGradGuard no_grad;
    target = triplet_cosines(teacher.to(torch::kFloat));
  }
  return F::smooth_l1_loss(triplet_cosines(student.to(torch::kFloat)), target);
}

namespace {
// Where the teacher and student stand in a phase where a train stage uses
// this loss: the teacher is another model, trained by no train stage of the
// phase, with the student's classes. A graph check: said at --check.
std::string teaching_problem(const ResolvedGraph& graph, const ResolvedPhase& phase, const ResolvedStage& me, size_t op) {
  if (me.ops.size() != 1) return "";
  const std::string teacher = me.ops[op].params.get_string("teacher");
  auto place = [](const Location& at) {
    return at.file.empty() ? std::string() : " (" + at.file + ":" + std::to_string(at.line) + ")";
  };
  const std::string in_phase = graph.implicit_phase ? "" : " in phase '" + phase.name + "'";
  bool teaches = false;  // a phase where no train stage uses this loss may well train the teacher
  for (const auto& stage : phase.stages)
    for (const auto& other : stage.ops)
      teaches = teaches || (other.type == "train" && other.params.has("loss") && other.params.get_string("loss") == me.name);
  if (!teaches) return "";
  for (const auto& stage : phase.stages)
    for (const auto& other : stage.ops) {
      if (other.type != "train" || !other.params.has("model") || !other.params.has("loss")) continue;
      const std::string student = other.params.get_string("model");
      if (other.params.get_string("loss") != me.name) {
        if (student == teacher)
          return "its teacher '" + teacher + "' is trained by '" + stage.name + "'" + place(stage.where) + in_phase +
                 ": a teacher stays frozen while it teaches (train it in an earlier phase or graph)";
        continue;
      }
      if (student == teacher)
        return "teacher='" + teacher + "' is the student itself: '" + stage.name + "'" + place(stage.where) +
               " trains model '" + student + "' with this loss; the teacher is another, trained model stage";
      const ResolvedStage* t = phase.find(teacher);
      const ResolvedStage* s = phase.find(student);
      if (!t || !s || t->ops.size() != 1 || s->ops.size() != 1 || !t->ops.front().params.has("classes") ||
          !s->ops.front().params.has("classes"))
        continue;
      const int64_t tc = t->ops.front().params.get_int("classes"), sc = s->ops.front().params.get_int("classes");
      if (tc != sc)
        return "teacher '" + teacher + "'" + place(t->where) + " has " + std::to_string(tc) +
               " classes but the student '" + student + "'" + place(s->where) + " that '" + stage.name +
               "' trains has " + std::to_string(sc) + ": distillation matches their outputs class for class";
    }
  return "";
}
}  // namespace

Schema Distill::schema() {
  return Schema("distill", "knowledge distillation from a frozen teacher model: Hinton et al.'s soft targets at "
                           "temperature T blended with cross-entropy, optionally RKD's distance and angle losses on the "
                           "pooled features; the train stage names it (loss=)")
      .provides("loss")
      .graph_check(teaching_problem)
      .param(StageRef("teacher", "the teacher's model stage (frozen: eval mode, no gradients, never updated)", "model"))
      .param(Float("temperature", "T: both softmaxes at logits / T, the soft loss scaled by T^2 (> 0)").def(4.0)
                 .range(0, 1000))
      .param(Float("alpha", "weight of the soft loss; 1 - alpha weighs the cross-entropy with the labels").def(0.9)
                 .range(0, 1))
      .param(Float("rkd_distance", "weight of RKD's distance loss (the paper: 25); 0 = off").def(0.0).range(0, 1e6))
      .param(Float("rkd_angle", "weight of RKD's angle loss (the paper: 50); 0 = off").def(0.0).range(0, 1e6))
      .param(String("cache", "keep the teacher's outputs per sample when nothing before the train stage is random "
                             "(auto: then; on: or fail; off: every batch)")
                 .def(std::string("auto")).one_of({"auto", "on", "off"}))
      .param(Int("cache_limit_mb", "most memory the cached teacher outputs may take").def(int64_t{1024})
                 .range(1, int64_t{1} << 30))
      .check([](const Params& p) -> std::string {
        const double t = p.get_float("temperature");
        return t > 0 ? "" : "temperature must be above 0 (T = 1: the plain softmax; Hinton et al. use 1 to 20), got " +
                                std::to_string(t);
      });
}

Distill::Distill(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      teacher_name_(init.params.get_string("teacher")),
      temperature_(init.params.get_float("temperature")),
      alpha_(init.params.get_float("alpha")),
      rkd_distance_(init.params.get_float("rkd_distance")),
      rkd_angle_(init.params.get_float("rkd_angle")),
      cache_mode_(init.params.get_string("cache")),
      cache_(init.params.get_int("cache_limit_mb") << 20) {
  // Checked again here: a stage built by code, not from a graph, skips the schema's rules.
  if (!(temperature_ > 0))
    throw std::runtime_error("distill '" + name_ + "': temperature must be above 0, got " + std::to_string(temperature_));
  if (!(alpha_ >= 0 && alpha_ <= 1))
    throw std::runtime_error("distill '" + name_ + "': alpha must be in [0, 1], got " + std::to_string(alpha_));
  if (const ResolvedGraph* graph = init.stages.resolved_graph())
    for (const auto& phase : graph->phases)
      if (const ResolvedStage* me = phase.find(name_)) {
        declared_ = me->where;
        break;
      }
}

std::string Distill::where() const {
  if (declared_.file.empty()) return "";
  return declared_.file + ":" + std::to_string(declared_.line) + ":" + std::to_string(declared_.col) + ": ";
}

void Distill::begin_epoch(const EpochInfo&) {
  kd_sum_ = ce_sum_ = distance_sum_ = angle_sum_ = torch::Tensor();
  samples_ = 0;
}

void Distill::begin_phase(const LossPhase& phase) {
  teacher_ = &find_model(stages_, teacher_name_);
  if (teacher_ == phase.model)
    throw std::runtime_error(where() + "distill '" + name_ + "': teacher='" + teacher_name_ +
                             "' is the student itself (the model '" + phase.train +
                             "' trains); the teacher is another, trained model stage");
  if (teacher_->classes() != phase.model->classes())
    throw std::runtime_error(where() + "distill '" + name_ + "': teacher '" + teacher_name_ + "' has " +
                             std::to_string(teacher_->classes()) + " classes but the student that '" + phase.train +
                             "' trains has " + std::to_string(phase.model->classes()) +
                             ": distillation matches their outputs class for class");
  phase_ = phase.phase;
  cache_.clear();
  order_known_ = false;
  std::string why;
  if (cache_mode_ == "off") {
    caching_ = false;
    why = "cache=off";
  } else if (!phase.inputs_repeat) {
    caching_ = false;
    why = phase.why;
  } else if (phase.epochs < 2 && cache_mode_ != "on") {
    caching_ = false;
    why = "one epoch in the phase: nothing to reuse";
  } else {
    caching_ = true;
    why = phase.why + ": each sample's teacher outputs are computed once";
  }
  if (cache_mode_ == "on" && !caching_)
    throw std::runtime_error(where() + "distill '" + name_ + "': cache=on, but in phase '" + phase.phase + "' " + why +
                             " (cache=auto caches only where it can)");
  spdlog::info("{}: phase '{}': teacher '{}' outputs {}: {}", name_, phase.phase, teacher_name_,
               caching_ ? "cached" : "computed every batch", why);
}

const torch::Tensor& Distill::class_order(const ModelStage& student, const torch::Device& device) {
  std::vector<std::string> s = student.class_names(), t = teacher_->class_names();
  if (order_known_ && s == order_student_ && t == order_teacher_) return class_order_;
  order_student_ = s;
  order_teacher_ = t;
  order_known_ = true;
  class_order_ = torch::Tensor();
  auto named = [](const std::vector<std::string>& names) {
    if (names.empty()) return false;
    for (const auto& n : names)
      if (n.empty()) return false;
    return true;
  };
  if (!named(s) || !named(t) || s == t) return class_order_;  // positions
  std::vector<int64_t> order;
  std::string missing;
  for (const auto& name : s) {
    auto it = std::find(t.begin(), t.end(), name);
    if (it == t.end()) missing += (missing.empty() ? "" : ", ") + name;
    order.push_back(it - t.begin());
  }
  auto text = [](const std::vector<std::string>& names) {
    std::string out = "[";
    for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
    return out + "]";
  };
  if (!missing.empty())
    throw std::runtime_error("distill '" + name_ + "': the student's classes " + text(s) + " are not the teacher '" +
                             teacher_name_ + "''s " + text(t) + " (the teacher lacks " + missing + ")");
  spdlog::info("{}: teacher '{}' orders the classes {}; matched to the student's {} by name", name_, teacher_name_,
               text(t), text(s));
  class_order_ = torch::tensor(order, torch::kLong).to(device);
  return class_order_;
}

std::pair<torch::Tensor, torch::Tensor> Distill::teacher_outputs(const LossContext& batch) {
  const int64_t n = batch.logits.size(0);
  const bool features = wants_features();
  const torch::Device device = batch.logits.device();
  const bool keyed = caching_ && batch.indices && static_cast<int64_t>(batch.indices->size()) == n;
  torch::Tensor row;  // [N, classes (+ D)]
  if (keyed) row = cache_.lookup(*batch.indices);
  ++teacher_batches_;
  if (row.defined()) {
    ++cached_batches_;
  } else {
    Network& net = teacher_->net();
    net->eval();  // frozen: BatchNorm's running statistics, no dropout
    torch::NoGradGuard no_grad;
    const torch::Tensor x = teacher_->input(batch.images);
    torch::Tensor logits, pooled;
    if (features) {
      pooled = net->features(x);
      logits = net->head(pooled);
    } else {
      logits = net->forward(x);
    }
    row = logits.to(device, torch::kFloat);
    if (features) row = torch::cat({row, pooled.to(device, torch::kFloat)}, 1);
    if (keyed && !cache_.store(*batch.indices, row)) {
      const std::string why = "the teacher outputs of phase '" + phase_ + "' would pass cache_limit_mb=" +
                              std::to_string(cache_.limit_bytes() >> 20) + " (" + std::to_string(cache_.rows()) +
                              " samples of " + std::to_string(row.size(1)) + " values kept so far)";
      if (cache_mode_ == "on") throw std::runtime_error("distill '" + name_ + "': " + why + "; raise the limit or set cache=off");
      spdlog::warn("{}: {}; the rest of the phase computes them every batch", name_, why);
      cache_.clear();
      caching_ = false;
    }
  }
  const int64_t classes = teacher_->classes();
  torch::Tensor logits = row.narrow(1, 0, classes);
  torch::Tensor pooled = features ? row.narrow(1, classes, row.size(1) - classes) : torch::Tensor();
  return {logits, pooled};
}

torch::Tensor Distill::batch_loss(const LossContext& batch) {
  if (!teacher_) throw std::runtime_error("distill '" + name_ + "': called before its phase began (begin_phase)");
  if (batch.model == teacher_)
    throw std::runtime_error(where() + "distill '" + name_ + "': teacher='" + teacher_name_ + "' is the student itself");
  if (!batch.images.defined())
    throw std::runtime_error("distill '" + name_ + "' needs the batch's images (LossContext::images) to run its teacher");
  auto [teacher_logits, teacher_features] = teacher_outputs(batch);
  if (batch.model) {
    const torch::Tensor& order = class_order(*batch.model, teacher_logits.device());
    if (order.defined()) teacher_logits = teacher_logits.index_select(1, order);
  }
  const torch::Tensor student = batch.logits.to(torch::kFloat);
  const int64_t n = student.size(0);
  torch::Tensor soft = kd_soft_loss(student, teacher_logits, temperature_) * alpha_;
  torch::Tensor loss = soft;
  torch::Tensor hard;
  if (alpha_ < 1) {
    hard = F::cross_entropy(student, batch.labels) * (1 - alpha_);
    loss = loss + hard;
  }
  torch::Tensor distance, angle;
  if (wants_features()) {
    if (!batch.features.defined())
      throw std::runtime_error("distill '" + name_ + "' needs the student's features (LossContext::features) for RKD");
    if (n < 2) {
      if (!small_batches_++)
        spdlog::warn("{}: a batch of {} sample has no pairs for RKD; such steps train without it (batch "
                     "drop_last=true leaves them out)", name_, n);
    } else {
      if (rkd_distance_ > 0) {
        distance = rkd_distance_loss(batch.features, teacher_features) * rkd_distance_;
        loss = loss + distance;
      }
      if (rkd_angle_ > 0) {
        angle = rkd_angle_loss(batch.features, teacher_features) * rkd_angle_;
        loss = loss + angle;
      }
    }
  }
  // The epoch's figures, per sample as the train loss, on the device.
  auto add = [n](torch::Tensor& sum, const torch::Tensor& value) {
    if (!value.defined()) return;
    const torch::Tensor v = value.detach().to(torch::kDouble) * static_cast<double>(n);
    sum = sum.defined() ? sum + v.to(sum.device()) : v;
  };
  add(kd_sum_, soft);
  add(ce_sum_, hard);
  add(distance_sum_, distance);
  add(angle_sum_, angle);
  samples_ += n;
  return loss;
}

std::map<std::string, double> Distill::epoch_figures() const {
  std::map<std::string, double> figures;
  if (!samples_) return figures;
  const double n = static_cast<double>(samples_);
  auto mean = [&](const torch::Tensor& sum) { return sum.defined() ? sum.item<double>() / n : 0.0; };
  figures["kd_loss"] = mean(kd_sum_);
  figures["kd_ce_loss"] = mean(ce_sum_);
  if (rkd_distance_ > 0) figures["rkd_distance_loss"] = mean(distance_sum_);
  if (rkd_angle_ > 0) figures["rkd_angle_loss"] = mean(angle_sum_);
  return figures;
}

void Distill::report(Report& report) const {
  report.set("teacher_batches", static_cast<double>(teacher_batches_));
  report.set("teacher_cached_batches", static_cast<double>(cached_batches_));
}

bool Distill::save_state(std::string& out) const {
  torch::serialize::OutputArchive archive;
  auto sum = [](const torch::Tensor& t) { return t.defined() ? t.cpu() : torch::zeros({}, torch::kDouble); };
  archive.write("kd_sum", sum(kd_sum_));
  archive.write("ce_sum", sum(ce_sum_));
  archive.write("distance_sum", sum(distance_sum_));
  archive.write("angle_sum", sum(angle_sum_));
  archive.write("samples", c10::IValue(samples_));
  archive.write("teacher_batches", c10::IValue(teacher_batches_));
  archive.write("cached_batches", c10::IValue(cached_batches_));
  out = archive_bytes(archive);
  return true;
}

void Distill::load_state(const std::string& in) {
  torch::serialize::InputArchive archive;
  load_archive(archive, in, "distill '" + name_ + "'");
  auto sum = [&](const char* key, torch::Tensor& into) {
    torch::Tensor t;
    archive.read(key, t);
    into = t;
  };
  sum("kd_sum", kd_sum_);
  sum("ce_sum", ce_sum_);
  sum("distance_sum", distance_sum_);
  sum("angle_sum", angle_sum_);
  samples_ = read_int(archive, "samples");
  teacher_batches_ = read_int(archive, "teacher_batches");
  cached_batches_ = read_int(archive, "cached_batches");
}

FLOWRUN_REGISTER_STAGE(Distill);

}  // namespace flowrun::stages
