// Issue 21, item 7: --run-dir also writes TensorBoard event files. Read back
// by PyPI's tensorboard itself (tests/oracle/tensorboard_events.py, in
// setup.sh's .venv-tensorboard/): the per-epoch scalars are metrics.csv's,
// the learning rate is there for every step, the grids decode at their size,
// the resolved graph is the text, hparams are there, and a changed CRC byte
// is caught by tensorboard's record reader.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <sys/wait.h>

#include "data_support.h"
#include "test_support.h"

using namespace flowrun;
using test::slurp;
using test::split;
using test::write_graph;

namespace {

const std::string& nine_images() {
  static const std::string root = test::make_jpeg_folder({"a", "b", "c"}, 3, 40, 36);
  return root;
}

// The oracle's JSON. A missing oracle fails the test, naming it (never a skip).
nlohmann::json tensorboard_oracle(const std::string& args) {
  const std::string python = FLOWRUN_TENSORBOARD_PYTHON;
  if (!std::filesystem::exists(python))
    throw std::runtime_error("the TensorBoard oracle is missing: " + python +
                             " (./setup.sh makes .venv-tensorboard/ with tensorboard==2.21.0 from PyPI; see its warning)");
  const std::string command =
      "'" + python + "' -W ignore '" FLOWRUN_SOURCE_DIR "/tests/oracle/tensorboard_events.py' " + args;
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("oracle failed to start: " + command);
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe)) out += buffer;
  const int status = pclose(pipe);
  if (status != 0 || out.empty()) throw std::runtime_error("oracle failed: " + command);
  return nlohmann::json::parse(out);
}

// A PNG's size from its IHDR chunk.
std::pair<int, int> png_size(const std::string& png) {
  if (png.size() < 24 || png.compare(1, 3, "PNG") != 0) return {-1, -1};
  auto be32 = [&](size_t at) {
    return (static_cast<uint8_t>(png[at]) << 24) | (static_cast<uint8_t>(png[at + 1]) << 16) |
           (static_cast<uint8_t>(png[at + 2]) << 8) | static_cast<uint8_t>(png[at + 3]);
  };
  return {static_cast<int>(be32(16)), static_cast<int>(be32(20))};
}

// A training graph of two phases with every kind of event: show_batch's
// preview, train (onecycle: the rate changes every step), evaluate, predict.
std::string training_graph(const std::string& dir) {
  return "run seed=3 compute_threads=1\n"
         "src = imagefolder root=\"" + nine_images() + "\" sampler=sampler\n"
         "sampler = shuffle\n"
         "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
         "batch = batch size=3\n"
         "show = show_batch path=\"" + dir + "/preview.png\" columns=3\n"
         "train = train freezer=\"\"\n"
         "flow src -> prep -> batch -> show -> train\n"
         "val = like src sampler=\"\"\nvprep = like prep\nvbatch = like batch\n"
         "evaluate = evaluate\n"
         "flow val -> vprep -> vbatch -> evaluate\n"
         "pred = like src sampler=\"\"\npprep = like prep\npbatch = like batch\n"
         "predict = predict csv=\"" + dir + "/p.csv\" grid=\"" + dir + "/p.png\" columns=3\n"
         "flow pred -> pprep -> pbatch -> predict\n"
         "model = resnet depth=18 classes=3\n"
         "optim = sgd lr=0.05\n"
         "sched = onecycle\n"
         "phase head epochs=1 {\n}\n"
         "phase full epochs=2 {\n  optim.lr = 0.01\n}\n";
}

}  // namespace

