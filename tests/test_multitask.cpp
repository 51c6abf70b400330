// Multi-task learning: extra heads on one backbone, each with its own labels
// (an image list's extra column, or a class_groups op), per-task losses
// weighed by fixed weights or Kendall et al.'s uncertainty, per-task
// figures, and the heads saved, loaded, frozen and resumed as the head is.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data_support.h"
#include "stages/data/dataset_source.h"
#include "stages/data/sampler.h"
#include "stages/model/model.h"
#include "stages/train/freeze.h"
#include "stages/train/optimizer.h"
#include "stages/train/task_weighting.h"
#include "test_support.h"

using namespace flowrun;
using flowrun::stages::SampleSet;
using flowrun::stages::TaskWeighting;

namespace {

std::string write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::vector<std::string> keys_of(const stages::StateDict& dict) {
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : dict) keys.push_back(key);
  return keys;
}

}  // namespace

// Kendall, Gal & Cipolla 2018 (classification form): sum exp(-s_t) L_t + s_t / 2,
// and its gradient in s_t, -exp(-s_t) L_t + 1/2.
TEST(TaskWeighting, UncertaintyIsKendallsFormulaAndItsGradient) {
  TaskWeighting weighting(2, {}, /*uncertainty=*/true, "train");
  weighting.load(torch::tensor({0.3f, -0.7f}));
  const torch::Tensor l0 = torch::tensor(1.25f), l1 = torch::tensor(0.4f);
  torch::Tensor total = weighting.combine({l0, l1});
  const double s0 = static_cast<float>(0.3), s1 = static_cast<float>(-0.7);
  EXPECT_NEAR(total.item<double>(), std::exp(-s0) * 1.25 + s0 / 2 + std::exp(-s1) * 0.4 + s1 / 2, 1e-6);
  total.backward();
  const torch::Tensor grad = weighting.module()->parameters()[0].grad();
  EXPECT_NEAR(grad[0].item<double>(), -std::exp(-s0) * 1.25 + 0.5, 1e-6);
  EXPECT_NEAR(grad[1].item<double>(), -std::exp(-s1) * 0.4 + 0.5, 1e-6);
  // A task with no labelled sample in the batch takes no part (its s_t neither).
  EXPECT_NEAR(weighting.combine({l0, torch::Tensor()}).item<double>(), std::exp(-s0) * 1.25 + s0 / 2, 1e-6);
  EXPECT_EQ(weighting.log_variances().size(), 2u);
  EXPECT_NEAR(weighting.log_variances()[1], s1, 1e-7);
  // No task labelled: 0, with a zero gradient for every s_t (which a job's
  // gradient all-reduce expects).
  weighting.module()->parameters()[0].mutable_grad() = torch::Tensor();
  torch::Tensor none = weighting.combine({torch::Tensor(), torch::Tensor()});
  EXPECT_EQ(none.item<double>(), 0.0);
  none.backward();
  EXPECT_TRUE(torch::equal(weighting.module()->parameters()[0].grad(), torch::zeros({2})));
  // Untrained, every weight is 1: s = 0, the plain sum.
  TaskWeighting fresh(2, {}, true, "train");
  EXPECT_NEAR(fresh.combine({l0, l1}).item<double>(), 1.25 + 0.4, 1e-6);
}

TEST(TaskWeighting, FixedWeightsWeighEachLossAndBadCountsAreErrors) {
  TaskWeighting fixed(3, {1.0, 0.5, 2.0}, false, "train");
  EXPECT_FALSE(fixed.learned());
  EXPECT_EQ(fixed.module(), nullptr);
  EXPECT_NEAR(fixed.combine({torch::tensor(1.0f), torch::tensor(0.8f), torch::tensor(0.25f)}).item<double>(),
              1.0 + 0.4 + 0.5, 1e-6);
  // No task labelled in the batch: nothing to combine (the train stage steps
  // on its heads' zero-gradient terms).
  EXPECT_FALSE(fixed.combine({torch::Tensor(), torch::Tensor(), torch::Tensor()}).defined());
  try {
    TaskWeighting(2, {1.0, 1.0, 1.0}, false, "train");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("task_weights=[...] has 3 weights but needs 2: the classes' first, then one per extra head"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(TaskWeighting(2, {1.0, 1.0}, true, "train"), std::runtime_error);
}

// class_groups: each sample's class mapped to its group, numbered in the
// file's order; a class the file lacks takes the default ("-": no label)
// or is an error naming the file; relabel=true makes the groups the classes.
TEST(ClassGroups, LabelsEachSampleWithItsClasssGroup) {
  const std::string dir = test::temp_dir();
  const std::string file = write_text(dir + "/groups.tsv", "# class to group\nc0\tb\nc1\ta\n\nc2\tb\r\n");
  std::vector<int64_t> labels = {0, 1, 2, 3, 1, 0};
  const std::vector<std::string> names = {"c0", "c1", "c2", "c3"};
  {
    test::StageBench bench("source = count\nsampler = class_groups file=\"" + file + "\" task=coarse default=\"-\"\n");
    SampleSet set = stages::sample_epoch(bench, "sampler", labels, names, 0);
    ASSERT_EQ(set.tasks.size(), 1u);
    EXPECT_EQ(set.tasks[0].name, "coarse");
    EXPECT_EQ(set.tasks[0].class_names, (std::vector<std::string>{"b", "a"}));
    EXPECT_EQ(set.tasks[0].labels, (std::vector<int64_t>{0, 1, 0, -1, 1, 0}));
    EXPECT_EQ(set.labels, labels) << "the classes stay";
    EXPECT_EQ(set.indices.size(), 6u);
  }
  {
    test::StageBench bench("source = count\nsampler = class_groups file=\"" + file + "\" default=other\n");
    SampleSet set = stages::sample_epoch(bench, "sampler", labels, names, 0);
    EXPECT_EQ(set.tasks[0].name, "group");
    EXPECT_EQ(set.tasks[0].class_names, (std::vector<std::string>{"b", "a", "other"}));
    EXPECT_EQ(set.tasks[0].labels, (std::vector<int64_t>{0, 1, 0, 2, 1, 0}));
  }
  {
    // The groups as the classes; a class without one leaves the epoch.
    test::StageBench bench("source = count\nsampler = class_groups file=\"" + file + "\" relabel=true default=\"-\"\n");
    SampleSet set = stages::sample_epoch(bench, "sampler", labels, names, 0);
    EXPECT_TRUE(set.tasks.empty());
    EXPECT_EQ(set.class_names, (std::vector<std::string>{"b", "a"}));
    EXPECT_EQ(set.indices, (std::vector<int64_t>{0, 1, 2, 4, 5}));
    EXPECT_EQ(set.labels, (std::vector<int64_t>{0, 1, 0, -1, 1, 0}));
  }
  {
    test::StageBench bench("source = count\nsampler = class_groups file=\"" + file + "\"\n");
    try {
      stages::sample_epoch(bench, "sampler", labels, names, 0);
      FAIL();
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(file + " maps no group to class 'c3'"), std::string::npos) << e.what();
    }
  }
  // A malformed line, and a class mapped twice: errors naming the file and line.
  const std::string bad = write_text(dir + "/bad.tsv", "c0\tb\nc1 a\n");
  try {
    test::StageBench bench("source = count\nsampler = class_groups file=\"" + bad + "\"\n");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(bad + ":2: not CLASS<TAB>GROUP"), std::string::npos) << e.what();
  }
  const std::string twice = write_text(dir + "/twice.tsv", "c0\tb\nc0\ta\n");
  try {
    test::StageBench bench("source = count\nsampler = class_groups file=\"" + twice + "\"\n");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(twice + ":2: class 'c0' is mapped twice"), std::string::npos) << e.what();
  }
}

