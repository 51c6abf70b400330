// `random_erasing`: torchvision's RandomErasing (Zhong et al., 2017) as a
// flowrun plugin. With probability p it picks a rectangle of the image whose
// area is a `scale` fraction of the image's and whose aspect ratio is drawn
// log-uniformly from `ratio` (ten tries, as torchvision; none fits: no
// erasing), and fills it with `value` ([v] for every channel or one per
// channel) or, with random=true, noise (standard normal per element).
//
// Placed after `normalize in_batch=false` it works on the float tensor, as
// torchvision's does after Normalize (value 0 = the mean colour). Placed
// before normalize it works on the 8-bit pixels (value 0..255; random =
// uniform bytes). Randomness is the sample's own (rng_for): the same seed
// gives the same rectangles whatever the threads.
#include <flowrun/data.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace {

using flowrun::Params;
using flowrun::Schema;
using flowrun::StageInit;
using flowrun::stages::Rng;
using flowrun::stages::Sample;

std::string check_params(const Params& p) {
  const auto& scale = p.get_float_list("scale");
  const auto& ratio = p.get_float_list("ratio");
  if (scale.size() != 2 || !(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1))
    return "scale must be [min, max] with 0 < min <= max <= 1, e.g. [0.02, 0.33]";
  if (ratio.size() != 2 || !(ratio[0] > 0 && ratio[0] <= ratio[1]))
    return "ratio must be [min, max] with 0 < min <= max, e.g. [0.3, 3.3]";
  const size_t values = p.get_float_list("value").size();
  if (values != 1 && values != 3) return "value must be one number or three (per channel), e.g. [0]";
  return "";
}

class RandomErasing : public flowrun::stages::RandomImageOp {
 public:
  static Schema schema() {
    return Schema("random_erasing",
                  "erases a random rectangle with probability p (torchvision's RandomErasing; plugin)")
        .randomized()  // its output differs every epoch: feature caches must not trust it
        .param(flowrun::Float("p", "probability of erasing").def(0.5).range(0, 1))
        .param(flowrun::FloatList("scale", "[min, max] erased area as a fraction of the image")
                   .def(std::vector<double>{0.02, 0.33}))
        .param(flowrun::FloatList("ratio", "[min, max] aspect ratio (height/width) of the rectangle")
                   .def(std::vector<double>{0.3, 3.3}))
        .param(flowrun::FloatList("value", "fill: [v] for every channel or [r, g, b]").def(std::vector<double>{0}))
        .param(flowrun::Bool("random", "fill with noise instead of value (torchvision's value='random')").def(false))
        .check(check_params);
  }

  explicit RandomErasing(const StageInit& init)
      : RandomImageOp(init, "random_erasing"), p_(init.params.get_float("p")) {
    const auto& scale = init.params.get_float_list("scale");
    const auto& ratio = init.params.get_float_list("ratio");
    scale_ = {scale[0], scale[1]};
    log_ratio_ = {std::log(ratio[0]), std::log(ratio[1])};
    random_ = init.params.get_bool("random");
    value_ = init.params.get_float_list("value");
  }

  void process(flowrun::Item& item) override {
    Sample& sample = item.get<Sample>();
    const bool floats = !sample.tensor.empty();
    if (!floats && sample.image.empty())
      throw std::runtime_error("random_erasing: " + sample.describe() + " has no pixels (put decode before it)");
    const int channels = floats ? sample.tensor.channels : sample.image.channels;
    const int height = floats ? sample.tensor.height : sample.image.height;
    const int width = floats ? sample.tensor.width : sample.image.width;
    if (!random_ && value_.size() == 3 && channels != 3)
      throw std::runtime_error("random_erasing: three fill values for " + sample.describe() + ", which has " +
                               std::to_string(channels) + " channel(s)");
    Rng rng = rng_for(sample);
    if (!rng.chance(p_)) return;
    const double area = static_cast<double>(height) * width;
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double erase_area = area * rng.uniform(scale_[0], scale_[1]);
      const double aspect = std::exp(rng.uniform(log_ratio_[0], log_ratio_[1]));
      // Python's round(): halves to even, as std::nearbyint in the default rounding mode.
      const int h = static_cast<int>(std::nearbyint(std::sqrt(erase_area * aspect)));
      const int w = static_cast<int>(std::nearbyint(std::sqrt(erase_area / aspect)));
      if (!(h < height && w < width)) continue;
      const int top = static_cast<int>(rng.below(static_cast<uint64_t>(height - h + 1)));
      const int left = static_cast<int>(rng.below(static_cast<uint64_t>(width - w + 1)));
      if (floats)
        erase_floats(sample.tensor, top, left, h, w, rng);
      else
        erase_bytes(sample.image, top, left, h, w, rng);
      return;
    }
  }

 private:
  double fill(int channel) const { return value_.size() == 1 ? value_[0] : value_[static_cast<size_t>(channel)]; }

  void erase_floats(flowrun::stages::FloatImage& image, int top, int left, int h, int w, Rng& rng) const {
    for (int c = 0; c < image.channels; ++c) {
      float* plane = image.data.data() + static_cast<size_t>(c) * image.height * image.width;
      for (int y = top; y < top + h; ++y)
        for (int x = left; x < left + w; ++x)
          plane[static_cast<size_t>(y) * image.width + x] = random_ ? normal(rng) : static_cast<float>(fill(c));
    }
  }

  void erase_bytes(flowrun::stages::Image& image, int top, int left, int h, int w, Rng& rng) const {
    for (int y = top; y < top + h; ++y) {
      uint8_t* row = image.row(y) + static_cast<size_t>(left) * image.channels;
      for (int x = 0; x < w * image.channels; ++x) {
        const int c = x % image.channels;
        const double v = random_ ? static_cast<double>(rng.below(256)) : std::round(fill(c));
        row[x] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
      }
    }
  }

  // A standard normal draw (Box-Muller).
  static float normal(Rng& rng) {
    const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

  double p_;
  std::array<double, 2> scale_{}, log_ratio_{};
  bool random_ = false;
  std::vector<double> value_;
};

}  // namespace

FLOWRUN_PLUGIN("random_erasing") { registry.add<RandomErasing>(); }