TEST(DailyTensorBoard, RunDirHoldsEventsTensorBoardReads) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph", training_graph(dir));
  auto run = test::run_flowrun({graph, "--run-dir", dir + "/run", "--summary-json", dir + "/s.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;

  // One event file, named as TensorFlow names them, said among the files written.
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir + "/run"))
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) files.push_back(entry.path().string());
  ASSERT_EQ(files.size(), 1u);
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const std::string name = std::filesystem::path(files[0]).filename().string();
  EXPECT_TRUE(std::regex_match(name, std::regex("events\\.out\\.tfevents\\.[0-9]{10}\\." +
                                                std::regex_replace(std::string(host), std::regex("[.^$|()\\[\\]{}*+?\\\\]"),
                                                                   "\\$&") +
                                                "\\.[0-9]+\\.[0-9]+")))
      << name;
  EXPECT_NE(run.out.find(files[0]), std::string::npos) << run.out;

  const nlohmann::json tb = tensorboard_oracle("read '" + dir + "/run' '" + dir + "/oracle'");
  ASSERT_EQ(tb["first"].size(), 1u) << tb.dump();
  EXPECT_EQ(tb["first"][0]["file_version"], "brain.Event:2");
  EXPECT_EQ(tb["first"][0]["what"], "file_version");

  // Per-epoch scalars: metrics.csv's figures, epoch by epoch (float32 in the file).
  std::ifstream csv(dir + "/run/metrics.csv");
  std::string header_line;
  ASSERT_TRUE(std::getline(csv, header_line));
  const auto header = split(header_line);
  ASSERT_GE(header.size(), 8u) << header_line;
  std::map<std::string, int> points;
  int rows = 0;
  for (std::string line; std::getline(csv, line);) {
    const auto fields = split(line);
    ++rows;
    const int epoch = std::stoi(fields[0]);
    for (size_t k = 2; k < header.size() && k < fields.size(); ++k) {
      if (fields[k].empty()) continue;
      const std::string tag = "epoch/" + header[k];
      ASSERT_TRUE(tb["scalars"].contains(tag)) << tag << " " << tb["scalars"].dump();
      const double expected = std::stod(fields[k]);
      bool found = false;
      for (const auto& point : tb["scalars"][tag])
        if (point[0].get<int>() == epoch) {
          found = true;
          EXPECT_NEAR(point[1].get<double>(), expected, 1e-6 * std::max(1.0, std::fabs(expected))) << tag << " " << epoch;
        }
      EXPECT_TRUE(found) << tag << " epoch " << epoch;
      ++points[tag];
    }
  }
  EXPECT_EQ(rows, 3);
  for (const auto& [tag, count] : points) EXPECT_EQ(tb["scalars"][tag].size(), static_cast<size_t>(count)) << tag;
  for (const char* figure : {"epoch/train_loss", "epoch/train_top1", "epoch/train_lr", "epoch/val_loss", "epoch/val_top1"})
    EXPECT_EQ(points[figure], 3) << figure;

  // The learning rate of every step: 3 epochs of 3 batches, steps 0..8; an
  // epoch's last step has the rate metrics.csv gives for that epoch.
  ASSERT_TRUE(tb["scalars"].contains("step/train_lr")) << tb["scalars"].dump();
  const auto& lr = tb["scalars"]["step/train_lr"];
  const auto summary = nlohmann::json::parse(slurp(dir + "/s.json"));
  ASSERT_EQ(lr.size(), 9u) << lr.dump();
  EXPECT_EQ(summary["train_steps"], 9);
  std::set<double> rates;
  for (size_t i = 0; i < lr.size(); ++i) {
    EXPECT_EQ(lr[i][0].get<int>(), static_cast<int>(i));
    rates.insert(lr[i][1].get<double>());
  }
  EXPECT_GE(rates.size(), 5u) << lr.dump();  // onecycle: it changes every step
  for (const auto& point : tb["scalars"]["epoch/train_lr"]) {
    const int epoch = point[0].get<int>();
    EXPECT_NEAR(lr[epoch * 3 - 1][1].get<double>(), point[1].get<double>(), 1e-6 * point[1].get<double>()) << epoch;
  }

  // Images: the preview and the prediction grid, the same PNGs as the files, decoded at their size.
  struct Expected {
    const char* tag;
    std::string file;
    int step;
  };
  for (const Expected& e : {Expected{"images/show", dir + "/preview.png", 1}, Expected{"images/predict", dir + "/p.png", 3}}) {
    ASSERT_TRUE(tb["images"].contains(e.tag)) << tb["images"].dump();
    ASSERT_EQ(tb["images"][e.tag].size(), 1u) << e.tag;
    const auto& image = tb["images"][e.tag][0];
    EXPECT_EQ(image["step"], e.step) << e.tag;
    const std::string png = slurp(e.file);
    const auto [width, height] = png_size(png);
    ASSERT_GT(width, 0) << e.file;
    EXPECT_EQ(image["width"], width) << e.tag;
    EXPECT_EQ(image["height"], height) << e.tag;
    EXPECT_EQ(image["decoded"][0], width) << e.tag;
    EXPECT_EQ(image["decoded"][1], height) << e.tag;
    EXPECT_EQ(image["mode"], "RGB") << e.tag;
    EXPECT_TRUE(slurp(image["file"].get<std::string>()) == png) << e.tag;
  }

  // The resolved graph, as text.
  ASSERT_TRUE(tb["texts"].contains("graph/text_summary")) << tb["texts"].dump();
  ASSERT_EQ(tb["texts"]["graph/text_summary"].size(), 1u);
  const std::string text = tb["texts"]["graph/text_summary"][0][1];
  EXPECT_EQ(text, "```\n" + slurp(dir + "/run/graph.resolved") + "```\n");

  // hparams, as add_hparams writes them: the session's settings, the experiment, its end.
  const auto& hp = tb["hparams"];
  for (const char* tag : {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"})
    EXPECT_NE(std::find(hp["tags"].begin(), hp["tags"].end(), tag), hp["tags"].end()) << tag << " " << hp.dump();
  ASSERT_TRUE(hp.contains("start")) << hp.dump();
  const auto& start = hp["start"];
  EXPECT_EQ(start["run.seed"], 3.0) << start.dump();
  EXPECT_EQ(start["head.epochs"], 1.0) << start.dump();
  EXPECT_EQ(start["full.epochs"], 2.0) << start.dump();
  EXPECT_EQ(start["batch.size"], 3.0) << start.dump();
  EXPECT_EQ(start["model.depth"], 18.0) << start.dump();
  EXPECT_NEAR(start["optim.lr"].get<double>(), 0.05, 1e-12) << start.dump();
  EXPECT_NEAR(start["full.optim.lr"].get<double>(), 0.01, 1e-12) << start.dump();
  EXPECT_EQ(start["prep.resize.size"], 32.0) << start.dump();
  EXPECT_FALSE(start.contains("train.model")) << start.dump();  // wiring, not a setting
  ASSERT_TRUE(hp.contains("experiment")) << hp.dump();
  for (const char* metric : {"epoch/val_top1", "epoch/val_loss", "epoch/train_loss"}) {
    const auto& metrics = hp["experiment"]["metrics"];
    EXPECT_NE(std::find(metrics.begin(), metrics.end(), metric), metrics.end()) << metric << " " << hp.dump();
  }
  EXPECT_EQ(hp["experiment"]["hparams"].size(), start.size());
  EXPECT_EQ(hp["end"], "STATUS_SUCCESS");

  // The framing is checked: one changed byte of a record's data CRC, or of
  // its length's CRC, and tensorboard's reader stops there with a data loss.
  const nlohmann::json bad = tensorboard_oracle("corrupt '" + files[0] + "' '" + dir + "/oracle'");
  EXPECT_EQ(bad["intact"]["read"], bad["records"]) << bad.dump();
  EXPECT_TRUE(bad["intact"]["error"].is_null()) << bad.dump();
  EXPECT_GT(bad["records"].get<int>(), 20) << bad.dump();
  EXPECT_EQ(tb["records"][0], bad["records"]) << bad.dump();
  for (const char* kind : {"data_crc", "length_crc"}) {
    EXPECT_EQ(bad[kind]["read"], 2) << kind << " " << bad.dump();
    ASSERT_TRUE(bad[kind]["error"].is_string()) << kind << " " << bad.dump();
    EXPECT_NE(bad[kind]["error"].get<std::string>().find("crc32 check"), std::string::npos) << bad.dump();
    EXPECT_EQ(bad[kind]["loader_events"], 2) << kind << " " << bad.dump();
  }
}

// The .proto files flowrun compiles hold TensorBoard's messages: every
// message, field number, type, label and oneof of them, against the
// descriptors of PyPI's tensorboard.
// Early stopping ends the run after epoch 2, once epoch 3 has begun (every
// stage's begin_epoch runs first): the prediction grid is epoch 2's pass, and
// so is its step, not that of the epoch that never ran.
TEST(DailyTensorBoard, AnEarlyStoppedRunsGridHasTheStepOfItsLastEpoch) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(
      dir, "t.graph", training_graph(dir) + "stop = early_stopping monitor=val_loss patience=1 min_delta=1e9\n");
  auto run = test::run_flowrun({graph, "--run-dir", dir + "/run", "--summary-json", dir + "/s.json"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_EQ(nlohmann::json::parse(slurp(dir + "/s.json"))["epochs"], 2);
  const nlohmann::json tb = tensorboard_oracle("read '" + dir + "/run' '" + dir + "/oracle'");
  ASSERT_TRUE(tb["images"].contains("images/predict")) << tb["images"].dump();
  ASSERT_EQ(tb["images"]["images/predict"].size(), 1u);
  EXPECT_EQ(tb["images"]["images/predict"][0]["step"], 2);
  EXPECT_TRUE(slurp(tb["images"]["images/predict"][0]["file"].get<std::string>()) == slurp(dir + "/p.png"));
}

TEST(DailyTensorBoard, ProtoFieldsAreTensorBoards) {
  const std::string dir = test::temp_dir();
  const std::string root = FLOWRUN_SOURCE_DIR "/stages/report/tensorboard_proto";
  std::string protos;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root))
    if (entry.path().extension() == ".proto")
      protos += " '" + std::filesystem::relative(entry.path(), root).string() + "'";
  const std::string command = "cd '" + root + "' && '" FLOWRUN_PROTOC "' -I. --include_imports --descriptor_set_out='" +
                              dir + "/set.pb'" + protos;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const nlohmann::json fields = tensorboard_oracle("fields '" + dir + "/set.pb'");
  EXPECT_TRUE(fields["problems"].empty()) << fields["problems"].dump(1);
  EXPECT_GE(fields["checked"].get<int>(), 60) << fields.dump();
  EXPECT_GE(fields["files"].size(), 8u) << fields.dump();
}