// keep_labels: k samples of every class keep their label (chosen once from
// the seed, the same every epoch), the rest stay in the epoch with -1; a
// task's labels are thinned the same way with task=.
TEST(KeepLabels, KeepsKLabelsAClassAndLeavesTheRestUnlabelled) {
  const std::string dir = test::temp_dir();
  const std::string file = write_text(dir + "/groups.tsv", "c0\tx\nc1\tx\nc2\ty\n");
  std::vector<int64_t> labels;
  for (int i = 0; i < 30; ++i) labels.push_back(i % 3);  // 10 samples of each class
  const std::vector<std::string> names = {"c0", "c1", "c2"};
  auto kept_of = [](const std::vector<int64_t>& l) {
    std::vector<int64_t> kept;
    for (size_t i = 0; i < l.size(); ++i)
      if (l[i] >= 0) kept.push_back(static_cast<int64_t>(i));
    return kept;
  };
  test::StageBench bench("source = count\nsampler = class_groups file=\"" + file + "\" | keep_labels k=4 | shuffle\n");
  const SampleSet first = stages::sample_epoch(bench, "sampler", labels, names, 0);
  EXPECT_EQ(first.indices.size(), 30u) << "every sample stays in the epoch";
  std::vector<int> per_class(3, 0);
  for (size_t i = 0; i < first.labels.size(); ++i)
    if (first.labels[i] >= 0) {
      EXPECT_EQ(first.labels[i], labels[i]) << "a kept label is the sample's own";
      ++per_class[first.labels[i]];
    }
  EXPECT_EQ(per_class, (std::vector<int>{4, 4, 4}));
  EXPECT_EQ(first.tasks.at(0).labels.size(), 30u);
  for (size_t i = 0; i < 30; ++i) EXPECT_GE(first.tasks[0].labels[i], 0) << "the groups of every sample stay";
  // The same samples keep their labels every epoch (the order itself reshuffles).
  const SampleSet later = stages::sample_epoch(bench, "sampler", labels, names, 3);
  EXPECT_EQ(kept_of(later.labels), kept_of(first.labels));
  EXPECT_NE(later.indices, first.indices);
  // Another seed, another subset (of the same size).
  test::StageBench other("source = count\nsampler = keep_labels k=4 seed=9\n");
  const SampleSet reseeded = stages::sample_epoch(other, "sampler", labels, names, 0);
  EXPECT_EQ(kept_of(reseeded.labels).size(), 12u);
  EXPECT_NE(kept_of(reseeded.labels), kept_of(first.labels));
  // k=0 would leave no label at all: refused where it is written.
  EXPECT_EQ(test::errors_of("source = count\nsampler = keep_labels k=0\nsink = sink\n"),
            "test.graph:2:25: error: parameter 'k' = 0 is out of range [1, 1000000000]\n");
  // Nothing labelled to keep (an unlabelled dataset): an error naming the op.
  try {
    test::StageBench unlabelled("source = count\nsampler = keep_labels k=2\n");
    stages::sample_epoch(unlabelled, "sampler", std::vector<int64_t>(30, -1), names, 0);
    ADD_FAILURE() << "keep_labels on unlabelled samples was taken";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("keep_labels 'sampler': none of the epoch's 30 samples has a class label"),
              std::string::npos) << e.what();
  }
  // k above a class's count keeps all of it.
  test::StageBench all("source = count\nsampler = keep_labels k=11\n");
  EXPECT_EQ(stages::sample_epoch(all, "sampler", labels, names, 0).labels, labels);
  // task=group thins the groups (2 per group), the classes stay.
  test::StageBench groups("source = count\nsampler = class_groups file=\"" + file + "\" | keep_labels k=2 task=group\n");
  const SampleSet thinned = stages::sample_epoch(groups, "sampler", labels, names, 0);
  EXPECT_EQ(thinned.labels, labels);
  EXPECT_EQ(kept_of(thinned.tasks.at(0).labels).size(), 4u);
  // A task the samples lack: an error naming the op and the tasks they have.
  test::StageBench wrong("source = count\nsampler = class_groups file=\"" + file + "\" | keep_labels k=2 task=grp\n");
  try {
    stages::sample_epoch(wrong, "sampler", labels, names, 0);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("keep_labels 'sampler': the samples have no labels for task 'grp' "
                                         "(their tasks: group"), std::string::npos) << e.what();
  }
  // An op that chooses, weighs or maps samples by class, after keep_labels
  // took most classes away, would choose by the few left: an error naming
  // both, at --check (weighted by class learns it reads classes from its
  // file, so it is refused when the epoch first samples).
  for (const std::string op : std::vector<std::string>{"per_class k=2", "balanced", "classes names=[c0]",
                                                      "class_groups file=\"" + file + "\"",
                               "split stratified=true"}) {
    const std::string type = op.substr(0, op.find(' '));
    const std::string errors = test::errors_of("source = count\nsampler = keep_labels k=2 | " + op + "\nsink = sink\n");
    EXPECT_NE(errors.find("test.graph:2:29: error: stage 'sampler' (" + type + "): " + type + " comes after keep_labels "
                          "(op #1 of sampler 'sampler'), which keeps the class labels of a few samples only"),
              std::string::npos) << errors;
  }
  const std::string class_weights = write_text(dir + "/class_weights.csv", "class,weight\nc0,1\nc1,2\n");
  test::StageBench weighted("source = count\nsampler = keep_labels k=2 | weighted weights=\"" + class_weights + "\"\n");
  try {
    stages::sample_epoch(weighted, "sampler", labels, names, 0);
    ADD_FAILURE() << "weighted by class after keep_labels was taken";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("sampler 'sampler': weighted comes after keep_labels, which keeps the "
                                         "class labels of a few samples only"), std::string::npos) << e.what();
  }
  // weighted by sample index reads no class: fine after keep_labels.
  const std::string index_weights = write_text(dir + "/index_weights.csv", "index,weight\n0,1\n1,2\n");
  test::StageBench by_index("source = count\nsampler = keep_labels k=2 | weighted weights=\"" + index_weights + "\"\n");
  EXPECT_NO_THROW(stages::sample_epoch(by_index, "sampler", labels, names, 0));
  // After the groups' thinning, or before the classes', they are fine.
  test::StageBench fine("source = count\nsampler = class_groups file=\"" + file +
                        "\" | keep_labels k=2 task=group | per_class k=5 | keep_labels k=2 | split\n");
  EXPECT_NO_THROW(stages::sample_epoch(fine, "sampler", labels, names, 0));
}

