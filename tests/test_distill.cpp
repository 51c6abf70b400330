// Knowledge distillation (stages/train/distill.h): Hinton et al.'s loss and
// RKD's distance and angle losses against their formulas computed by hand in
// doubles, a frozen teacher (its weights bit-identical after training), the
// teacher's outputs cached on a flow without randomness (the same student as
// without the cache), and the errors of graphs that cannot distil.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>

#include "data_support.h"
#include "pipeline/executor.h"
#include "stages/model/model.h"
#include "stages/model/weights.h"
#include "stages/train/distill.h"
#include "test_support.h"
#include <nlohmann/json.hpp>

using namespace flowrun;
using namespace flowrun::stages;

namespace {

using Matrix = std::vector<std::vector<double>>;

torch::Tensor tensor_of(const Matrix& x) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(x.size()), static_cast<int64_t>(x[0].size())});
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t j = 0; j < x[0].size(); ++j) t[i][j] = x[i][j];
  return t;
}

Matrix matrix_of(const torch::Tensor& t) {
  const torch::Tensor d = t.to(torch::kDouble).contiguous();
  Matrix x(static_cast<size_t>(d.size(0)), std::vector<double>(static_cast<size_t>(d.size(1))));
  for (size_t i = 0; i < x.size(); ++i)
    for (size_t j = 0; j < x[0].size(); ++j) x[i][j] = d[i][j].item<double>();
  return x;
}

// softmax(row / T) and its logarithm, in doubles.
std::vector<double> log_softmax_of(const std::vector<double>& row, double t) {
  double top = -1e300;
  for (double v : row) top = std::max(top, v / t);
  double sum = 0;
  for (double v : row) sum += std::exp(v / t - top);
  std::vector<double> out;
  for (double v : row) out.push_back(v / t - top - std::log(sum));
  return out;
}

// KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T^2:
// sum over samples and classes of p_t (log p_t - log p_s), over N, times T^2.
double kd_by_hand(const Matrix& s, const Matrix& t, double temperature) {
  double sum = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto log_ps = log_softmax_of(s[i], temperature), log_pt = log_softmax_of(t[i], temperature);
    for (size_t c = 0; c < s[i].size(); ++c) sum += std::exp(log_pt[c]) * (log_pt[c] - log_ps[c]);
  }
  return sum / static_cast<double>(s.size()) * temperature * temperature;
}

double ce_by_hand(const Matrix& s, const std::vector<int64_t>& y) {
  double sum = 0;
  for (size_t i = 0; i < s.size(); ++i) sum -= log_softmax_of(s[i], 1)[static_cast<size_t>(y[i])];
  return sum / static_cast<double>(s.size());
}

double smooth_l1(double x) { return std::abs(x) < 1 ? 0.5 * x * x : std::abs(x) - 0.5; }

double distance(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (size_t k = 0; k < a.size(); ++k) sum += (a[k] - b[k]) * (a[k] - b[k]);
  return std::sqrt(sum);
}

// psi_D(e_i, e_j) = |e_i - e_j| / mu, mu the mean over the pairs i != j.
Matrix psi_d(const Matrix& e) {
  const size_t n = e.size();
  double mu = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      if (i != j) mu += distance(e[i], e[j]);
  mu /= static_cast<double>(n * (n - 1));
  Matrix d(n, std::vector<double>(n, 0));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) d[i][j] = i == j ? 0 : distance(e[i], e[j]) / mu;
  return d;
}

// psi_A(e_i, e_j, e_k) = cos of the angle at e_j = <unit(e_i - e_j), unit(e_k - e_j)>, 0 when degenerate.
double psi_a(const Matrix& e, size_t i, size_t j, size_t k) {
  if (i == j || k == j) return 0;
  double dot = 0;
  for (size_t c = 0; c < e[0].size(); ++c) dot += (e[i][c] - e[j][c]) * (e[k][c] - e[j][c]);
  return dot / (distance(e[i], e[j]) * distance(e[k], e[j]));
}


}  // namespace

