#include "stages/train/train.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "pipeline/graph.h"
#include "pipeline/interrupt.h"
#include "pipeline/registry.h"
#include "pipeline/trace.h"
#include "stages/adapt/adaptation.h"
#include "stages/model/model.h"
#include "stages/model/precision.h"
#include "stages/tensor/batch_data.h"
#include "stages/train/freeze.h"
#include "stages/train/loss.h"
#include "stages/train/schedule.h"
#include "stages/train/state_bytes.h"

namespace flowrun::stages {

namespace {
// An adaptation or loss stage keeps state of the one train stage it serves
// (DANN's domain classifier and its optimizer, a loss's epoch figures, the
// teacher's cached outputs): two train stages of one phase naming it would
// share and mix it. A graph check: said at --check, naming both.
std::string shared_stage_problem(const ResolvedGraph&, const ResolvedPhase& phase, const ResolvedStage& me, size_t op) {
  const Params& params = me.ops[op].params;
  for (const char* param : {"adaptation", "loss"}) {
    if (!params.has(param) || params.is_auto(param)) continue;
    const std::string mine = params.get_string(param);
    if (mine.empty()) continue;
    for (const auto& stage : phase.stages) {
      if (stage.name == me.name) break;  // the first of the two says it
      for (const auto& other : stage.ops)
        if (other.type == "train" && other.params.has(param) && !other.params.is_auto(param) &&
            other.params.get_string(param) == mine)
          return std::string(param) + " '" + mine + "' is also the " + param + " of train '" + stage.name + "'" +
                 (stage.where.file.empty() ? "" : " (" + stage.where.file + ":" + std::to_string(stage.where.line) + ")") +
                 ": it keeps the state and figures of one train stage; give '" + me.name + "' its own (OTHER = like " +
                 mine + ")";
    }
  }
  return "";
}
}  // namespace

Schema Train::schema() {
  return Schema("train", "trains the model on each batch: the loss (cross-entropy unless a loss stage is named), "
                         "optimizer and schedule per batch")
      .param(StageRef("model", "the model stage", "model"))
      .param(StageRef("optimizer", "the optimizer stage", "optimizer"))
      .param(OptionalStageRef("scheduler", "the schedule stage (none: constant)", "scheduler"))
      .param(OptionalStageRef("freezer", "the freeze stage (none: all trainable)", "freezer"))
      .param(OptionalStageRef("loss", "a loss stage, e.g. from a plugin (none: cross-entropy)", "loss"))
      .param(OptionalStageRef("adaptation", "a domain-adaptation stage (coral, dann) for a flow joining a source and "
                                            "a target: `flow source + target -> ...` (none: the source alone)",
                              "adaptation"))
      .param(Float("label_smoothing", "cross-entropy label smoothing").def(0.0).range(0, 1))
      .param(String("unlabelled", "a sample without a class: error (a list that lost its labels is a mistake), "
                                  "skip (semi-supervised data, keep_labels: the loss is the mean over the labelled "
                                  "samples, as cross_entropy's ignore_index), or auto: skip for a multi-task model "
                                  "(its other heads learn from them), else error").def(std::string("auto"))
                 .one_of({"auto", "error", "skip"}))
      .param(FloatList("task_weights", "a multi-task model's fixed loss weights: its classes', then each extra head's "
                                       "(the model's tasks order); [] = all 1").def(std::vector<double>{}))
      .param(String("task_weighting", "fixed (task_weights) or uncertainty: learned log-variances s_t, loss "
                                      "sum exp(-s_t) L_t + s_t/2 (Kendall, Gal & Cipolla, CVPR 2018)")
                 .def(std::string("fixed")).one_of({"fixed", "uncertainty"}))
      .check([](const Params& p) -> std::string {
        const auto weights = p.get_float_list("task_weights");
        if (!weights.empty() && p.get_string("task_weighting") == "uncertainty")
          return "task_weights=[...] are fixed weights; task_weighting=uncertainty learns them (give one or the other)";
        bool any = weights.empty();
        for (double w : weights) {
          if (!(w >= 0) || !std::isfinite(w)) return "task_weights must be finite and >= 0 (a negative one ascends its loss)";
          any |= w > 0;
        }
        return any ? "" : "task_weights are all 0: nothing would train";
      })
      .param(String("precompute", "train the head from backbone features computed once per sample, when the phase "
                                  "keeps the backbone frozen and nothing before is random (auto: then; on: or fail; off)")
                 .def(std::string("auto")).one_of({"auto", "on", "off"}))
      .param(Int("precompute_limit_mb", "most memory the precomputed features may take").def(int64_t{2048})
                 .range(1, int64_t{1} << 30))
      .param(Int("lr_find", "run the learning-rate range test over this many batches instead of training, then put "
                            "the weights back and end the run (flowrun --lr-find); 0 = off").def(int64_t{0}).range(0, 100000))
      .param(Float("lr_find_start", "the range test's first learning rate").def(1e-7).range(1e-12, 1e3))
      .param(Float("lr_find_end", "the range test's last learning rate").def(10.0).range(1e-12, 1e6))
      .check([](const Params& p) {
        return p.get_float("lr_find_start") < p.get_float("lr_find_end") ? "" : "lr_find_start must be below lr_find_end";
      })
      // Run after the stage references are resolved: `loss` is then the phase's loss stage, or "".
      .check([](const Params& p) -> std::string {
        if (p.get_float("label_smoothing") == 0 || p.is_auto("loss") || p.get_string("loss").empty()) return "";
        return "label_smoothing belongs to the built-in cross-entropy; loss stage '" + p.get_string("loss") +
               "' has its own parameters";
      })
      .graph_check(shared_stage_problem);
}

Train::Train(const StageInit& init)
    : stages_(init.stages),
      name_(init.name),
      model_name_(init.params.get_string("model")),
      optimizer_name_(init.params.get_string("optimizer")),
      schedule_name_(init.params.get_string("scheduler")),
      freezer_name_(init.params.get_string("freezer")),
      loss_name_(init.params.get_string("loss")),
      adaptation_name_(init.params.get_string("adaptation")),
      label_smoothing_(init.params.get_float("label_smoothing")),
      unlabelled_(init.params.get_string("unlabelled")),
      task_weights_(init.params.get_float_list("task_weights")),
      uncertainty_weighting_(init.params.get_string("task_weighting") == "uncertainty"),
      compute_(init),
      cache_(init.params.get_int("precompute_limit_mb") << 20),
      job_(Job::of(init.run.job)),
      metrics_(MetricsLog::of(init)),
      tensorboard_(TensorBoardWriter::of(init)) {
  if (job_ && job_->rank() != 0) progress_.silence();
  // No epoch has ended yet: no figure (a run stopped in its first epoch
  // reports no train_loss, rather than a 0 that reads as a result).
  last_loss_ = last_top1_ = std::nan("");
  if (const int64_t steps = init.params.get_int("lr_find"))
    finder_ = std::make_unique<LrFinder>(steps, init.params.get_float("lr_find_start"), init.params.get_float("lr_find_end"),
                                         init.run.job.writes_files() ? (init.run.run_dir.empty() ? "." : init.run.run_dir) : "");
}

void Train::begin_epoch(const EpochInfo& epoch) {
  epoch_ = epoch;
  prepared_ = false;
  model_ = &find_model(stages_, model_name_);
  optimizer_stage_ = &find_optimizer(stages_, optimizer_name_);
  schedule_ = find_schedule(stages_, schedule_name_);
  freezer_ = freezer_name_.empty() ? nullptr : &stages_.require<Freeze>(freezer_name_, "freeze");
  loss_ = loss_name_.empty() ? nullptr : &stages_.require<LossStage>(loss_name_, "loss");
  AdaptationStage* adaptation =
      adaptation_name_.empty() ? nullptr : &stages_.require<AdaptationStage>(adaptation_name_, "adaptation");
  if (adaptation != adaptation_) {  // a new phase may rebuild it: a new module, a new optimizer
    adaptation_ = adaptation;
    adaptation_module_.reset();
    synced_.reset();
    optimization_ = Optimization();
  }
  if (loss_ && label_smoothing_ > 0)
    throw std::runtime_error("label_smoothing belongs to the built-in cross-entropy; loss stage '" + loss_name_ +
                             "' has its own parameters");
  compute_.begin_epoch(model_->device().is_cpu());
  const size_t heads = model_->task_heads().size();
  if (heads && !weighting_) {
    weighting_ = std::make_unique<TaskWeighting>(heads + 1, task_weights_, uncertainty_weighting_, name_);
    weighting_->to(model_->device());
    if (saved_log_var_.defined()) weighting_->load(saved_log_var_);
    saved_log_var_ = torch::Tensor();
  } else if (!heads && (!task_weights_.empty() || uncertainty_weighting_)) {
    throw std::runtime_error("task_weights and task_weighting=uncertainty weigh a multi-task model's heads, and model '" +
                             model_name_ + "' has one (give it tasks=[...] task_classes=[...])");
  }
  task_loss_sum_.clear(), task_correct_.clear(), task_seen_.clear();
  for (size_t t = 0; t < heads; ++t) {
    task_loss_sum_.push_back(torch::zeros({}, torch::TensorOptions(torch::kDouble).device(model_->device())));
    task_correct_.push_back(torch::zeros({}, torch::TensorOptions(torch::kLong).device(model_->device())));
    task_seen_.push_back(0);
  }
  // The running sums live on the model's device: no host synchronisation per step.
  loss_sum_ = torch::zeros({}, torch::TensorOptions(torch::kDouble).device(model_->device()));
  correct_ = torch::zeros({}, torch::TensorOptions(torch::kLong).device(model_->device()));
  first_bad_ = torch::full({}, -1, torch::TensorOptions(torch::kLong).device(model_->device()));
  seen_ = images_ = 0;
  seen_batches_ = 0;
  first_batch_ns_ = last_step_ns_ = 0;
}

void Train::prepare(int64_t batches_in_epoch) {
  Network& net = model_->net();
  net->train();
  std::vector<std::string> frozen;
  if (freezer_) {
    frozen = freezer_->apply(*net, epoch_.epoch_in_phase);
    freezer_->set_modes(*net, epoch_.epoch_in_phase);
  } else {
    for (auto& p : net->parameters()) p.set_requires_grad(true);
  }
  if (phase_ != epoch_.phase_index) {
    phase_ = epoch_.phase_index;
    plan_phase();
    step_ = 0;
    total_steps_ = 0;
    optimization_ = Optimization();
    saved_optimizer_.clear();  // a new phase starts a new optimizer
  }
  if (!optimization_.optimizer || frozen != frozen_) {
    std::vector<torch::Tensor> extra;
    if (adaptation_) {
      int64_t width = 0;
      try {
        width = model_->feature_size();
      } catch (const std::exception& e) {
        throw std::runtime_error("adaptation '" + adaptation_name_ + "' needs the features the model's head takes: " +
                                 e.what());
      }
      adaptation_module_ = adaptation_->prepare(width, model_->device());
      if (adaptation_module_) extra = adaptation_module_->parameters();
    }
    const std::shared_ptr<torch::nn::Module> weighting = weighting_ ? weighting_->module() : nullptr;
    if (weighting)
      for (const auto& p : weighting->parameters()) extra.push_back(p);
    optimization_ = optimizer_stage_->build(*net, extra);
    if (job_) {  // over what trains now: the model, and the adaptation's and weighting's modules beside it
      if (adaptation_module_ || weighting) {
        synced_ = std::make_shared<torch::nn::Module>();
        synced_->register_module("model", net.ptr());
        if (adaptation_module_) synced_->register_module("adaptation", adaptation_module_);
        if (weighting) synced_->register_module("task_weighting", weighting);
        sync_ = std::make_unique<GradientSync>(*job_, *synced_);
      } else {
        sync_ = std::make_unique<GradientSync>(*job_, *net);
      }
    }
    // A resumed run: the moments saved for the same trainable set.
    if (!saved_optimizer_.empty() && frozen == frozen_) {
      torch::serialize::InputArchive archive;
      load_archive(archive, saved_optimizer_, "the optimizer of '" + name_ + "'");
      optimization_.optimizer->load(archive);
    }
  }
  saved_optimizer_.clear();
  frozen_ = frozen;
  if (loss_ && (loss_phase_ != phase_ || loss_told_ != loss_)) tell_loss_phase();
  if (!total_steps_) {
    if (schedule_ && batches_in_epoch <= 0)
      throw std::runtime_error("the schedule needs the number of batches per epoch, which this source does not give");
    total_steps_ = std::max<int64_t>(1, batches_in_epoch * epoch_.epochs_in_phase);
  }
  if (schedule_ && !finder_ && step_ >= total_steps_ && warned_schedule_phase_ != phase_ && (!job_ || job_->rank() == 0)) {
    // A finished run resumed with more epochs: its schedule was planned for
    // the epochs it had, and stays at its end.
    warned_schedule_phase_ = phase_;
    spdlog::warn("{}: phase '{}': the schedule ended at step {} of {} (a finished run resumed with more epochs?); epoch {} "
                 "and later train at its final rate, lr {:.3g} (start a new phase for more training at a useful rate)",
                 name_, epoch_.phase, step_, total_steps_, epoch_.epoch + 1,
                 optimization_.peak_lr.front() * schedule_->lr_factor(step_, total_steps_));
  }
  prepared_ = true;
  char title[128];
  std::snprintf(title, sizeof title, "epoch %d (%s %d/%d) %s", epoch_.epoch + 1, epoch_.phase.c_str(),
                epoch_.epoch_in_phase + 1, epoch_.epochs_in_phase, name_.c_str());
  progress_.begin(title, batches_in_epoch);
}

void Train::tell_loss_phase() {
  loss_phase_ = phase_;
  loss_told_ = loss_;
  LossPhase phase;
  phase.train = name_;
  phase.phase = epoch_.phase;
  phase.epochs = epoch_.epochs_in_phase;
  phase.model = model_;
  const ResolvedGraph* graph = stages_.resolved_graph();
  if (!graph || epoch_.phase_index >= static_cast<int>(graph->phases.size())) {
    phase.why = "the graph is not known";
  } else {
    phase.why = random_stage_before(graph->phases[static_cast<size_t>(epoch_.phase_index)], flow_of(*graph, name_), name_);
    phase.inputs_repeat = phase.why.empty();
    if (phase.inputs_repeat) phase.why = "nothing before '" + name_ + "' is random";
  }
  loss_->begin_phase(phase);
}

void Train::plan_phase() {
  cache_.clear();
  precompute_ = PrecomputePlan();
  const ResolvedGraph* graph = stages_.resolved_graph();
  if (!graph || epoch_.phase_index >= static_cast<int>(graph->phases.size())) return;
  precompute_ = plan_precompute(graph->phases[static_cast<size_t>(epoch_.phase_index)], flow_of(*graph, name_), name_);
  if (precompute_.forced && !precompute_.use)
    throw std::runtime_error("precompute=on, but in phase '" + epoch_.phase + "' " + precompute_.why +
                             " (precompute=auto uses it only where it can)");
  if (!job_ || job_->rank() == 0)
    spdlog::info("{}: phase '{}': precompute {}: {}", name_, epoch_.phase, precompute_.use ? "on" : "off",
                 precompute_.why);
}

torch::Tensor Train::head_on_cached_features(const Batch& batch, const torch::Tensor& images, torch::Tensor* out) {
  Network& net = model_->net();
  torch::Tensor features = cache_.lookup(batch.indices);
  if (features.defined()) {
    ++precompute_batches_;
  } else {
    {
      torch::NoGradGuard no_grad;
      features = net->features(images);
    }
    if (!cache_.store(batch.indices, features)) {
      const std::string why = "the precomputed features of phase '" + epoch_.phase + "' would pass precompute_limit_mb=" +
                              std::to_string(cache_.limit_bytes() >> 20) + " (" + std::to_string(cache_.rows()) +
                              " samples of " + std::to_string(features.size(1)) + " features kept so far)";
      if (precompute_.forced) throw std::runtime_error(why + "; raise the limit or set precompute=off");
      spdlog::warn("{}: {}; the rest of the phase trains without them", name_, why);
      cache_.clear();
      precompute_.use = false;
      precompute_.why = why;
    }
  }
  if (out) *out = features;
  return net->head(features);
}

bool Train::batchnorm_trains() const {
  for (const auto& module : model_->net()->modules(/*include_self=*/false))
    if (module->is_training() && (module->as<torch::nn::BatchNorm1d>() || module->as<torch::nn::BatchNorm2d>() ||
                                  module->as<torch::nn::BatchNorm3d>()))
      return true;
  return false;
}

void Train::process(Item& item, const Emit& emit) {
  Batch& batch = item.get<Batch>();
  if (!first_batch_ns_) first_batch_ns_ = now_ns();
  ComputeThreads::Scope compute(compute_);
  // A LibTorch error reaches the user as its first line, with the phase,
  // epoch and batch: the engine adds where (pipeline/error_text.h).
  step(batch, item, emit);
}

void Train::step(Batch& joined, Item& item, const Emit& emit) {
  // A batch of a flow joining a source and a target: the source's samples
  // come first (Batch::domain_counts).
  if (joined.domain_counts.size() > 2)
    throw std::runtime_error("the batch joins " + std::to_string(joined.domain_counts.size()) +
                             " sources; training adapts a source to one target ('flow source + target -> ...')");
  const int64_t sources = joined.domain_size(0), targets = joined.size() - sources;
  if (adaptation_ && targets == 0)
    throw std::runtime_error("adaptation '" + adaptation_name_ + "' needs target images in every batch, and this one "
                             "has none: join a target source to the flow ('flow SOURCE + TARGET -> ...')");
  if (sources == 0)
    throw std::runtime_error("the batch has no source samples: the flow's first source gives the labelled images");
  // Without adaptation the target's samples take no part; the source's are a batch of their own.
  Batch source_part;
  if (targets > 0 && !adaptation_) {
    source_part = joined;
    source_part.images = joined.images.narrow(0, 0, sources);
    source_part.labels = joined.labels.narrow(0, 0, sources);
    source_part.indices.resize(static_cast<size_t>(sources));
    source_part.paths.resize(static_cast<size_t>(sources));
    if (!source_part.padding.empty()) source_part.padding.resize(static_cast<size_t>(sources));
    source_part.domain_counts.clear();
  }
  Batch& batch = targets > 0 && !adaptation_ ? source_part : joined;
  if (!prepared_) prepare(batch.batches_in_epoch);
  Network& net = model_->net();
  if ((adaptation_ ? sources + targets : sources) == 1 && batchnorm_trains()) {
    // BatchNorm cannot normalise one sample with batch statistics (LibTorch
    // refuses it); dropped, as fastai drops the last training batch.
    if (dropped_single_++ == 0 && (!job_ || job_->rank() == 0))
      spdlog::warn("{}: dropped a training batch of one sample (phase '{}', epoch {}, batch {}): BatchNorm cannot "
                   "normalise one sample while it trains; batch drop_last=true drops it without this message",
                   name_, epoch_.phase, epoch_.epoch + 1, seen_batches_ + 1);
    ++seen_batches_;
    return;
  }
  torch::optim::Optimizer& optimizer = *optimization_.optimizer;
  if (finder_ && finder_->finished()) return;  // the range test is over: the run is ending
  // The schedule, stepped per batch; the range test's exponential sweep instead
  // (each group's rate in proportion to its peak, as discriminative rates).
  double factor = finder_ ? finder_->lr(step_) / optimization_.peak_lr.front()
                  : schedule_ ? schedule_->lr_factor(step_, total_steps_) : 1.0;
  if (finder_ && step_ == 0) finder_->begin(*net);
  auto& groups = optimizer.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(optimization_.peak_lr[g] * factor);
  if (schedule_ && !finder_)
    if (auto momentum = schedule_->momentum(step_, total_steps_)) optimizer_stage_->set_momentum(optimizer, *momentum);
  last_lr_ = optimization_.peak_lr.front() * factor;

  const torch::Tensor images = model_->input(batch.images);
  // Unlabelled samples (-1: an image list without classes) cannot train; the
  // batch's labels are still on the host: no device synchronisation.
  // A multi-task model's sample may lack the classes' label: that head skips
  // it; so does a single head told unlabelled=skip.
  const bool multitask = !model_->task_heads().empty();
  const bool skip_unlabelled = unlabelled_ == "skip" || (unlabelled_ == "auto" && multitask);
  if (!skip_unlabelled && batch.labels.defined() && batch.labels.device().is_cpu()) {
    const torch::Tensor own = batch.labels.narrow(0, 0, sources);
    if (own.numel() && own.min().item<int64_t>() < 0) {
      const int64_t i = (own < 0).nonzero()[0][0].item<int64_t>();
      const std::string what = static_cast<size_t>(i) < batch.paths.size() && !batch.paths[i].empty()
                                   ? batch.paths[i] : "sample #" + std::to_string(batch.indices.at(i));
      throw std::runtime_error(what + " has no label: training needs a class for every sample" +
                               std::string(targets > 0 ? " of the flow's first source (in 'flow SOURCE + TARGET -> "
                                                         "...' the labelled source comes first)" : "") +
                               " (train stage '" + name_ + "': unlabelled=skip trains on the labelled ones alone)");
    }
  }
  torch::Tensor labels;
  if (targets > 0 && adaptation_) {  // the target's labels are never read
    Batch labelled = batch;
    labelled.labels = batch.labels.narrow(0, 0, sources);
    labels = model_->labels(labelled, /*training=*/true);
  } else {
    labels = model_->labels(batch, /*training=*/true);
  }
  // In a job the ranks vote on stopping at every step (the vote travels while the step computes).
  if (job_) job_->start_stop_vote(stop_wanted());
  const int64_t t0 = now_ns();
  if (sync_) sync_->before_forward();
  AutocastScope autocast(model_->bf16());
  torch::Tensor logits, features;
  // A loss that reads the student's features (RKD) gets the ones its head
  // saw; a multi-task model's extra heads take the same features.
  const bool loss_features = loss_ && loss_->wants_features();
  const bool need_features = loss_features || multitask;
  if (adaptation_) {
    // Both domains in one forward pass (their BatchNorm statistics mixed, as
    // DANN's and CORAL's reference code does); the head sees the source's.
    features = net->features(images);
    logits = net->head(features.narrow(0, 0, sources));
  } else if (precompute_.use) {
    logits = head_on_cached_features(batch, images, need_features ? &features : nullptr);
  } else if (need_features) {
    features = net->features(images);
    logits = net->head(features);
  } else {
    logits = net->forward(images);
  }
  const torch::Tensor source_features =
      features.defined() && features.size(0) > sources ? features.narrow(0, 0, sources) : features;
  std::vector<int64_t> indices(batch.indices.begin(), batch.indices.begin() + std::min<int64_t>(sources, batch.indices.size()));
  torch::Tensor source_images = sources < images.size(0) ? images.narrow(0, 0, sources) : images;  // the labelled samples'
  // The samples without the classes' label: the head leaves them out.
  torch::Tensor head_features = source_features;
  if (skip_unlabelled) {
    const torch::Tensor own = batch.labels.narrow(0, 0, sources).to(torch::kCPU);
    if (own.numel() && own.min().item<int64_t>() < 0) {
      const torch::Tensor rows_host = (own >= 0).nonzero().squeeze(1);
      std::vector<int64_t> kept;
      for (int64_t i = 0; i < rows_host.numel(); ++i) kept.push_back(indices[rows_host[i].item<int64_t>()]);
      indices = std::move(kept);
      const torch::Tensor rows = rows_host.to(logits.device());
      logits = logits.index_select(0, rows);
      labels = labels.index_select(0, rows);
      source_images = source_images.index_select(0, rows);
      if (head_features.defined()) head_features = head_features.index_select(0, rows);
    }
  }
  const int64_t labelled = logits.size(0);  // the classes' labelled samples
  const double progress = total_steps_ ? std::min(1.0, static_cast<double>(step_) / static_cast<double>(total_steps_)) : 0;
  torch::Tensor loss;
  // A head without a labelled sample in the batch still takes part, with a
  // zero gradient, as under a masked loss in a PyTorch loop: every parameter
  // has a gradient each step (a job's ranks all-reduce all of them; DDP's
  // find_unused_parameters=False), and the optimizer treats a head the same
  // whether or not other heads share the model.
  torch::Tensor absent;
  if (labelled == 0) {
    absent = logits.sum() * 0.0;
  } else if (loss_) {
    LossContext context;
    context.logits = logits;
    context.labels = labels;
    context.images = source_images;
    context.indices = &indices;
    if (loss_features) context.features = head_features;
    context.model = model_;
    context.progress = progress;
    loss = loss_->batch_loss(context);
  } else {
    loss = torch::nn::functional::cross_entropy(
        logits, labels, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing_));
  }
  if (loss_ && loss.defined() && loss.dim() != 0)
    throw std::runtime_error("loss stage '" + loss_name_ + "' returned a tensor of " + std::to_string(loss.dim()) +
                             " dimensions, not the batch's mean loss (a scalar)");
  const torch::Tensor classes_loss = loss;  // what train_loss reports for a multi-task model
  if (multitask) {
    std::vector<torch::Tensor> losses{loss};
    add_task_losses(batch, source_features, losses, absent);
    loss = weighting_->combine(losses);
  }
  if (absent.defined()) loss = loss.defined() ? loss + absent.to(loss.scalar_type()) : absent;
  autocast.end();  // before backward, clearing the cast cache (the weights change at the step)
  if (adaptation_) {
    // Outside autocast, on float32 features: CORAL's covariances (XᵀX less
    // the mean's outer product) cancel catastrophically in bf16, and DANN's
    // adversarial gradient through the domain classifier is as sensitive
    // (as PyTorch users do with autocast(enabled=False) around such losses).
    const torch::Tensor f = features.to(torch::kFloat);
    torch::Tensor transfer = adaptation_->loss(f.narrow(0, 0, sources), f.narrow(0, sources, targets), progress);
    if (transfer.dim() != 0)
      throw std::runtime_error("adaptation stage '" + adaptation_name_ + "' returned a tensor of " +
                               std::to_string(transfer.dim()) + " dimensions, not a scalar loss");
    loss = loss + transfer.to(loss.scalar_type());
  }
  if (sync_) sync_->before_backward();
  const int64_t batch_number = seen_batches_++;
  if (finder_) {
    // The range test reads every loss; one that is not finite ends it (no step).
    if (!finder_->record(last_lr_, loss.item<double>()) && !std::isfinite(loss.item<double>())) {
      finish_range_test();
      return;
    }
  } else if (!model_->device().is_cuda()) {
    // On the CPU the check costs nothing: stop before a bad step touches the weights.
    if (double value = loss.item<double>(); !std::isfinite(value)) throw_nonfinite(value, batch_number);
  } else {
    // On the GPU, no host synchronisation per step: remember the first bad
    // batch on the device and look when the loss is read anyway.
    torch::Tensor bad = torch::logical_not(torch::isfinite(loss.detach()));
    first_bad_ = torch::where(bad & (first_bad_ < 0), torch::full_like(first_bad_, batch_number), first_bad_);
  }
  const int64_t t1 = now_ns();
  optimizer.zero_grad();
  try {
    loss.backward();
  } catch (const std::exception& e) {
    if (job_) job_->failed("the gradient all-reduce", e);  // the Reducer's, during backward
    throw;
  }
  const int64_t t2 = now_ns();
  optimizer_stage_->clip(optimization_);
  optimizer.step();
  const int64_t t3 = now_ns();
  forward_ns_ += t1 - t0;
  backward_ns_ += t2 - t1;
  optimizer_ns_ += t3 - t2;
  if (tensorboard_) tensorboard_->scalar("step/" + name_ + "_lr", steps_done_, last_lr_);  // the run's step count, from 0
  ++step_;
  ++steps_done_;
  // Metrics stay tensors: no host synchronisation inside a step.
  const int64_t n = labelled;
  if (n > 0) {
    loss_sum_ += (multitask ? classes_loss : loss).detach().to(torch::kDouble) * n;
    correct_ += (logits.argmax(1) == labels).sum();
  }
  seen_ += n;
  images_ += sources;
  progress_.update(n, [&] {
    check_finite();
    return seen_ ? loss_sum_.item<double>() / seen_ : 0.0;
  });
  last_step_ns_ = now_ns();
  if (finder_ && finder_->finished()) finish_range_test();
  // Every rank of a job stops after the same step.
  if (job_ && job_->finish_stop_vote()) request_stop();
  emit(item);
}

