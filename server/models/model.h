#ifndef MANTISSA_SERVER_MODELS_MODEL_H_
#define MANTISSA_SERVER_MODELS_MODEL_H_

#include <torch/torch.h>

#include <string>
#include <vector>

namespace mantissa {

// What the dataset tells a model about its inputs and targets.
struct DataSpec {
  std::vector<int64_t> input_shape;  // one item, e.g. {1, 28, 28}
  int64_t num_classes = 0;           // classification targets in [0, num_classes)
};

// A trainable model, independent of how it was built (a torch::nn module
// here; TorchScript modules later). The precision plugins and the trainer
// only see this interface.
class Model {
 public:
  virtual ~Model() = default;

  virtual torch::Tensor Forward(const torch::Tensor& input) = 0;
  virtual std::vector<torch::Tensor> Parameters() = 0;
  virtual void SetTraining(bool training) = 0;
  // Moves parameters and buffers; floating ones are cast to `dtype`.
  virtual void To(torch::Device device, torch::Dtype dtype) = 0;
  virtual void ToDevice(torch::Device device) = 0;
  // Casts floating parameters and buffers, keeping the device.
  virtual void ToDtype(torch::Dtype dtype) = 0;

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
  std::vector<torch::Tensor> Parameters() override { return module_->parameters(); }
  void SetTraining(bool training) override { module_->train(training); }
  void To(torch::Device device, torch::Dtype dtype) override { module_->to(device, dtype); }
  void ToDevice(torch::Device device) override { module_->to(device); }
  void ToDtype(torch::Dtype dtype) override { module_->to(dtype); }

  ModuleHolder& module() { return module_; }

 private:
  ModuleHolder module_;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_MODEL_H_