// An image list's extra columns: one task each; an empty field or - is no
// label; a missing column is an error naming the line, unless the task has
// a default.
TEST(ImageListTasks, ExtraColumnsLabelTheTasks) {
  const std::string dir = test::temp_dir();
  const std::string list = write_text(dir + "/list.txt",
                                      "a.jpg\tcat\tpet\n"
                                      "b.jpg\tdog\t-\n"
                                      "c.jpg\t-\twild\n"
                                      "d.jpg\tcat\t\n"
                                      "e.jpg\tdog\tpet\n");
  test::StageBench bench("source = imagelist list=\"" + list + "\" classes=[cat, dog] tasks=[kind]\n");
  auto& source = dynamic_cast<SourceStage&>(bench.stage("source"));
  source.begin_epoch(EpochInfo{});
  std::vector<int64_t> labels, kinds;
  std::shared_ptr<const stages::DatasetInfo> info;
  for (Item item; source.next(item);) {
    const auto& sample = item.get<stages::Sample>();
    labels.push_back(sample.label);
    ASSERT_EQ(sample.task_labels.size(), 1u);
    kinds.push_back(sample.task_labels[0]);
    info = sample.dataset;
  }
  EXPECT_EQ(labels, (std::vector<int64_t>{0, 1, -1, 0, 1}));
  // The task's classes sorted, as ImageFolder sorts its folders: pet, wild.
  ASSERT_EQ(info->tasks.size(), 1u);
  EXPECT_EQ(info->tasks[0].name, "kind");
  EXPECT_EQ(info->tasks[0].class_names, (std::vector<std::string>{"pet", "wild"}));
  EXPECT_EQ(kinds, (std::vector<int64_t>{0, -1, 1, -1, 0}));

  const std::string short_line = write_text(dir + "/short.txt", "a.jpg\tcat\tpet\nb.jpg\tdog\n");
  try {
    test::StageBench missing("source = imagelist list=\"" + short_line + "\" classes=[cat, dog] tasks=[kind]\n");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(short_line + ":2: no column for task 'kind'"), std::string::npos) << e.what();
  }
  // With a default for the task, the short line takes it.
  test::StageBench defaulted("source = imagelist list=\"" + short_line +
                             "\" classes=[cat, dog] tasks=[kind] task_defaults=[wild]\n");
  auto& second = dynamic_cast<SourceStage&>(defaulted.stage("source"));
  second.begin_epoch(EpochInfo{});
  std::vector<int64_t> defaults;
  for (Item item; second.next(item);) defaults.push_back(item.get<stages::Sample>().task_labels.at(0));
  EXPECT_EQ(defaults, (std::vector<int64_t>{0, 1}));
  // More columns than the list has: an error, with or without tasks.
  try {
    test::StageBench extra("source = imagelist list=\"" + list + "\" classes=[cat, dog]\n");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(list + ":1: 3 tab-separated fields, but the list has 2 columns"),
              std::string::npos)
        << e.what();
  }
}

