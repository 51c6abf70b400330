// Training: the one-cycle schedule against PyTorch's, optimizer groups,
// freezing (frozen tensors bit-identical after steps), training steps that
// lower the loss, and evaluation counted per sample.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data_support.h"
#include "stages/model/model.h"
#include "stages/tensor/batch_data.h"
#include "stages/train/evaluate.h"
#include "pipeline/error_text.h"
#include "pipeline/executor.h"
#include "stages/train/freeze.h"
#include "stages/train/lr_finder.h"
#include "stages/train/precompute.h"
#include "stages/train/optimizer.h"
#include "stages/train/schedule.h"
#include "stages/train/train.h"
#include "test_support.h"

using namespace flowrun;
using test::lines_of;
using namespace flowrun::stages;

namespace {

std::string run_command(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof buffer, pipe)) out += buffer;
  if (pipe) pclose(pipe);
  return out;
}

Item batch_item(int64_t n, int64_t classes, int64_t seed, int64_t batches_in_epoch = 4) {
  torch::manual_seed(seed);
  Batch batch;
  batch.images = torch::randn({n, 3, 32, 32});
  batch.labels = torch::randint(classes, {n}, torch::kLong);
  batch.batches_in_epoch = batches_in_epoch;
  Item item;
  item.set(std::move(batch));
  return item;
}

EpochInfo epoch_info(int epoch, int epochs = 2, const std::string& phase = "main") {
  EpochInfo info;
  info.phase = phase;
  info.epoch = epoch;
  info.epoch_in_phase = epoch;
  info.epochs_in_phase = epochs;
  return info;
}

const std::string kModel = "source = count\nmodel = resnet depth=18 classes=3\n";

}  // namespace

// DANN's annealing (Ganin & Lempitsky 2015, section 5): mu_p = mu_0 / (1 + 10 p)^0.75.
TEST(Schedule, InverseDecayIsGaninAndLempitskysAnnealing) {
  test::StageBench bench("source = count\nsched = inverse_decay\nsteep = inverse_decay gamma=3 power=2\n");
  auto& paper = static_cast<ScheduleStage&>(bench.stage("sched"));
  EXPECT_DOUBLE_EQ(paper.lr_factor(0, 40), 1.0);
  EXPECT_NEAR(paper.lr_factor(20, 40), 0.26084743001221455, 1e-15);  // 6^-0.75
  EXPECT_NEAR(paper.lr_factor(30, 40), 0.20087958649107582, 1e-15);  // 8.5^-0.75
  EXPECT_NEAR(paper.lr_factor(40, 40), 0.16556002607617018, 1e-15);  // 11^-0.75, the phase's end
  EXPECT_DOUBLE_EQ(paper.lr_factor(0, 0), 1.0);                      // no steps: no progress
  auto& steep = static_cast<ScheduleStage&>(bench.stage("steep"));
  EXPECT_DOUBLE_EQ(steep.lr_factor(10, 40), 1.0 / (1.75 * 1.75));
  EXPECT_FALSE(steep.momentum(10, 40).has_value());
  EXPECT_NE(test::errors_of("source = count\nsched = inverse_decay power=-1\n").find("power"), std::string::npos);
}