TEST(Distill, TheSoftLossIsKLDivBatchmeanTimesTSquared) {
  const Matrix s = {{1.0, -0.5, 2.0, 0.25}, {0.0, 3.0, -1.0, 0.5}, {-2.0, 0.5, 0.5, 1.5}};
  const Matrix t = {{2.0, 0.0, 1.0, -1.0}, {0.5, 2.5, 0.0, 0.0}, {-1.0, -1.0, 3.0, 0.25}};
  for (double temperature : {1.0, 2.0, 4.0}) {
    const double expected = kd_by_hand(s, t, temperature);
    EXPECT_NEAR(kd_soft_loss(tensor_of(s), tensor_of(t), temperature).item<double>(), expected, 1e-6 * expected)
        << "T = " << temperature;
  }
  // Identical logits: no soft loss.
  EXPECT_NEAR(kd_soft_loss(tensor_of(s), tensor_of(s), 3.0).item<double>(), 0.0, 1e-6);
}

// The stage's loss: alpha * the soft loss against its teacher's logits on
// the batch's images + (1 - alpha) * cross-entropy with the labels.
TEST(Distill, TheStagesLossBlendsTheSoftLossWithCrossEntropy) {
  // fp32: the hand formula takes the teacher's fp32 logits (precision=auto is bf16 on CPUs with AVX512_BF16).
  test::StageBench bench("source = count\nteacher = resnet depth=18 classes=4 precision=fp32\n"
                         "student = resnet depth=18 classes=4 precision=fp32\n"
                         "kd = distill teacher=teacher temperature=3 alpha=0.7\n");
  auto& kd = static_cast<Distill&>(bench.stage("kd"));
  ModelStage& teacher = find_model(bench, "teacher");
  ModelStage& student = find_model(bench, "student");
  LossPhase phase;
  phase.train = "train";
  phase.phase = "main";
  phase.epochs = 2;
  phase.model = &student;
  phase.inputs_repeat = false;
  kd.begin_phase(phase);
  kd.begin_epoch(EpochInfo{});
  torch::manual_seed(11);
  const torch::Tensor images = torch::randn({5, 3, 32, 32});
  const Matrix t = matrix_of(teacher.infer_logits(images));  // eval mode, no gradients
  const Matrix s = {{1, 0, -1, 2}, {0.5, 0.5, 3, -2}, {-1, 2, 0, 0}, {0, 0, 0, 1}, {2, -1, 1, -0.5}};
  const std::vector<int64_t> y = {3, 2, 1, 0, 0};
  const std::vector<int64_t> indices = {10, 11, 12, 13, 14};
  LossContext context;
  context.logits = tensor_of(s).requires_grad_();
  context.labels = torch::tensor(y, torch::kLong);
  context.images = images;
  context.indices = &indices;
  context.model = &student;
  const double expected = 0.7 * kd_by_hand(s, t, 3.0) + 0.3 * ce_by_hand(s, y);
  torch::Tensor loss = kd.batch_loss(context);
  EXPECT_NEAR(loss.item<double>(), expected, 1e-5 * expected);
  loss.backward();
  EXPECT_TRUE(context.logits.grad().defined());
  for (const auto& p : teacher.net()->parameters()) EXPECT_FALSE(p.grad().defined()) << "the teacher gets no gradient";
  const auto figures = kd.epoch_figures();
  EXPECT_NEAR(figures.at("kd_loss"), 0.7 * kd_by_hand(s, t, 3.0), 1e-5);
  EXPECT_NEAR(figures.at("kd_ce_loss"), 0.3 * ce_by_hand(s, y), 1e-5);
  EXPECT_FALSE(figures.count("rkd_distance_loss"));
}

