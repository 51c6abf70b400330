#pragma once

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/run_state.h"
#include "pipeline/stage.h"
#include "stages/common/random.h"

namespace flowrun::test {

class Kitchen : public TransformStage {
 public:
  static Schema schema();
  explicit Kitchen(const StageInit&) {}
  void process(Item&) override {}
};

class FailsAt : public TransformStage {
 public:
  static Schema schema();
  explicit FailsAt(const StageInit& init) : at_(init.params.get_int("at")) {}
  void process(Item& item) override;

 private:
  int64_t at_;
};

class Group : public SerialStage {
 public:
  static Schema schema();
  explicit Group(const StageInit& init)
      : size_(init.params.get_int("size")), drop_last_(init.params.get_bool("drop_last")) {}
  void process(Item& item, const Emit& emit) override;
  void flush(const Emit& emit) override;

 private:
  void flush_group(const Emit& emit);
  int64_t size_;
  bool drop_last_;
  std::vector<int64_t> current_;
};

class GroupSink : public SerialStage {
 public:
  static Schema schema();
  explicit GroupSink(const StageInit&) {}
  void process(Item& item, const Emit& emit) override;
  void report(Report& report) const override;
  bool save_state(std::string& out) const override;
  void load_state(const std::string& in) override;

 private:
  std::vector<std::vector<int64_t>> groups_;
};

// A random transform of integers, as the random image ops are: each item's
// draw is a function of (run seed, stage name, epoch, the item's value), set
// up in begin_epoch. Replaces v by v * scale + a draw below scale, and drops
// the item with probability `drop`. With delay_us, an item first waits
// (v mod 5) * delay_us: concurrent copies then finish out of order, and the
// items reach the stages after it in another order than they were made.
class RandomTag : public TransformStage {
 public:
  static Schema schema();
  explicit RandomTag(const StageInit& init);
  void begin_epoch(const EpochInfo& epoch) override { epoch_ = static_cast<uint64_t>(epoch.epoch); }
  void process(Item& item) override;

 private:
  stages::RandomStream stream_;
  uint64_t epoch_ = 0;
  int64_t scale_, delay_us_;
  double drop_;
};

// Asks the run to stop (as SIGINT would) when the n-th item of the run passes.
class StopAfter : public TransformStage {
 public:
  static Schema schema();
  explicit StopAfter(const StageInit& init) : n_(init.params.get_int("n")) {}
  void process(Item& item) override;

 private:
  int64_t n_;
  std::atomic<int64_t> seen_{0};
};

// Keeps the run's state in memory (a checkpoint without a file): the last
// state kept survives the run, and resume=true takes the next run up from it.
class MemoryKeeper : public ComponentStage, public StateKeeper {
 public:
  static Schema schema();
  explicit MemoryKeeper(const StageInit& init) : resume_(init.params.get_bool("resume")) {}
  std::optional<RunState> resume_state() override;
  void epoch_ended(const RunPosition& next, const StateCollector& collect) override { kept = collect(); }
  void run_stopped(const RunPosition& next, bool interrupted, const StateCollector& collect) override {
    kept = collect();
  }
  static std::optional<RunState> kept;

 private:
  bool resume_;
};

// Appends "NAME:VALUE" for every item to one log shared by all instances.
class OrderLog : public SerialStage {
 public:
  static Schema schema();
  explicit OrderLog(const StageInit& init) : name_(init.name) {}
  void process(Item& item, const Emit& emit) override;
  static std::vector<std::string> log;

 private:
  std::string name_;
};

class Probe : public ComponentStage {
 public:
  static Schema schema();
  explicit Probe(const StageInit& init);
  bool update_params(const Params& params) override;
  void begin_epoch(const EpochInfo& epoch) override;
  void on_stop(bool interrupted) override;
  static void reset();

  static std::atomic<int> constructed, updated, stopped_interrupted, stopped_normally;
  static std::vector<std::string> epochs_seen;

 private:
  bool adapts_;
  double lr_;
};

}  // namespace flowrun::test
