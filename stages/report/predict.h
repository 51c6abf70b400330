// `predict`: the model's predictions for every sample that reaches it: a CSV
// (path, true class when known, predicted class, the top-5 classes with
// their probabilities) and a PNG grid of the first images titled
// "true / predicted probability" (wrong ones in red), as the recipe's last
// plot. Both are written atomically when the run completes; with a run
// directory the grid also goes to its TensorBoard file (images/NAME, the
// step the epoch of the pass it shows).
//
// In a graph of several epochs (a training graph) it predicts once, in the
// run's last epoch, by default: the model the run ends with. When a stage
// may end the run early (early_stopping, whose schema provides "run_end")
// the last epoch is known only after it: every epoch then predicts, and
// each pass but the last one is dropped. every=N also
// predicts in every Nth epoch; the CSV then has an `epoch` column (1-based)
// and holds every pass's rows, the grid and figures are the last pass's.
// Epochs it does not predict in pass batches through untouched.
//
// Rows are spooled to NAME.spool.PID as batches arrive (memory holds one
// batch, whatever the dataset size); in a job of several processes every
// rank spools its share and rank 0 merges them in the order of a process
// alone (rank r's i-th row is sample r + i * world of the shared order).
#pragma once

#include <fstream>

#include "pipeline/stage.h"
#include "stages/common/compute_threads.h"
#include "stages/dist/job.h"
#include "stages/report/image_grid.h"
#include "stages/report/tensorboard_writer.h"

namespace flowrun::stages {

// A grid tile's title: "TRUE / PREDICTED P", P the predicted class's
// probability to 2 decimals; TRUE is "?" for an unlabelled image.
std::string prediction_title(const std::string& truth, const std::string& guess, double probability);

class Predict : public SerialStage {
 public:
  static Schema schema();
  explicit Predict(const StageInit& init);
  ~Predict() override;
  void begin_epoch(const EpochInfo& epoch) override;
  void process(Item& item, const Emit& emit) override;
  void on_stop(bool interrupted) override;
  void report(Report& report) const override;

 private:
  bool predicts_in(const EpochInfo& epoch) const;
  void start_pass();  // at the epoch's first batch
  // Rank 0 (or a process alone) writes the CSV and the grid from every
  // rank's share; in a job every rank takes part in the collectives.
  void write_outputs(bool interrupted);

  const StageDirectory& stages_;
  std::string name_;
  std::string model_name_, csv_path_, grid_path_, spool_path_;
  int64_t grid_count_, columns_, every_;
  std::ofstream spool_;
  bool predicting_ = false;   // this epoch is a prediction pass
  int current_epoch_ = 0;     // 1-based: the epoch of the pass made last (the epoch column, the grid's step)
  int epoch_beginning_ = 0;   // 1-based: the epoch begun last (its pass starts at its first batch)
  std::vector<int64_t> pass_rows_;  // rows of each pass in the spool, in order
  std::vector<GridTile> tiles_;     // the current pass's first grid_images
  int64_t predicted_ = 0, correct_ = 0, labelled_ = 0;  // the current pass's
  ComputeThreads compute_;
  Job* job_;  // the job of several processes this rank is in; null alone
  std::shared_ptr<TensorBoardWriter> tensorboard_;  // null: none (no run directory, or not rank 0)
  // A stage may end the run after any epoch (early_stopping): every epoch
  // predicts, and a pass made only in case it was the last (tentative) is
  // dropped from the spool (from tentative_start_) when another pass starts.
  bool end_may_come_early_ = false;
  bool epoch_tentative_ = false;  // this epoch's pass would be
  bool pass_tentative_ = false;   // the last pass in the spool is
  bool pass_started_ = false;     // this epoch's pass has had its first batch
  uint64_t tentative_start_ = 0;
};

}  // namespace flowrun::stages
