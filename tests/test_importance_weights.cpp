// importance_weights: the domain classifier, the weights' formula, the
// stage over hand-made batches of a joined flow (source + target), the CSV
// it writes read back by the built-in weighted sampler, and its errors.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "data_support.h"
#include "pipeline/atomic_file.h"
#include "pipeline/executor.h"
#include "pipeline/registry.h"
#include "stages/data/sampler.h"
#include "stages/model/model.h"
#include "stages/tensor/batch_data.h"
#include "stages/adapt/importance_weights.h"
#include "test_support.h"

using namespace flowrun;
using namespace flowrun::stages;

namespace {

EpochInfo first_epoch() {
  EpochInfo info;
  info.phase = "main";
  info.epochs_in_phase = 1;
  return info;
}

// A batch of a joined flow: `source` samples then `target` ones, images of
// 3 x size x size drawn around `source_mean` and `target_mean`.
Item joined_batch(const std::vector<int64_t>& source_indices, const std::vector<int64_t>& target_indices,
                  double source_mean, double target_mean, int64_t seed, int64_t size = 32) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  const int64_t ns = static_cast<int64_t>(source_indices.size()), nt = static_cast<int64_t>(target_indices.size());
  Batch batch;
  batch.images = torch::cat({torch::randn({ns, 3, size, size}) + source_mean,
                             torch::randn({nt, 3, size, size}) + target_mean});
  batch.labels = torch::cat({torch::randint(3, {ns}, torch::kLong), torch::full({nt}, -1, torch::kLong)});
  batch.indices = source_indices;
  batch.indices.insert(batch.indices.end(), target_indices.begin(), target_indices.end());
  batch.domain_counts = {ns, nt};
  Item item;
  item.set(std::move(batch));
  return item;
}

// CSV rows index -> weight (the header checked).
std::map<int64_t, double> read_csv(const std::string& path) {
  std::vector<std::string> lines = test::lines_of(path);
  EXPECT_FALSE(lines.empty());
  if (lines.empty()) return {};
  EXPECT_EQ(lines[0], "index,weight");
  std::map<int64_t, double> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> fields = test::split(lines[i]);
    EXPECT_EQ(fields.size(), 2u) << lines[i];
    EXPECT_TRUE(rows.emplace(std::stoll(fields[0]), std::stod(fields[1])).second) << "index twice: " << lines[i];
  }
  return rows;
}

// Two Gaussian blobs in 6-D: n_source around 0, n_target around (shift, 0, ...).
struct Blobs {
  torch::Tensor features, is_target;
};
Blobs blobs(int64_t n_source, int64_t n_target, double shift, uint64_t seed = 1) {
  torch::manual_seed(seed);
  torch::Tensor source = torch::randn({n_source, 6}, torch::kDouble);
  torch::Tensor target = torch::randn({n_target, 6}, torch::kDouble);
  target.select(1, 0).add_(shift);
  return {torch::cat({source, target}),
          torch::cat({torch::zeros({n_source}, torch::kBool), torch::ones({n_target}, torch::kBool)})};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// A model whose "features" are its 4-D input: no feature vector per image.
struct ImageAsFeaturesImpl : NetworkImpl {
  explicit ImageAsFeaturesImpl(int64_t classes) { fc = register_module("fc", torch::nn::Linear(3, classes)); }
  torch::Tensor forward(torch::Tensor x) override { return fc(x.mean({2, 3})); }
  torch::Tensor features(torch::Tensor x, const std::string&) override { return x; }
  torch::Tensor head(torch::Tensor f) override { return fc(f); }
  void replace_head(int64_t classes) override { fc = replace_module("fc", torch::nn::Linear(3, classes)); }
  std::vector<std::string> blocks() const override { return {"fc"}; }
  std::string block_of(const std::string&) const override { return "fc"; }
  torch::nn::Linear fc{nullptr};
};
class ImageAsFeatures : public ModelStage {
 public:
  static Schema schema() { return common_schema("test_image_as_features", "a model without features (test)"); }
  explicit ImageAsFeatures(const StageInit& init)
      : ModelStage(init, [](int64_t classes) { return Network(std::make_shared<ImageAsFeaturesImpl>(classes)); }) {}
};

}  // namespace

