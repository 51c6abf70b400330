// `hflip`: mirrors left-right with probability p (RandomHorizontalFlip).
#pragma once

#include "stages/image/random_op.h"

namespace flowrun::stages {

class HFlip : public RandomImageOp {
 public:
  static Schema schema();
  explicit HFlip(const StageInit& init) : RandomImageOp(init, "hflip"), p_(init.params.get_float("p")) {}
  void process(Item& item) override;

 private:
  double p_;
};

}  // namespace flowrun::stages