// The heads are the network's keys heads.TASK.*, after torchvision's; they
// save and load with the model, train at the head's rate, and stay
// trainable when the backbone is frozen.
TEST(TaskHeads, AreSavedLoadedFrozenAndOptimisedAsTheHead) {
  test::StageBench bench(
      "source = count\nmodel = resnet depth=18 classes=4 tasks=[group, size] task_classes=[3, 2]\n"
      "other = resnet depth=18 classes=4 tasks=[group, size] task_classes=[3, 2]\n"
      "freezer = freeze mode=backbone\noptim = adam lr=1e-2 backbone_lr_factor=0.1\n",
      5);
  stages::ModelStage& model = stages::find_model(bench, "model");
  ASSERT_EQ(model.task_heads().size(), 2u);
  const std::vector<std::string> keys = keys_of(stages::state_dict(*model.net()));
  ASSERT_GE(keys.size(), 6u);
  EXPECT_EQ(std::vector<std::string>(keys.end() - 6, keys.end()),
            (std::vector<std::string>{"fc.weight", "fc.bias", "heads.group.weight", "heads.group.bias",
                                      "heads.size.weight", "heads.size.bias"}));
  EXPECT_EQ(model.task_heads()[0].linear->weight.sizes(), (std::vector<int64_t>{3, 512}));
  EXPECT_EQ(model.feature_size(), 512);
  // Saved and loaded with the model: another stage's weights become these.
  std::string bytes;
  ASSERT_TRUE(model.save_state(bytes));
  stages::ModelStage& other = stages::find_model(bench, "other");
  EXPECT_FALSE(torch::equal(other.task_heads()[1].linear->weight, model.task_heads()[1].linear->weight));
  other.load_state(bytes);
  EXPECT_TRUE(torch::equal(other.task_heads()[1].linear->weight, model.task_heads()[1].linear->weight));
  // Frozen backbone: every head trains; discriminative rates: the heads take the head's.
  auto& freezer = dynamic_cast<stages::Freeze&>(bench.stage("freezer"));
  freezer.apply(*model.net(), 0);
  for (const auto& item : model.net()->named_parameters(true))
    EXPECT_EQ(item.value().requires_grad(), item.key().rfind("fc.", 0) == 0 || item.key().rfind("heads.", 0) == 0)
        << item.key();
  for (auto& p : model.net()->parameters()) p.set_requires_grad(true);
  auto& optim = dynamic_cast<stages::OptimizerStage&>(bench.stage("optim"));
  stages::Optimization optimization = optim.build(*model.net(), {});
  const auto& groups = optimization.optimizer->param_groups();
  for (size_t g = 0; g < groups.size(); ++g)
    for (const auto& p : groups[g].params())
      if (p.is_same(model.task_heads()[0].linear->weight)) EXPECT_DOUBLE_EQ(optimization.peak_lr[g], 1e-2);
}

// A single-task model's file (torchvision's layout) into a multi-task
// model: everything loads, the extra heads start afresh, and only where a
// train stage trains them.
TEST(TaskHeads, ASingleTaskFileLoadsWithNewHeadsOnlyWhereTheyTrain) {
  const std::string dir = test::temp_dir();
  {
    test::StageBench single("source = count\nmodel = resnet depth=18 classes=4\n", 1);
    std::string bytes;
    stages::find_model(single, "model").save_state(bytes);
    std::ofstream(dir + "/single.safetensors", std::ios::binary) << bytes;
  }
  const std::string model = "model = resnet depth=18 classes=4 tasks=[group] task_classes=[3] weights=\"" + dir +
                            "/single.safetensors\"\n";
  try {
    test::StageBench untrained("source = count\n" + model);
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("has no head for task 'group' (model 'model'), and no train stage trains it"), std::string::npos) << e.what();
  }
  // A multi-task file into a model without its heads, or with a head of another size.
  {
    test::StageBench multi("source = count\nmodel = resnet depth=18 classes=4 tasks=[group] task_classes=[3]\n", 1);
    std::string bytes;
    stages::find_model(multi, "model").save_state(bytes);
    std::ofstream(dir + "/multi.safetensors", std::ios::binary) << bytes;
  }
  try {
    test::StageBench plain("source = count\nmodel = resnet depth=18 classes=4 weights=\"" + dir + "/multi.safetensors\"\n");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("the weights are a multi-task model's, with extra heads the model lacks: declare "
                                         "them, tasks=[group] task_classes=[3]"), std::string::npos) << e.what();
  }
  try {
    test::StageBench resized("source = count\nmodel = resnet depth=18 classes=4 tasks=[group] task_classes=[2] "
                             "weights=\"" + dir + "/multi.safetensors\"\n");
    FAIL();
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("has a head of 3 outputs for task 'group', and task_classes gives 2"),
              std::string::npos) << e.what();
  }
  test::StageBench trained("source = count\ntrain = train\nflow source -> train\noptim = adam\n" + model);
  Report report;
  stages::find_model(trained, "model").report(report);
  EXPECT_EQ(report.figures().at("weights_loaded"), 122.0);
  EXPECT_EQ(report.figures().at("task_heads_new"), 1.0);
  EXPECT_EQ(report.figures().at("head_reinitialised"), 0.0);
}

