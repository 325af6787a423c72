#include "client/progress_bar.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/job_format.h"

namespace mantissa::cli {
namespace {

constexpr int kMaxBarCells = 30;
constexpr int kMinBarCells = 10;

}  // namespace

std::string FormatProgressLine(const v1::Job& job) {
  std::vector<std::string> parts = ProgressDetails(job.progress());
  parts.insert(parts.begin(), absl::StrCat("step ", FormatStepCount(job.progress())));
  for (std::string& detail : GradNormDetails(job.progress())) parts.push_back(std::move(detail));
  for (std::string& detail : GradScalerDetails(job)) parts.push_back(std::move(detail));
  return absl::StrJoin(parts, " ");
}

std::optional<double> EstimateRemainingSeconds(const v1::Job& job) {
  const v1::Progress& progress = job.progress();
  if (progress.total_steps() <= 0 || progress.step() <= 0) return std::nullopt;
  const double remaining =
      static_cast<double>(std::max<int64_t>(progress.total_steps() - progress.step(), 0));
  if (progress.step_seconds() > 0) return remaining * progress.step_seconds();
  // Older events may carry only a throughput; turn it back into steps.
  if (progress.items_per_second() > 0 && job.spec().batch_size() > 0) {
    return remaining * static_cast<double>(job.spec().batch_size()) / progress.items_per_second();
  }
  return std::nullopt;
}

std::string RenderProgressBar(const v1::Job& job, int width) {
  const v1::Progress& progress = job.progress();
  std::vector<std::string> parts;
  double fraction = -1;
  if (progress.total_steps() > 0) {
    fraction = std::clamp(
        static_cast<double>(progress.step()) / static_cast<double>(progress.total_steps()), 0.0,
        1.0);
    parts.push_back(absl::StrFormat("%5.1f%%", 100.0 * fraction));
  }
  // With a total the percentage says what the numbers are; without, say it.
  parts.push_back(fraction >= 0 ? FormatStepCount(progress)
                                : absl::StrCat("step ", FormatStepCount(progress)));
  for (std::string& detail : ProgressDetails(progress)) parts.push_back(std::move(detail));
  // The diagnostics: the gradient norm and the grad scaler's numbers.
  std::vector<std::string> diagnosed = parts;
  for (std::string& detail : GradNormDetails(progress)) diagnosed.push_back(std::move(detail));
  for (std::string& detail : GradScalerDetails(job)) diagnosed.push_back(std::move(detail));
  if (std::optional<double> eta = EstimateRemainingSeconds(job); eta.has_value() && *eta > 0) {
    parts.push_back(absl::StrCat("ETA ", FormatDuration(*eta)));
    diagnosed.push_back(parts.back());
  }
  std::string text = absl::StrJoin(parts, " ");

  const int usable = std::max(width - 1, 1);
  // "[" + cells + "] " must leave room for the text.
  const auto bar_cells = [&](const std::string& line) {
    return std::min(kMaxBarCells, usable - static_cast<int>(line.size()) - 3);
  };
  // The diagnostics give way to the bar and are shown whole or not at all,
  // never cut off mid-number.
  if (diagnosed.size() > parts.size()) {
    std::string with_diagnostics = absl::StrJoin(diagnosed, " ");
    const bool fits = static_cast<int>(with_diagnostics.size()) <= usable;
    const bool bar_possible = fraction >= 0 && bar_cells(text) >= kMinBarCells;
    if (bar_possible ? bar_cells(with_diagnostics) >= kMinBarCells : fits) {
      text = std::move(with_diagnostics);
    }
  }
  // A bar too narrow to read is dropped before any of the numbers are.
  const int cells = bar_cells(text);
  if (fraction >= 0 && cells >= kMinBarCells) {
    const int filled = static_cast<int>(fraction * cells + 0.5);
    text =
        absl::StrCat("[", std::string(filled, '#'), std::string(cells - filled, '-'), "] ", text);
  }
  if (static_cast<int>(text.size()) > usable) text.resize(usable);
  return text;
}

}  // namespace mantissa::cli
