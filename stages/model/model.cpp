#include "stages/model/model.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>
#include <thread>

#include "pipeline/executor.h"
#include "pipeline/graph.h"
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/common/random.h"

namespace flowrun::stages {

namespace {
std::string shape_text(at::IntArrayRef sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}
bool is_head(const std::string& key) { return key.rfind("fc.", 0) == 0; }
}  // namespace

StateDict state_dict(const torch::nn::Module& model) {
  StateDict out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

LoadReport load_state_dict(torch::nn::Module& model, const StateDict& weights, bool allow_new_head,
                           const std::string& source) {
  std::map<std::string, at::Tensor> given;
  for (const auto& [key, tensor] : weights) {
    if (!given.emplace(key, tensor).second) throw std::runtime_error(source + ": key '" + key + "' appears twice");
  }
  StateDict own = state_dict(model);
  std::map<std::string, at::Tensor> mine(own.begin(), own.end());
  // Strict: report every problem at once.
  std::vector<std::string> problems;
  LoadReport report;
  for (const auto& [key, tensor] : own) {
    auto it = given.find(key);
    if (it == given.end()) {
      problems.push_back("missing key '" + key + "' (" + shape_text(tensor.sizes()) + ")");
    } else if (it->second.sizes() != tensor.sizes()) {
      if (allow_new_head && is_head(key)) report.reinitialised.push_back(key);
      else problems.push_back("key '" + key + "' has shape " + shape_text(it->second.sizes()) + " but the model needs " +
                              shape_text(tensor.sizes()));
    }
  }
  for (const auto& [key, tensor] : weights)
    if (!mine.count(key)) problems.push_back("unexpected key '" + key + "' (" + shape_text(tensor.sizes()) + ")");
  if (!problems.empty()) {
    std::string text = source + ": weights do not fit the model:";
    for (size_t i = 0; i < problems.size() && i < 20; ++i) text += "\n  " + problems[i];
    if (problems.size() > 20) text += "\n  ... and " + std::to_string(problems.size() - 20) + " more";
    throw std::runtime_error(text);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [key, tensor] : own) {
    if (std::find(report.reinitialised.begin(), report.reinitialised.end(), key) != report.reinitialised.end()) continue;
    const at::Tensor& value = given.at(key);
    at::Tensor target = tensor;
    target.copy_(value.to(target.scalar_type()));
    ++report.loaded;
  }
  return report;
}

Schema ModelStage::schema() {
  return Schema("resnet", "ResNet-18/34/50/101 with torchvision's keys; weights from .pth (torch.save) or safetensors")
      .param(Int("depth", "18, 34, 50 or 101").def(int64_t{50}).range(18, 101))
      .param(Int("classes", "outputs of the head (fc)").range(1, 1000000))
      .param(Path("weights", "a torchvision .pth or a safetensors file; \"\" = random initialisation").def(std::string("")))
      .param(Path("pretrain", "a graph that makes `weights` when the file does not exist yet (run once, then cached)")
                 .def(std::string("")))
      .check([](const Params& p) {
        int64_t d = p.get_int("depth");
        return d == 18 || d == 34 || d == 50 || d == 101 ? "" : "depth must be 18, 34, 50 or 101";
      });
}

namespace {
// Runs the graph that makes a missing weights file, in this process.
void make_weights(const std::string& graph_path, const std::string& weights) {
  spdlog::warn("{} does not exist yet: making it with {} (once; later runs reuse it)", weights, graph_path);
  Diagnostics diagnostics;
  GraphSpec spec = parse_graph_file(graph_path, diagnostics);
  if (!diagnostics.empty()) throw std::runtime_error(diagnostics.format());
  ResolvedGraph graph = resolve_graph(spec, Registry::global());
  RunOptions options;
  options.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  RunResult result = run_graph(graph, options);
  if (result.interrupted) throw std::runtime_error("interrupted while making " + weights);
  if (!std::filesystem::exists(weights))
    throw std::runtime_error(graph_path + " ran but did not write " + weights + " (add a save_weights stage)");
}
}  // namespace

ModelStage::ModelStage(const StageInit& init)
    : classes_(init.params.get_int("classes")), weights_(init.params.get_string("weights")) {
  const int depth = static_cast<int>(init.params.get_int("depth"));
  // Initial weights from (run seed, stage name): not from whatever else used
  // LibTorch's generator before (a pretraining run, another model).
  torch::manual_seed(mix64(init.run.seed ^ hash_name(init.name)));
  net_ = ResNet(depth, classes_);
  const std::string pretrain = init.params.get_string("pretrain");
  if (!weights_.empty() && !pretrain.empty() && !std::filesystem::exists(weights_)) make_weights(pretrain, weights_);
  if (!weights_.empty()) {
    StateDict weights = read_weights(weights_);
    load_ = load_state_dict(*net_, weights, /*allow_new_head=*/true, weights_);
    if (!load_.reinitialised.empty())
      spdlog::info("{}: head re-initialised for {} classes ({})", weights_, classes_, load_.reinitialised.front());
  }
}

void ModelStage::report(Report& report) const {
  report.set("parameters", static_cast<double>([&] {
    int64_t n = 0;
    for (const auto& p : net_->parameters()) n += p.numel();
    return n;
  }()));
  report.set("weights_loaded", static_cast<double>(load_.loaded));
  report.set("head_reinitialised", load_.reinitialised.empty() ? 0 : 1);
}

ModelStage& find_model(const StageDirectory& stages, const std::string& name) {
  return stages.require<ModelStage>(name, "model");
}

FLOWRUN_REGISTER_STAGE(ModelStage);

}  // namespace flowrun::stages