TEST(Schedule, OneCycleMatchesPyTorch) {
  for (const char* anneal : {"cos", "linear"}) {
    std::string out = run_command(std::string(FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/onecycle.py' 0.01 37 0.3 ") +
                                  anneal + " 25 10000");
    nlohmann::json expected = nlohmann::json::parse(out);
    test::StageBench bench(std::string("source = count\nsched = onecycle anneal=") + anneal + "\n");
    auto& schedule = static_cast<ScheduleStage&>(bench.stage("sched"));
    for (int step = 0; step < 37; ++step) {
      EXPECT_NEAR(0.01 * schedule.lr_factor(step, 37), expected["lr"][step].get<double>(), 1e-12) << anneal << step;
      EXPECT_NEAR(*schedule.momentum(step, 37), expected["momentum"][step].get<double>(), 1e-12) << anneal << step;
    }
  }
}

TEST(Optimizer, GroupsGiveDiscriminativeRatesAndDecayExemptions) {
  test::StageBench bench(kModel + "optim = adamw lr=0.01 wd=0.05 backbone_lr_factor=0.1\n");
  Network& net = find_model(bench, "model").net();
  Optimization o = find_optimizer(bench, "optim").build(*net);
  ASSERT_EQ(o.optimizer->param_groups().size(), 4u);
  std::vector<double> lrs, decays;
  for (auto& group : o.optimizer->param_groups()) {
    lrs.push_back(group.options().get_lr());
    decays.push_back(static_cast<torch::optim::AdamWOptions&>(group.options()).weight_decay());
  }
  EXPECT_EQ(lrs, (std::vector<double>{0.01, 0.01, 0.001, 0.001}));  // head, head, backbone, backbone
  EXPECT_EQ(decays, (std::vector<double>{0.05, 0.0, 0.05, 0.0}));   // biases and BatchNorm exempt
  EXPECT_EQ(o.optimizer->param_groups()[0].params().size(), 1u);    // fc.weight
}

TEST(Freeze, FrozenTensorsStayBitIdenticalAndBatchNormKeepsItsStatistics) {
  for (bool train_bn : {false, true}) {
    test::StageBench bench(kModel + "optim = sgd lr=0.1\nfreezer = freeze mode=backbone train_bn=" +
                           (train_bn ? "true" : "false") + "\ntrain = train scheduler=\"\"\n");
    Network& net = find_model(bench, "model").net();
    StateDict before;
    for (const auto& [key, tensor] : state_dict(*net)) before.emplace_back(key, tensor.clone());
    auto& train = static_cast<Train&>(bench.stage("train"));
    train.begin_epoch(epoch_info(0));
    for (int step = 0; step < 3; ++step) train.process(*std::make_unique<Item>(batch_item(8, 3, step)), [](Item) {});
    StateDict after = state_dict(*net);
    int changed_head = 0, changed_backbone = 0, changed_bn_stats = 0;
    for (size_t i = 0; i < after.size(); ++i) {
      bool same = after[i].second.equal(before[i].second);
      const std::string& key = after[i].first;
      if (key.rfind("fc.", 0) == 0) changed_head += !same;
      else if (key.find("running_") != std::string::npos || key.find("num_batches") != std::string::npos) changed_bn_stats += !same;
      else changed_backbone += !same;
    }
    EXPECT_EQ(changed_head, 2) << train_bn;
    EXPECT_EQ(changed_backbone, 0) << train_bn;  // no gradient, no update
    if (train_bn) EXPECT_GT(changed_bn_stats, 0);
    else EXPECT_EQ(changed_bn_stats, 0);  // frozen BatchNorm stays in eval mode
  }
}

TEST(Freeze, UntilAndGradualUnfreezing) {
  test::StageBench bench(kModel + "freezer = freeze mode=until until=layer2 unfreeze_every=1\n");
  Network& net = find_model(bench, "model").net();
  auto& freezer = static_cast<Freeze&>(bench.stage("freezer"));
  EXPECT_EQ(freezer.apply(*net, 0), (std::vector<std::string>{"stem", "layer1", "layer2"}));
  EXPECT_FALSE(net->as<ResNetImpl>()->layer2->parameters().front().requires_grad());
  EXPECT_TRUE(net->as<ResNetImpl>()->layer3->parameters().front().requires_grad());
  EXPECT_EQ(freezer.apply(*net, 1), (std::vector<std::string>{"stem", "layer1"}));
  EXPECT_TRUE(net->as<ResNetImpl>()->layer2->parameters().front().requires_grad());
  EXPECT_EQ(freezer.apply(*net, 5), std::vector<std::string>{});
}

TEST(Train, StepsLowerTheLossOnABatch) {
  test::StageBench bench(kModel + "optim = adam lr=0.01\nsched = onecycle\ntrain = train freezer=\"\"\n");
  auto& train = static_cast<Train&>(bench.stage("train"));
  Network& net = find_model(bench, "model").net();
  Item item = batch_item(16, 3, 7, /*batches_in_epoch=*/20);
  auto loss_now = [&] {
    net->eval();
    torch::NoGradGuard no_grad;
    const Batch& b = item.get<Batch>();
    return torch::nn::functional::cross_entropy(net->forward(b.images), b.labels).item<double>();
  };
  double before = loss_now();
  train.begin_epoch(epoch_info(0, 1));
  for (int step = 0; step < 15; ++step) train.process(item, [](Item) {});
  train.end_epoch(epoch_info(0, 1));
  EXPECT_LT(loss_now(), before * 0.5);
  Report report;
  train.report(report);
  EXPECT_EQ(report.figures().at("train_steps"), 15.0);
}

// A run stopped (Ctrl-C) before its first epoch ended has no epoch figure:
// no train_loss or train_top1 (a 0 would read as a result on the final
// line and in the summary), though its steps count.
TEST(Train, ARunStoppedInItsFirstEpochReportsNoLoss) {
  test::StageBench bench(kModel + "optim = sgd lr=0.01\ntrain = train scheduler=\"\" freezer=\"\"\n");
  auto& train = static_cast<Train&>(bench.stage("train"));
  Item item = batch_item(8, 3, 3, /*batches_in_epoch=*/10);
  train.begin_epoch(epoch_info(0, 1));
  for (int step = 0; step < 3; ++step) train.process(item, [](Item) {});
  Report stopped;
  train.report(stopped);
  EXPECT_EQ(stopped.figures().at("train_steps"), 3.0);
  EXPECT_EQ(stopped.figures().count("train_loss"), 0u);
  EXPECT_EQ(stopped.figures().count("train_top1"), 0u);
  train.end_epoch(epoch_info(0, 1));
  Report ended;
  train.report(ended);
  ASSERT_EQ(ended.figures().count("train_loss"), 1u);
  EXPECT_GT(ended.figures().at("train_loss"), 0.0);
  EXPECT_TRUE(std::isfinite(ended.figures().at("train_top1")));
}

TEST(Evaluate, CountsEverySampleNotEveryBatch) {
  // fp32: the reference below is the network's own fp32 forward (precision=auto is bf16 on CPUs with AVX512_BF16).
  test::StageBench bench("source = count\nmodel = resnet depth=18 classes=3 precision=fp32\nevaluate = evaluate\n");
  auto& evaluate = static_cast<Evaluate&>(bench.stage("evaluate"));
  Network& net = find_model(bench, "model").net();
  net->eval();
  std::vector<Item> batches = {batch_item(5, 3, 1), batch_item(2, 3, 2)};  // a smaller last batch
  int64_t correct = 0;
  double loss = 0;
  {
    torch::NoGradGuard no_grad;
    for (auto& item : batches) {
      const Batch& b = item.get<Batch>();
      torch::Tensor logits = net->forward(b.images);
      correct += (logits.argmax(1) == b.labels).sum().item<int64_t>();
      loss += torch::nn::functional::cross_entropy(logits, b.labels,
                                                   torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                  .item<double>();
    }
  }
  evaluate.begin_epoch(epoch_info(0, 1));
  for (auto& item : batches) evaluate.process(item, [](Item) {});
  evaluate.end_epoch(epoch_info(0, 1));
  const EvaluationResult& r = evaluate.last();
  EXPECT_EQ(r.samples, 7);
  EXPECT_DOUBLE_EQ(r.top1, correct / 7.0);
  EXPECT_NEAR(r.loss, loss / 7.0, 1e-5);
  EXPECT_DOUBLE_EQ(r.top5, 1.0);  // 3 classes: the top 5 hold them all
  int64_t total = 0, diagonal = 0;
  for (int64_t t = 0; t < 3; ++t)
    for (int64_t p = 0; p < 3; ++p) total += r.confusion[t * 3 + p], diagonal += t == p ? r.confusion[t * 3 + p] : 0;
  EXPECT_EQ(total, 7);
  EXPECT_EQ(diagonal, correct);
}

TEST(Train, ANonFiniteLossStopsBeforeTheStepNamingPhaseEpochAndBatch) {
  test::StageBench bench(kModel + "optim = adam lr=0.01\nsched = onecycle\ntrain = train freezer=\"\"\n");
  auto& train = static_cast<Train&>(bench.stage("train"));
  Network& net = find_model(bench, "model").net();
  Item good = batch_item(4, 3, 1, /*batches_in_epoch=*/3);
  Item bad = batch_item(4, 3, 2, /*batches_in_epoch=*/3);
  bad.get<Batch>().images[1][0][5][5] = std::numeric_limits<float>::quiet_NaN();
  EpochInfo epoch = epoch_info(1, 3, "full");
  epoch.epoch_in_phase = 1;
  train.begin_epoch(epoch);
  train.process(good, [](Item) {});
  std::vector<torch::Tensor> before;
  for (const auto& p : net->parameters()) before.push_back(p.detach().clone());
  try {
    train.process(bad, [](Item) {});
    FAIL() << "a NaN loss must stop the run";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()),
              "the loss is NaN at phase 'full', epoch 2 (2/3 of the phase), batch 2; the run stops (a checkpoint, if "
              "any, keeps the last good state)");
  }
  size_t i = 0;
  for (const auto& p : net->parameters()) EXPECT_TRUE(torch::equal(p, before[i++]));  // no step was taken
}