TEST(Distill, RkdDistanceAndAngleLossesAreThePapersFormulas) {
  // Student and teacher embeddings of 4 samples, of other widths (the teacher's 2, the student's 3).
  const Matrix s = {{1, 0, 2}, {0, 1, -1}, {2, 2, 0.5}, {-1, 0.5, 1}};
  const Matrix t = {{0, 0}, {3, 1}, {1, 2}, {-1, 4}};
  const size_t n = s.size();
  const Matrix ds = psi_d(s), dt = psi_d(t);
  double distance_sum = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) distance_sum += smooth_l1(ds[i][j] - dt[i][j]);
  const double expected_distance = distance_sum / static_cast<double>(n * n);
  double angle_sum = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      for (size_t k = 0; k < n; ++k) angle_sum += smooth_l1(psi_a(s, i, j, k) - psi_a(t, i, j, k));
  const double expected_angle = angle_sum / static_cast<double>(n * n * n);
  ASSERT_GT(expected_distance, 1e-3);
  ASSERT_GT(expected_angle, 1e-3);
  EXPECT_NEAR(rkd_distance_loss(tensor_of(s), tensor_of(t)).item<double>(), expected_distance, 1e-5 * expected_distance);
  EXPECT_NEAR(rkd_angle_loss(tensor_of(s), tensor_of(t)).item<double>(), expected_angle, 1e-5 * expected_angle);
  // A scaled copy has the same relations: no loss.
  EXPECT_NEAR(rkd_distance_loss(tensor_of(s) * 3, tensor_of(s)).item<double>(), 0, 1e-6);
  EXPECT_NEAR(rkd_angle_loss(tensor_of(s) * 3, tensor_of(s)).item<double>(), 0, 1e-6);
  // Finite gradients, two samples coinciding included.
  Matrix twice = s;
  twice[1] = twice[0];
  torch::Tensor student = tensor_of(twice).requires_grad_();
  (rkd_distance_loss(student, tensor_of(t)) + rkd_angle_loss(student, tensor_of(t))).backward();
  EXPECT_TRUE(torch::isfinite(student.grad()).all().item<bool>()) << student.grad();
}

namespace {

// A ResNet-18 student taught by a ResNet-18 teacher (weights from a file)
// on 12 Fashion-MNIST images of 3 classes; `aug` before normalize.
std::string distill_graph(const std::string& dir, const std::string& kd, const std::string& aug) {
  return "run seed=4 in_flight=64 compute_threads=2\n"  // pinned: runs compared bit for bit take one sum order
         "src = idx part=train sampler=src_sampler\n"
         "src_sampler = classes names=[Shirt, Sneaker, Bag] | per_class k=4\n"
         "prep = " + aug + "\n"
         "norm = normalize stats=custom mean=[0.286] std=[0.353]\n"
         "batch = batch size=4\n"
         "train = train model=model optimizer=optim loss=kd\n"
         "flow src -> prep -> norm -> batch -> train\n"
         "model = resnet depth=18 classes=3\n"
         "teacher = resnet depth=18 classes=3 weights=\"" + dir + "/teacher.safetensors\"\n"
         "kd = distill teacher=teacher " + kd + "\n"
         "optim = adam lr=1e-3\n"
         "save = save_weights model=model path=\"student.safetensors\"\n"
         "save_teacher = save_weights model=teacher path=\"teacher_after.safetensors\"\n"
         "phase main epochs=3 { }\n";
}

// The teacher's weights, from a ResNet-18 of its own seed.
void write_teacher(const std::string& dir) {
  test::StageBench bench("source = count\nteacher = resnet depth=18 classes=3\n", 99);
  std::string bytes;
  find_model(bench, "teacher").save_state(bytes);
  std::ofstream(dir + "/teacher.safetensors", std::ios::binary) << bytes;
}

// The teacher's weights after the run go to DIR/NAME_teacher.safetensors.
test::CommandResult run_in(const std::string& dir, const std::string& graph, const std::string& name,
                           std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--log-level", "info", "--set",
                                   "save_teacher.path=" + dir + "/" + name + "_teacher.safetensors"};
  args.insert(args.end(), extra.begin(), extra.end());
  return test::run_in(dir, graph, name, args);
}

using test::summary_of;

}  // namespace

