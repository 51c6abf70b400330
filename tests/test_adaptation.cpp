// Domain adaptation: CORAL's loss against the paper's formula, DANN's
// gradient reversal and schedule, AdaBN's statistics against PyTorch's
// cumulative BatchNorm average, training on a flow that joins a source and
// a target (target labels never read), stop and resume bit-identical, and
// the errors of graphs that cannot adapt.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "data_support.h"
#include "pipeline/executor.h"
#include "pipeline/registry.h"
#include "stages/adapt/adabn.h"
#include "stages/adapt/adaptation.h"
#include "stages/model/autocast_compat.h"
#include "stages/adapt/coral.h"
#include "stages/adapt/dann.h"
#include "stages/model/model.h"
#include "stages/model/weights.h"
#include "stages/tensor/batch_data.h"
#include "test_support.h"
#include <nlohmann/json.hpp>

using namespace flowrun;
using namespace flowrun::stages;

namespace {

// C = (X^T X - (1^T X)^T (1^T X) / n) / (n - 1), in doubles, by hand.
std::vector<std::vector<double>> covariance(const std::vector<std::vector<double>>& x) {
  const size_t n = x.size(), d = x[0].size();
  std::vector<double> sum(d, 0);
  for (const auto& row : x)
    for (size_t j = 0; j < d; ++j) sum[j] += row[j];
  std::vector<std::vector<double>> c(d, std::vector<double>(d, 0));
  for (size_t a = 0; a < d; ++a)
    for (size_t b = 0; b < d; ++b) {
      double xtx = 0;
      for (const auto& row : x) xtx += row[a] * row[b];
      c[a][b] = (xtx - sum[a] * sum[b] / n) / (n - 1);
    }
  return c;
}

torch::Tensor tensor_of(const std::vector<std::vector<double>>& x) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(x.size()), static_cast<int64_t>(x[0].size())});
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t j = 0; j < x[0].size(); ++j) t[i][j] = x[i][j];
  return t;
}

std::string run_error(const std::string& text) {
  try {
    RunOptions options;
    options.threads = 2;
    run_graph(test::resolve_text(text), options);
  } catch (const std::exception& e) {
    return test::without_where(e.what());
  }
  return "";
}


// A probe adaptation stage: what the train stage hands a method under bf16
// autocast (the features' dtype, whether autocast is on while the loss is
// computed). Registered in this test binary only.
struct AutocastProbe : public AdaptationStage {
  static inline std::vector<std::pair<at::ScalarType, bool>> seen;
  static Schema schema() {
    return Schema("test_autocast_probe", "records the features' dtype and the autocast state").provides("adaptation");
  }
  explicit AutocastProbe(const StageInit&) {}
  torch::Tensor loss(const torch::Tensor& source, const torch::Tensor& target, double) override {
    seen.emplace_back(source.scalar_type(), compat::cpu_autocast_enabled());
    seen.emplace_back(target.scalar_type(), compat::cpu_autocast_enabled());
    // A product under autocast would come back in bf16: this one must not.
    const torch::Tensor product = source.t().mm(source);
    seen.emplace_back(product.scalar_type(), compat::cpu_autocast_enabled());
    return product.sum() * 0;
  }
  std::map<std::string, double> epoch_figures() const override { return {}; }
};
FLOWRUN_REGISTER_STAGE(AutocastProbe);
}  // namespace

TEST(Coral, TheLossIsThePapersFormulaOnFixedMatrices) {
  const std::vector<std::vector<double>> source = {{1, 2, 0.5}, {0, -1, 2}, {3, 1, 1}, {-2, 0.25, 0}};
  const std::vector<std::vector<double>> target = {{0.5, 0.5, 1}, {2, 2, -1}, {1, -3, 0}, {0, 1, 4}, {-1, 0, 2}};
  const auto cs = covariance(source), ct = covariance(target);
  double frobenius = 0;
  for (size_t a = 0; a < 3; ++a)
    for (size_t b = 0; b < 3; ++b) frobenius += (cs[a][b] - ct[a][b]) * (cs[a][b] - ct[a][b]);
  const double expected = frobenius / (4 * 3 * 3);  // 1/(4 d^2) ||C_S - C_T||_F^2
  EXPECT_NEAR(coral_loss(tensor_of(source), tensor_of(target)).item<double>(), expected, 1e-6 * expected);
  // The stage weighs it.
  test::StageBench bench("source = count\ncoral = coral weight=0.5\n");
  auto& stage = static_cast<Coral&>(bench.stage("coral"));
  stage.begin_epoch(EpochInfo{});
  EXPECT_NEAR(stage.loss(tensor_of(source), tensor_of(target), 0.3).item<double>(), 0.5 * expected, 1e-6 * expected);
  EXPECT_NEAR(stage.epoch_figures().at("coral_loss"), 0.5 * expected, 1e-6 * expected);
  // One domain alike: no loss.
  EXPECT_EQ(coral_loss(tensor_of(source), tensor_of(source)).item<double>(), 0.0);
  EXPECT_THROW(coral_loss(tensor_of(source), tensor_of({{1, 2, 3}})), std::runtime_error);
}