TEST(ImportanceWeights, WeightsAreTheFormulaOnAFixedClassifier) {
  // logit = x . (0.5, -1, 2) + 0.25 on fixed rows, by hand.
  DomainClassifier classifier;
  classifier.weight = torch::tensor({0.5, -1.0, 2.0}, torch::kDouble);
  classifier.bias = 0.25;
  torch::Tensor x = torch::tensor({0.0, 0.0, 0.0, 1.0, 2.0, 0.5, -1.0, 0.0, -3.0, 4.0, -2.0, 1.0}, torch::kDouble)
                        .reshape({4, 3});
  const std::vector<double> expected_logits = {0.25, 0.5 - 2 + 1 + 0.25, -0.5 - 6 + 0.25, 2 + 2 + 2 + 0.25};
  torch::Tensor logits = domain_logits(x, classifier);
  ASSERT_EQ(logits.numel(), 4);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(logits[i].item<double>(), expected_logits[i]) << i;
  // float32 rows give the same logits (exact here: the values are dyadic).
  EXPECT_TRUE(torch::equal(domain_logits(x.to(torch::kFloat), classifier), logits));

  // w = exp(logit) * n_source / n_target, clipped: 300 source and 100 target samples, clip [0.1, 10].
  const double prior = 300.0 / 100.0;
  torch::Tensor weights = importance_weights_from_logits(logits, prior, 0.1, 10);
  EXPECT_EQ(weights.scalar_type(), torch::kDouble);
  EXPECT_EQ(weights[0].item<double>(), std::exp(0.25) * 3);   // 3.85: within the clip
  EXPECT_EQ(weights[1].item<double>(), std::exp(-0.25) * 3);  // 2.34
  EXPECT_EQ(weights[2].item<double>(), 0.1);                  // exp(-6.25) * 3 = 0.0058: clipped up
  EXPECT_EQ(weights[3].item<double>(), 10.0);                 // exp(6.25) * 3 = 1555: clipped down
  // An uninformative classifier (logit = log of the prior odds n_target / n_source) gives 1.
  EXPECT_DOUBLE_EQ(importance_weights_from_logits(torch::full({1}, std::log(100.0 / 300.0), torch::kDouble), prior,
                                                  0.1, 10)[0].item<double>(), 1.0);
  EXPECT_EQ(importance_weights_from_logits(torch::full({1}, 1e6, torch::kDouble), prior, 0.1, 10)[0].item<double>(),
            10.0) << "an overflowing exp is clipped";
}

TEST(ImportanceWeights, TheClassifierSeparatesBlobsAndTargetLikeSourcesWeighMore) {
  Blobs b = blobs(300, 100, 3.0);
  DomainClassifier classifier = fit_domain_classifier(b.features, b.is_target, 1e-3, 200);
  EXPECT_GT(classifier.iterations, 1);
  torch::Tensor logits = domain_logits(b.features, classifier);
  const double top1 = (logits.gt(0) == b.is_target).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(top1, 0.95);
  // The shift is along column 0 alone: the classifier leans on it.
  EXPECT_GT(classifier.weight[0].item<double>(), 5 * classifier.weight.slice(0, 1).abs().max().item<double>());
  torch::Tensor weights = importance_weights_from_logits(logits.slice(0, 0, 300), 3.0, 1e-3, 1e3);
  torch::Tensor x0 = b.features.slice(0, 0, 300).select(1, 0);
  const double near_target = weights.index({x0 > 1.5}).mean().item<double>();
  const double far = weights.index({x0 < 0}).mean().item<double>();
  EXPECT_GT(near_target, 10 * far) << near_target << " vs " << far;
  // The gradient is ~0 at the fit: L-BFGS converged (not just stopped).
  DomainClassifier more = fit_domain_classifier(b.features, b.is_target, 1e-3, 400);
  EXPECT_NEAR(more.bias, classifier.bias, 1e-6);

  // Same distribution in both domains: the classifier learns little, and the
  // prior ratio correction keeps the weights near 1 (not n_target / n_source).
  Blobs same = blobs(300, 100, 0.0, 2);
  DomainClassifier flat = fit_domain_classifier(same.features, same.is_target, 1e-3, 200);
  torch::Tensor w = importance_weights_from_logits(domain_logits(same.features, flat).slice(0, 0, 300), 3.0, 0.01, 100);
  EXPECT_NEAR(w.mean().item<double>(), 1.0, 0.1);
  EXPECT_LT(w.max().item<double>(), 2.5);
}