TEST(StageRefs, DefaultsTakeThePhasesOneStageOfTheRoleOrNone) {
  const std::string base = "source = count\ntrain = train\nmodel = resnet depth=18 classes=3\n";
  ResolvedGraph graph = test::resolve_text(base + "optim = sgd\n");
  const Params& train = graph.phases[0].find("train")->ops[0].params;
  EXPECT_EQ(train.get_string("model"), "model");
  EXPECT_EQ(train.get_string("optimizer"), "optim");
  EXPECT_EQ(train.get_string("scheduler"), "");  // none: a constant rate
  EXPECT_EQ(train.get_string("freezer"), "");    // none: everything trains
  // --check prints what they resolved to.
  for (const char* resolved : {"freezer=\"\"", "loss=\"\"", "model=\"model\"", "optimizer=\"optim\"", "scheduler=\"\""})
    EXPECT_NE(graph.format().find(resolved), std::string::npos) << resolved << "\n" << graph.format();
  // Per phase: each phase's own optimizer.
  ResolvedGraph phased = test::resolve_text(base + "phase a epochs=1 { sgd_a = sgd }\nphase b epochs=1 { adam_b = adam }\n");
  EXPECT_EQ(phased.phases[0].find("train")->ops[0].params.get_string("optimizer"), "sgd_a");
  EXPECT_EQ(phased.phases[1].find("train")->ops[0].params.get_string("optimizer"), "adam_b");
}

