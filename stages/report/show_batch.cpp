#include "stages/report/show_batch.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "pipeline/registry.h"
#include "stages/report/image_grid.h"
#include "stages/tensor/batch_data.h"
#include "stages/tensor/batch_image.h"

namespace flowrun::stages {

Schema ShowBatch::schema() {
  return Schema("show_batch", "writes one batch as a labelled image grid PNG (Cairo); batches pass through")
      .param(Path("path", "the PNG to write"))
      .param(Int("columns", "images per row").def(int64_t{8}).range(1, 64))
      .param(Int("max_images", "at most this many images (8x8 as the recipe)").def(int64_t{64}).range(1, 4096))
      .param(Int("epoch", "the epoch whose batch is shown").def(int64_t{0}).at_least(0))
      .param(Int("batch", "which batch of that epoch").def(int64_t{0}).at_least(0))
      .param(Int("tile", "pixels per image tile (0 = the image size, at least 96)").def(int64_t{0}).range(0, 1024));
}

ShowBatch::ShowBatch(const StageInit& init)
    : name_(init.name),
      path_(init.params.get_string("path")),
      columns_(init.params.get_int("columns")),
      max_images_(init.params.get_int("max_images")),
      epoch_wanted_(init.params.get_int("epoch")),
      batch_wanted_(init.params.get_int("batch")),
      tile_px_(init.params.get_int("tile")),
      writes_(init.run.job.writes_files()),
      tensorboard_(TensorBoardWriter::of(init)) {}

void ShowBatch::process(Item& item, const Emit& emit) {
  const Batch& batch = item.get<Batch>();
  if (writes_ && epoch_ == epoch_wanted_ && batch.number == batch_wanted_) {
    const int64_t n = std::min<int64_t>(batch.size(), max_images_);
    at::Tensor labels = batch.labels.to(at::kCPU);
    std::vector<GridTile> tiles;
    for (int64_t i = 0; i < n; ++i) {
      GridTile tile;
      tile.image = batch_image(batch, i);
      tile.title = class_name(batch, labels[i].item<int64_t>());
      tiles.push_back(std::move(tile));
    }
    const int width = tiles.front().image.width, height = tiles.front().image.height;
    int tile_px = tile_px_ > 0 ? static_cast<int>(tile_px_) : std::max(96, std::max(width, height));
    const Png png = write_image_grid(path_, tiles, static_cast<int>(std::min<int64_t>(columns_, n)), tile_px);
    written_ = true;
    if (tensorboard_) {
      tensorboard_->image("images/" + name_, epoch_ + 1, png.bytes, png.width, png.height);
      tensorboard_->flush();
    }
  }
  emit(item);
}

void ShowBatch::report(Report& report) const { report.set("show_batch_written", written_ ? 1 : 0); }

FLOWRUN_REGISTER_STAGE(ShowBatch);

}  // namespace flowrun::stages
