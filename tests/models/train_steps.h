#ifndef MANTISSA_TESTS_MODELS_TRAIN_STEPS_H_
#define MANTISSA_TESTS_MODELS_TRAIN_STEPS_H_

#include <torch/torch.h>

#include "server/models/model.h"

namespace mantissa::testing {

struct LossChange {
  double before;
  double after;
};

// Cross entropy of `model` on one fixed batch before and after `steps` AdamW
// steps on it. Logits [N, C] or [N, T, V] with targets [N] or [N, T]; the
// loss is taken in float32 whatever the parameters' dtype.
inline LossChange TrainOnOneBatch(Model& model, const torch::Tensor& x, const torch::Tensor& y,
                                  int steps, double lr = 1e-2) {
  model.SetTraining(true);
  torch::optim::AdamW optimizer(model.Parameters(), torch::optim::AdamWOptions(lr));
  auto loss_fn = [&] {
    torch::Tensor logits = model.Forward(x);
    return torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32), y.reshape({-1}));
  };
  LossChange change{};
  for (int i = 0; i < steps; ++i) {
    optimizer.zero_grad();
    torch::Tensor loss = loss_fn();
    if (i == 0) change.before = loss.item<double>();
    loss.backward();
    optimizer.step();
  }
  torch::NoGradGuard no_grad;
  change.after = loss_fn().item<double>();
  return change;
}

}  // namespace mantissa::testing

#endif  // MANTISSA_TESTS_MODELS_TRAIN_STEPS_H_
