#include "server/training/training_job_runner.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <filesystem>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/artifacts/checkpoint.h"
#include "server/artifacts/export_artifact.h"
#include "server/common/option_reader.h"
#include "server/common/status_macros.h"
#include "server/common/torch_compat.h"
#include "server/common/torch_status.h"
#include "server/data/dataset_registry.h"
#include "server/models/model_registry.h"
#include "server/precision/precision_registry.h"
#include "server/runtime/device_capabilities.h"
#include "server/runtime/torch_runtime.h"
#include "server/training/data_parallel.h"
#include "server/training/job_spec_resolver.h"
#include "server/training/memory_estimate.h"
#include "server/training/memory_tracker.h"
#include "server/training/optimizer_registry.h"
#include "server/training/trainer.h"

namespace mantissa {

namespace {

// What a user needs to fix an out-of-memory failure: what ran, and how much
// the allocator was asked for.
absl::Status OutOfMemory(const v1::Job& job, const std::string& device,
                         const absl::Status& status) {
  const v1::JobSpec& spec = job.spec();
  const std::string asked = RequestedAllocation(status.message());
  // A std::bad_alloc: the host ran out, whatever the job's device.
  const bool host = absl::StrContains(status.message(), "out of host memory");
  return absl::ResourceExhaustedError(absl::StrCat(
      "out of memory on ", host ? "the host" : device, " training model ", spec.model(),
      " with batch_size ", spec.batch_size(), " in ", job.effective_precision(),
      asked.empty() ? "" : absl::StrCat(": tried to allocate ", asked),
      "; try a smaller batch_size or model, or a half-precision mode (", status.message(), ")"));
}

// What serving reads of a job that succeeded (ExportArtifact): the final
// weights in fp32, the data the model takes (with the model's own options
// applied) and the first items of the test split (train when it is empty)
// to calibrate serving casts on.
absl::Status WriteExportArtifact(const v1::Job& job, Trainer& trainer, const std::string& path) {
  const v1::JobSpec& spec = job.spec();
  ExportArtifact artifact;
  artifact.job_id = job.id();
  artifact.model = spec.model();
  artifact.model_options = ToOptionMap(spec.model_options());
  artifact.data = trainer.job().model->ModelDataSpec(trainer.data().spec);
  artifact.SetSignature();
  artifact.dataset = spec.dataset();
  artifact.dataset_options = ToOptionMap(spec.dataset_options());
  artifact.seed = spec.seed();
  artifact.trained_precision = trainer.job().effective_precision;
  for (const auto& [name, t] : trainer.model().State()) {
    torch::Tensor w = t.detach().to(torch::kCPU);
    if (w.is_floating_point()) w = w.to(torch::kFloat32);
    artifact.weights.emplace_back(name, w.contiguous());
  }
  const DatasetSplits& data = trainer.data();
  const bool use_test = data.test != nullptr && data.test->size() > 0;
  const Dataset& split = use_test ? *data.test : *data.train;
  const int64_t n = ExportArtifact::CalibrationItemsFor(artifact.data, split.size());
  if (n > 0) {
    Batch items = split.Get(torch::arange(n, torch::kInt64));
    torch::Tensor x = items.inputs.to(torch::kCPU);
    if (x.is_floating_point()) x = x.to(torch::kFloat32);
    artifact.calibration.inputs.emplace_back(artifact.inputs[0].name, x.contiguous());
    // Classifiers keep the items' targets: serving reports fp32 and cast
    // accuracy on them.
    if (artifact.data.task == Task::kClassification) {
      artifact.calibration.labels = items.targets.to(torch::kCPU, torch::kInt64).contiguous();
    }
    artifact.calibration.origin =
        absl::StrCat(spec.dataset(), use_test ? " test" : " train", " split");
  }
  return ExportArtifact::Write(path, artifact);
}

// JobSpec.devices this daemon accepts: its visible GPUs on CUDA; on the CPU
// its hardware threads, and at least 2 so that a data-parallel job can be
// tried (and tested) on any machine.
int MaxDevices(const DeviceCapabilities& caps) {
  if (caps.is_cuda()) return static_cast<int>(torch::cuda::device_count());
  return std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace

struct TrainingJobRunner::Probed {
  ResolveContext context;
};

TrainingJobRunner::TrainingJobRunner(Options options, std::string device,
                                     std::unique_ptr<Probed> probed)
    : options_(std::move(options)), device_(std::move(device)), probed_(std::move(probed)) {}

TrainingJobRunner::~TrainingJobRunner() = default;

absl::StatusOr<std::unique_ptr<TrainingJobRunner>> TrainingJobRunner::Create(Options options) {
  if (!options.device.probed()) {
    return absl::InvalidArgumentError("device: not probed (ProbeDevice)");
  }
  std::string device = options.device.name;
  auto probed = std::make_unique<Probed>();
  probed->context.caps = *options.device.capabilities;
  // Installed before any job allocates, so every job's tensors are counted.
  MemoryTracker::InstallCpuCounting();
  probed->context.max_concurrent_jobs = options.max_concurrent_jobs;
  probed->context.limits = options.limits;
  probed->context.data_roots = options.data_roots;
  probed->context.torchscript_roots = options.torchscript_roots;
  probed->context.max_devices = MaxDevices(probed->context.caps);
  std::unique_ptr<RankLauncher> launcher;
  if (!options.ranks.executable.empty()) {
    options.ranks.cuda = probed->context.caps.is_cuda();
    ASSIGN_OR_RETURN(launcher, RankLauncher::Create(options.ranks));
  }
  auto runner = std::unique_ptr<TrainingJobRunner>(
      new TrainingJobRunner(std::move(options), std::move(device), std::move(probed)));
  runner->launcher_ = std::move(launcher);
  return runner;
}

absl::StatusOr<JobRunner::PreparedSpec> TrainingJobRunner::Prepare(const v1::JobSpec& spec) const {
  ASSIGN_OR_RETURN(const ResolvedJob resolved, ResolveJobSpec(spec, probed_->context));
  if (!spec.resume_from().empty()) {
    const std::string path = Checkpoint::PathFor(options_.state_dir, spec.resume_from());
    std::error_code ec;
    if (options_.state_dir.empty() || !std::filesystem::is_regular_file(path, ec)) {
      return absl::FailedPreconditionError(
          absl::StrCat("resume_from: job ", spec.resume_from(), " has no checkpoint (", path,
                       " not found); it stopped before its first. Jobs write one every "
                       "checkpoint_every_n_steps steps and at the end"));
    }
  }
  return resolved.Prepared();
}

namespace {

// The trainer's options for `job` on this daemon: the stored spec was
// resolved at submission; it is resolved again here, against the daemon as
// it runs now (a queued job may outlive a restart with other flags, or move
// to another worker): its files must lie under today's --data_root,
// TorchScript must still be on, and the precision runs as this device runs
// it. Unchanged flags give the spec back as it was, with everything the
// trainer builds from parsed once.
absl::StatusOr<ResolvedJob> ResolveAgain(const v1::Job& job, const ResolveContext& context) {
  absl::StatusOr<ResolvedJob> resolved = ResolveJobSpec(job.spec(), context);
  if (!resolved.ok()) {
    return absl::Status(resolved.status().code(),
                        absl::StrCat("the job's spec no longer passes this daemon's checks "
                                     "(were its flags changed since the job was submitted?): ",
                                     resolved.status().message()));
  }
  return resolved;
}

absl::StatusOr<Trainer::Options> TrainerOptionsFor(const v1::Job& job,
                                                   const ResolveContext& context,
                                                   const TrainingJobRunner::Options& runner) {
  Trainer::Options options;
  ASSIGN_OR_RETURN(options.job, ResolveAgain(job, context));
  options.memory_exact = runner.max_concurrent_jobs == 1;
  options.limits = runner.limits;
  if (!runner.state_dir.empty()) {
    options.checkpoint_path = Checkpoint::PathFor(runner.state_dir, job.id());
    std::error_code ec;
    if (job.attempt() > 1 && std::filesystem::is_regular_file(options.checkpoint_path, ec)) {
      // A later attempt (the worker of an earlier one died or shut down)
      // goes on from the job's own newest checkpoint.
      options.resume_path = options.checkpoint_path;
    } else if (!job.spec().resume_from().empty()) {
      options.resume_path = Checkpoint::PathFor(runner.state_dir, job.spec().resume_from());
    }
  }
  return options;
}

// The job trained and wrote its final checkpoint: an artifact that cannot
// be written (a full disk) costs only its export, which then says what is
// missing, so the job still succeeds, with a warning.
void ExportOrWarn(const v1::Job& job, Trainer& trainer, const std::string& state_dir,
                  JobContext& context) {
  const absl::Status written = GuardTorch("writing the export artifact", [&] {
    return WriteExportArtifact(job, trainer, ExportArtifact::PathFor(state_dir, job.id()));
  });
  if (!written.ok()) {
    context.Warn(
        absl::StrCat("no export artifact, so the job cannot be exported: ", written.message()));
  }
}

// "host:port" as published by a job's node 0.
absl::StatusOr<std::pair<std::string, int>> SplitRendezvous(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InternalError(absl::StrCat("rendezvous: expected HOST:PORT, got '", address, "'"));
  }
  return std::make_pair(address.substr(0, colon), port);
}

int WorldSize(const v1::JobSpec& spec) {
  return std::max(1, spec.devices()) * std::max(1, spec.num_nodes());
}

// GetCapabilitiesResponse.data_parallel, less multi_node.
v1::DataParallelSupport DataParallelSupportOf(bool cuda, int max_devices, bool launches_ranks) {
  v1::DataParallelSupport dp;
  dp.set_backend(cuda ? "nccl" : "gloo");
  if (!launches_ranks) {
    dp.set_max_devices(1);
    dp.set_reason("this daemon starts no rank processes");
    return dp;
  }
  dp.set_max_devices(max_devices);
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  if (cuda) {
    dp.set_reason(absl::StrCat(max_devices, " GPU", max_devices == 1 ? "" : "s", " visible"));
  } else if (threads < max_devices) {
    dp.set_reason(absl::StrCat(threads, " CPU hardware thread(s); 2 ranks allowed anyway"));
  } else {
    dp.set_reason(absl::StrCat(threads, " CPU hardware threads"));
  }
  return dp;
}

}  // namespace

absl::StatusOr<v1::JobResult> TrainingJobRunner::Finish(
    const v1::Job& job, absl::Status status, absl::StatusOr<v1::JobResult> result) const {
  // The trainer returns some failures as a Status (a batch gathered on the
  // device, a checkpoint): an out-of-memory among them is handled alike.
  if (status.ok() && !result.ok()) status = result.status();
  if (absl::IsResourceExhausted(status) && !IsAdmissionRefusal(status)) {
    // Whatever the failed step left in the caching allocator goes back to
    // the driver: the next job must not inherit a fragmented device.
    ReleaseCachedDeviceMemory(device_);
    return OutOfMemory(job, device_, status);
  }
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<v1::JobResult> TrainingJobRunner::Run(const v1::Job& job, JobContext& context) {
  if (WorldSize(job.spec()) > 1) return RunRanks(job, context);
  // A job thread's OpenMP team takes --intra_op_threads (set on the main
  // thread only), not one thread per core.
  at::init_num_threads();
  absl::StatusOr<v1::JobResult> result;
  absl::Status status = GuardTorch(absl::StrCat("job ", job.id()), [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Trainer::Options options, TrainerOptionsFor(job, probed_->context, options_));
    options.device = torch::Device(device_);
    ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(std::move(options)));
    result = trainer->Run(context);
    if (result.ok() && !options_.state_dir.empty()) {
      ExportOrWarn(job, *trainer, options_.state_dir, context);
    }
    return absl::OkStatus();
  });
  return Finish(job, std::move(status), std::move(result));
}

absl::StatusOr<v1::JobResult> TrainingJobRunner::RunRanks(const v1::Job& job, JobContext& context) {
  if (launcher_ == nullptr) {
    return absl::FailedPreconditionError(
        "devices: this daemon starts no rank processes; a job of several ranks cannot run here");
  }
  // Refused early, before any process starts (e.g. devices beyond the GPUs
  // of a restarted daemon).
  RETURN_IF_ERROR(ResolveAgain(job, probed_->context).status());
  RankLauncher::Node node;
  node.node_rank = context.node_rank();
  node.num_nodes = std::max(1, job.spec().num_nodes());
  if (node.node_rank > 0) {
    ASSIGN_OR_RETURN(const std::string address,
                     context.AwaitRendezvous(options_.ranks.collective_timeout));
    ASSIGN_OR_RETURN(auto master, SplitRendezvous(address));
    node.master_addr = master.first;
    node.master_port = master.second;
  } else if (node.num_nodes > 1) {
    node.publish_rendezvous = [&context](const std::string& addr, int port) {
      return context.PublishRendezvous(absl::StrCat(addr, ":", port));
    };
  }
  return launcher_->Run(job, context, node);
}

absl::StatusOr<v1::JobResult> TrainingJobRunner::RunRank(const v1::Job& job, JobContext& context,
                                                         const RankOptions& rank) {
  absl::StatusOr<v1::JobResult> result;
  std::unique_ptr<DataParallel> dp;
  absl::Status status =
      GuardTorch(absl::StrCat("job ", job.id(), " rank ", rank.env.rank), [&]() -> absl::Status {
        ASSIGN_OR_RETURN(Trainer::Options options,
                         TrainerOptionsFor(job, probed_->context, options_));
        options.device = device_ == "cpu" ? torch::Device(torch::kCPU)
                                          : torch::Device(torch::kCUDA, rank.env.local_rank);
        ASSIGN_OR_RETURN(dp, DataParallel::Create({.rank = rank.env.rank,
                                                   .world_size = rank.env.world_size,
                                                   .master_addr = rank.env.master_addr,
                                                   .master_port = rank.env.master_port,
                                                   .address = rank.address,
                                                   .store_prefix = rank.store_prefix,
                                                   .timeout = rank.collective_timeout,
                                                   .device = options.device,
                                                   .on_store_ready = rank.on_store_ready}));
        options.data_parallel = dp.get();
        options.on_step = rank.on_step;
        ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer, Trainer::Create(std::move(options)));
        result = trainer->Run(context);
        // Rank 0 holds the weights every rank agreed on; it alone exports.
        if (result.ok() && rank.env.rank == 0 && !options_.state_dir.empty()) {
          ExportOrWarn(job, *trainer, options_.state_dir, context);
        }
        return absl::OkStatus();
      });
  // A peer that died or hung (on this node or another) fails the group, not
  // this rank: UNAVAILABLE, which a fleet retries as a whole.
  if (!status.ok() && dp != nullptr && dp->collective_failed()) {
    status = absl::UnavailableError(status.message());
  }
  return Finish(job, std::move(status), std::move(result));
}