namespace {

// Three Fashion-MNIST classes, 8 training images each, with their groups
// (Shirt: clothing; Sneaker: shoes; Bag: bags); a validation flow of 4 each.
std::string multitask_graph(const std::string& dir, const std::string& train_params,
                            const std::string& after_train = "sleep us=0") {
  write_text(dir + "/groups.tsv", "Shirt\tclothing\nSneaker\tshoes\nBag\tbags\n");
  // compute_threads pinned (auto follows --threads and the cores): the
  // bit-identity tests compare runs whose LibTorch sums must take one order.
  return "run seed=2 in_flight=64 compute_threads=2\n"
         "src = idx part=train sampler=src_sampler\n"
         "src_sampler = classes names=[Shirt, Sneaker, Bag] | per_class k=8 | class_groups file=\"groups.tsv\" | shuffle\n"
         "aug = resize size=32 | random_crop size=32 padding=4 mode=reflect | hflip\n"
         "norm = normalize stats=custom mean=[0.286] std=[0.353]\n"
         "batch = batch size=6\n"
         "train = train model=model optimizer=optim scheduler=sched " + train_params + "\n"
         "after_train = " + after_train + "\n"
         "flow src -> aug -> norm -> batch -> train -> after_train\n"
         "val_src = idx part=test sampler=val_sampler\n"
         "val_sampler = classes names=[Shirt, Sneaker, Bag] | per_class k=4 | class_groups file=\"groups.tsv\"\n"
         "val_prep = resize size=32 | normalize stats=custom mean=[0.286] std=[0.353]\n"
         "val_batch = batch size=5\n"
         "evaluate = evaluate model=model prefix=val\n"
         "flow val_src -> val_prep -> val_batch -> evaluate\n"
         "model = resnet depth=18 classes=3 tasks=[group] task_classes=[3]\n"
         "optim = adam lr=1e-3\n"
         "sched = onecycle\n"
         "checkpoint = checkpoint\n"
         "save = save_weights model=model path=\"weights.safetensors\"\n"
         "phase main epochs=2 { }\n";
}

}  // namespace

// A run trains both heads and reports each task's figures; the group head's
// confusion matrix names the groups; the saved file keeps the heads' names.
TEST(Multitask, TrainsEveryHeadAndReportsPerTaskFigures) {
  const std::string dir = test::temp_dir();
  const std::string graph = test::write_graph(dir, "mt.graph", multitask_graph(dir, "task_weighting=uncertainty"));
  auto result = test::run_in(dir, graph, "run");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json summary = test::summary_of(dir + "/run");
  for (const char* key : {"train_loss", "train_top1", "train_group_loss", "train_group_top1", "train_log_var",
                          "train_group_log_var", "val_top1", "val_group_top1", "val_group_loss", "val_group_top5"})
    EXPECT_TRUE(summary.contains(key)) << key << " " << summary.dump();
  EXPECT_EQ(summary["val_group_samples"], 12.0);
  EXPECT_EQ(summary["train_steps"], 8.0);  // 24 images in batches of 6, 2 epochs
  // The log-variances were trained (they start at 0).
  EXPECT_NE(summary["train_group_log_var"].get<double>(), 0.0);
  EXPECT_NE(result.out.find("val_group_top1"), std::string::npos) << result.out;
  const auto confusion = test::lines_of(dir + "/run/val_group_confusion.csv");
  ASSERT_EQ(confusion.size(), 4u);
  // The training source named the head's outputs, in the groups file's order.
  EXPECT_EQ(confusion[0], "true\\predicted,clothing,shoes,bags,accuracy");
  int64_t counted = 0;
  for (size_t r = 1; r < confusion.size(); ++r) {
    const auto cells = test::split(confusion[r]);
    for (size_t c = 1; c <= 3; ++c) counted += std::stoll(cells.at(c));
  }
  EXPECT_EQ(counted, 12);
  const std::string metrics = test::slurp(dir + "/run/metrics.csv");
  EXPECT_NE(metrics.find("train_group_loss"), std::string::npos);
  EXPECT_NE(metrics.find("val_group_top1"), std::string::npos);
  // The saved weights keep both heads, and the groups' names.
  stages::Metadata metadata;
  stages::StateDict weights = stages::read_weights(dir + "/run.safetensors", &metadata);
  EXPECT_EQ(keys_of(weights).back(), "heads.group.bias");
  EXPECT_EQ(metadata["tasks"], R"({"group":["clothing","shoes","bags"]})");

  // Predictions per head, from the saved weights.
  const std::string predict = test::write_graph(
      dir, "predict.graph",
      "src = idx part=test sampler=s\ns = classes names=[Shirt, Sneaker, Bag] | per_class k=2 | class_groups "
      "file=\"groups.tsv\"\nprep = resize size=32 | normalize stats=custom mean=[0.286] std=[0.353]\n"
      "batch = batch size=3\npredict = predict csv=\"p.csv\"\nflow src -> prep -> batch -> predict\n"
      "model = resnet depth=18 classes=3 tasks=[group] task_classes=[3] weights=\"run.safetensors\"\n");
  auto predicted = test::run_flowrun({predict, "--threads", "2"}, dir);
  ASSERT_EQ(predicted.exit_code, 0) << predicted.err;
  const auto rows = test::lines_of(dir + "/p.csv");
  ASSERT_EQ(rows.size(), 7u);
  EXPECT_NE(rows[0].find(",group_true,group_predicted,group_prob"), std::string::npos) << rows[0];
  for (size_t i = 1; i < rows.size(); ++i) {
    const auto cells = test::split(rows[i]);
    const std::string& group = cells.at(cells.size() - 3);
    const std::string& cls = cells.at(1);
    EXPECT_EQ(group, cls == "Shirt" ? "clothing" : cls == "Sneaker" ? "shoes" : "bags") << rows[i];
  }
}

