// Samplers: which samples an epoch visits and in what order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "data_support.h"
#include "pipeline/registry.h"
#include "stages/data/sampler.h"
#include "test_support.h"

using namespace flowrun;
using flowrun::stages::SampleSet;

namespace {

// 1,000 samples in 10 classes of 100 (label = index % 10).
std::vector<int64_t> labels_1000() {
  std::vector<int64_t> labels(1000);
  for (int i = 0; i < 1000; ++i) labels[i] = i % 10;
  return labels;
}
std::vector<std::string> names_10() {
  std::vector<std::string> names;
  for (int i = 0; i < 10; ++i) names.push_back("c" + std::to_string(i));
  return names;
}

SampleSet sample(const std::string& sampler_line, int epoch = 0, uint64_t seed = 0,
                 std::vector<int64_t> labels = labels_1000()) {
  test::StageBench bench("source = count\nsampler = " + sampler_line + "\n", seed);
  return stages::sample_epoch(bench, "sampler", std::move(labels), names_10(), epoch);
}

std::set<int64_t> as_set(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST(Samplers, NoSamplerVisitsAllInOrder) {
  test::StageBench bench("source = count\n");
  SampleSet set = stages::sample_epoch(bench, "", labels_1000(), names_10(), 3);
  ASSERT_EQ(set.indices.size(), 1000u);
  EXPECT_TRUE(std::is_sorted(set.indices.begin(), set.indices.end()));
  EXPECT_THROW(stages::sample_epoch(bench, "nope", labels_1000(), names_10(), 0), std::runtime_error);
}

TEST(Samplers, ShuffleIsAPermutationPerEpochAndSeed) {
  SampleSet a = sample("shuffle", 0), b = sample("shuffle", 0), c = sample("shuffle", 1), d = sample("shuffle", 0, 7);
  EXPECT_EQ(a.indices, b.indices);  // same seed, same epoch
  EXPECT_NE(a.indices, c.indices);  // a new order each epoch
  EXPECT_NE(a.indices, d.indices);  // and per seed
  EXPECT_EQ(as_set(a.indices).size(), 1000u);
  EXPECT_FALSE(std::is_sorted(a.indices.begin(), a.indices.end()));
  EXPECT_NE(sample("shuffle seed=5", 0, 0).indices, a.indices);  // its own seed wins over the run's
  EXPECT_EQ(sample("shuffle seed=5", 0, 0).indices, sample("shuffle seed=5", 0, 99).indices);
}

TEST(Samplers, SubsetIsFixedAcrossEpochsAndKeepsOrder) {
  SampleSet a = sample("subset fraction=0.04", 0), b = sample("subset fraction=0.04", 5);
  EXPECT_EQ(a.indices.size(), 40u);
  EXPECT_EQ(a.indices, b.indices);
  EXPECT_TRUE(std::is_sorted(a.indices.begin(), a.indices.end()));
  EXPECT_EQ(sample("subset count=7 fraction=0.5").indices.size(), 7u);
  EXPECT_NE(sample("subset fraction=0.04", 0, 1).indices, a.indices);
}

TEST(Samplers, SplitPartsAreDisjointAndComplete) {
  SampleSet train = sample("subset fraction=0.04 | split val_fraction=0.2 part=train");
  SampleSet val = sample("subset fraction=0.04 | split val_fraction=0.2 part=val");
  SampleSet subset = sample("subset fraction=0.04");
  EXPECT_EQ(train.indices.size(), 32u);
  EXPECT_EQ(val.indices.size(), 8u);
  std::set<int64_t> t = as_set(train.indices), v = as_set(val.indices), all = as_set(subset.indices);
  for (int64_t i : v) EXPECT_FALSE(t.count(i)) << i;
  std::set<int64_t> joined = t;
  joined.insert(v.begin(), v.end());
  EXPECT_EQ(joined, all);
  // The same split every epoch, even with a shuffle after it.
  SampleSet later = sample("subset fraction=0.04 | split val_fraction=0.2 part=train | shuffle", 4);
  EXPECT_EQ(as_set(later.indices), t);
}

TEST(Samplers, StratifiedSplitKeepsClassShares) {
  SampleSet val = sample("split val_fraction=0.1 part=val stratified=true");
  std::map<int64_t, int> per_class;
  for (int64_t i : val.indices) ++per_class[val.labels[i]];
  ASSERT_EQ(per_class.size(), 10u);
  for (const auto& [label, count] : per_class) EXPECT_EQ(count, 10) << label;
}

TEST(Samplers, PerClassTakesKOfEveryClass) {
  SampleSet set = sample("per_class k=5");
  std::map<int64_t, int> per_class;
  for (int64_t i : set.indices) ++per_class[set.labels[i]];
  ASSERT_EQ(per_class.size(), 10u);
  for (const auto& [label, count] : per_class) EXPECT_EQ(count, 5);
  EXPECT_EQ(set.indices, sample("per_class k=5", 3).indices);  // fixed across epochs
  // A class with fewer than k samples gives all it has.
  std::vector<int64_t> labels = labels_1000();
  for (auto& label : labels)
    if (label == 3) label = 4;
  labels[3] = 3;
  SampleSet few = sample("per_class k=5", 0, 0, labels);
  EXPECT_EQ(std::count_if(few.indices.begin(), few.indices.end(), [&](int64_t i) { return few.labels[i] == 3; }), 1);
}

TEST(Samplers, ClassesKeepsAndRelabels) {
  SampleSet set = sample("classes names=[c7, c2]");
  EXPECT_EQ(set.class_names, (std::vector<std::string>{"c7", "c2"}));
  EXPECT_EQ(set.indices.size(), 200u);
  for (int64_t i : set.indices) EXPECT_EQ(set.labels[i], i % 10 == 7 ? 0 : 1);
  SampleSet by_id = sample("classes ids=[7, 2]");
  EXPECT_EQ(by_id.indices, set.indices);
  EXPECT_THROW(sample("classes names=[c11]"), std::runtime_error);
  EXPECT_THROW(sample("classes ids=[3, 3]"), std::runtime_error);
  EXPECT_EQ(test::errors_of("source = count\ns = classes\n"),
            "test.graph:2:5: error: stage 's' (classes): give exactly one of names=[...] or ids=[...]\n");
}

TEST(Samplers, BalancedEqualisesClasses) {
  std::vector<int64_t> labels(300);
  for (int i = 0; i < 300; ++i) labels[i] = i < 200 ? 0 : i < 290 ? 1 : 2;  // 200, 90, 10
  for (const char* mode : {"over", "under"}) {
    SampleSet set = sample(std::string("balanced mode=") + mode, 0, 0, labels);
    std::map<int64_t, int> per_class;
    for (int64_t i : set.indices) ++per_class[set.labels[i]];
    int expected = std::string(mode) == "over" ? 200 : 10;
    for (const auto& [label, count] : per_class) EXPECT_EQ(count, expected) << mode << " " << label;
  }
  EXPECT_NE(sample("balanced", 0, 0, labels).indices, sample("balanced", 1, 0, labels).indices);
}

TEST(Samplers, ShardsPartitionLikeDistributedSampler) {
  // PyTorch's DistributedSampler (the oracle) rank by rank: which rank gets
  // which position of the epoch's order, and the padding that evens the
  // ranks out (wrapping round to the start, more than once when world > n).
  const std::vector<std::pair<size_t, int>> cases = {{10, 3}, {12, 4}, {7, 4}, {2, 5}, {1, 3}};
  std::string command = FLOWRUN_ORACLE_PYTHON " '" FLOWRUN_SOURCE_DIR "/tests/oracle/distributed_sampler.py'";
  for (auto [n, world] : cases) command += " " + std::to_string(n) + ":" + std::to_string(world);
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  while (pipe && fgets(buffer, sizeof buffer, pipe)) out += buffer;
  ASSERT_TRUE(pipe && pclose(pipe) == 0 && !out.empty()) << "oracle failed: " << command;
  const auto oracle = nlohmann::json::parse(out).get<std::vector<std::vector<std::vector<int64_t>>>>();
  ASSERT_EQ(oracle.size(), cases.size());
  for (size_t k = 0; k < cases.size(); ++k) {
    const auto [n, world] = cases[k];
    std::vector<int64_t> labels(n, 0);
    // The order shard cuts: a shuffled one, so positions and indices differ.
    const std::vector<int64_t> order = sample("shuffle", 1, 4, labels).indices;
    ASSERT_EQ(order.size(), n);
    const auto& expected = oracle[k];
    ASSERT_EQ(expected.size(), static_cast<size_t>(world));
    for (int rank = 0; rank < world; ++rank) {
      std::vector<int64_t> want;
      for (int64_t position : expected[rank]) want.push_back(order.at(position));
      SampleSet set = sample("shuffle | shard rank=" + std::to_string(rank) + " world=" + std::to_string(world), 1, 4,
                             labels);
      EXPECT_EQ(set.indices, want) << "n=" << n << " world=" << world << " rank=" << rank;
      // The repeats are the positions past n of the padded order (evaluation skips them).
      int64_t repeats = 0;
      for (size_t i = 0; i < expected[rank].size(); ++i)
        repeats += static_cast<size_t>(rank) + i * static_cast<size_t>(world) >= n;
      EXPECT_EQ(set.padded, repeats) << "n=" << n << " world=" << world << " rank=" << rank;
    }
  }
  EXPECT_EQ(test::errors_of("source = count\ns = shard rank=3 world=3\n"),
            "test.graph:2:5: error: stage 's' (shard): rank must be below world\n");
}

TEST(Samplers, SameSeedSameOrderWhateverTheThreadThatAsks) {
  // Order is a pure function of (seed, epoch): ask from several threads at once.
  std::vector<std::vector<int64_t>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] { results[t] = sample("subset fraction=0.5 | shuffle", 2, 11).indices; });
  for (auto& thread : threads) thread.join();
  for (int t = 1; t < 4; ++t) EXPECT_EQ(results[t], results[0]);
}

