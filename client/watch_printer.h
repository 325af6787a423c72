#ifndef MANTISSA_CLIENT_WATCH_PRINTER_H_
#define MANTISSA_CLIENT_WATCH_PRINTER_H_

#include <ostream>
#include <string>

#include "mantissa/v1/training.pb.h"

namespace mantissa::cli {

// Shows a WatchJob stream as it arrives. On a terminal the progress is one
// live line redrawn with '\r', and warnings and state changes are printed
// above it; elsewhere every event is one plain line, which suits logs.
class WatchPrinter {
 public:
  enum class Style { kPlain, kTerminal };

  // `width` is the terminal's width in columns (only used by kTerminal).
  WatchPrinter(std::ostream* out, Style style, int width);

  // The first event's "job ID: STATE" line; `submit --wait` has already said
  // as much and turns it off.
  void set_announce_snapshot(bool announce) { announce_snapshot_ = announce; }

  void Print(const v1::JobEvent& event);
  // Removes the live line so that what follows starts at column 0.
  void ClearLine();

  bool has_job() const { return has_job_; }
  // The job as of the latest event.
  const v1::Job& job() const { return job_; }

 private:
  // Prints a line of its own, keeping the live progress line below it.
  void PrintLine(const std::string& line);
  void DrawProgress();

  std::ostream* out_;
  Style style_;
  int width_;
  bool announce_snapshot_ = true;
  v1::Job job_;
  bool has_job_ = false;
  bool line_drawn_ = false;
};

}  // namespace mantissa::cli

#endif  // MANTISSA_CLIENT_WATCH_PRINTER_H_