TEST(ImportanceWeights, TheFitIsTheSameWhateverTheThreadCount) {
  Blobs b = blobs(500, 200, 1.0, 3);
  torch::Tensor f32 = b.features.to(torch::kFloat);
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  DomainClassifier one = fit_domain_classifier(f32, b.is_target, 1e-3, 100);
  torch::Tensor one_w = importance_weights_from_logits(domain_logits(f32, one), 2.5, 0.1, 10);
  at::set_num_threads(2);
  DomainClassifier two = fit_domain_classifier(f32, b.is_target, 1e-3, 100);
  torch::Tensor two_w = importance_weights_from_logits(domain_logits(f32, two), 2.5, 0.1, 10);
  at::set_num_threads(before);
  EXPECT_TRUE(torch::equal(one.weight, two.weight));
  EXPECT_EQ(one.bias, two.bias);
  EXPECT_EQ(one.iterations, two.iterations);
  EXPECT_TRUE(torch::equal(one_w, two_w)) << "bit for bit";
}

TEST(ImportanceWeights, TheStageWritesTheCsvTheWeightedSamplerReads) {
  const std::string dir = test::temp_dir(), path = dir + "/out/weights.csv";
  test::StageBench bench("source = count\nmodel = resnet depth=18 classes=3\n"
                         "iw = importance_weights path=\"" + path + "\" clip=[0.5, 2] limit_mb=4\n");
  auto& stage = dynamic_cast<ImportanceWeights&>(bench.stage("iw"));
  stage.begin_epoch(first_epoch());
  // Four batches of 5 source + 3 target samples; source index 3 comes twice
  // (a sampler with replacement); target indices are the target's own.
  int64_t emitted = 0;
  for (int64_t b = 0; b < 4; ++b) {
    std::vector<int64_t> source, target;
    for (int64_t k = 0; k < 5; ++k) source.push_back(b == 3 && k == 4 ? 3 : b * 5 + k);
    for (int64_t k = 0; k < 3; ++k) target.push_back(b * 3 + k);
    Item item = joined_batch(source, target, 0.0, 1.5, 10 + b);
    item.get<Batch>().number = b;
    item.get<Batch>().batches_in_epoch = 4;
    stage.process(item, [&](Item) { ++emitted; });
  }
  EXPECT_EQ(emitted, 4) << "batches pass on";
  EXPECT_FALSE(std::filesystem::exists(path)) << "written at the end of the pass, not before";
  stage.flush([](Item) {});

  std::map<int64_t, double> rows = read_csv(path);
  ASSERT_EQ(rows.size(), 19u) << "one row per source index (3 twice: once)";
  EXPECT_EQ(rows.begin()->first, 0);
  EXPECT_EQ(rows.rbegin()->first, 18);
  for (const auto& [index, weight] : rows) {
    EXPECT_GE(weight, 0.5) << index;
    EXPECT_LE(weight, 2.0) << index;
  }
  // Target images sit 1.5 away: the domains separate, source samples weigh
  // little and are clipped up to 0.5.
  Report report;
  stage.report(report);
  const auto& figures = report.figures();
  EXPECT_GE(figures.at("domain_classifier_top1"), 0.95);
  EXPECT_EQ(figures.at("importance_weight_min"), 0.5);
  EXPECT_LE(figures.at("importance_weight_max"), 2.0);
  EXPECT_GE(figures.at("importance_weight_mean"), 0.5);
  EXPECT_EQ(figures.at("importance_weights_written"), 19.0);
  // Atomically: through write_file_atomically, nothing left beside it.
  std::vector<std::string> written = files_written();
  EXPECT_NE(std::find(written.begin(), written.end(), path), written.end());
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir + "/out"), std::filesystem::directory_iterator()), 1);

  // The built-in weighted sampler draws the source by these weights.
  test::StageBench sampler("source = count\nsampler = weighted weights=\"" + path + "\" num_samples=4000\n");
  std::vector<int64_t> labels(19, 0);
  SampleSet set = sample_epoch(sampler, "sampler", labels, {"a"}, 0);
  ASSERT_EQ(set.indices.size(), 4000u);
  std::map<int64_t, int> drawn;
  for (int64_t index : set.indices) ++drawn[index];
  EXPECT_EQ(drawn.size(), 19u);
  double total = 0;
  for (const auto& [index, weight] : rows) total += weight;
  const auto heaviest = std::max_element(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second < b.second; });
  EXPECT_NEAR(drawn[heaviest->first] / 4000.0, heaviest->second / total, 0.03);
}