// `weighted` (WeightedRandomSampler from a CSV), built in since it reads
// the file an earlier phase's importance_weights writes.
namespace {
std::vector<int64_t> labels_30() {  // 30 samples of 3 classes: label = index % 3
  std::vector<int64_t> labels;
  for (int i = 0; i < 30; ++i) labels.push_back(i % 3);
  return labels;
}
const std::vector<std::string> kAbc = {"a", "b", "c"};
std::string weighted_line(const std::string& file, const std::string& more = "") {
  return "source = count\nsampler = weighted weights=\"" + file + "\"" + (more.empty() ? "" : " " + more) + "\n";
}
std::string sampling_error(test::StageBench& bench, int epoch = 0) {
  try {
    stages::sample_epoch(bench, "sampler", labels_30(), kAbc, epoch);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Samplers, WeightedDrawsByTheCsvWeights) {
  std::string dir = test::temp_dir();
  std::ofstream(dir + "/classes.csv") << "class,weight\na,1\nb,3\n";  // c leaves out: weight 0
  std::ofstream(dir + "/samples.csv") << "index,weight\n2,1\n5,0\n7,2.5\n";
  const std::vector<int64_t> labels = labels_30();

  test::StageBench by_class(weighted_line(dir + "/classes.csv", "num_samples=8000"));
  SampleSet set = stages::sample_epoch(by_class, "sampler", labels, kAbc, 0);
  ASSERT_EQ(set.indices.size(), 8000u);
  std::map<int64_t, int> per_class;
  for (int64_t index : set.indices) ++per_class[labels[static_cast<size_t>(index)]];
  EXPECT_EQ(per_class[2], 0);
  // b weighs three times a: 6000 +- 4.5 sd (sd = sqrt(8000 * 0.75 * 0.25) = 38.7).
  EXPECT_NEAR(per_class[1], 6000, 175);
  EXPECT_EQ(stages::sample_epoch(by_class, "sampler", labels, kAbc, 0).indices, set.indices) << "same seed, same draws";
  EXPECT_NE(stages::sample_epoch(by_class, "sampler", labels, kAbc, 1).indices, set.indices) << "each epoch draws again";

  test::StageBench by_sample(weighted_line(dir + "/samples.csv", "replacement=false num_samples=2"));
  SampleSet two = stages::sample_epoch(by_sample, "sampler", labels, kAbc, 0);
  std::sort(two.indices.begin(), two.indices.end());
  EXPECT_EQ(two.indices, (std::vector<int64_t>{2, 7})) << "without replacement: the two samples that weigh anything";
  // num_samples=0: as many as are in use; only the weighted ones are drawn.
  test::StageBench all(weighted_line(dir + "/samples.csv"));
  SampleSet drawn = stages::sample_epoch(all, "sampler", labels, kAbc, 0);
  EXPECT_EQ(drawn.indices.size(), 30u);
  EXPECT_EQ(as_set(drawn.indices), (std::set<int64_t>{2, 7}));
}

TEST(Samplers, WeightedFileErrorsNameFileAndLine) {
  std::string dir = test::temp_dir();
  auto error_of = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    test::StageBench bench(weighted_line(dir + "/" + name));  // built without reading the file
    return sampling_error(bench);
  };
  EXPECT_EQ(error_of("bad.csv", "class,weight\na,1\nb,-2\n"), dir + "/bad.csv:3: weight '-2' is not a finite number >= 0");
  EXPECT_EQ(error_of("header.csv", "name,weight\na,1\n"),
            dir + "/header.csv:1: the header must be 'index,weight' or 'class,weight'");
  EXPECT_EQ(error_of("nocomma.csv", "index,weight\n\n3 4\n"), dir + "/nocomma.csv:3: expected KEY,WEIGHT");
  EXPECT_EQ(error_of("index.csv", "index,weight\n1,1\n-4,1\n"), dir + "/index.csv:3: index '-4' is not a dataset index");
  EXPECT_EQ(error_of("twice.csv", "index,weight\n1,1\n1,2\n"), dir + "/twice.csv:3: '1' appears twice");
  EXPECT_EQ(error_of("nan.csv", "index,weight\n1,nan\n"), dir + "/nan.csv:2: weight 'nan' is not a finite number >= 0");
  EXPECT_EQ(error_of("empty.csv", ""),
            dir + "/empty.csv: empty weights file (expected a header 'index,weight' or 'class,weight')");
  EXPECT_EQ(error_of("unknown.csv", "class,weight\nzebra,1\n"), dir + "/unknown.csv:2: class 'zebra' is not in the dataset");
  EXPECT_EQ(error_of("beyond.csv", "index,weight\n0,1\n30,1\n"), dir + "/beyond.csv:3: index 30 is beyond the dataset's 30 samples");
  EXPECT_EQ(error_of("zero.csv", "index,weight\n1,0\n"), dir + "/zero.csv: every sample in use weighs 0");
}

TEST(Samplers, WeightedReadsItsFileWhenAnEpochFirstSamples) {
  std::string dir = test::temp_dir();
  const std::string file = dir + "/weights.csv";
  // Built before the file exists (a first phase writes it): no error until it samples.
  test::StageBench bench(weighted_line(file, "num_samples=200"));
  EXPECT_EQ(sampling_error(bench), "sampler 'sampler' (weighted): weights=" + file +
                                       ": no such file (a stage that writes it, such as importance_weights, must run "
                                       "in an earlier phase)");
  std::ofstream(file) << "index,weight\n4,1\n";
  EXPECT_EQ(as_set(stages::sample_epoch(bench, "sampler", labels_30(), kAbc, 0).indices), (std::set<int64_t>{4}));
  // Rewritten between epochs (a later phase, another importance pass): the new weights are used...
  std::ofstream(file) << "index,weight\n9,1\n11,1\n";
  EXPECT_EQ(as_set(stages::sample_epoch(bench, "sampler", labels_30(), kAbc, 1).indices), (std::set<int64_t>{9, 11}));
  // ...and within an epoch the file read at its first draw (every source of the epoch samples alike).
  std::ofstream(file) << "index,weight\n20,1\n";
  EXPECT_EQ(as_set(stages::sample_epoch(bench, "sampler", labels_30(), kAbc, 1).indices), (std::set<int64_t>{9, 11}));
  EXPECT_EQ(as_set(stages::sample_epoch(bench, "sampler", labels_30(), kAbc, 2).indices), (std::set<int64_t>{20}));
  // A relative weights= resolves against the graph's folder, as every path parameter.
  EXPECT_EQ(test::resolve_text("source = count\ns = weighted weights=\"w.csv\"\n", {}, dir + "/g.graph")
                .phases.front().find("s")->ops.front().params.get_string("weights"),
            dir + "/w.csv");
}

TEST(Samplers, WeightedIsBuiltIn) {
  const StageType* type = Registry::global().find("weighted");
  ASSERT_NE(type, nullptr);
  EXPECT_EQ(type->origin, "built-in");
  EXPECT_EQ(type->schema.kind(), StageKind::Component);
}