void Train::add_task_losses(const Batch& batch, const torch::Tensor& features, std::vector<torch::Tensor>& losses,
                            torch::Tensor& absent) {
  const int64_t n = features.size(0);
  Batch labelled = batch;  // the source's samples (a joined target has no labels for the tasks)
  if (labelled.task_labels.defined() && labelled.task_labels.size(0) > n) labelled.task_labels = batch.task_labels.narrow(0, 0, n);
  const auto& heads = model_->task_heads();
  for (size_t h = 0; h < heads.size(); ++h) {
    const torch::Tensor labels = model_->task_labels(labelled, h, /*training=*/true);  // [n], -1 = none
    // Counted on the host, from the batch's labels (-1 stays -1 when mapped): no device synchronisation.
    const int64_t count = (labelled.task_labels.select(1, labelled.task_column(heads[h].name)) >= 0).sum().item<int64_t>();
    const torch::Tensor logits = model_->task_logits(h, features);
    if (count == 0) {
      losses.emplace_back();  // no sample of the batch has this task's label
      const torch::Tensor zero = logits.sum() * 0.0;
      absent = absent.defined() ? absent + zero.to(absent.scalar_type()) : zero;
      continue;
    }
    const torch::Tensor mask = labels >= 0;
    // Each labelled sample's cross-entropy (the classes' label smoothing), the mean over them.
    const torch::Tensor each = torch::nn::functional::cross_entropy(
        logits, labels.clamp_min(0),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone).label_smoothing(label_smoothing_));
    const torch::Tensor loss = (each * mask.to(each.scalar_type())).sum() / static_cast<double>(count);
    losses.push_back(loss);
    task_loss_sum_[h] += loss.detach().to(torch::kDouble) * count;
    task_correct_[h] += ((logits.argmax(1) == labels) & mask).sum();
    task_seen_[h] += count;
  }
}