TEST(StageRefs, MissingAmbiguousOrWrongReferencesAreErrors) {
  const std::string base = "source = count\ntrain = train\nmodel = resnet depth=18 classes=3\n";
  EXPECT_EQ(test::errors_of(base),
            "test.graph:2:9: error: stage 'train' (train): no optimizer stage for 'optimizer'; declare one (optimizer "
            "types: adam, adamw, sgd)\n");
  EXPECT_EQ(test::errors_of(base + "optim = sgd\nother = resnet depth=18 classes=3\n"),
            "test.graph:2:9: error: stage 'train' (train): 'model' could be any of model, other; name one "
            "(model=model)\n");
  // A reference given on the command line is reported there, at its value.
  EXPECT_EQ(test::errors_of(base + "optim = sgd\n", {"train.optimizer=model"}),
            "--set #1:1:17: error: stage 'train' (train): optimizer='model': stage 'model' is no optimizer "
            "(optimizer stages: optim)\n");
  EXPECT_EQ(test::errors_of(base + "optim = sgd\n", {"train.model=modle"}),
            "--set #1:1:13: error: stage 'train' (train): model='modle' names no stage; did you mean 'model'? "
            "(model stages: model)\n");
}

TEST(LrFind, SuggestionsFollowFastaisRules) {
  // A loss that falls like a half cosine from lr 1e-7 to 1e-2, then shoots up.
  std::vector<double> lrs, losses;
  for (int i = 0; i < 100; ++i) {
    lrs.push_back(1e-7 * std::pow(10.0, 8.0 * i / 99));
    losses.push_back(i <= 62 ? 2 + std::cos(M_PI * i / 62.0) : 1 + 0.5 * (i - 62));
  }
  LrSuggestion s = suggest_learning_rates(lrs, losses);
  // steep: where the cosine falls fastest (i = 31); valley: half way down the
  // longest fall (from the first tenth, i = 10, to its bottom, i = 62).
  EXPECT_GE(s.steep, lrs[29]);
  EXPECT_LE(s.steep, lrs[33]);
  EXPECT_GE(s.valley, lrs[33]);
  EXPECT_LE(s.valley, lrs[38]);
}