// After training with KD and RKD on an augmenting flow: the teacher's
// weights and BatchNorm statistics are bit-identical, its outputs were
// computed every batch, and the figures are there.
TEST(Distill, TheTeacherStaysBitIdenticalAndTheFiguresAreReported) {
  const std::string dir = test::temp_dir();
  write_teacher(dir);
  const std::string graph = test::write_graph(
      dir, "kd.graph",
      distill_graph(dir, "temperature=4 alpha=0.9 rkd_distance=25 rkd_angle=50",
                    "resize size=32 | random_crop size=32 padding=4 mode=reflect | hflip"));
  auto result = run_in(dir, graph, "kd");
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const StateDict before = read_weights(dir + "/teacher.safetensors");
  std::map<std::string, torch::Tensor> after;
  for (const auto& [key, tensor] : read_weights(dir + "/kd_teacher.safetensors")) after[key] = tensor;
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [key, tensor] : before) {
    ASSERT_TRUE(after.count(key)) << key;
    EXPECT_TRUE(torch::equal(tensor, after[key])) << key << " changed";
  }
  // The student did train.
  const StateDict student = read_weights(dir + "/kd.safetensors");
  EXPECT_FALSE(torch::equal(student.front().second, before.front().second));
  const nlohmann::json summary = summary_of(dir + "/kd");
  EXPECT_EQ(summary["train_steps"], 9);
  EXPECT_EQ(summary["teacher_batches"], 9);
  EXPECT_EQ(summary["teacher_cached_batches"], 0);  // random_crop and hflip: every batch
  for (const char* figure : {"kd_loss", "kd_ce_loss", "rkd_distance_loss", "rkd_angle_loss"}) {
    ASSERT_TRUE(summary.contains(figure)) << figure << summary.dump();
    EXPECT_GT(summary[figure].get<double>(), 0) << figure;
  }
  // The figures add up to the train loss (weights included).
  EXPECT_NEAR(summary["kd_loss"].get<double>() + summary["kd_ce_loss"].get<double>() +
                  summary["rkd_distance_loss"].get<double>() + summary["rkd_angle_loss"].get<double>(),
              summary["train_loss"].get<double>(), 1e-4);
  const std::string metrics = test::slurp(dir + "/kd/metrics.csv");
  for (const char* figure : {"kd_loss", "rkd_distance_loss", "rkd_angle_loss"})
    EXPECT_NE(metrics.find(figure), std::string::npos) << figure;
  EXPECT_NE(result.out.find("kd_loss"), std::string::npos) << result.out;
  EXPECT_NE(result.err.find("computed every batch: stage 'prep' (random_crop) draws new random augmentations"),
            std::string::npos)
      << result.err;
}

// A flow without randomness: the teacher's outputs are computed in the
// first epoch and reused in the two others, and the student ends as without
// the cache, bit for bit.
TEST(Distill, CachedTeacherOutputsGiveTheSameStudent) {
  const std::string dir = test::temp_dir();
  write_teacher(dir);
  const std::string graph =
      test::write_graph(dir, "kd.graph", distill_graph(dir, "temperature=2 alpha=0.5 rkd_distance=25", "resize size=32"));
  auto cached = run_in(dir, graph, "cached");
  ASSERT_EQ(cached.exit_code, 0) << cached.err;
  auto uncached = run_in(dir, graph, "uncached", {"--set", "kd.cache=off"});
  ASSERT_EQ(uncached.exit_code, 0) << uncached.err;
  const nlohmann::json a = summary_of(dir + "/cached"), b = summary_of(dir + "/uncached");
  EXPECT_EQ(a["teacher_batches"], 9);
  EXPECT_EQ(a["teacher_cached_batches"], 6);  // epochs 2 and 3
  EXPECT_EQ(b["teacher_cached_batches"], 0);
  EXPECT_NE(cached.err.find("outputs cached: nothing before 'train' is random"), std::string::npos) << cached.err;
  EXPECT_EQ(test::slurp(dir + "/cached.safetensors"), test::slurp(dir + "/uncached.safetensors"));
  for (const char* key : {"train_loss", "kd_loss", "kd_ce_loss", "rkd_distance_loss"}) EXPECT_EQ(a[key], b[key]) << key;
  // cache=on where the flow is random cannot cache: an error saying why.
  const std::string random = test::write_graph(
      dir, "random.graph", distill_graph(dir, "cache=on", "resize size=32 | hflip"));
  auto refused = run_in(dir, random, "refused");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("distill 'kd': cache=on, but in phase 'main' stage 'prep' (hflip) draws new random "
                             "augmentations every epoch"),
            std::string::npos)
      << refused.err;
}