std::vector<std::tuple<double, int64_t, int64_t>> Train::task_global_sums() const {
  std::vector<std::tuple<double, int64_t, int64_t>> out;
  for (size_t h = 0; h < task_loss_sum_.size(); ++h) {
    torch::Tensor loss = task_loss_sum_[h].clone(), correct = task_correct_[h].clone();
    torch::Tensor seen = torch::full({}, task_seen_[h], torch::TensorOptions(torch::kLong).device(correct.device()));
    if (job_) job_->allreduce_sum({loss, correct, seen}, "the task figures of '" + name_ + "'");
    out.emplace_back(loss.item<double>(), correct.item<int64_t>(), seen.item<int64_t>());
  }
  return out;
}

std::map<std::string, double> Train::task_figures() const {
  std::map<std::string, double> figures;
  if (!weighting_) return figures;
  const auto& heads = model_->task_heads();
  const auto sums = task_global_sums();
  for (size_t h = 0; h < sums.size(); ++h) {
    const auto [loss, correct, seen] = sums[h];
    if (!seen) {
      if (!job_ || job_->rank() == 0)
        spdlog::warn("{}: epoch {}: no training sample was labelled for head '{}' of model '{}': it did not train",
                     name_, epoch_.epoch + 1, heads[h].name, model_name_);
      continue;
    }
    figures[name_ + "_" + heads[h].name + "_loss"] = loss / seen;
    figures[name_ + "_" + heads[h].name + "_top1"] = static_cast<double>(correct) / seen;
  }
  if (weighting_->learned()) {
    const std::vector<double> s = weighting_->log_variances();
    figures[name_ + "_log_var"] = s[0];
    for (size_t h = 0; h < heads.size(); ++h) figures[name_ + "_" + heads[h].name + "_log_var"] = s[h + 1];
  }
  return figures;
}