TEST(Dann, TheReversalLayerPassesMinusLambdaTimesTheGradient) {
  EXPECT_EQ(dann_lambda(0, 10, 1), 0.0);
  EXPECT_DOUBLE_EQ(dann_lambda(1, 10, 1), 2 / (1 + std::exp(-10.0)) - 1);
  EXPECT_DOUBLE_EQ(dann_lambda(0.25, 10, 0.5), 0.5 * (2 / (1 + std::exp(-2.5)) - 1));
  test::StageBench bench("source = count\ndann = dann hidden=16\n");
  auto& dann = static_cast<Dann&>(bench.stage("dann"));
  std::shared_ptr<torch::nn::Module> classifier = dann.prepare(8, torch::kCPU);
  ASSERT_TRUE(classifier);
  torch::manual_seed(3);
  const torch::Tensor fs = torch::randn({6, 8}), ft = torch::randn({5, 8}) + 1;
  const double progress = 0.3, lambda = dann_lambda(progress, 10, 1);
  // Through the stage: the domain loss behind the reversal layer.
  torch::Tensor s1 = fs.clone().requires_grad_(), t1 = ft.clone().requires_grad_();
  dann.begin_epoch(EpochInfo{});
  torch::Tensor loss = dann.loss(s1, t1, progress);
  loss.backward();
  // The same loss without it, by hand: BCE(d_s, 1) and BCE(d_t, 0), halved.
  torch::Tensor s0 = fs.clone().requires_grad_(), t0 = ft.clone().requires_grad_();
  auto& sequential = dynamic_cast<torch::nn::SequentialImpl&>(*classifier);
  const torch::Tensor logits = sequential.forward(torch::cat({s0, t0})).squeeze(1);
  namespace F = torch::nn::functional;
  const torch::Tensor plain = (F::binary_cross_entropy_with_logits(logits.narrow(0, 0, 6), torch::ones({6})) +
                               F::binary_cross_entropy_with_logits(logits.narrow(0, 6, 5), torch::zeros({5}))) * 0.5;
  EXPECT_EQ(loss.item<float>(), plain.item<float>());
  plain.backward();
  EXPECT_TRUE(torch::equal(s1.grad(), s0.grad() * -lambda));
  EXPECT_TRUE(torch::equal(t1.grad(), t0.grad() * -lambda));
  EXPECT_GT(s0.grad().abs().max().item<double>(), 0);
  // The forward pass is the identity.
  EXPECT_TRUE(torch::equal(reverse_gradient(fs, 0.7), fs));
  const auto figures = dann.epoch_figures();
  EXPECT_DOUBLE_EQ(figures.at("dann_lambda"), lambda);
  EXPECT_GE(figures.at("dann_domain_top1"), 0.0);
  EXPECT_LE(figures.at("dann_domain_top1"), 1.0);
}