TEST(Distill, GraphsThatCannotDistilAreClearErrors) {
  const std::string base = "src = idx part=train sampler=s\n"
                           "s = classes names=[Shirt, Sneaker, Bag] | per_class k=2\n"
                           "prep = resize size=32 | normalize\n"
                           "batch = batch size=3\n"
                           "train = train model=model loss=kd\n"
                           "flow src -> prep -> batch -> train\n"
                           "model = resnet depth=18 classes=3\n"
                           "optim = adam\n";
  // Each is an error of the graph, said at --check, at the distill stage's place.
  // Another class count: both named, with their lines.
  std::string error = test::errors_of(base + "teacher = resnet depth=18 classes=10\nkd = distill teacher=teacher\n");
  EXPECT_EQ(error, "test.graph:10:6: error: stage 'kd' (distill): teacher 'teacher' (test.graph:9) has 10 classes but "
                   "the student 'model' (test.graph:7) that 'train' trains has 3: distillation matches their outputs "
                   "class for class\n");
  // The student itself.
  error = test::errors_of(base + "kd = distill teacher=model\n");
  EXPECT_EQ(error, "test.graph:9:6: error: stage 'kd' (distill): teacher='model' is the student itself: 'train' "
                   "(test.graph:5) trains model 'model' with this loss; the teacher is another, trained model stage\n");
  // Trained by another train stage in the phase it teaches in.
  error = test::errors_of(base + "teacher = resnet depth=18 classes=3\nkd = distill teacher=teacher\n"
                                 "train2 = train model=teacher optimizer=optim loss=\"\"\n"
                                 "src2 = idx part=train sampler=s\nbatch2 = batch size=3\nprep2 = resize size=32 | normalize\n"
                                 "flow src2 -> prep2 -> batch2 -> train2\n");
  EXPECT_NE(error.find("test.graph:10:6: error: stage 'kd' (distill): its teacher 'teacher' is trained by 'train2' "
                       "(test.graph:11)"), std::string::npos)
      << error;
  // T <= 0 and alpha outside [0, 1]: at validation, where they were written.
  const std::string teacher = base + "teacher = resnet depth=18 classes=3\n";
  EXPECT_NE(test::errors_of(teacher + "kd = distill teacher=teacher temperature=0\n")
                .find("test.graph:10:6: error: stage 'kd' (distill): temperature must be above 0"),
            std::string::npos)
      << test::errors_of(teacher + "kd = distill teacher=teacher temperature=0\n");
  const std::string negative = test::errors_of(teacher + "kd = distill teacher=teacher temperature=-2\n");
  EXPECT_NE(negative.find("test.graph:10:"), std::string::npos) << negative;
  EXPECT_NE(negative.find("temperature"), std::string::npos) << negative;
  const std::string alpha = test::errors_of(teacher + "kd = distill teacher=teacher alpha=1.5\n");
  EXPECT_NE(alpha.find("test.graph:10:"), std::string::npos) << alpha;
  EXPECT_NE(alpha.find("alpha"), std::string::npos) << alpha;
  EXPECT_EQ(test::errors_of(teacher + "kd = distill teacher=teacher alpha=1 temperature=0.5\n"), "");
}

// graphs/distill.graph end to end at a tiny scale: a ResNet-18 teacher from
// a file, both students, both scores in the summary.
TEST(Distill, TheShippedGraphRunsAtTinyScale) {
  const std::string dir = test::temp_dir();
  {
    test::StageBench bench("source = count\nteacher = resnet depth=18 classes=10\n", 5);
    std::string bytes;
    find_model(bench, "teacher").save_state(bytes);
    std::ofstream(dir + "/teacher.safetensors", std::ios::binary) << bytes;
  }
  auto result = test::run_flowrun({"graphs/distill.graph", "--threads", "2", "--summary-json", dir + "/summary.json",
                                   "--set", "teacher.depth=18", "--set", "teacher.weights=" + dir + "/teacher.safetensors",
                                   "--set", "train_sampler.per_class.k=3", "--set", "val_sampler.per_class.k=3",
                                   "--set", "train_batch.size=6", "--set", "main.epochs=2"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const nlohmann::json summary = nlohmann::json::parse(test::slurp(dir + "/summary.json"));
  for (const char* key : {"student_alone_top1", "student_kd_top1", "kd_loss", "teacher_batches"})
    EXPECT_TRUE(summary.contains(key)) << key << summary.dump();
  EXPECT_EQ(summary["teacher_batches"], 10);  // 10 classes x 3 images in batches of 6, 2 epochs
  EXPECT_EQ(summary["teacher_cached_batches"], 0);  // the flow augments
}