void Train::finish_range_test() {
  const LrSuggestion suggestion = finder_->finish(*model_->net());
  suggestion_ = suggestion;
  optimization_ = Optimization();  // the weights are back: whatever follows starts a fresh optimizer
  sync_.reset();
  if (!job_ || job_->rank() == 0)
    std::fprintf(stdout, "lr_find %s: %lld steps up to lr %.3g; suggested learning rates: valley %.3g, steep %.3g\n",
                 name_.c_str(), static_cast<long long>(step_), last_lr_, suggestion.valley, suggestion.steep);
  std::fflush(stdout);
  request_finish();  // the run is complete
}

void Train::check_finite() const {
  if (first_bad_.defined() && first_bad_.item<int64_t>() >= 0) throw_nonfinite(NAN, first_bad_.item<int64_t>());
}

void Train::throw_nonfinite(double value, int64_t batch) const {
  char text[256];
  std::snprintf(text, sizeof text, "the loss is %s at phase '%s', epoch %d (%d/%d of the phase), batch %lld; the run "
                "stops (a checkpoint, if any, keeps the last good state)", std::isnan(value) ? "NaN" : "infinite",
                epoch_.phase.c_str(), epoch_.epoch + 1, epoch_.epoch_in_phase + 1, epoch_.epochs_in_phase,
                static_cast<long long>(batch + 1));
  throw std::runtime_error(text);
}