TEST(LrFind, TheRangeTestSuggestsARateAndPutsTheWeightsBack) {
  std::string dir = test::temp_dir();
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 8, 40, 36);
  auto graph = [&](const std::string& train, int epochs) {
    return "run epochs=" + std::to_string(epochs) + " seed=5\n"
           "src = imagefolder root=\"" + root + "\" sampler=shuffle\nshuffle = shuffle\n"
           "prep = decode | resize size=32 | center_crop size=32 | normalize\nbatch = batch size=4\n" + train + "\n"
           "model = resnet depth=18 classes=3\noptim = adam lr=1e-3\nsave = save_weights path=\"" + dir + "/" +
           std::to_string(epochs) + ".safetensors\"\n";
  };
  RunOptions options;
  options.threads = 2;
  run_graph(test::resolve_text(graph("train = train", 0)), options);  // the initial weights
  options.run_dir = dir + "/run";
  RunResult result = run_graph(test::resolve_text(graph("train = train lr_find=40 lr_find_end=100", 40)), options);
  EXPECT_FALSE(result.interrupted);  // the range test ended the run as complete
  std::map<std::string, double> figures;
  for (const auto& stage : result.stages)
    if (stage.name == "train") figures = stage.figures;
  ASSERT_TRUE(figures.count("lr_find_valley"));
  // The suggestions are fastai's on the recorded curve: the oracle runs
  // fastai's valley and steep on lr_find.csv (written to 9 digits).
  const std::string fastai = run_command(FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/fastai_lr_find.py' '" +
                                         dir + "/run/lr_find.csv' 40");
  ASSERT_FALSE(fastai.empty()) << "oracle failed";
  const nlohmann::json expected = nlohmann::json::parse(fastai);
  EXPECT_NEAR(figures["lr_find_valley"], expected["valley"].get<double>(), 1e-6 * expected["valley"].get<double>());
  EXPECT_NEAR(figures["lr_find_steep"], expected["steep"].get<double>(), 1e-6 * expected["steep"].get<double>());
  EXPECT_GE(figures["train_steps"], 10.0);  // it stepped (and diverged, or ran its 40 batches)
  EXPECT_LE(figures["train_steps"], 40.0);
  std::ifstream csv(dir + "/run/lr_find.csv");
  std::string line;
  int rows = -1;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, static_cast<int>(figures["train_steps"]));
  EXPECT_TRUE(std::filesystem::exists(dir + "/run/lr_find.png"));
  // The weights are back as they were before the test.
  StateDict before = read_weights(dir + "/0.safetensors"), after = read_weights(dir + "/40.safetensors");
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(before[i].second, after[i].second)) << before[i].first;

  // The command line: --lr-find takes the training flow of the graph as it is.
  std::string file = dir + "/g.graph";
  std::ofstream(file) << graph("train = train", 3) + "checkpoint = checkpoint path=\"" + dir + "/ck.ckpt\"\n";
  auto cli = test::run_flowrun({file, "--lr-find=12", "--run-dir", dir + "/cli"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("suggested learning rates: valley "), std::string::npos) << cli.out;
  EXPECT_TRUE(std::filesystem::exists(dir + "/cli/lr_find.png"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/ck.ckpt"));  // no checkpoint, no saved weights from a range test
  EXPECT_FALSE(std::filesystem::exists(dir + "/3.safetensors"));
}

namespace {
std::string precompute_graph(const std::string& root, const std::string& prep, const std::string& train,
                             const std::string& freezer, const std::string& save, int epochs = 4) {
  return "run epochs=" + std::to_string(epochs) + " seed=5\n"
         "src = imagefolder root=\"" + root + "\" sampler=shuffle\nshuffle = shuffle\n"
         "prep = decode | resize size=32 | center_crop size=32 | " + prep + "normalize\nbatch = batch size=8\n"
         "train = " + train + "\nflow src -> prep -> batch -> train\n"
         "model = resnet depth=18 classes=3\nfreezer = " + freezer + "\noptim = adam lr=1e-2\n" +
         (save.empty() ? "" : "save = save_weights path=\"" + save + "\"\n");
}
}  // namespace

TEST(Precompute, AFrozenBackbonePhaseTrainsTheSameHeadFromCachedFeatures) {
  std::string dir = test::temp_dir();
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 8, 40, 36);
  RunOptions options;
  options.threads = 2;
  std::map<std::string, std::map<std::string, double>> figures;
  for (const char* mode : {"on", "off"}) {
    RunResult result = run_graph(test::resolve_text(precompute_graph(
                                     root, "", std::string("train precompute=") + mode, "freeze mode=backbone",
                                     dir + "/" + mode + ".safetensors")),
                                 options);
    for (const auto& stage : result.stages)
      if (stage.name == "train") figures[mode] = stage.figures;
  }
  // 24 images in batches of 8, 4 epochs: epochs 2-4 train from the cache.
  EXPECT_EQ(figures["on"]["precompute_batches"], 9.0);
  EXPECT_EQ(figures["off"]["precompute_batches"], 0.0);
  EXPECT_EQ(figures["on"]["train_steps"], figures["off"]["train_steps"]);
  StateDict on = read_weights(dir + "/on.safetensors"), off = read_weights(dir + "/off.safetensors");
  ASSERT_EQ(on.size(), off.size());
  for (size_t i = 0; i < on.size(); ++i)
    EXPECT_LE((on[i].second.to(torch::kDouble) - off[i].second.to(torch::kDouble)).abs().max().item<double>(), 1e-5)
        << on[i].first;
  // The head trained; the backbone did not.
  run_graph(test::resolve_text(precompute_graph(root, "", "train", "freeze mode=backbone", dir + "/start.safetensors",
                                                0)),
            options);
  StateDict start = read_weights(dir + "/start.safetensors");
  ASSERT_EQ(start.size(), on.size());
  for (size_t i = 0; i < on.size(); ++i) {
    const bool head = on[i].first.rfind("fc.", 0) == 0;
    EXPECT_EQ(torch::equal(on[i].second, start[i].second), !head) << on[i].first;
  }
}

TEST(Precompute, RandomAugmentationOrATrainingBackboneTurnItOffAndCheckSaysWhy) {
  std::string dir = test::temp_dir();
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 2, 40, 36);
  auto check = [&](const std::string& text) {
    std::ofstream(dir + "/g.graph") << text;
    auto run = test::run_flowrun({"--check", dir + "/g.graph"});
    EXPECT_EQ(run.exit_code, 0) << run.err;
    return run.out;
  };
  EXPECT_NE(check(precompute_graph(root, "", "train", "freeze mode=backbone", ""))
                .find("# phase 'main', stage 'train': precompute on: the backbone stays frozen"),
            std::string::npos);
  EXPECT_NE(check(precompute_graph(root, "hflip | ", "train", "freeze mode=backbone", ""))
                .find("# phase 'main', stage 'train': precompute off: stage 'prep' (hflip) draws new random "
                      "augmentations every epoch"),
            std::string::npos);
  EXPECT_NE(check(precompute_graph(root, "", "train", "freeze mode=until until=layer3", ""))
                .find("precompute off: freezer 'freezer' trains part of the backbone (mode=until)"),
            std::string::npos);
  EXPECT_NE(check(precompute_graph(root, "", "train", "freeze mode=backbone unfreeze_every=2", ""))
                .find("precompute off: freezer 'freezer' unfreezes blocks during the phase (unfreeze_every=2)"),
            std::string::npos);
  // precompute=on where it cannot be: the run stops, saying why.
  RunOptions options;
  options.threads = 2;
  try {
    run_graph(test::resolve_text(precompute_graph(root, "hflip | ", "train precompute=on", "freeze mode=backbone", "")),
              options);
    FAIL() << "precompute=on ran with a random augmentation before it";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("precompute=on, but in phase 'main' stage 'prep' (hflip) draws new random "
                                         "augmentations every epoch"),
              std::string::npos)
        << e.what();
  }
}

