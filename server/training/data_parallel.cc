#include "server/training/data_parallel.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#if defined(MANTISSA_WITH_CUDA) && defined(USE_C10D_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#define MANTISSA_DATA_PARALLEL_NCCL 1
#endif

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"

namespace mantissa {
namespace {

std::chrono::milliseconds Millis(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Gloo reduces float, double, half and the integer types; bf16 and fp16
// gradients are summed in float32 on the CPU (more exact, too), bools travel
// as bytes.
torch::Dtype WireDtype(torch::Dtype dtype, bool cuda) {
  if (cuda) return dtype == torch::kBool ? torch::kUInt8 : dtype;
  switch (dtype) {
    case torch::kBFloat16:
    case torch::kFloat16:
      return torch::kFloat32;
    case torch::kBool:
      return torch::kUInt8;
    default:
      return dtype;
  }
}

// Same-device, same-dtype tensors whose flat copies total about `bytes`
// each, in the callers' order (identical on every rank).
std::vector<std::vector<torch::Tensor>> Buckets(const std::vector<torch::Tensor>& tensors,
                                                int64_t bytes) {
  std::map<std::pair<std::string, int>, std::vector<size_t>> open;  // key -> bucket index
  std::vector<std::vector<torch::Tensor>> buckets;
  std::vector<int64_t> filled;
  for (const torch::Tensor& t : tensors) {
    const std::pair<std::string, int> key{t.device().str(), static_cast<int>(t.scalar_type())};
    std::vector<size_t>& mine = open[key];
    const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
    if (mine.empty() || (filled[mine.back()] > 0 && filled[mine.back()] + size > bytes)) {
      mine.push_back(buckets.size());
      buckets.emplace_back();
      filled.push_back(0);
    }
    buckets[mine.back()].push_back(t);
    filled[mine.back()] += size;
  }
  return buckets;
}

}  // namespace

struct DataParallel::Group {
  // The store, then the groups; throws c10::Error (or Gloo's errors) on a
  // failure, `stage` saying which step failed.
  void Form(std::string& stage);

  Options options;
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::Store> prefixed;
  // Declared last so they are destroyed first, before the store they formed on.
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef MANTISSA_DATA_PARALLEL_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif

  // The group that reduces tensors on `device`.
  compat::C10dBackend& For(const torch::Device& device) {
#ifdef MANTISSA_DATA_PARALLEL_NCCL
    if (device.is_cuda()) {
      TORCH_CHECK(nccl, "data parallel: a CUDA tensor on a rank whose device is ",
                  options.device.str());
      return *nccl;
    }
#endif
    TORCH_CHECK(device.is_cpu(), "data parallel: no process group for tensors on ", device.str());
    return *gloo;
  }

  // One collective per flat buffer; tensors are copied in and out.
  void Run(const std::vector<torch::Tensor>& tensors, bool broadcast, c10d::ReduceOp op) {
    torch::NoGradGuard no_grad;
    std::vector<std::vector<torch::Tensor>> buckets = Buckets(tensors, options.bucket_bytes);
    std::vector<torch::Tensor> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (const std::vector<torch::Tensor>& bucket : buckets) {
      const torch::Tensor& first = bucket.front();
      const torch::Dtype wire = WireDtype(first.scalar_type(), first.is_cuda());
      std::vector<torch::Tensor> pieces;
      for (const torch::Tensor& t : bucket) pieces.push_back(t.reshape({-1}).to(wire));
      // A lone contiguous tensor of the wire dtype is reduced where it is.
      std::vector<torch::Tensor> flat{pieces.size() == 1 ? pieces[0].contiguous()
                                                         : torch::cat(pieces)};
      compat::C10dBackend& group = For(first.device());
      if (broadcast) {
        c10d::BroadcastOptions opts;
        opts.rootRank = 0;
        works.push_back(group.broadcast(flat, opts));
      } else {
        c10d::AllreduceOptions opts;
        opts.reduceOp = op;
        works.push_back(group.allreduce(flat, opts));
      }
      flats.push_back(flat[0]);
    }
    for (size_t i = 0; i < buckets.size(); ++i) {
      works[i]->wait();
      int64_t offset = 0;
      for (const torch::Tensor& t : buckets[i]) {
        const int64_t n = t.numel();
        const torch::Tensor piece = flats[i].slice(0, offset, offset + n);
        if (piece.data_ptr() != t.data_ptr()) {
          torch::Tensor target = t;
          target.copy_(piece.view(t.sizes()));
        }
        offset += n;
      }
    }
  }
};

namespace {

absl::Status CheckOptions(const DataParallel::Options& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("data parallel: rank ", options.rank,
                                                   " of world size ", options.world_size,
                                                   "; the rank must be in [0, world size)"));
  }
  if (options.bucket_bytes <= 0 || options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("data parallel: bucket_bytes and timeout must be > 0");
  }
  if (options.rank != 0 && (options.master_port <= 0 || options.master_port > 65535)) {
    return absl::InvalidArgumentError(absl::StrCat("data parallel: rank ", options.rank,
                                                   " needs rank 0's store port in [1, 65535]; got ",
                                                   options.master_port));
  }
#ifndef MANTISSA_DATA_PARALLEL_NCCL
  if (options.device.is_cuda()) {
    return absl::FailedPreconditionError(
        "data parallel on CUDA needs a build with NCCL (MANTISSA_WITH_CUDA, USE_C10D_NCCL)");
  }
#endif
  return absl::OkStatus();
}

}  // namespace