v1::GetCapabilitiesResponse TrainingJobRunner::Capabilities() const {
  v1::GetCapabilitiesResponse caps;
  caps.set_device(device_);
  const DeviceCapabilities& probed = probed_->context.caps;
  caps.set_device_name(device_ == "cpu"
                           ? absl::StrCat("CPU (", at::get_num_threads(), " intra-op threads)")
                           : probed.device_name);
  caps.set_libtorch_version(compat::LibTorchVersion());
  caps.set_mantissa_version(MANTISSA_VERSION);
  caps.set_intra_op_threads(at::get_num_threads());
  for (const PrecisionModeInfo& mode : PrecisionRegistry::Modes(probed)) {
    v1::PrecisionSupport* p = caps.add_precisions();
    p->set_precision(mode.name);
    p->set_supported(mode.supported);
    p->set_runs_as(mode.runs_as);
    p->set_reason(mode.reason);
    for (const std::string& a : mode.aliases) p->add_aliases(a);
  }
  for (const std::string& m : ModelRegistry::Names()) caps.add_models(m);
  for (const std::string& d : DatasetRegistry::Names()) caps.add_datasets(d);
  for (const std::string& o : OptimizerRegistry::Names()) caps.add_optimizers(o);
  // multi_node depends on the job store: JobManager fills it in.
  *caps.mutable_data_parallel() =
      DataParallelSupportOf(probed.is_cuda(), probed_->context.max_devices, launcher_ != nullptr);
  return caps;
}

}  // namespace mantissa
