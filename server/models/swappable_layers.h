#ifndef MANTISSA_SERVER_MODELS_SWAPPABLE_LAYERS_H_
#define MANTISSA_SERVER_MODELS_SWAPPABLE_LAYERS_H_

#include <torch/torch.h>

#include <string>

namespace mantissa {

// Implemented by a torch::nn module whose forward calls some of its children
// through members it can re-point, so that a precision plugin can swap such
// a child for another module over the same parameters (the FP8 plugin's
// Linear). torch::nn::Module::replace_module alone only updates the registry
// of children: a forward calling a member would keep calling the old child.
// (torch::nn::Sequential needs no help: its entries can be replaced in place.)
class SwappableLayers {
 public:
  virtual ~SwappableLayers() = default;

  // Registers `layer` (a Tensor -> Tensor forward) as child `name` in place
  // of the current one, and has the forward call it from now on. False, with
  // nothing changed, when `name` is not a child this module can swap.
  virtual bool SwapLayer(const std::string& name, torch::nn::AnyModule layer) = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_MODELS_SWAPPABLE_LAYERS_H_
