#include "client/compare_format.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/job_format.h"
#include "client/json_format.h"
#include "client/table_printer.h"

namespace mantissa::cli {
namespace {

constexpr char kApproximateMark[] = "~";

bool IsApproximate(const v1::Job& job) {
  return !job.memory().exact() && job.memory().peak_bytes() > 0;
}

std::string BytesOrDash(int64_t bytes) { return bytes > 0 ? FormatBytes(bytes) : "-"; }

std::string RefusalMessage(const absl::Status& refusal) {
  if (refusal.message().empty()) return absl::StatusCodeToString(refusal.code());
  return std::string(refusal.message());
}

// The columns that appear only when some job has something to put there.
struct OptionalColumns {
  bool compensation = false;
  bool grad_norm = false;
};

OptionalColumns ColumnsFor(const std::vector<ComparedRun>& runs) {
  OptionalColumns columns;
  for (const ComparedRun& run : runs) {
    if (!run.job.has_value()) continue;
    columns.compensation = columns.compensation || run.job->memory().compensation_bytes() > 0;
    columns.grad_norm = columns.grad_norm || run.job->progress().has_max_grad_norm();
  }
  return columns;
}

std::vector<std::string> Header(OptionalColumns columns) {
  std::vector<std::string> header = {"PRECISION", "RUNS AS",  "STATE",         "STEP MS",
                                     "ITEMS/S",   "PEAK MEM", "FP32 BASELINE", "SAVINGS"};
  if (columns.compensation) header.push_back("COMPENSATION");
  header.push_back("SKIPPED");
  if (columns.grad_norm) header.push_back("GRAD NORM");
  header.push_back("FINAL LOSS");
  header.push_back("ACCURACY");
  return header;
}

std::vector<std::string> JobRow(const std::string& entry, const v1::Job& job,
                                OptionalColumns columns) {
  const v1::Progress& progress = job.progress();
  const v1::JobResult& result = job.result();
  const v1::MemoryStats& memory = job.memory();
  std::string peak = BytesOrDash(memory.peak_bytes());
  if (IsApproximate(job)) peak = absl::StrCat(kApproximateMark, peak);
  const bool has_loss = job.state() == v1::SUCCEEDED || result.steps_completed() > 0;
  std::vector<std::string> row = {
      entry,
      job.effective_precision().empty() ? "-" : job.effective_precision(),
      JobStateName(job.state()),
      progress.step_seconds() > 0 ? absl::StrFormat("%.2f", progress.step_seconds() * 1000) : "-",
      progress.items_per_second() > 0 ? absl::StrFormat("%.0f", progress.items_per_second()) : "-",
      std::move(peak),
      BytesOrDash(memory.baseline_fp32_peak_bytes()),
      SavingsCell(job)};
  if (columns.compensation) row.push_back(BytesOrDash(memory.compensation_bytes()));
  row.push_back(SkippedStepsCell(job));
  if (columns.grad_norm) {
    row.push_back(progress.has_max_grad_norm() ? FormatGradNorm(progress.max_grad_norm()) : "-");
  }
  row.push_back(has_loss ? FormatLoss(result.final_loss()) : "-");
  row.push_back(result.has_eval_accuracy() ? FormatAccuracy(result.eval_accuracy()) : "-");
  return row;
}

// Prefixes every line; JSON strings hold no raw newlines, so this keeps a
// pretty-printed document valid.
std::string Indent(const std::string& text, absl::string_view indent) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    lines.push_back(absl::StrCat(indent, line));
  }
  return absl::StrJoin(lines, "\n");
}

std::string JsonArray(const std::vector<std::string>& items) {
  if (items.empty()) return "[]";
  return absl::StrCat("[\n", absl::StrJoin(items, ",\n"), "\n  ]");
}

}  // namespace

std::string FormatComparison(const std::vector<ComparedRun>& runs) {
  const OptionalColumns columns = ColumnsFor(runs);
  std::vector<std::string> header = Header(columns);
  const size_t width = header.size();
  TablePrinter table(std::move(header));
  // Every column after STATE holds a number.
  for (size_t column = 3; column < width; ++column) table.AlignRight(column);
  bool approximate = false;
  std::vector<std::string> notes;
  for (const ComparedRun& run : runs) {
    if (!run.job.has_value()) {
      std::vector<std::string> row(width, "-");
      row[0] = run.entry;
      row[2] = "refused";
      table.AddRow(std::move(row));
      notes.push_back(absl::StrCat(run.entry, " refused: ", RefusalMessage(run.refusal)));
      continue;
    }
    const v1::Job& job = *run.job;
    table.AddRow(JobRow(run.entry, job, columns));
    approximate = approximate || IsApproximate(job);
    if (IsTerminalState(job.state()) && job.state() != v1::SUCCEEDED) {
      std::string note = absl::StrCat(run.entry, " ", JobStateName(job.state()));
      if (!job.error().empty()) absl::StrAppend(&note, ": ", job.error());
      notes.push_back(std::move(note));
    }
  }
  if (approximate) {
    notes.insert(notes.begin(),
                 absl::StrCat(kApproximateMark, " approximate: other jobs ran at the same time"));
  }
  std::string out = table.ToString();
  if (!notes.empty()) absl::StrAppend(&out, "\n", absl::StrJoin(notes, "\n"), "\n");
  return out;
}

std::string FormatComparisonJson(const std::vector<ComparedRun>& runs) {
  std::vector<std::string> jobs;
  std::vector<std::string> refused;
  for (const ComparedRun& run : runs) {
    if (run.job.has_value()) {
      jobs.push_back(Indent(ToJson(*run.job, /*pretty=*/true), "    "));
    } else {
      refused.push_back(
          absl::StrCat("    {\"precision\": ", JsonString(run.entry),
                       ", \"code\": ", JsonString(absl::StatusCodeToString(run.refusal.code())),
                       ", \"error\": ", JsonString(RefusalMessage(run.refusal)), "}"));
    }
  }
  return absl::StrCat("{\n  \"jobs\": ", JsonArray(jobs), ",\n  \"refused\": ", JsonArray(refused),
                      "\n}\n");
}

}  // namespace mantissa::cli
