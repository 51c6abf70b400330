#include "stages/train/constant.h"

#include "pipeline/registry.h"

namespace flowrun::stages {

Schema Constant::schema() {
  return Schema("constant", "a constant learning rate (each group's own)").provides("scheduler");
}

FLOWRUN_REGISTER_STAGE(Constant);

}  // namespace flowrun::stages
