#include "stages/model/model.h"
#include "stages/model/precision.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>
#include <thread>

#include "pipeline/executor.h"
#include "pipeline/graph.h"
#include <stdexcept>

#include "pipeline/registry.h"
#include "stages/common/random.h"
#include "stages/dist/job.h"
#include "stages/model/checkpoint_format.h"
#include "stages/tensor/device.h"

namespace flowrun::stages {

namespace {
std::string shape_text(at::IntArrayRef sizes) {
  std::string text = "[";
  for (size_t i = 0; i < sizes.size(); ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}
}  // namespace

StateDict state_dict(const torch::nn::Module& model) {
  StateDict out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

LoadReport load_state_dict(NetworkImpl& model, const StateDict& weights, bool allow_new_head,
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
      if (allow_new_head && model.is_head(key)) report.reinitialised.push_back(key);
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

Schema ModelStage::common_schema(std::string type, std::string doc) {
  return Schema(std::move(type), std::move(doc))
      .provides("model")
      .param(Int("classes", "outputs of the head").range(1, 1000000))
      .param(Path("weights", "a torchvision .pth, a safetensors file or a flowrun checkpoint (its model of this "
                            "stage's name); \"\" = random initialisation").def(std::string("")))
      .param(Path("pretrain", "a graph that makes `weights` when the file does not exist yet (run once, then cached)")
                 .def(std::string("")))
      .param(String("device", "auto (CUDA when available), cpu or cuda").def(std::string("auto"))
                 .one_of({"auto", "cpu", "cuda"}))
      .param(Int("index", "CUDA device index; auto = the rank's LOCAL_RANK in a job of several processes, else 0")
                 .def(Auto{}).or_auto().range(0, 63))
      .param(String("precision", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16").def(std::string("auto"))
                 .one_of({"auto", "fp32", "bf16"}))
      .param(String("channels_last", "NHWC layout: auto = on CUDA").def(std::string("auto")).one_of({"auto", "yes", "no"}));
}

Schema ModelStage::schema() {
  return common_schema("resnet", "ResNet-18/34/50/101 with torchvision's keys; weights from .pth (torch.save) or "
                                 "safetensors")
      .param(Int("depth", "18, 34, 50 or 101").def(int64_t{50}).range(18, 101))
      .check([](const Params& p) {
        int64_t d = p.get_int("depth");
        return d == 18 || d == 34 || d == 50 || d == 101 ? "" : "depth must be 18, 34, 50 or 101";
      });
}

namespace {
// A weights file, or a flowrun checkpoint: then the weights of the model
// stage of the same name in the run that wrote it.
StateDict read_model_weights(const std::string& path, const std::string& stage) {
  Metadata metadata;
  StateDict tensors = read_weights(path, &metadata);
  if (metadata["format"] != checkpoint_format::kFormat) return tensors;
  const std::string key = checkpoint_format::kStagePrefix + stage;
  for (const auto& [name, tensor] : tensors)
    if (name == key && tensor.scalar_type() == at::kByte && tensor.dim() == 1)
      return decode_safetensors(static_cast<const uint8_t*>(tensor.contiguous().data_ptr()),
                                static_cast<size_t>(tensor.numel()), path + " (model '" + stage + "')");
  throw std::runtime_error(path + ": a checkpoint without a model stage named '" + stage + "'");
}

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
    : ModelStage(init, [depth = static_cast<int>(init.params.get_int("depth"))](int64_t classes) {
        return Network(ResNet(depth, classes).ptr());
      }) {}

ModelStage::ModelStage(const StageInit& init, const Builder& build)
    : classes_(init.params.get_int("classes")), weights_(init.params.get_string("weights")), name_(init.name) {
  // Initial weights from (run seed, stage name): not from whatever else used
  // LibTorch's generator before (a pretraining run, another model).
  torch::manual_seed(mix64(init.run.seed ^ hash_name(init.name)));
  net_ = build(classes_);
  if (net_.is_empty()) throw std::runtime_error("model stage '" + name_ + "': its builder made no network");
  const std::string pretrain = init.params.get_string("pretrain");
  Job* job = Job::of(init.run.job);
  if (!weights_.empty() && !pretrain.empty() && !std::filesystem::exists(weights_)) {
    // In a job, rank 0 makes the file; the others wait for it (a pretraining
    // run takes far longer than a collective's timeout).
    const std::string made = "made " + weights_;
    if (!job || job->rank() == 0) make_weights(pretrain, weights_);
    if (job && job->rank() == 0) job->announce(made);
    if (job && job->rank() != 0) job->wait_for(made, 7 * 24 * 3600.0);
  }
  if (!weights_.empty()) {
    StateDict weights = read_model_weights(weights_, name_);
    load_ = load_state_dict(*net_, weights, /*allow_new_head=*/true, weights_);
    if (!load_.reinitialised.empty())
      spdlog::info("{}: head re-initialised for {} classes ({})", weights_, classes_, load_.reinitialised.front());
  }
  const std::string device = init.params.get_string("device");
  const bool cuda = device == "cuda" || (device == "auto" && cuda_available());
  if (cuda && !cuda_available()) throw std::runtime_error("device=cuda but there is " + no_cuda_device_reason());
  const std::string precision = init.params.get_string("precision");
  bf16_ = precision == "bf16" || (precision == "auto" && cuda);
  if (bf16_ && !cuda) throw std::runtime_error("precision=bf16 needs CUDA (autocast here is for the GPU)");
  const std::string layout = init.params.get_string("channels_last");
  channels_last_ = layout == "yes" || (layout == "auto" && cuda);
  if (cuda) {
    device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(init.params.get_int_or("index", init.run.job.local_rank)));
    net_->to(device_);
    at::globalContext().setBenchmarkCuDNN(true);  // fixed input sizes: let cuDNN pick its fastest kernels
  }
  if (channels_last_) {
    // Modules have no memory-format `to`: convert the 4-D weights one by one.
    torch::NoGradGuard no_grad;
    for (auto& p : net_->parameters())
      if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
  if (job) {
    // Every rank starts from rank 0's weights (DDP does the same), whatever
    // each initialised or loaded.
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> tensors;
    for (const auto& [key, tensor] : state_dict(*net_)) tensors.push_back(tensor);
    job->broadcast(tensors, 0, "rank 0's initial weights of '" + name_ + "'");
  }
}

torch::Tensor ModelStage::input(const torch::Tensor& images) const {
  torch::Tensor x = images.device() == device_ ? images : images.to(device_, /*non_blocking=*/true);
  return channels_last_ ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
}

torch::Tensor ModelStage::labels(const torch::Tensor& labels) const {
  // A dataset with more classes than the head: say so, instead of LibTorch's
  // "Target 8 is out of bounds" from inside the loss. (Checked where the
  // labels are still on the host: no device synchronisation.)
  if (labels.device().is_cpu() && labels.numel() > 0) {
    const int64_t top = labels.max().item<int64_t>();
    if (top >= classes_)
      throw std::runtime_error("a sample has label " + std::to_string(top) + " but model '" + name_ + "' has " +
                               std::to_string(classes_) + " classes (set its classes= to the dataset's, or " +
                               "keep fewer classes with a sampler)");
  }
  return labels.device() == device_ ? labels : labels.to(device_, /*non_blocking=*/true);
}

torch::Tensor ModelStage::infer(const std::function<torch::Tensor(NetworkImpl&, const torch::Tensor&)>& run,
                                const torch::Tensor& images) {
  net_->eval();
  torch::NoGradGuard no_grad;
  AutocastScope autocast(bf16_);
  return run(*net_, input(images)).to(torch::kFloat);
}

torch::Tensor ModelStage::infer_logits(const torch::Tensor& images) {
  return infer([](NetworkImpl& net, const torch::Tensor& x) { return net.forward(x); }, images);
}

torch::Tensor ModelStage::infer_features(const torch::Tensor& images, const std::string& layer) {
  return infer([&](NetworkImpl& net, const torch::Tensor& x) { return net.features(x, layer); }, images);
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

bool ModelStage::save_state(std::string& out) const {
  out = encode_safetensors(state_dict(*net_));
  return true;
}

void ModelStage::load_state(const std::string& in) {
  const std::string what = "saved state of model '" + name_ + "'";
  StateDict weights = decode_safetensors(reinterpret_cast<const uint8_t*>(in.data()), in.size(), what);
  load_state_dict(*net_, weights, /*allow_new_head=*/false, what);
}

ModelStage& find_model(const StageDirectory& stages, const std::string& name) {
  return stages.require<ModelStage>(name, "model");
}

FLOWRUN_REGISTER_STAGE(ModelStage);

}  // namespace flowrun::stages
