// Progress of an epoch as the user sees it: on a terminal a bar redrawn in
// place (batches, images/s, loss, ETA) at most every `interval`; elsewhere a
// plain log line every `log_interval` seconds. Reading the loss syncs with
// the device, so it is read only when a line is drawn.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace flowrun::stages {

class Progress {
 public:
  Progress();
  void begin(std::string title, int64_t total_batches);
  // After each batch; `loss` is called only when a line is drawn.
  void update(int64_t images, const std::function<double()>& loss);
  void end();  // clears the bar
  // Draws nothing (the ranks of a job other than rank 0).
  void silence() { silent_ = true; }

 private:
  void draw(double loss, bool final_line);
  bool terminal_;
  std::string title_;
  int64_t total_ = 0, batches_ = 0, images_ = 0;
  int64_t start_ns_ = 0, last_draw_ns_ = 0;
  bool drawn_ = false;
  bool silent_ = false;
};

}  // namespace flowrun::stages