// AdaBN's statistics are PyTorch's: torchvision's ResNet-18 with the same
// weights, BatchNorm reset, momentum=None and a no-grad train-mode forward
// of the same batches (tests/oracle/torchvision_resnet.py --adabn).
TEST(AdaBN, TheStatisticsEqualPyTorchsCumulativeAverage) {
  const std::string dir = test::temp_dir();
  test::StageBench bench("source = count\nmodel = resnet depth=18 classes=3\nadabn = adabn model=model\n");
  ModelStage& model = find_model(bench, "model");
  std::string weights;
  model.save_state(weights);
  std::ofstream(dir + "/weights.safetensors", std::ios::binary) << weights;
  torch::manual_seed(5);
  const int64_t batches = 3, size = 4;
  const torch::Tensor images = torch::randn({batches * size, 3, 32, 32}) * 2 + 0.5;  // another domain's statistics
  std::ofstream(dir + "/input.f32", std::ios::binary)
      .write(static_cast<const char*>(images.data_ptr()), static_cast<std::streamsize>(images.numel() * 4));
  const std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/torchvision_resnet.py' --adabn 18 '" +
                              dir + "/weights.safetensors' '" + dir + "/input.f32' 3 4 '" + dir + "/pytorch.safetensors'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  auto& adabn = static_cast<AdaBN&>(bench.stage("adabn"));
  StateDict before = state_dict(*model.net());  // the module's own tensors: copied
  for (auto& entry : before) entry.second = entry.second.clone();
  adabn.begin_epoch(EpochInfo{});
  for (int64_t b = 0; b < batches; ++b) {
    Batch batch;
    batch.images = images.narrow(0, b * size, size).clone();
    batch.labels = torch::full({size}, -1, torch::kLong);  // unlabelled: AdaBN reads none
    Item item;
    item.set(std::move(batch));
    adabn.process(item, [](Item) {});
  }
  adabn.flush([](Item) {});
  const StateDict after = state_dict(*model.net());
  std::map<std::string, torch::Tensor> expected;
  for (const auto& [key, tensor] : read_weights(dir + "/pytorch.safetensors")) expected[key] = tensor;
  ASSERT_EQ(after.size(), expected.size());
  int statistics = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    const std::string& key = after[i].first;
    ASSERT_TRUE(expected.count(key)) << key;
    const torch::Tensor want = expected[key].to(torch::kDouble), got = after[i].second.to(torch::kDouble);
    const bool statistic = key.find("running_") != std::string::npos || key.find("num_batches") != std::string::npos;
    if (statistic) {
      ++statistics;
      EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-5)) << key << ": " << (got - want).abs().max();
      EXPECT_FALSE(torch::equal(after[i].second, before[i].second)) << key << " was not re-estimated";
    } else {
      EXPECT_TRUE(torch::equal(after[i].second, before[i].second)) << key << ": AdaBN changes no weight";
    }
  }
  EXPECT_EQ(statistics, 20 * 3);  // ResNet-18: 20 BatchNorm layers, mean, var and count each
  // The momentum is back: training after it averages as before.
  for (const auto& module : model.net()->modules(false))
    if (auto* bn = module->as<torch::nn::BatchNorm2d>()) {
      EXPECT_EQ(bn->options.momentum(), c10::optional<double>(0.1));
    }
}

namespace {

// ResNet-18 adapted from three Fashion-MNIST classes (16 images) to a target
// of other images under texture_blend, its labels all ten classes: a train
// stage that read them would fail on classes the model does not know. The
// target's test split scores the model; AdaBN re-estimates a copy.
std::string adaptation_graph(const std::string& adaptation, const std::string& after_train = "sleep us=0") {
  return R"(run seed=3 in_flight=64
src        = idx part=train sampler=src_sampler
src_sampler = classes names=[Shirt, Sneaker, Bag] | per_class k=4 | shuffle
tgt        = idx part=test sampler=tgt_sampler
tgt_sampler = subset count=10 | shuffle
shift      = texture_blend source=tgt
aug        = resize size=32 | random_crop size=32 padding=4 mode=reflect | hflip
norm       = normalize stats=custom mean=[0.286] std=[0.353]
batch      = batch size=4
train      = train model=model optimizer=optim scheduler=sched )" + adaptation + R"(
after_train = )" + after_train + R"(
flow src + tgt -> shift -> aug -> norm -> batch -> train -> after_train
test_src   = idx part=test sampler=test_sampler names=[a, b, Shirt, d, e, f, g, Sneaker, Bag, j]
test_sampler = classes names=[Shirt, Sneaker, Bag] | per_class k=3
test_prep  = texture_blend | resize size=32 | normalize stats=custom mean=[0.286] std=[0.353]
test_batch = batch size=5
evaluate   = evaluate model=model prefix=target
flow test_src -> test_prep -> test_batch -> evaluate
ada_src    = idx part=test sampler=tgt_sampler2
tgt_sampler2 = subset count=10
ada_prep   = texture_blend | resize size=32 | normalize stats=custom mean=[0.286] std=[0.353]
ada_batch  = batch size=5
adabn      = adabn model=adabn_model from=model
flow ada_src -> ada_prep -> ada_batch -> adabn
model       = resnet depth=18 classes=3
adabn_model = resnet depth=18 classes=3
coral      = coral weight=2
dann       = dann hidden=32
checkpoint = checkpoint
save       = save_weights model=model path="weights.safetensors"
optim      = adam lr=1e-3
sched      = onecycle
phase main epochs=2 { }
)";
}

