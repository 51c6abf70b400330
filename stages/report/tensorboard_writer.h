// TensorBoard event files in the run directory (`--run-dir DIR`):
// DIR/events.out.tfevents.SECS.HOST.PID.N, as TensorFlow names them, read by
// `tensorboard --logdir DIR`. Each record is TFRecord-framed (length, masked
// CRC-32C of the length, an Event message, masked CRC-32C of the data); the
// first record is Event{file_version: "brain.Event:2"}. The messages are
// TensorBoard's own (stages/report/tensorboard_proto/, compiled by protoc).
//
// What goes in, and who writes it:
//   epoch/FIGURE              per-epoch scalars of every train and evaluate stage (MetricsLog), step = epoch
//   step/TRAIN_lr             the learning rate of every training step (train), step = the run's step count
//   images/STAGE              show_batch's preview and predict's grid as PNG, step = epoch
//   graph/text_summary        the resolved graph (the run directory's graph.resolved), as text
//   _hparams_/...             hparams as torch.utils.tensorboard's add_hparams writes them: the graph's
//                             settings that differ from the defaults, and the epoch/ scalars as metrics
// Events are written as they come (nothing is kept but the tags seen) and
// flushed after every epoch, so that a running TensorBoard sees them.
// Shared by the stages of a run through Services ("tensorboard"); rank 0 of
// a job writes, the other ranks get none.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <variant>

#include "pipeline/stage.h"

namespace flowrun {
struct ResolvedGraph;
}
namespace tensorboard {
class Event;
}

namespace flowrun::stages {

class TensorBoardWriter {
 public:
  using HParam = std::variant<double, std::string, bool>;

  // The run's writer, made by the first stage that asks (it then writes the
  // graph's text and the session's hparams); null without a run directory
  // and on the ranks of a job that write no files.
  static std::shared_ptr<TensorBoardWriter> of(const StageInit& init);

  // Opens a new event file in `dir` (made when missing) and writes its
  // first record. Throws std::runtime_error naming the file on failure.
  explicit TensorBoardWriter(const std::string& dir);
  // Ends the session (as a failure, when nothing ended it) and closes the file.
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  const std::string& path() const { return path_; }

  void scalar(const std::string& tag, int64_t step, double value);
  // A per-epoch figure: a scalar that is also one of the hparams' metrics.
  void metric(const std::string& tag, int64_t step, double value);
  // An encoded PNG of `width` x `height` pixels (RGB).
  void image(const std::string& tag, int64_t step, const std::string& png, int width, int height);
  // Markdown text (the text plugin's format: a DT_STRING tensor).
  void text(const std::string& tag, int64_t step, const std::string& markdown);
  // hparams' SessionStartInfo.
  void session_start(const std::map<std::string, HParam>& hparams);
  // hparams' Experiment (every hparam and metric seen) and SessionEndInfo;
  // once: later calls do nothing.
  void session_end(bool success);
  // Hands what was written to the system, for a running TensorBoard to read.
  void flush();

 private:
  void write_event(const std::string& serialized_event);     // under mutex_
  void write_locked(const tensorboard::Event& event);        // serialises, then takes mutex_
  void end_locked(bool success);

  std::string path_;
  std::FILE* file_ = nullptr;
  std::mutex mutex_;
  std::map<std::string, HParam> hparams_;
  std::set<std::string> metrics_;
  double start_time_ = 0;
  bool started_ = false, ended_ = false;
};

// The hyperparameters of a graph, for the hparams dashboard: run.seed, the
// epochs of each phase (PHASE.epochs) and every stage parameter whose value
// differs from its schema's default, named as --set names them
// (STAGE.PARAM, STAGE.OP.PARAM for a piped stage's op; PHASE.STAGE.PARAM
// where a later phase changes the first phase's value). Lists as their text.
std::map<std::string, TensorBoardWriter::HParam> graph_hparams(const ResolvedGraph& graph);

// The text the run directory's graph.resolved holds, as TensorBoard's text
// plugin shows it: a Markdown code block.
std::string graph_markdown(const std::string& graph_text);

}  // namespace flowrun::stages