// An interrupted run ends its hparams session as not successful, and what it
// wrote so far reads back.
TEST(DailyTensorBoard, AnInterruptedRunEndsTheSession) {
  const std::string dir = test::temp_dir();
  const std::string graph = write_graph(dir, "t.graph",
      "run epochs=3 seed=1 compute_threads=1\n"
      "src = imagefolder root=\"" + nine_images() + "\"\n"
      "prep = decode | resize size=32 | center_crop size=32 | normalize\n"
      "stop = stop_at epoch=2 item=2\n"
      "batch = batch size=3\n"
      "train = train scheduler=\"\" freezer=\"\"\n"
      "flow src -> prep -> stop -> batch -> train\n"
      "model = resnet depth=18 classes=3\n"
      "optim = sgd lr=0.01\n");
  auto run = test::run_flowrun({graph, "--plugin", TEST_PLUGIN_STOP_AT, "--run-dir", dir + "/run"});
  ASSERT_EQ(run.exit_code, 130) << run.err;
  const nlohmann::json tb = tensorboard_oracle("read '" + dir + "/run' '" + dir + "/oracle'");
  EXPECT_EQ(tb["hparams"]["end"], "STATUS_FAILURE") << tb["hparams"].dump();
  ASSERT_TRUE(tb["scalars"].contains("epoch/train_loss")) << tb["scalars"].dump();
  EXPECT_EQ(tb["scalars"]["epoch/train_loss"].size(), 1u);  // the one complete epoch
  EXPECT_GE(tb["scalars"]["step/train_lr"].size(), 3u);  // the first epoch's steps, and any of the second
}