using test::run_in;
using test::summary_of;

}  // namespace

// Each method trains on the joined flow and reports its figures; the
// target's labels (ten classes, for a three-class model) are never read.
TEST(Adaptation, EachMethodTrainsOnAJoinedFlowAndReportsItsFigures) {
  const std::string dir = test::temp_dir();
  for (const std::string method : {"", "coral", "dann"}) {
    SCOPED_TRACE(method);
    const std::string graph = test::write_graph(dir, "a" + method + ".graph",
                                                adaptation_graph("adaptation=" + (method.empty() ? std::string("\"\"") : method)));
    auto result = run_in(dir, graph, "run" + method);
    ASSERT_EQ(result.exit_code, 0) << result.err;
    const nlohmann::json summary = summary_of(dir + "/run" + method);
    // 12 source images a epoch, in 3 batches of 4 source (and 4 target) images.
    EXPECT_EQ(summary["train_steps"], 6);
    EXPECT_TRUE(summary.contains("target_top1"));
    EXPECT_EQ(summary["adabn_images"], 10);
    const std::string metrics = test::slurp(dir + "/run" + method + "/metrics.csv");
    if (method == "coral") {
      ASSERT_TRUE(summary.contains("coral_loss")) << summary.dump();
      EXPECT_GT(summary["coral_loss"].get<double>(), 0);
      EXPECT_NE(metrics.find("coral_loss"), std::string::npos);
    }
    if (method == "dann") {
      ASSERT_TRUE(summary.contains("dann_domain_top1")) << summary.dump();
      EXPECT_GE(summary["dann_domain_top1"].get<double>(), 0);
      // The last epoch's lambda: the schedule at the start of its last step (step 5 of 6).
      EXPECT_DOUBLE_EQ(summary["dann_lambda"].get<double>(), dann_lambda(5.0 / 6.0, 10, 1));
      EXPECT_NE(result.out.find("dann_domain_top1"), std::string::npos) << result.out;
    }
  }
}

// Under bf16 autocast (precision=bf16) the model's features are bf16, but an
// adaptation loss sees them as float32 with autocast off: CORAL's
// covariances and DANN's domain classifier in float32.
TEST(Adaptation, TheMethodsLossRunsInFloat32UnderBf16Autocast) {
  std::string text = adaptation_graph("adaptation=probe") + "probe = test_autocast_probe\n";
  text.replace(text.find("model       = resnet depth=18 classes=3"), 39,
               "model       = resnet depth=18 classes=3 precision=bf16");
  AutocastProbe::seen.clear();
  RunOptions options;
  options.threads = 2;
  const std::string dir = test::temp_dir();
  options.run_dir = dir + "/run";
  run_graph(test::resolve_text(text, {}, dir + "/probe.graph"), options);  // its files go beside the graph
  ASSERT_EQ(AutocastProbe::seen.size(), 6u * 3);  // 6 steps, 3 records each
  for (const auto& [dtype, autocast] : AutocastProbe::seen) {
    EXPECT_EQ(dtype, at::kFloat);
    EXPECT_FALSE(autocast);
  }
}

