#include "stages/data/weighted.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

namespace {

std::string trim(const std::string& text) {
  size_t begin = text.find_first_not_of(" \t\r"), end = text.find_last_not_of(" \t\r");
  if (begin == std::string::npos) return "";
  std::string out = text.substr(begin, end - begin + 1);
  if (out.size() >= 2 && out.front() == '"' && out.back() == '"') out = out.substr(1, out.size() - 2);
  return out;
}

// Reads FILE; every error names FILE:LINE.
Weighted::WeightFile read_weights(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot open the weights file");
  Weighted::WeightFile file;
  std::string line;
  int number = 0;
  bool header = false;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    if (trim(line).empty()) continue;
    const size_t comma = line.rfind(',');
    if (comma == std::string::npos) throw std::runtime_error(where + "expected KEY,WEIGHT");
    const std::string key = trim(line.substr(0, comma)), value = trim(line.substr(comma + 1));
    if (!header) {
      if ((key != "index" && key != "class") || value != "weight")
        throw std::runtime_error(where + "the header must be 'index,weight' or 'class,weight'");
      file.by_class = key == "class";
      header = true;
      continue;
    }
    size_t used = 0;
    double weight = 0;
    try {
      weight = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != value.size() || !std::isfinite(weight) || weight < 0)
      throw std::runtime_error(where + "weight '" + value + "' is not a finite number >= 0");
    if (!file.by_class && (key.empty() || key.find_first_not_of("0123456789") != std::string::npos || key.size() > 18))
      throw std::runtime_error(where + "index '" + key + "' is not a dataset index");
    if (!file.by_key.emplace(key, weight).second) throw std::runtime_error(where + "'" + key + "' appears twice");
    file.line_of[key] = number;
  }
  if (in.bad()) throw std::runtime_error(path + ":" + std::to_string(number + 1) + ": read failed");
  if (!header) throw std::runtime_error(path + ": empty weights file (expected a header 'index,weight' or 'class,weight')");
  return file;
}

}  // namespace

Schema Weighted::schema() {
  return Schema("weighted", "sampler op: draws samples by per-sample or per-class weights from a CSV "
                            "(WeightedRandomSampler), read when an epoch first samples").provides("sampler")
      .param(Path("weights", "CSV file: header 'index,weight' or 'class,weight'; read at each epoch's first "
                             "draw, so an earlier phase may write it (importance_weights)"))
      .param(Int("num_samples", "samples drawn per epoch; 0 = as many as are in use").def(int64_t{0})
                 .range(0, static_cast<double>(int64_t{1} << 40)))
      .param(Bool("replacement", "draw with replacement").def(true))
      .param(Float("default_weight", "weight of samples or classes the file leaves out").def(0.0).range(0, 1e300))
      .param(sampler_seed_param());
}

Weighted::Weighted(const StageInit& init)
    : SamplerOp(init, "weighted"),
      name_(init.name),
      path_(init.params.get_string("weights")),
      num_samples_(init.params.get_int("num_samples")),
      replacement_(init.params.get_bool("replacement")),
      default_weight_(init.params.get_float("default_weight")) {}

Weighted::WeightFile Weighted::weights_for(int epoch) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (read_epoch_ != epoch) {
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec))
      throw std::runtime_error("sampler '" + name_ + "' (weighted): weights=" + path_ +
                               ": no such file (a stage that writes it, such as importance_weights, must run in an "
                               "earlier phase)");
    file_ = read_weights(path_);
    read_epoch_ = epoch;
  }
  return file_;
}

bool Weighted::reads_classes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return read_epoch_ >= 0 && file_.by_class;
}

void Weighted::apply(SampleSet& set, int epoch) const {
  const WeightFile file = weights_for(epoch);
  std::vector<int64_t> candidates = set.indices;
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  std::vector<double> weights(candidates.size(), default_weight_);
  if (file.by_class) {
    std::map<std::string, int64_t> label_of;
    for (size_t c = 0; c < set.class_names.size(); ++c) label_of[set.class_names[c]] = static_cast<int64_t>(c);
    std::map<int64_t, double> class_weight;
    for (const auto& [name, weight] : file.by_key) {
      auto it = label_of.find(name);
      if (it == label_of.end())
        throw std::runtime_error(path_ + ":" + std::to_string(file.line_of.at(name)) + ": class '" + name +
                                 "' is not in the dataset");
      class_weight[it->second] = weight;
    }
    for (size_t i = 0; i < candidates.size(); ++i)
      if (auto it = class_weight.find(set.labels[static_cast<size_t>(candidates[i])]); it != class_weight.end())
        weights[i] = it->second;
  } else {
    for (const auto& [key, weight] : file.by_key) {
      const int64_t index = std::stoll(key);
      if (index >= static_cast<int64_t>(set.labels.size()))
        throw std::runtime_error(path_ + ":" + std::to_string(file.line_of.at(key)) + ": index " + key + " is beyond the dataset's " +
                                 std::to_string(set.labels.size()) + " samples");
      auto it = std::lower_bound(candidates.begin(), candidates.end(), index);
      if (it != candidates.end() && *it == index) weights[static_cast<size_t>(it - candidates.begin())] = weight;
    }
  }
  std::vector<double> cumulative(weights.size());
  double total = 0;
  size_t positive = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    total += weights[i];
    positive += weights[i] > 0;
    cumulative[i] = total;
  }
  if (!(total > 0)) throw std::runtime_error(path_ + ": every sample in use weighs 0");
  const size_t n = num_samples_ ? static_cast<size_t>(num_samples_) : set.indices.size();
  if (!replacement_ && n > positive)
    throw std::runtime_error(path_ + ": " + std::to_string(n) + " samples without replacement, but only " +
                             std::to_string(positive) + " weigh more than 0");
  Rng rng = this->rng(static_cast<uint64_t>(epoch));
  std::vector<int64_t> out;
  out.reserve(n);
  if (replacement_) {
    size_t last_positive = weights.size() - 1;
    while (weights[last_positive] == 0) --last_positive;
    for (size_t k = 0; k < n; ++k) {
      const double u = rng.uniform() * total;
      size_t i = static_cast<size_t>(std::upper_bound(cumulative.begin(), cumulative.end(), u) - cumulative.begin());
      // u rounded up to the total lands past the end (or on trailing zeros): the last sample that weighs anything.
      while (i < weights.size() && weights[i] == 0) ++i;
      out.push_back(candidates[std::min(i, last_positive)]);
    }
  } else {
    // Efraimidis & Spirakis: the n largest keys u^(1/w) are a weighted draw without replacement.
    std::vector<std::pair<double, int64_t>> keys;
    for (size_t i = 0; i < weights.size(); ++i)
      if (weights[i] > 0) keys.emplace_back(std::log(1.0 - rng.uniform()) / weights[i], candidates[i]);
    std::partial_sort(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(n), keys.end(),
                      [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t k = 0; k < n; ++k) out.push_back(keys[k].second);
  }
  set.indices = std::move(out);
}

FLOWRUN_REGISTER_STAGE(Weighted);

}  // namespace flowrun::stages
