#include "server/artifacts/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/artifacts/named_tensor_archive.h"
#include "server/common/file_sync.h"
#include "server/common/status_macros.h"
#include "server/common/torch_status.h"

namespace mantissa {
namespace {

constexpr int64_t kFormatVersion = 1;

// The generator a job's random ops draw from on `device`.
at::Generator DefaultGenerator(const torch::Device& device) {
  return at::globalContext().defaultGenerator(device);
}

void WriteGenerator(torch::serialize::OutputArchive& archive, const std::string& key,
                    const torch::Device& device) {
  at::Generator gen = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  archive.write(key, gen.get_state());
}

void ReadGenerator(torch::serialize::InputArchive& archive, const std::string& key,
                   const torch::Device& device) {
  torch::Tensor state;
  if (!archive.try_read(key, state)) return;
  at::Generator gen = DefaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

absl::Status CopyModelState(const NamedTensors& saved, Model& model, const std::string& path) {
  NamedTensors current = model.State();
  if (saved.size() != current.size()) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", path, " holds ", saved.size(),
                                                   " model tensors, the model has ",
                                                   current.size()));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < saved.size(); ++i) {
    const auto& [name, from] = saved[i];
    torch::Tensor& to = current[i].second;
    if (name != current[i].first || from.sizes() != to.sizes() ||
        from.scalar_type() != to.scalar_type()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint ", path, " does not match the model: it holds ", name, " ",
          c10::toString(from.scalar_type()), c10::str(from.sizes()), ", the model has ",
          current[i].first, " ", c10::toString(to.scalar_type()), c10::str(to.sizes())));
    }
    to.copy_(from);
  }
  return absl::OkStatus();
}

}  // namespace

std::string Checkpoint::PathFor(const std::string& state_dir, const std::string& job_id) {
  return absl::StrCat(state_dir, "/jobs/", job_id, "/checkpoint.pt");
}

absl::Status Checkpoint::KeepPrevious(const std::string& path, int64_t previous_step,
                                      int64_t keep) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.parent_path();
  std::error_code ec;
  if (keep > 1 && previous_step > 0 && fs::is_regular_file(target, ec)) {
    const fs::path kept = dir / absl::StrCat("checkpoint-", previous_step, ".pt");
    fs::remove(kept, ec);
    fs::create_hard_link(target, kept, ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("checkpoint: cannot keep ", kept.string(), ": ", ec.message()));
    }
  }
  // Numbered checkpoints, oldest first; the newest keep - 1 stay.
  std::vector<std::pair<int64_t, fs::path>> numbered;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    int64_t step = 0;
    if (name.size() > 14 && absl::StartsWith(name, "checkpoint-") && absl::EndsWith(name, ".pt") &&
        absl::SimpleAtoi(name.substr(11, name.size() - 14), &step)) {
      numbered.emplace_back(step, it->path());
    }
  }
  std::sort(numbered.begin(), numbered.end());
  const size_t keep_numbered = static_cast<size_t>(std::max<int64_t>(0, keep - 1));
  bool changed = keep > 1 && previous_step > 0;
  for (size_t i = 0; i + keep_numbered < numbered.size(); ++i) {
    fs::remove(numbered[i].second, ec);
    changed = true;
  }
  return changed && fs::is_directory(dir, ec) ? FsyncDir(dir.string()) : absl::OkStatus();
}