// A run with a target flow stopped mid-epoch resumes bit-identical: the
// model, the domain classifier (through the weights it trained), AdaBN's copy.
TEST(Adaptation, AJoinedFlowStopsAndResumesBitIdentical) {
  const std::string dir = test::temp_dir();
  const std::string graph = test::write_graph(dir, "dann.graph", adaptation_graph("adaptation=dann"));
  auto whole = run_in(dir, graph, "whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const std::string stop_graph =
      test::write_graph(dir, "stop.graph", adaptation_graph("adaptation=dann", "stop_at epoch=2 item=1"));
  auto stopped = run_in(dir, stop_graph, "stopped", {"--plugin", TEST_PLUGIN_STOP_AT});
  ASSERT_EQ(stopped.exit_code, 130) << stopped.err;
  auto resumed = run_in(dir, graph, "resumed", {"--set", "checkpoint.resume=" + dir + "/stopped/checkpoint.ckpt"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(test::slurp(dir + "/resumed.safetensors"), test::slurp(dir + "/whole.safetensors"));
  EXPECT_EQ(test::slurp(dir + "/resumed/metrics.csv"), test::slurp(dir + "/whole/metrics.csv"));
  const nlohmann::json a = summary_of(dir + "/whole"), b = summary_of(dir + "/resumed");
  for (const char* key : {"target_top1", "adabn_target_top1", "train_loss", "dann_loss", "dann_domain_top1"})
    if (a.contains(key)) {
      EXPECT_EQ(a[key], b[key]) << key;
    }
}

TEST(Adaptation, GraphsThatCannotAdaptAreClearErrors) {
  // An adaptation stage without a target in the flow.
  const std::string plain = R"(src = idx part=train sampler=s
s = subset count=8
prep = resize size=32 | normalize
batch = batch size=4
train = train adaptation=coral
flow src -> prep -> batch -> train
model = resnet depth=18 classes=10
coral = coral
optim = adam
)";
  EXPECT_EQ(run_error(plain),
            "stage 'train' (train): adaptation 'coral' needs target images in every batch, and this one has none: join "
            "a target source to the flow ('flow SOURCE + TARGET -> ...')");
  // The labelled side is the flow's first source: an unlabelled one there cannot train.
  const std::string unlabelled = test::make_jpeg_folder({"x"}, 4, 40, 36);
  std::string first = plain;
  first.replace(first.find("flow src ->"), 11,
                "tgt = imagelist root=\"" + unlabelled + "\"\ndec = decode | center_crop size=28\nflow tgt + src -> dec ->");
  first.replace(first.find("prep = resize"), 4, "prep");
  const std::string error = run_error(first);
  EXPECT_EQ(error.rfind("stage 'train' (train): " + unlabelled + "/", 0), 0u) << error;
  EXPECT_NE(error.find(" has no label: training needs a class for every sample of the flow's first source (in 'flow "
                       "SOURCE + TARGET -> ...' the labelled source comes first)"),
            std::string::npos)
      << error;
  // evaluate scores one dataset: a joined flow's batch would mix the domains.
  std::string scored = plain;
  scored.replace(scored.find("flow src ->"), 11, "tgt = idx part=test sampler=t\nt = subset count=4\nflow src + tgt ->");
  scored.replace(scored.find("train = train adaptation=coral"), 30, "train = evaluate");
  EXPECT_EQ(run_error(scored),
            "stage 'train' (evaluate): the batch joins 2 sources ('flow A + B -> ...'), and evaluate takes one dataset: "
            "give it a flow of its own");
  // AdaBN on a model stage that is not there, or on itself.
  EXPECT_NE(run_error("src = idx part=test sampler=s\ns = subset count=4\nprep = resize size=32 | normalize\n"
                      "batch = batch size=4\nadabn = adabn model=model from=nope\nflow src -> prep -> batch -> adabn\n"
                      "model = resnet depth=18 classes=10\n")
                .find("no model stage named 'nope'"),
            std::string::npos);
  // One DANN stage (a domain classifier, its figures) for two train stages:
  // an error of the graph, so --check says it (exit 2), at the stage's place.
  auto shared = test::run_flowrun({"--check", "graphs/domain_adaptation.graph", "--set", "coral_train.adaptation=dann"});
  EXPECT_EQ(shared.exit_code, 2);
  EXPECT_NE(shared.err.find("graphs/domain_adaptation.graph:"), std::string::npos) << shared.err;
  EXPECT_NE(shared.err.find(": error: stage 'dann_train' (train): adaptation 'dann' is also the adaptation of train 'coral_train' "
                            "(graphs/domain_adaptation.graph:34): it keeps the state and figures of one train stage; "
                            "give 'dann_train' its own (OTHER = like dann)"), std::string::npos) << shared.err;
}

// The learning-rate range test on a graph whose training flow joins a
// target: the flow keeps its target (it crashed without it).
TEST(Adaptation, TheRangeTestRunsOnAJoinedFlow) {
  const std::string dir = test::temp_dir();
  const std::string graph = test::write_graph(dir, "lr.graph", adaptation_graph("adaptation=coral"));
  auto result = test::run_flowrun({graph, "--lr-find=4", "--threads", "2", "--run-dir", dir + "/run"}, dir);
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("suggested learning rates"), std::string::npos) << result.out;
}