// With fixed weights [1, 0] the group head takes no part in the loss: the
// backbone and the classes' head train exactly as a single-task model's
// (same seed, same batches); the group head does not move.
TEST(Multitask, AZeroTaskWeightLeavesTheRestAsASingleTaskModelTrains) {
  const std::string dir = test::temp_dir();
  auto run = [&](const std::string& name, const std::string& graph_text) {
    const std::string graph = test::write_graph(dir, name + ".graph", graph_text);
    auto result = test::run_in(dir, graph, name);
    EXPECT_EQ(result.exit_code, 0) << result.err;
    return stages::read_weights(dir + "/" + name + ".safetensors");
  };
  std::string single_text = multitask_graph(dir, "");
  single_text.replace(single_text.find(" tasks=[group] task_classes=[3]"), 31, "");
  const stages::StateDict multi = run("multi", multitask_graph(dir, "task_weights=[1, 0]"));
  const stages::StateDict single = run("single", single_text);
  ASSERT_EQ(multi.size(), single.size() + 2);
  for (size_t i = 0; i < single.size(); ++i) {
    EXPECT_EQ(multi[i].first, single[i].first);
    EXPECT_TRUE(torch::equal(multi[i].second, single[i].second)) << single[i].first;
  }
}

// A semi-supervised split (keep_labels): a single head told unlabelled=skip
// trains on the labelled samples alone, exactly as a multi-task model whose
// other head weighs 0 (and which skips them by itself); without it, a clear
// error naming the way out. The figures count the labelled samples.
TEST(Multitask, ASingleHeadSkipsUnlabelledSamplesWhenToldTo) {
  const std::string dir = test::temp_dir();
  auto thin = [](std::string text) {
    const std::string groups = "class_groups file=\"groups.tsv\" | shuffle";
    text.replace(text.find(groups), groups.size(), "class_groups file=\"groups.tsv\" | keep_labels k=2 | shuffle");
    return text;
  };
  std::string single_text = thin(multitask_graph(dir, "unlabelled=skip"));
  single_text.replace(single_text.find(" tasks=[group] task_classes=[3]"), 31, "");
  auto single = test::run_in(dir, test::write_graph(dir, "single.graph", single_text), "single");
  ASSERT_EQ(single.exit_code, 0) << single.err;
  auto multi = test::run_in(dir, test::write_graph(dir, "multi.graph", thin(multitask_graph(dir, "task_weights=[1, 0]"))),
                            "multi");
  ASSERT_EQ(multi.exit_code, 0) << multi.err;
  const stages::StateDict a = stages::read_weights(dir + "/single.safetensors");
  const stages::StateDict b = stages::read_weights(dir + "/multi.safetensors");
  ASSERT_EQ(b.size(), a.size() + 2);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(b[i].first, a[i].first);
    EXPECT_TRUE(torch::equal(b[i].second, a[i].second)) << a[i].first;
  }
  // 2 epochs of 24 images in batches of 6 (6 of them with a class): 8 steps.
  const nlohmann::json summary = test::summary_of(dir + "/single");
  EXPECT_EQ(summary["train_steps"], 8.0);
  EXPECT_EQ(summary["val_samples"], 12.0);
  std::string strict = thin(multitask_graph(dir, ""));
  strict.replace(strict.find(" tasks=[group] task_classes=[3]"), 31, "");
  auto refused = test::run_in(dir, test::write_graph(dir, "strict.graph", strict), "strict");
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("has no label: training needs a class for every sample (train stage 'train': "
                             "unlabelled=skip trains on the labelled ones alone)"), std::string::npos) << refused.err;
  // A multi-task model skips them by default (its other heads learn from
  // them), and refuses them when told unlabelled=error.
  auto told = test::run_in(dir, test::write_graph(dir, "told.graph", thin(multitask_graph(dir, "unlabelled=error"))),
                           "told");
  EXPECT_EQ(told.exit_code, 1);
  EXPECT_NE(told.err.find("has no label: training needs a class for every sample"), std::string::npos) << told.err;
}

// With no class label at all (an image list of paths alone) a model with unlabelled=skip still runs, says so, and reports
// no classes' figures: no zeros for best_weights or early_stopping to read
// as a result.
TEST(Multitask, AClassesHeadWithNothingLabelledReportsNoFigures) {
  const std::string dir = test::temp_dir();
  const std::vector<std::string> classes = {"Shirt", "Sneaker", "Bag"};
  const std::string images = test::make_jpeg_folder(classes, 8, 32, 32);
  std::string train_list, val_list;
  for (const auto& name : classes)
    for (int i = 0; i < 8; ++i)
      (i < 4 ? val_list : train_list) += images + "/" + name + "/" + name + "_" + std::to_string(i) + ".jpg\n";
  // 4 of each class to train on (12), 4 to score (12).
  write_text(dir + "/train.txt", train_list);
  write_text(dir + "/val.txt", val_list);
  std::string text = multitask_graph(dir, "unlabelled=skip");
  text.replace(text.find(" tasks=[group] task_classes=[3]"), 31, "");
  auto swap_line = [&](const std::string& head, const std::string& line) {
    const size_t at = text.find("\n" + head) + 1;
    text.replace(at, text.find('\n', at) - at, line);
  };
  const std::string list_params = " classes=[Shirt, Sneaker, Bag]";
  swap_line("src = ", "src = imagelist list=\"train.txt\"" + list_params + " sampler=src_sampler");
  swap_line("src_sampler = ", "src_sampler = shuffle");
  swap_line("aug = ", "aug = decode | resize size=32 | random_crop size=32 padding=4 mode=reflect | hflip");
  swap_line("val_src = ", "val_src = imagelist list=\"val.txt\"" + list_params);
  swap_line("val_sampler = ", "");
  swap_line("val_prep = ", "val_prep = decode | resize size=32 | center_crop size=32 | normalize stats=custom mean=[0.286] std=[0.353]");
  auto result = test::run_in(dir, test::write_graph(dir, "none.graph", text), "none");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.err.find("train: epoch 1: none of its 12 training samples had a class label: the classes' head of "
                            "model 'model' did not train"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("none of its 12 samples has a label for model 'model': nothing to score"),
            std::string::npos) << result.err;
  const nlohmann::json summary = test::summary_of(dir + "/none");
  for (const char* key : {"train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_samples"})
    EXPECT_FALSE(summary.contains(key)) << key << " " << summary.dump();
  EXPECT_EQ(summary["train_steps"], 4.0);
  EXPECT_EQ(result.out.find("final: val_top1"), std::string::npos) << result.out;
}