std::tuple<double, int64_t, int64_t, int64_t> Train::global_sums() const {
  torch::Tensor loss = loss_sum_.clone(), correct = correct_.clone();
  const auto on = torch::TensorOptions(torch::kLong).device(correct.device());
  torch::Tensor seen = torch::full({}, seen_, on), images = torch::full({}, images_, on);
  if (job_) job_->allreduce_sum({loss, correct, seen, images}, "the training figures of '" + name_ + "'");
  return {loss.item<double>(), correct.item<int64_t>(), seen.item<int64_t>(), images.item<int64_t>()};
}

void Train::end_epoch(const EpochInfo& epoch) {
  progress_.end();
  check_finite();
  // The epoch's figures over every rank (all-reduced: every rank reports the same).
  const auto [loss_sum, correct, seen, images] = global_sums();
  if (!seen && !images) return;  // no step (every batch dropped)
  // An epoch whose batches had no class label (keep_labels k=0, a list
  // without classes) trained only the other heads: no classes' figures
  // (NaN, not a 0 that best_weights would read), and a warning.
  last_loss_ = seen ? loss_sum / seen : std::nan("");
  last_top1_ = seen ? static_cast<double>(correct) / seen : std::nan("");
  if (!seen && (!job_ || job_->rank() == 0))
    spdlog::warn("{}: epoch {}: none of its {} training samples had a class label: the classes' head of model '{}' "
                 "did not train", name_, epoch.epoch + 1, images, model_name_);
  if (last_step_ns_ > first_batch_ns_) {
    // Every image stepped on, labelled or not (the loss's count is `seen`);
    // the whole job's: the ranks step together.
    images_per_s_ = images / ((last_step_ns_ - first_batch_ns_) / 1e9);
    if (images_per_s_ > best_images_per_s_) {
      best_images_per_s_ = images_per_s_;
      best_images_per_s_epoch_ = epoch.epoch + 1;
    }
    timed_images_ += static_cast<double>(images);
    timed_s_ += (last_step_ns_ - first_batch_ns_) / 1e9;
  }
  std::map<std::string, double> figures = {{name_ + "_lr", last_lr_}};
  if (seen) {
    figures[name_ + "_loss"] = last_loss_;
    figures[name_ + "_top1"] = last_top1_;
  }
  std::string adapted;  // the adaptation's and the loss stage's figures on the epoch line
  auto add = [&](const std::map<std::string, double>& more) {
    for (const auto& [key, value] : more) {
      figures[key] = value;
      char text[96];
      std::snprintf(text, sizeof text, " %s %.4f", key.c_str(), value);
      adapted += text;
    }
  };
  if (loss_) {
    loss_figures_ = loss_->epoch_figures();
    add(loss_figures_);
  }
  if (adaptation_) {
    adaptation_figures_ = adaptation_->epoch_figures();
    add(adaptation_figures_);
  }
  if (weighting_) {
    task_figures_ = task_figures();
    add(task_figures_);
  }
  metrics_->record(epoch, figures);
  if (job_ && job_->rank() != 0) return;  // the epoch line once per job
  // Results on stdout (`flowrun G > log` keeps them), diagnostics on stderr.
  if (finder_)  // the range test's epochs are passes over the data, up to its steps: no phase's epochs
    std::fprintf(stdout, "lr_find %s: pass %d over the data, step %lld of %lld, loss %.4f, lr %.3g\n", name_.c_str(),
                 epoch.epoch + 1, static_cast<long long>(step_), static_cast<long long>(finder_->steps()), last_loss_,
                 last_lr_);
  else
    std::fprintf(stdout, "epoch %d (%s %d/%d) %s: loss %.4f top1 %.4f lr %.3g%s (%.1f img/s)\n", epoch.epoch + 1,
                 epoch.phase.c_str(), epoch.epoch_in_phase + 1, epoch.epochs_in_phase, name_.c_str(), last_loss_,
                 last_top1_, last_lr_, adapted.c_str(), images_per_s_);  // nan: no sample had a class
  std::fflush(stdout);
}

