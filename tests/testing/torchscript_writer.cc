#include "tests/testing/torchscript_writer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cmath>
#include <exception>
#include <limits>

#include "absl/strings/str_cat.h"

namespace mantissa::testing {

absl::Status WriteTorchScriptMlp(const std::string& path, int64_t in_features, int64_t hidden,
                                 int64_t classes, uint64_t seed) {
  if (in_features <= 0 || hidden <= 0 || classes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteTorchScriptMlp: sizes must be positive, got ", in_features, ", ", hidden,
                     ", ", classes));
  }
  try {
    torch::NoGradGuard no_grad;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
    torch::jit::Module m("MantissaTsMlp");
    // Modules scripted in Python carry this flag; Module::train() needs it.
    m.register_attribute("training", c10::BoolType::get(), true);
    m.register_parameter(
        "w1", torch::randn({hidden, in_features}, gen, f32) * std::sqrt(2.0 / in_features),
        /*is_buffer=*/false);
    m.register_parameter("b1", torch::zeros({hidden}, f32), /*is_buffer=*/false);
    m.register_parameter("w2", torch::randn({classes, hidden}, gen, f32) * std::sqrt(1.0 / hidden),
                         /*is_buffer=*/false);
    m.register_parameter("b2", torch::zeros({classes}, f32), /*is_buffer=*/false);
    m.define(R"JIT(
def forward(self, x):
    h = torch.relu(torch.linear(torch.flatten(x, 1), self.w1, self.b1))
    return torch.linear(h, self.w2, self.b2)
)JIT");
    m.save(path);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("WriteTorchScriptMlp(", path, "): ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status WriteTorchScriptBf16Overflow(const std::string& path, int64_t features) {
  if (features <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("WriteTorchScriptBf16Overflow: features must be positive, got ", features));
  }
  try {
    torch::NoGradGuard no_grad;
    torch::jit::Module m("MantissaTsBf16Overflow");
    m.register_attribute("training", c10::BoolType::get(), true);
    m.register_parameter("scale",
                         torch::full({features}, std::numeric_limits<float>::max(),
                                     torch::TensorOptions().dtype(torch::kFloat32)),
                         /*is_buffer=*/false);
    m.define(R"JIT(
def forward(self, x):
    return torch.tanh(torch.flatten(x, 1)) * self.scale
)JIT");
    m.save(path);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("WriteTorchScriptBf16Overflow(", path, "): ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace mantissa::testing