// A multi-task run stopped mid-epoch resumes bit-identical: weights, heads,
// learned log-variances (through the weights they weighed) and figures.
TEST(Multitask, AStoppedRunResumesBitIdentical) {
  const std::string dir = test::temp_dir();
  const std::string graph = test::write_graph(dir, "mt.graph", multitask_graph(dir, "task_weighting=uncertainty"));
  auto whole = test::run_in(dir, graph, "whole");
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  const std::string stop_graph = test::write_graph(
      dir, "stop.graph", multitask_graph(dir, "task_weighting=uncertainty", "stop_at epoch=2 item=1"));
  auto stopped = test::run_in(dir, stop_graph, "stopped", {"--plugin", TEST_PLUGIN_STOP_AT});
  ASSERT_EQ(stopped.exit_code, 130) << stopped.err;
  auto resumed = test::run_in(dir, graph, "resumed", {"--set", "checkpoint.resume=" + dir + "/stopped/checkpoint.ckpt"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_TRUE(test::slurp(dir + "/resumed.safetensors") == test::slurp(dir + "/whole.safetensors"));  // not a 45 MB diff
  EXPECT_EQ(test::slurp(dir + "/resumed/metrics.csv"), test::slurp(dir + "/whole/metrics.csv"));
  const nlohmann::json a = test::summary_of(dir + "/whole"), b = test::summary_of(dir + "/resumed");
  for (const char* key : {"train_group_loss", "train_group_top1", "train_group_log_var", "val_group_top1", "val_top1"}) {
    ASSERT_TRUE(a.contains(key)) << key;
    EXPECT_EQ(a[key], b[key]) << key;
  }
  // The finished run resumed: no epoch left to run, and the same figures under the same names.
  auto again = test::run_in(dir, graph, "again", {"--set", "checkpoint.resume=" + dir + "/whole/checkpoint.ckpt"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const nlohmann::json c = test::summary_of(dir + "/again");
  for (const char* key : {"train_group_loss", "train_group_top1", "train_log_var", "train_group_log_var",
                          "val_group_top1", "val_group_samples", "val_top1"}) {
    ASSERT_TRUE(c.contains(key)) << key << " " << c.dump();
    EXPECT_EQ(a[key], c[key]) << key;
  }
}

// Bad input: a head whose task the data does not label, task weights of
// another count, tasks and sizes that do not pair: clear errors naming the stage.
TEST(Multitask, GraphsThatCannotTrainTheHeadsAreClearErrors) {
  const std::string dir = test::temp_dir();
  std::string text = multitask_graph(dir, "");
  text.replace(text.find("tasks=[group]"), 13, "tasks=[grp]");
  auto wrong = test::run_in(dir, test::write_graph(dir, "wrong.graph", text), "wrong");
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("stage 'train' (train)"), std::string::npos) << wrong.err;
  EXPECT_NE(wrong.err.find("gives no labels for head 'grp' of model 'model' (its samples are labelled for the "
                           "task(s) [group])"), std::string::npos) << wrong.err;
  auto weights = test::run_in(dir, test::write_graph(dir, "w.graph", multitask_graph(dir, "task_weights=[1, 2, 3]")), "w");
  EXPECT_EQ(weights.exit_code, 1);
  EXPECT_NE(weights.err.find("task_weights=[...] has 3 weights but needs 2: the classes' first, then one per extra head"), std::string::npos)
      << weights.err;
  std::string unpaired = multitask_graph(dir, "");
  unpaired.replace(unpaired.find("task_classes=[3]"), 16, "task_classes=[3, 4]");
  auto check = test::run_flowrun({"--check", test::write_graph(dir, "u.graph", unpaired)}, dir);
  EXPECT_NE(check.exit_code, 0);
  EXPECT_NE(check.err.find("tasks=[...] names 1 heads but task_classes=[...] gives 2 sizes"), std::string::npos)
      << check.err;
  EXPECT_NE(check.err.find("model"), std::string::npos);
  // A negative weight (gradient ascent on that task), or all zero: refused at --check.
  for (const std::string weights : {"[1, -1]", "[0, 0]"}) {
    auto refused = test::run_flowrun({"--check", test::write_graph(dir, "n.graph", multitask_graph(dir, "task_weights=" + weights))}, dir);
    EXPECT_NE(refused.exit_code, 0) << weights;
    EXPECT_NE(refused.err.find(weights == "[0, 0]" ? "task_weights are all 0" : "task_weights must be finite and >= 0"),
              std::string::npos) << refused.err;
  }
  // A head smaller than the data's task: the data's classes and the head's size, named.
  std::string small = multitask_graph(dir, "");
  small.replace(small.find("task_classes=[3]"), 16, "task_classes=[2]");
  auto too_small = test::run_in(dir, test::write_graph(dir, "small.graph", small), "small");
  EXPECT_EQ(too_small.exit_code, 1);
  EXPECT_NE(too_small.err.find("labels task 'group' with 3 classes [clothing, shoes, bags] but head 'group' of model "
                               "'model' has 2 outputs (set its task_classes)"), std::string::npos) << too_small.err;
  // task_weights on a model with one head.
  std::string one_head = multitask_graph(dir, "task_weights=[1, 1]");
  one_head.replace(one_head.find(" tasks=[group] task_classes=[3]"), 31, "");
  auto single = test::run_in(dir, test::write_graph(dir, "one.graph", one_head), "one");
  EXPECT_EQ(single.exit_code, 1);
  EXPECT_NE(single.err.find("weigh a multi-task model's heads, and model 'model' has one"), std::string::npos)
      << single.err;
}

// An image list whose samples lack one label or the other: each head trains
// and is scored on its own labelled samples; a validation list without any
// class reports the group head's figures and none for the classes (no zeros).
TEST(Multitask, AnImageListWithMissingLabelsScoresEachHeadOnItsOwnSamples) {
  const std::string root = test::make_jpeg_folder({"cat", "dog", "car"}, 4, 32, 32);
  const std::string dir = std::filesystem::path(root).parent_path().string();
  std::ofstream train(dir + "/train.txt"), val(dir + "/val.txt");
  int line = 0;
  for (const std::string cls : {"cat", "dog", "car"})
    for (int i = 0; i < 4; ++i, ++line) {
      const std::string path = "images/" + cls + "/" + cls + "_" + std::to_string(i) + ".jpg";
      const std::string group = cls == "car" ? "vehicle" : "animal";
      // Every third line lacks its group, every fourth its class.
      train << path << "\t" << (line % 4 == 3 ? "-" : cls) << "\t" << (line % 3 == 2 ? "" : group) << "\n";
      val << path << "\t-\t" << group << "\n";
    }
  train.close(), val.close();
  const std::string graph = test::write_graph(
      dir, "list.graph",
      "run seed=1 in_flight=64\n"
      "src = imagelist list=\"train.txt\" classes=[cat, dog, car] tasks=[group]\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\nbatch = batch size=6\n"
      "train = train model=model optimizer=optim\nflow src -> prep -> batch -> train\n"
      "val_src = imagelist list=\"val.txt\" classes=[cat, dog, car] tasks=[group]\n"
      "val_prep = decode | resize size=32 | center_crop size=32 | normalize\nval_batch = batch size=5\n"
      "evaluate = evaluate model=model prefix=val\nflow val_src -> val_prep -> val_batch -> evaluate\n"
      "model = resnet depth=18 classes=3 tasks=[group] task_classes=[2]\noptim = adam\n"
      "save = save_weights model=model path=\"w.safetensors\"\nphase main epochs=1 { }\n");
  auto result = test::run_in(dir, graph, "run");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json summary = test::summary_of(dir + "/run");
  EXPECT_EQ(summary["val_group_samples"], 12.0);
  EXPECT_FALSE(summary.contains("val_top1")) << summary.dump();
  EXPECT_FALSE(summary.contains("val_samples"));
  EXPECT_NE(result.out.find("(12 group samples)"), std::string::npos) << result.out;
  // The training figures count each head's labelled samples: 9 of 12 with a class, 8 with a group.
  const std::string metrics = test::slurp(dir + "/run/metrics.csv");
  EXPECT_NE(metrics.find("train_group_top1"), std::string::npos);
  EXPECT_EQ(summary["train_steps"], 2.0);
}

TEST(Multitask, TheShippedGraphRunsAtTinyScale) {
  const std::string dir = test::temp_dir();
  auto result = test::run_flowrun({"graphs/multitask.graph", "--threads", "2", "--summary-json", dir + "/s.json",
                                   "--set", "run.epochs=1", "--set", "train_sampler.per_class.k=6",
                                   "--set", "coarse_train_sampler.per_class.k=6", "--set", "val_sampler.per_class.k=3",
                                   "--set", "coarse_val_sampler.per_class.k=3", "--set", "train_batch.size=20",
                                   "--set", "fine_train_batch.size=20", "--set", "coarse_train_batch.size=20",
                                   "--set", "semi_train_sampler.per_class.k=6", "--set", "semi_train_sampler.keep_labels.k=2",
                                   "--set", "semi_train_batch.size=20", "--set", "semi_fine_train_batch.size=20"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json summary = nlohmann::json::parse(test::slurp(dir + "/s.json"));
  for (const char* key : {"val_top1", "val_group_top1", "fine_val_top1", "coarse_val_top1", "train_group_loss",
                          "semi_val_top1", "semi_val_group_top1", "semi_fine_val_top1"})
    EXPECT_TRUE(summary.contains(key)) << key;
  EXPECT_EQ(summary["semi_fine_val_samples"], 30.0);
  // The semi-supervised single head steps on every batch (60 images, 2 labelled a class).
  EXPECT_EQ(summary["stages"]["semi_fine_train"]["figures"]["train_steps"], 3.0);
  EXPECT_EQ(summary["val_group_samples"], 30.0);
  EXPECT_EQ(summary["coarse_val_samples"], 30.0);
  EXPECT_EQ(summary["train_steps"], 3.0);  // 60 images in batches of 20
}