bool Train::save_state(std::string& out) const {
  torch::serialize::OutputArchive archive;
  archive.write("phase", c10::IValue(static_cast<int64_t>(phase_)));
  archive.write("step", c10::IValue(step_));
  archive.write("total_steps", c10::IValue(total_steps_));
  archive.write("steps_done", c10::IValue(steps_done_));
  archive.write("seen_batches", c10::IValue(seen_batches_));
  archive.write("last_loss", c10::IValue(last_loss_));
  archive.write("last_top1", c10::IValue(last_top1_));
  archive.write("last_lr", c10::IValue(last_lr_));
  write_lines(archive, "frozen", frozen_);
  if (loss_sum_.defined() && correct_.defined()) {
    // A job's rank 0 keeps every rank's sums so far (the others restart theirs from 0).
    const auto [loss_sum, correct, seen, images] = global_sums();
    archive.write("loss_sum", torch::full({}, loss_sum, torch::kDouble));
    archive.write("correct", torch::full({}, correct, torch::kLong));
    archive.write("seen", c10::IValue(seen));
  } else {
    archive.write("seen", c10::IValue(seen_));
  }
  std::string optimizer = saved_optimizer_;
  if (optimization_.optimizer) {
    torch::serialize::OutputArchive moments;
    optimization_.optimizer->save(moments);
    optimizer = archive_bytes(moments);
  }
  archive.write("optimizer", bytes_tensor(optimizer));
  {
    // The last epoch's per-task figures: a finished run resumed runs no epoch, and still reports them.
    std::vector<std::string> names;
    std::vector<double> values;
    for (const auto& [key, value] : task_figures_) names.push_back(key), values.push_back(value);
    write_lines(archive, "task_figure_names", names);
    archive.write("task_figure_values", torch::tensor(values, torch::kDouble));
  }
  if (weighting_) {
    // A multi-task model's per-task sums so far (a job's, on rank 0) and learned log-variances.
    const auto sums = task_global_sums();
    archive.write("tasks", c10::IValue(static_cast<int64_t>(sums.size())));
    for (size_t h = 0; h < sums.size(); ++h) {
      const auto [loss, correct, seen] = sums[h];
      const std::string key = "task" + std::to_string(h);
      archive.write(key + "_loss_sum", torch::full({}, loss, torch::kDouble));
      archive.write(key + "_correct", torch::full({}, correct, torch::kLong));
      archive.write(key + "_seen", c10::IValue(seen));
    }
    if (weighting_->learned()) archive.write("task_log_var", weighting_->state());
  } else if (saved_log_var_.defined()) {
    archive.write("task_log_var", saved_log_var_);
  }
  out = archive_bytes(archive);
  return true;
}

