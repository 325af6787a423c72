#include "server/serving/model_statistics.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace mantissa {
namespace {

uint64_t Nanos(absl::Duration d) {
  // Clocks are monotonic, but a negative span must not wrap to 2^64.
  return static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(d)));
}

void Add(inference::StatisticDuration* stat, absl::Duration d) {
  stat->set_count(stat->count() + 1);
  stat->set_ns(stat->ns() + Nanos(d));
}

// The entry of `batch_size`, inserted so that the list stays ascending.
inference::InferBatchStatistics* BatchEntry(inference::ModelStatistics& stats,
                                            uint64_t batch_size) {
  auto* list = stats.mutable_batch_stats();
  int at = 0;
  for (; at < list->size(); ++at) {
    if (list->Get(at).batch_size() == batch_size) return list->Mutable(at);
    if (list->Get(at).batch_size() > batch_size) break;
  }
  inference::InferBatchStatistics* entry = list->Add();
  entry->set_batch_size(batch_size);
  // Bubble the new last element down to `at`.
  for (int i = list->size() - 1; i > at; --i) list->SwapElements(i, i - 1);
  return list->Mutable(at);
}

}  // namespace

void ModelStatistics::RecordSuccess(int64_t version, const RequestTiming& timing) {
  const uint64_t now_ms = static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
  std::lock_guard<std::mutex> lock(mu_);
  inference::ModelStatistics& stats = versions_[version];
  stats.set_last_inference(std::max(stats.last_inference(), now_ms));
  stats.set_inference_count(stats.inference_count() + static_cast<uint64_t>(timing.items));
  inference::InferStatistics* infer = stats.mutable_inference_stats();
  Add(infer->mutable_success(), timing.total);
  Add(infer->mutable_queue(), timing.queue);
  Add(infer->mutable_compute_input(), timing.compute_input);
  Add(infer->mutable_compute_infer(), timing.compute_infer);
  Add(infer->mutable_compute_output(), timing.compute_output);
}

void ModelStatistics::RecordFailure(int64_t version, absl::Duration total) {
  std::lock_guard<std::mutex> lock(mu_);
  Add(versions_[version].mutable_inference_stats()->mutable_fail(), total);
}

void ModelStatistics::RecordExecution(int64_t version, int64_t batch_size, absl::Duration compute) {
  std::lock_guard<std::mutex> lock(mu_);
  inference::ModelStatistics& stats = versions_[version];
  stats.set_execution_count(stats.execution_count() + 1);
  // Decoding and encoding happen per request outside the merged forward, so
  // a batch's time is all compute_infer; its input and output stay counted
  // with zero time, as Triton reports a backend that does not split them.
  inference::InferBatchStatistics* batch =
      BatchEntry(stats, static_cast<uint64_t>(std::max<int64_t>(0, batch_size)));
  Add(batch->mutable_compute_input(), absl::ZeroDuration());
  Add(batch->mutable_compute_infer(), compute);
  Add(batch->mutable_compute_output(), absl::ZeroDuration());
}

void ModelStatistics::AppendTo(int64_t version,
                               inference::ModelStatisticsResponse* response) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto append = [&](int64_t v, const inference::ModelStatistics* stats) {
    inference::ModelStatistics* out = response->add_model_stats();
    if (stats != nullptr) *out = *stats;
    out->set_name(model_);
    out->set_version(absl::StrCat(v));
  };
  if (version != 0) {
    auto it = versions_.find(version);
    append(version, it == versions_.end() ? nullptr : &it->second);
    return;
  }
  for (const auto& [v, stats] : versions_) append(v, &stats);
}

}  // namespace mantissa
