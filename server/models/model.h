#ifndef MANTISSA_SERVER_MODELS_MODEL_H_
#define MANTISSA_SERVER_MODELS_MODEL_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mantissa {

// What a model learns from a dataset; decides the loss and the evaluation.
enum class Task {
  // inputs float [N, ...input_shape], targets int64 [N]; cross entropy,
  // evaluated by accuracy.
  kClassification,
  // inputs and targets int64 token ids [N, seq_len] (targets are the inputs
  // shifted by one); cross entropy per token, evaluated by loss and
  // perplexity.
  kLanguageModel,
};

// What the dataset tells a model about its inputs and targets.
struct DataSpec {
  Task task = Task::kClassification;
  std::vector<int64_t> input_shape;  // one item, e.g. {1, 28, 28}; {seq_len} for tokens
  int64_t num_classes = 0;           // classification targets in [0, num_classes)
  int64_t vocab_size = 0;            // language modelling: token ids in [0, vocab_size)
  int64_t seq_len = 0;               // language modelling: tokens per input window
};

// Named parameters and buffers, e.g. {"0.weight", tensor}.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// A trainable model, independent of how it was built (a torch::nn module
// or a loaded TorchScript module). The precision plugins and the trainer
// only see this interface.
class Model {
 public:
  virtual ~Model() = default;

  virtual torch::Tensor Forward(const torch::Tensor& input) = 0;
  // Forward, keeping each layer's output by module path in forward order
  // ("0", "1", ... for a Sequential): the last entry is Forward's output.
  // Serving compares them between fp32 and a half cast to say where a cast
  // starts to diverge. Models without layers give {"output", Forward}.
  virtual std::vector<std::pair<std::string, torch::Tensor>> ForwardLayers(
      const torch::Tensor& input) {
    return {{"output", Forward(input)}};
  }
  virtual std::vector<torch::Tensor> Parameters() = 0;
  // Every parameter and buffer by its dotted name: what a checkpoint holds.
  // The tensors alias the model's, so copying into them loads weights.
  virtual NamedTensors State() = 0;
  virtual void SetTraining(bool training) = 0;
  // Moves parameters and buffers; floating ones are cast to `dtype`.
  virtual void To(torch::Device device, torch::Dtype dtype) = 0;
  virtual void ToDevice(torch::Device device) = 0;
  // Casts floating parameters and buffers, keeping the device.
  virtual void ToDtype(torch::Dtype dtype) = 0;
  // The root of the torch::nn module tree, for precision plugins that swap
  // layers (FP8); null for models that are not torch::nn modules
  // (TorchScript).
  virtual std::shared_ptr<torch::nn::Module> nn_module() { return nullptr; }

  int64_t ParameterCount() {
    int64_t n = 0;
    for (const torch::Tensor& p : Parameters()) n += p.numel();
    return n;
  }
};

// A Model over a torch::nn module holder, e.g. ModuleModel<torch::nn::Sequential>.
template <typename ModuleHolder>
class ModuleModel : public Model {
 public:
  explicit ModuleModel(ModuleHolder module) : module_(std::move(module)) {}

  torch::Tensor Forward(const torch::Tensor& input) override { return module_->forward(input); }
  std::vector<std::pair<std::string, torch::Tensor>> ForwardLayers(
      const torch::Tensor& input) override {
    if constexpr (std::is_same_v<ModuleHolder, torch::nn::Sequential>) {
      // The children in the order Sequential::forward runs them.
      std::vector<std::pair<std::string, torch::Tensor>> layers;
      const auto children = module_->named_children();
      torch::Tensor x = input;
      size_t i = 0;
      for (auto& layer : *module_) {
        x = layer.forward(x);
        layers.emplace_back(children[i++].key(), x);
      }
      return layers;
    } else {
      return Model::ForwardLayers(input);
    }
  }
  std::vector<torch::Tensor> Parameters() override { return module_->parameters(); }
  NamedTensors State() override {
    NamedTensors state;
    for (const auto& p : module_->named_parameters()) state.emplace_back(p.key(), p.value());
    for (const auto& b : module_->named_buffers()) state.emplace_back(b.key(), b.value());
    return state;
  }
  void SetTraining(bool training) override { module_->train(training); }
  void To(torch::Device device, torch::Dtype dtype) override { module_->to(device, dtype); }
  void ToDevice(torch::Device device) override { module_->to(device); }
  void ToDtype(torch::Dtype dtype) override { module_->to(dtype); }
  std::shared_ptr<torch::nn::Module> nn_module() override { return module_.ptr(); }

  ModuleHolder& module() { return module_; }

 private:
  ModuleHolder module_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_MODEL_H_