TEST(Precompute, TheCacheKeepsToItsLimit) {
  FeatureCache cache(4 * 16 * 4);  // four rows of 16 floats
  torch::Tensor rows = torch::arange(3 * 16, torch::kFloat).reshape({3, 16});
  EXPECT_FALSE(cache.lookup({1, 2}).defined());
  ASSERT_TRUE(cache.store({10, 11, 10}, rows));  // a repeated index is kept once
  EXPECT_EQ(cache.rows(), 2);
  EXPECT_TRUE(torch::equal(cache.lookup({11, 10}), torch::stack({rows[1], rows[0]})));
  EXPECT_FALSE(cache.lookup({10, 12}).defined());
  EXPECT_FALSE(cache.store({20, 21, 22}, rows)) << "five rows would pass the limit";
  EXPECT_EQ(cache.rows(), 2);
  EXPECT_TRUE(cache.store({20, 21}, rows.narrow(0, 0, 2)));
  EXPECT_LE(cache.bytes(), 4 * 16 * 4);
  EXPECT_TRUE(torch::equal(cache.lookup({20, 10}), torch::stack({rows[0], rows[0]})));

  // In a run: precompute=on and a limit too small is an error that says what to do.
  std::string root = test::make_jpeg_folder({"a", "b", "c"}, 45, 36, 36);
  RunOptions options;
  options.threads = 2;
  try {
    std::string text = precompute_graph(root, "", "train precompute=on precompute_limit_mb=1", "freeze mode=backbone",
                                        "", 2);
    text.replace(text.find("depth=18"), 8, "depth=50 precision=fp32");  // 2048 fp32 features: 8 KiB a sample, 128 in 1 MiB
    run_graph(test::resolve_text(text), options);
    FAIL() << "the cache passed its limit";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("the precomputed features of phase 'main' would pass precompute_limit_mb=1 "
                                         "(128 samples of 2048 features kept so far); raise the limit or set "
                                         "precompute=off"),
              std::string::npos)
        << e.what();
  }
}

TEST(Evaluate, ALabelBeyondTheHeadIsAClearError) {
  test::StageBench bench(kModel + "evaluate = evaluate\n");
  auto& evaluate = static_cast<Evaluate&>(bench.stage("evaluate"));
  evaluate.begin_epoch(epoch_info(0, 1));
  Item item = batch_item(4, 3, 1);
  item.get<Batch>().labels[2] = 7;
  try {
    evaluate.process(item, [](Item) {});
    FAIL() << "label 7 of a 3-class model was accepted";
  } catch (const std::exception& e) {
    EXPECT_EQ(std::string(e.what()), "a sample has label 7 but model 'model' has 3 classes (set its classes= to the "
                                     "dataset's, or keep fewer classes with a sampler)");
  }
}