TEST(ImportanceWeights, BadInputsGiveClearErrors) {
  const std::string dir = test::temp_dir(), path = dir + "/w.csv";
  const std::string model = "source = count\nmodel = resnet depth=18 classes=3\n";
  // clip: two values, increasing, positive (at validation, with its place).
  for (const std::string clip : {"[2, 1]", "[0, 1]", "[1]", "[-1, 2]"})
    EXPECT_NE(test::errors_of(model + "iw = importance_weights path=\"w.csv\" clip=" + clip + "\n")
                  .find("stage 'iw' (importance_weights): clip must be [lo, hi] with 0 < lo < hi"),
              std::string::npos)
        << clip;
  EXPECT_THROW(importance_weights_from_logits(torch::zeros({2}, torch::kDouble), 1, 2, 1), std::invalid_argument);

  test::StageBench bench(model + "iw = importance_weights path=\"" + path + "\"\n");
  auto& stage = dynamic_cast<ImportanceWeights&>(bench.stage("iw"));
  stage.begin_epoch(first_epoch());
  // A batch of one source (a flow without a target joined).
  Item plain = joined_batch({0, 1, 2, 3}, {}, 0, 0, 1);
  plain.get<Batch>().domain_counts.clear();
  EXPECT_EQ(error_of([&] { stage.process(plain, [](Item) {}); }),
            "batch 1 has no target samples (its flow has one source); join a target source to the flow: "
            "`flow SOURCE + TARGET -> ...`");
  // A joined flow whose pass brought no target sample at all.
  Item source_only = joined_batch({0, 1, 2, 3}, {}, 0, 0, 1);
  stage.process(source_only, [](Item) {});
  EXPECT_EQ(error_of([&] { stage.flush([](Item) {}); }),
            "the pass had no target samples (4 source); join a target source to the flow: `flow SOURCE + TARGET -> ...`");
  EXPECT_FALSE(std::filesystem::exists(path));

  // Past limit_mb: 1 MiB holds 512 rows of ResNet-18's 512 float32 features.
  test::StageBench small(model + "iw = importance_weights path=\"" + path + "\" limit_mb=1\n");
  auto& limited = dynamic_cast<ImportanceWeights&>(small.stage("iw"));
  limited.begin_epoch(first_epoch());
  auto batch_of = [](int64_t first, int64_t n) {
    std::vector<int64_t> source, target;
    for (int64_t i = 0; i < n; ++i) (i % 2 ? target : source).push_back(first + i);
    return joined_batch(source, target, 0, 1, first, 16);
  };
  Item first = batch_of(0, 300), second = batch_of(300, 300);
  limited.process(first, [](Item) {});
  EXPECT_EQ(error_of([&] { limited.process(second, [](Item) {}); }),
            "the features of the pass would pass limit_mb=1 (300 samples of 512 features kept so far, 512 fit); "
            "raise limit_mb or sample fewer (a subset sampler)");

  // A model whose backbone gives no feature vector.
  static const bool registered = [] {
    Registry::global().add<ImageAsFeatures>();
    return true;
  }();
  (void)registered;
  test::StageBench flat("source = count\nmodel = test_image_as_features classes=3\n"
                        "iw = importance_weights path=\"" + path + "\"\n");
  auto& no_features = dynamic_cast<ImportanceWeights&>(flat.stage("iw"));
  no_features.begin_epoch(first_epoch());
  Item batch = joined_batch({0, 1}, {0, 1}, 0, 1, 2);
  EXPECT_EQ(error_of([&] { no_features.process(batch, [](Item) {}); }),
            "model 'model' gives no features [N, D] for its images (got 4 dimensions); it needs a model whose "
            "backbone gives a feature vector per image");
}

TEST(ImportanceWeights, InARunTheErrorNamesTheStage) {
  // A flow of one source: the engine's message names the stage, as every stage error.
  const std::string root = test::make_jpeg_folder({"a", "b"}, 2, 24, 24), dir = test::temp_dir();
  const std::string text = "run epochs=1 compute_threads=1\nsrc = imagefolder root=\"" + root + "\"\n"
                           "prep = decode | resize size=16 | center_crop size=16 | normalize\nbatch = batch size=4\n"
                           "iw = importance_weights path=\"" + dir + "/w.csv\"\nflow src -> prep -> batch -> iw\n"
                           "model = resnet depth=18 classes=2\n";
  RunOptions options;
  options.threads = 2;
  const std::string message = error_of([&] { run_graph(test::resolve_text(text), options); });
  EXPECT_EQ(message.rfind("stage 'iw' (importance_weights): batch 1 has no target samples (its flow has one source); "
                          "join a target source to the flow: `flow SOURCE + TARGET -> ...`", 0),
            0u)
      << message;
}