void Train::load_state(const std::string& in) {
  torch::serialize::InputArchive archive;
  load_archive(archive, in, "train '" + name_ + "'");
  phase_ = static_cast<int>(read_int(archive, "phase"));
  step_ = read_int(archive, "step");
  total_steps_ = read_int(archive, "total_steps");
  steps_done_ = read_int(archive, "steps_done");
  seen_ = read_int(archive, "seen");
  seen_batches_ = read_int(archive, "seen_batches");
  last_loss_ = read_double(archive, "last_loss");
  last_top1_ = read_double(archive, "last_top1");
  last_lr_ = read_double(archive, "last_lr");
  frozen_ = read_lines(archive, "frozen");
  torch::Tensor sum, correct;
  if (archive.try_read("loss_sum", sum) && archive.try_read("correct", correct)) {
    const torch::Device device = model_ ? model_->device() : torch::Device(torch::kCPU);
    loss_sum_ = sum.to(device);
    correct_ = correct.to(device);
  }
  if (job_ && job_->rank() != 0) {  // rank 0 holds the job's sums so far
    if (loss_sum_.defined()) loss_sum_.zero_();
    if (correct_.defined()) correct_.zero_();
    seen_ = 0;
  }
  torch::Tensor bytes;
  archive.read("optimizer", bytes);
  saved_optimizer_ = tensor_bytes(bytes);
  optimization_ = Optimization();  // rebuilt, with these moments, at the next batch
  prepared_ = false;
  torch::Tensor figure_values;
  if (archive.try_read("task_figure_values", figure_values)) {
    const std::vector<std::string> names = read_lines(archive, "task_figure_names");
    figure_values = figure_values.to(torch::kDouble).contiguous();
    if (static_cast<int64_t>(names.size()) != figure_values.numel())
      throw std::runtime_error("saved state of train '" + name_ + "' is inconsistent (its task figures)");
    task_figures_.clear();
    for (size_t i = 0; i < names.size(); ++i) task_figures_[names[i]] = figure_values.data_ptr<double>()[i];
  }
  torch::Tensor log_var;
  if (archive.try_read("task_log_var", log_var)) {
    if (weighting_) weighting_->load(log_var);
    else saved_log_var_ = log_var;  // set when the weighting is made, at the epoch's start
  }
  c10::IValue tasks;
  if (archive.try_read("tasks", tasks) && tasks.toInt() == static_cast<int64_t>(task_loss_sum_.size())) {
    // Mid-epoch (the epoch has begun): its sums so far; rank 0 holds a job's.
    const bool keep = !job_ || job_->rank() == 0;
    for (size_t h = 0; h < task_loss_sum_.size(); ++h) {
      const std::string key = "task" + std::to_string(h);
      torch::Tensor sum, correct;
      archive.read(key + "_loss_sum", sum);
      archive.read(key + "_correct", correct);
      task_loss_sum_[h] = (keep ? sum : torch::zeros_like(sum)).to(task_loss_sum_[h].device());
      task_correct_[h] = (keep ? correct : torch::zeros_like(correct)).to(task_correct_[h].device());
      task_seen_[h] = keep ? read_int(archive, key + "_seen") : 0;
    }
  }
}