namespace {

// A graph over the image folder `root`: `end` closes the flow (train or
// evaluate or predict), `components` are the model and what else it needs.
std::string folder_graph(const std::string& root, const std::string& end, const std::string& components, int epochs = 1) {
  return "run epochs=" + std::to_string(epochs) + " seed=3\n"
         "src = imagefolder root=\"" + root + "\"\n"
         "prep = decode | resize size=32 | center_crop size=32 | normalize\nbatch = batch size=4\n" + end + "\n" +
         components + "\n";
}

std::string run_error(const std::string& text) {
  try {
    RunOptions options;
    options.threads = 2;
    run_graph(test::resolve_text(text), options);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

// Nine images of three classes, a model trained on them (one epoch) and saved.
struct ThreeClasses {
  std::string dir = test::temp_dir();
  std::string complete = test::make_jpeg_folder({"a_red", "b_green", "c_blue"}, 3, 40, 36);
  std::string partial = dir + "/partial";  // the same images without b_green
  std::string weights = dir + "/trained.safetensors";
  RunResult trained;
  ThreeClasses() {
    std::filesystem::copy(complete, partial, std::filesystem::copy_options::recursive);
    std::filesystem::remove_all(partial + "/b_green");
    RunOptions options;
    options.threads = 2;
    trained = run_graph(test::resolve_text(folder_graph(
                            complete, "train = train",
                            "model = resnet depth=18 classes=3\noptim = adam lr=1e-3\nsave = save_weights path=\"" +
                                weights + "\"")),
                        options);
  }
};

}  // namespace

TEST(Classes, EvaluationAndPredictionMatchTheModelsClassesByName) {
  ThreeClasses setup;
  // The saved weights know their classes.
  Metadata metadata;
  read_safetensors(setup.weights, &metadata);
  EXPECT_EQ(metadata["classes"], R"(["a_red","b_green","c_blue"])");
  std::map<std::string, std::vector<std::string>> confusion;
  std::map<std::string, std::map<std::string, std::string>> predicted;  // folder -> file -> "true,predicted"
  std::map<std::string, std::map<std::string, std::string>> featured;   // folder -> file -> "label,class"
  for (const auto& [name, root] : {std::pair<std::string, std::string>{"complete", setup.complete}, {"partial", setup.partial}}) {
    RunOptions options;
    options.threads = 2;
    options.run_dir = setup.dir + "/" + name;
    const std::string csv = setup.dir + "/" + name + ".csv";
    run_graph(test::resolve_text(folder_graph(root, "evaluate = evaluate",
                                              "model = resnet depth=18 classes=3 weights=\"" + setup.weights + "\"")),
              options);
    confusion[name] = lines_of(options.run_dir + "/val_confusion.csv");
    run_graph(test::resolve_text(folder_graph(root, "predict = predict csv=\"" + csv + "\"",
                                              "model = resnet depth=18 classes=3 weights=\"" + setup.weights + "\"")),
              options);
    for (const auto& line : lines_of(csv)) {
      if (line.rfind("path,", 0) == 0) continue;
      const size_t comma = line.find(',');
      const std::string file = std::filesystem::path(line.substr(0, comma)).filename().string();
      const size_t third = line.find(',', line.find(',', comma + 1) + 1);
      predicted[name][file] = line.substr(comma + 1, third - comma - 1);
    }
    // Features: each row's label and class are the model's (row,index,label,class,path).
    const std::string features = setup.dir + "/" + name + "-features.safetensors";
    run_graph(test::resolve_text(folder_graph(root, "features = features path=\"" + features + "\"",
                                              "model = resnet depth=18 classes=3 weights=\"" + setup.weights + "\"")),
              options);
    for (const auto& line : lines_of(setup.dir + "/" + name + "-features.csv")) {
      if (line.rfind("row,", 0) == 0) continue;
      const size_t path = line.rfind(',');
      const size_t label = line.find(',', line.find(',') + 1);
      featured[name][std::filesystem::path(line.substr(path + 1)).filename().string()] =
          line.substr(label + 1, path - label - 1);  // "LABEL,CLASS"
    }
  }
  // The features' labels: the model's numbering, the same in both folders (c_blue is 2, not 1).
  ASSERT_EQ(featured["partial"].size(), 6u);
  for (const auto& [file, label] : featured["partial"]) {
    EXPECT_EQ(label, featured["complete"][file]) << file;
    const std::string true_class = file.substr(0, file.find('_', 2));
    EXPECT_EQ(label, std::to_string(true_class == "a_red" ? 0 : true_class == "b_green" ? 1 : 2) + "," + true_class)
        << file;
  }
  // The confusion matrix names the model's classes, whatever the folder lacks;
  // a class's row is the same whether the folder is complete or not.
  ASSERT_EQ(confusion["complete"].size(), 4u);
  ASSERT_EQ(confusion["partial"].size(), 4u);
  EXPECT_EQ(confusion["complete"][0], "true\\predicted,a_red,b_green,c_blue,accuracy");
  EXPECT_EQ(confusion["partial"][0], confusion["complete"][0]);
  EXPECT_EQ(confusion["partial"][1], confusion["complete"][1]);  // a_red
  EXPECT_EQ(confusion["partial"][2], "b_green,0,0,0,0");
  EXPECT_EQ(confusion["partial"][3], confusion["complete"][3]);  // c_blue
  // Predictions: the same true and predicted class names for every image.
  ASSERT_EQ(predicted["partial"].size(), 6u);
  for (const auto& [file, classes] : predicted["partial"]) {
    EXPECT_EQ(classes, predicted["complete"][file]) << file;
    EXPECT_EQ(classes.substr(0, file.find('_', 2)), file.substr(0, file.find('_', 2))) << file;  // the true class
  }
}

// The reported case itself: training on {a_red, b_green, c_blue} and
// validating on {a_red, c_blue} in one run scored every c_blue image as b_green.
TEST(Classes, AValidationFolderLackingAClassIsScoredByNameInTheTrainingRun) {
  ThreeClasses setup;
  RunOptions options;
  options.threads = 2;
  options.run_dir = setup.dir + "/one-run";
  const std::string graph =
      "run epochs=1 seed=3\n"
      "src = imagefolder root=\"" + setup.complete + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\nbatch = batch size=4\n"
      "train = train\nmodel = resnet depth=18 classes=3\noptim = adam lr=1e-3\n"
      "flow src -> prep -> batch -> train\n"
      "val_src = imagefolder root=\"" + setup.partial + "\"\nval_prep = like prep\nval_batch = like batch\n"
      "evaluate = evaluate model=model\nflow val_src -> val_prep -> val_batch -> evaluate\n";
  run_graph(test::resolve_text(graph), options);
  const auto confusion = lines_of(options.run_dir + "/val_confusion.csv");
  ASSERT_EQ(confusion.size(), 4u);
  EXPECT_EQ(confusion[0], "true\\predicted,a_red,b_green,c_blue,accuracy");
  EXPECT_EQ(confusion[2], "b_green,0,0,0,0");
  // c_blue's three images are scored as c_blue's: their row sums to 3 under the model's names.
  int c_blue = 0;
  std::stringstream row(confusion[3]);
  std::string cell;
  std::getline(row, cell, ',');
  EXPECT_EQ(cell, "c_blue");
  for (int i = 0; i < 3 && std::getline(row, cell, ','); ++i) c_blue += std::stoi(cell);
  EXPECT_EQ(c_blue, 3);
}

TEST(Classes, AClassTheModelDoesNotKnowOrAnotherHeadIsAnError) {
  ThreeClasses setup;
  // A validation class the model was not trained on: both lists.
  const std::string other = setup.dir + "/other";
  std::filesystem::copy(setup.partial, other, std::filesystem::copy_options::recursive);
  std::filesystem::rename(other + "/c_blue", other + "/d_black");
  const std::string model = "model = resnet depth=18 classes=3 weights=\"" + setup.weights + "\"";
  const std::string unknown = run_error(folder_graph(other, "evaluate = evaluate", model));
  EXPECT_NE(unknown.find(other + " has the class(es) [d_black] that model 'model' does not know: the source's classes "
                                 "are [a_red, d_black], the model's [a_red, b_green, c_blue]"),
            std::string::npos) << unknown;
  // A graph that only predicts never swaps the trained head for a random one.
  const std::string head = run_error(folder_graph(setup.complete, "predict = predict csv=\"" + setup.dir + "/p.csv\"",
                                                  "model = resnet depth=18 classes=4 weights=\"" + setup.weights + "\""));
  EXPECT_NE(head.find(setup.weights + " has a head of 3 classes but model 'model' has classes=4; no train stage trains "
                                      "it in this graph"), std::string::npos) << head;
  // Weights without class names: an image list's classes must be as many as the outputs.
  const std::string unnamed = setup.dir + "/unnamed.safetensors";
  write_safetensors(unnamed, read_safetensors(setup.weights));
  const std::string list = setup.dir + "/list.txt";
  std::ofstream(list) << setup.complete << "/a_red/a_red_0.jpg\ta_red\n";
  const std::string count = run_error(
      "src = imagelist list=\"" + list + "\" classes=[a_red, c_blue]\nprep = decode | resize size=32 | normalize\n"
      "batch = batch size=4\npredict = predict csv=\"" + setup.dir + "/q.csv\"\n"
      "model = resnet depth=18 classes=3 weights=\"" + unnamed + "\"\n");
  EXPECT_NE(count.find(list + " has 2 classes [a_red, c_blue] but model 'model' has 3 outputs and no class names to "
                              "match them by"), std::string::npos) << count;
}

TEST(Train, AOneSampleBatchIsDroppedWhileBatchNormTrains) {
  // Nine images in batches of 4: the last has one sample, which BatchNorm
  // (a 1x1 map at layer4 for 32-pixel images) cannot normalise in training.
  ThreeClasses setup;
  double dropped = -1, steps = -1;
  for (const auto& stage : setup.trained.stages)
    if (stage.name == "train") {
      dropped = stage.figures.at("dropped_single_batches");
      steps = stage.figures.at("train_steps");
    }
  EXPECT_EQ(dropped, 1.0);
  EXPECT_EQ(steps, 2.0);
}

// Batches of one sample only: every one is dropped, no step is made, and the
// run reports no training loss (not a loss of 0 that nothing computed).
TEST(Train, ARunWhoseEveryBatchIsDroppedReportsNoLoss) {
  const std::string dir = test::temp_dir();
  const std::string graph = test::write_graph(
      dir, "one.graph",
      "src = idx part=train sampler=s\ns = subset count=3\n"
      "prep = resize size=32 | normalize stats=custom mean=[0.286] std=[0.353]\nbatch = batch size=1\n"
      "train = train\nflow src -> prep -> batch -> train\nmodel = resnet depth=18 classes=10\noptim = adam\n");
  auto result = test::run_flowrun({graph, "--threads", "2", "--summary-json", dir + "/s.json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json summary = nlohmann::json::parse(test::slurp(dir + "/s.json"));
  EXPECT_EQ(summary["train_steps"], 0.0);
  EXPECT_EQ(summary["dropped_single_batches"], 3.0);
  EXPECT_FALSE(summary.contains("train_loss")) << summary["train_loss"];
  EXPECT_FALSE(summary.contains("train_top1"));
}

TEST(Errors, LibTorchErrorsReachTheUserAsOneLine) {
  try {
    torch::ones({2, 3}).matmul(torch::ones({4, 5}));
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find('\n'), std::string::npos);  // LibTorch's own text: a stack trace
    const std::string text = error_text(e);                           // what the engine shows
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
    EXPECT_NE(text.find("cannot be multiplied"), std::string::npos) << text;
  }
  EXPECT_EQ(error_text(std::runtime_error("plain\nlines")), "plain\nlines");  // other errors as they are
}
