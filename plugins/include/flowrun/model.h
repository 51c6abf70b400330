// The model stage API: batches, the model stage, and the loss hook. Brings
// LibTorch (link flowrun::model, which finds Torch).
//
//   flowrun::stages::Batch       images [N,C,H,W] float, labels [N] int64,
//                                paths, indices, padding (see batch_data.h)
//   flowrun::stages::ModelStage  find_model(stages, name): the network (net()),
//                                classes(), device(), bf16(), input(images);
//                                a model stage of another architecture derives
//                                from it: common_schema(), ModelStage(init, builder)
//   flowrun::stages::NetworkImpl what a network gives the training stages
//                                (forward, features, head, blocks; see network.h)
//   flowrun::stages::LossStage   a component the train stage calls for the
//                                batch's loss: declare `.provides("loss")`
//                                and name it with train's `loss=` parameter
#pragma once

#include "data.h"
#include "stages/model/model.h"
#include "stages/model/network.h"
#include "stages/tensor/batch_data.h"
#include "stages/train/loss.h"