void Train::report(Report& report) const {
  // No step (every batch dropped), or a last epoch without class labels: no
  // loss to report, rather than a 0.
  if ((steps_done_ > 0 || seen_ > 0) && !std::isnan(last_loss_)) {
    report.set("train_loss", last_loss_);
    report.set("train_top1", last_top1_);
  }
  report.set("train_steps", static_cast<double>(steps_done_));
  report.set("dropped_single_batches", static_cast<double>(dropped_single_));
  report.set("precompute_batches", static_cast<double>(precompute_batches_));  // trained from cached features
  if (model_) report.set("bf16", model_->bf16() ? 1 : 0);  // the stage table's `prec` column
  for (const auto& [key, value] : adaptation_figures_) report.set(key, value);
  for (const auto& [key, value] : loss_figures_) report.set(key, value);
  for (const auto& [key, value] : task_figures_) report.set(key, value);
  if (suggestion_) {
    report.set("lr_find_valley", suggestion_->valley);
    report.set("lr_find_steep", suggestion_->steep);
  }
  // The mean over the run's epochs (images over time stepping); the best
  // epoch's beside it, with its number (a frozen backbone's first phase
  // runs several times faster than the fine-tuning that follows).
  if (timed_s_ > 0) report.set("train_images_per_s", timed_images_ / timed_s_);
  if (best_images_per_s_ > 0) {
    report.set("train_images_per_s_best", best_images_per_s_);
    report.set("train_images_per_s_best_epoch", best_images_per_s_epoch_);
  }
  // Where a step's time goes (host time: on a GPU the calls only queue work).
  report.set("forward_s", forward_ns_ / 1e9);
  report.set("backward_s", backward_ns_ / 1e9);
  report.set("optimizer_s", optimizer_ns_ / 1e9);
  compute_.report(report);
}

FLOWRUN_REGISTER_STAGE(Train);

}  // namespace flowrun::stages