void DataParallel::Group::Form(std::string& stage) {
  stage = "connecting to the store";
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(options.master_port);
  store_options.isServer = options.rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(options.world_size);
  store_options.waitWorkers = false;
  store_options.timeout = Millis(options.timeout);
  store = c10::make_intrusive<c10d::TCPStore>(options.master_addr, store_options);
  options.master_port = store->getPort();
  if (options.rank == 0 && options.on_store_ready) options.on_store_ready(options.master_port);
  prefixed = c10::make_intrusive<c10d::PrefixStore>(options.store_prefix, store);

  stage = "forming the Gloo group";
  auto gloo_options = c10d::ProcessGroupGloo::Options::create(Millis(options.timeout));
  gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.address));
  gloo_options->threads = 2;
  gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, options.rank, options.world_size,
                                                     gloo_options);
#ifdef MANTISSA_DATA_PARALLEL_NCCL
  if (options.device.is_cuda()) {
    stage = "forming the NCCL group";
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = Millis(options.timeout);
    nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl/", prefixed), options.rank, options.world_size,
        nccl_options);
  }
#endif
}

absl::StatusOr<std::unique_ptr<DataParallel>> DataParallel::Create(Options options) {
  RETURN_IF_ERROR(CheckOptions(options));
  auto group = std::make_unique<Group>();
  group->options = options;
  std::string stage;
  try {
    group->Form(stage);
  } catch (const std::exception& e) {
    // The port rank 0's store took, once it listens.
    const int port = group->options.master_port;
    const std::string where = absl::StrCat(
        options.master_addr, ":", port == 0 ? std::string("<free port>") : std::to_string(port));
    const std::string who =
        absl::StrCat("data parallel: rank ", options.rank, " of ", options.world_size);
    const std::string message = e.what();
    const std::string first_line = message.substr(0, message.find('\n'));
    if (absl::StrContains(message, "imeout") || absl::StrContains(message, "timed out")) {
      return absl::DeadlineExceededError(
          absl::StrCat(who, ": the rendezvous at ", where, " timed out after ",
                       absl::FormatDuration(options.timeout), " waiting for all ",
                       options.world_size, " ranks (", stage, "): ", first_line));
    }
    return absl::UnavailableError(
        absl::StrCat(who, ": ", stage, " at ", where, " failed: ", first_line));
  }
  return std::unique_ptr<DataParallel>(new DataParallel(std::move(group)));
}

DataParallel::DataParallel(std::unique_ptr<Group> group) : group_(std::move(group)) {}

DataParallel::~DataParallel() = default;

int DataParallel::rank() const { return group_->options.rank; }

int DataParallel::world_size() const { return group_->options.world_size; }

std::string DataParallel::backend() const {
#ifdef MANTISSA_DATA_PARALLEL_NCCL
  if (group_->nccl) return "nccl";
#endif
  return "gloo";
}

void DataParallel::Broadcast(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> defined;
  for (const torch::Tensor& t : tensors) {
    if (t.defined() && t.numel() > 0) defined.push_back(t);
  }
  Noting([&] { group_->Run(defined, /*broadcast=*/true, c10d::ReduceOp::SUM); });
}

void DataParallel::AllReduceGradients(const std::vector<torch::Tensor>& parameters) {
  // Which parameters have a gradient on some rank: those get zeros where a
  // rank has none, so that every rank steps the same parameters; a parameter
  // no rank touched keeps no gradient, as in one process.
  torch::Tensor has_grad = torch::zeros({static_cast<int64_t>(parameters.size())}, torch::kUInt8);
  auto* local = has_grad.data_ptr<uint8_t>();
  for (size_t i = 0; i < parameters.size(); ++i) local[i] = parameters[i].grad().defined() ? 1 : 0;
  AllReduceMax(has_grad);
  const auto* any = has_grad.data_ptr<uint8_t>();
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < parameters.size(); ++i) {
    if (any[i] == 0) continue;
    torch::Tensor param = parameters[i];
    if (!param.grad().defined()) param.mutable_grad() = torch::zeros_like(param);
    TORCH_CHECK(!param.grad().is_sparse(), "data parallel: sparse gradients are not supported");
    grads.push_back(param.grad());
  }
  Noting([&] { group_->Run(grads, /*broadcast=*/false, c10d::ReduceOp::SUM); });
}

void DataParallel::AllReduceMax(const torch::Tensor& tensor) {
  Noting([&] { group_->Run({tensor}, /*broadcast=*/false, c10d::ReduceOp::MAX); });
}

void DataParallel::AllReduceSum(const torch::Tensor& tensor) {
  Noting([&] { group_->Run({tensor}, /*broadcast=*/false, c10d::ReduceOp::SUM); });
}

int64_t DataParallel::AgreeMax(int64_t local) {
  torch::Tensor value = torch::full({1}, local, torch::kInt64);
  std::vector<torch::Tensor> tensors{value};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::MAX;
  Noting([&] { group_->gloo->allreduce(tensors, opts)->wait(); });
  return value.item<int64_t>();
}

}  // namespace mantissa
