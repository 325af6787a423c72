#include "client/watch_printer.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/job_format.h"
#include "client/progress_bar.h"

namespace mantissa::cli {
namespace {

// Erases from the cursor to the end of the line, so a shorter redraw leaves no
// remains of a longer one.
constexpr char kClearToEnd[] = "\x1b[K";

std::string EvaluationLine(const v1::JobEvent& event) {
  const std::vector<std::string> parts = EvalDetails(event.job().result(), "");
  if (parts.empty()) {
    return event.message().empty() ? "evaluation done" : absl::StrCat("eval: ", event.message());
  }
  return absl::StrCat("eval at step ", event.job().progress().step(), ": ",
                      absl::StrJoin(parts, ", "));
}

std::string CheckpointLine(const v1::JobEvent& event) {
  if (!event.job().has_checkpoint()) {
    return event.message().empty() ? "checkpoint written"
                                   : absl::StrCat("checkpoint: ", event.message());
  }
  return absl::StrCat("checkpoint at ", FormatCheckpoint(event.job().checkpoint()));
}

}  // namespace

WatchPrinter::WatchPrinter(std::ostream* out, Style style, int width)
    : out_(out), style_(style), width_(width) {}

void WatchPrinter::Print(const v1::JobEvent& event) {
  if (event.has_job()) {
    job_ = event.job();
    has_job_ = true;
  }
  const bool running = job_.state() == v1::RUNNING;
  switch (event.type()) {
    case v1::JobEvent::SNAPSHOT:
      if (announce_snapshot_) {
        PrintLine(absl::StrCat("job ", job_.id(), ": ", JobStateName(job_.state())));
      }
      if (running && job_.progress().step() > 0) DrawProgress();
      break;
    case v1::JobEvent::STATE_CHANGED:
      // The outcome line covers terminal states.
      if (!IsTerminalState(job_.state())) {
        PrintLine(event.message().empty() ? absl::StrCat("state: ", JobStateName(job_.state()))
                                          : absl::StrCat("state: ", JobStateName(job_.state()),
                                                         " (", event.message(), ")"));
      }
      break;
    case v1::JobEvent::PROGRESS:
      DrawProgress();
      break;
    case v1::JobEvent::WARNING:
      PrintLine(absl::StrCat("warning: ", event.message()));
      break;
    case v1::JobEvent::EVALUATION:
      PrintLine(EvaluationLine(event));
      break;
    case v1::JobEvent::CHECKPOINT:
      PrintLine(CheckpointLine(event));
      break;
    case v1::JobEvent::FINISHED:
      ClearLine();
      break;
    default:
      if (!event.message().empty()) PrintLine(event.message());
      break;
  }
}

void WatchPrinter::ClearLine() {
  if (!line_drawn_) return;
  *out_ << '\r' << kClearToEnd << std::flush;
  line_drawn_ = false;
}

void WatchPrinter::PrintLine(const std::string& line) {
  ClearLine();
  *out_ << line << '\n';
  if (style_ == Style::kTerminal && job_.state() == v1::RUNNING) {
    DrawProgress();
  } else {
    out_->flush();
  }
}

void WatchPrinter::DrawProgress() {
  if (style_ == Style::kPlain) {
    *out_ << FormatProgressLine(job_) << '\n' << std::flush;
    return;
  }
  *out_ << '\r' << RenderProgressBar(job_, width_) << kClearToEnd << std::flush;
  line_drawn_ = true;
}

}  // namespace mantissa::cli