absl::StatusOr<int64_t> Checkpoint::Save(const std::string& path,
                                         const CheckpointPosition& position,
                                         const std::string& spec_json, const Parts& parts) {
  const std::filesystem::path target(path);
  std::error_code ec;
  const bool created = std::filesystem::create_directories(target.parent_path(), ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("checkpoint: cannot create ",
                                            target.parent_path().string(), ": ", ec.message()));
  }
  if (created) {
    // A new job directory (and jobs/) survives a power loss only once the
    // directories above it are flushed.
    const std::filesystem::path jobs = target.parent_path().parent_path();
    RETURN_IF_ERROR(FsyncDir(jobs.string()));
    if (jobs.has_parent_path()) RETURN_IF_ERROR(FsyncDir(jobs.parent_path().string()));
  }
  const std::string tmp = path + ".tmp";
  RETURN_IF_ERROR(GuardTorch(absl::StrCat("writing checkpoint ", tmp), [&] {
    torch::serialize::OutputArchive archive;
    archive.write("format_version", c10::IValue(kFormatVersion));
    archive.write("step", c10::IValue(position.step));
    archive.write("next_batch", c10::IValue(position.next_batch));
    archive.write("applied_steps", c10::IValue(position.applied_steps));
    archive.write("last_loss", c10::IValue(position.last_loss));
    archive.write("spec_json", c10::IValue(spec_json));
    torch::serialize::OutputArchive model;
    WriteNamedTensors(model, parts.model->State());
    archive.write("model", model);
    torch::serialize::OutputArchive optimizer;
    parts.optimizer->save(optimizer);
    archive.write("optimizer", optimizer);
    torch::serialize::OutputArchive precision;
    parts.precision->SaveState(precision);
    archive.write("precision", precision);
    WriteGenerator(archive, "rng_cpu", torch::kCPU);
    if (!parts.device.is_cpu()) WriteGenerator(archive, "rng_device", parts.device);
    archive.save_to(tmp);
    return absl::OkStatus();
  }));
  RETURN_IF_ERROR(FsyncFile(tmp));
  std::filesystem::rename(tmp, target, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("checkpoint: rename to ", path, ": ", ec.message()));
  // The rename itself is durable only once the directory is flushed.
  RETURN_IF_ERROR(FsyncDir(target.parent_path().string()));
  const auto bytes = std::filesystem::file_size(target, ec);
  return ec ? int64_t{0} : static_cast<int64_t>(bytes);
}

absl::StatusOr<CheckpointPosition> Checkpoint::Load(const std::string& path, const Parts& parts) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path, " not found"));
  }
  CheckpointPosition position;
  // GuardTorch passes the lambda's own errors through unchanged.
  const std::string context = absl::StrCat("reading checkpoint ", path);
  RETURN_IF_ERROR(GuardTorch(context, [&]() -> absl::Status {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    RETURN_IF_ERROR(CheckFormatVersion(archive, kFormatVersion, absl::StrCat("checkpoint ", path)));
    position.step = ReadArchiveInt(archive, "step");
    position.next_batch = ReadArchiveInt(archive, "next_batch");
    position.applied_steps = ReadArchiveInt(archive, "applied_steps");
    position.last_loss = ReadArchiveDouble(archive, "last_loss");
    torch::serialize::InputArchive model;
    archive.read("model", model);
    ASSIGN_OR_RETURN(const NamedTensors saved, ReadNamedTensors(model, context));
    RETURN_IF_ERROR(CopyModelState(saved, *parts.model, path));
    torch::serialize::InputArchive optimizer;
    archive.read("optimizer", optimizer);
    parts.optimizer->load(optimizer);
    torch::serialize::InputArchive precision;
    archive.read("precision", precision);
    parts.precision->LoadState(precision);
    ReadGenerator(archive, "rng_cpu", torch::kCPU);
    if (!parts.device.is_cpu()) ReadGenerator(archive, "rng_device", parts.device);
    return absl::OkStatus();
  }));
  return position;
}

absl::StatusOr<NamedTensors> Checkpoint::ReadModelState(const std::string& path) {
  const std::string context = absl::StrCat("reading checkpoint ", path);
  NamedTensors tensors;
  RETURN_IF_ERROR(GuardTorch(context, [&]() -> absl::Status {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    torch::serialize::InputArchive model;
    archive.read("model", model);
    ASSIGN_OR_RETURN(tensors, ReadNamedTensors(model, context));
    return absl::OkStatus();
  }));
  return tensors;
}

}  // namespace mantissa
