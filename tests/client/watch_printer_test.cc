#include "client/watch_printer.h"

#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;

v1::JobEvent Event(v1::JobEvent::Type type, const v1::Job& job, const std::string& message = "") {
  v1::JobEvent event;
  event.set_type(type);
  *event.mutable_job() = job;
  event.set_message(message);
  return event;
}

v1::Job Queued() {
  v1::Job job = RunningJob();
  job.set_state(v1::QUEUED);
  job.clear_progress();
  return job;
}

TEST(WatchPrinterTest, PlainPrintsOneLinePerEvent) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kPlain, 80);
  EXPECT_FALSE(printer.has_job());
  v1::Job running = RunningJob();
  running.mutable_progress()->set_step(0);
  printer.Print(Event(v1::JobEvent::SNAPSHOT, Queued()));
  printer.Print(Event(v1::JobEvent::STATE_CHANGED, running));
  printer.Print(Event(v1::JobEvent::WARNING, running, "slow data loader"));
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  v1::Job evaluated = RunningJob();
  evaluated.mutable_result()->set_eval_accuracy(0.5);
  evaluated.mutable_result()->set_eval_loss(0.75);
  printer.Print(Event(v1::JobEvent::EVALUATION, evaluated));
  printer.Print(Event(v1::JobEvent::STATE_CHANGED, SucceededJob()));
  printer.Print(Event(v1::JobEvent::FINISHED, SucceededJob()));
  EXPECT_EQ(out.str(),
            "job j1: QUEUED\n"
            "state: RUNNING\n"
            "warning: slow data loader\n"
            "step 100/938 epoch 1/1 loss 0.5123 12345 items/s\n"
            "eval at step 100: accuracy 50.00%, loss 0.7500\n");
  ASSERT_TRUE(printer.has_job());
  EXPECT_EQ(printer.job().state(), v1::SUCCEEDED);
}

TEST(WatchPrinterTest, CheckpointEventsPrintTheStepPathAndSize) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kPlain, 80);
  v1::Job job = RunningJob();
  job.mutable_progress()->set_step(210);
  v1::Checkpoint& checkpoint = *job.mutable_checkpoint();
  checkpoint.set_step(200);
  checkpoint.set_path("/state/jobs/j1/checkpoint.pt");
  checkpoint.set_bytes(1258291);
  printer.Print(Event(v1::JobEvent::CHECKPOINT, job, "checkpoint written"));
  EXPECT_EQ(out.str(), "checkpoint at step 200: /state/jobs/j1/checkpoint.pt (1.20 MiB)\n");

  // Without the checkpoint in the job, the event's message stands in.
  out.str("");
  printer.Print(Event(v1::JobEvent::CHECKPOINT, RunningJob(), "saved at step 100"));
  printer.Print(Event(v1::JobEvent::CHECKPOINT, RunningJob()));
  EXPECT_EQ(out.str(), "checkpoint: saved at step 100\ncheckpoint written\n");
}

TEST(WatchPrinterTest, TerminalPrintsCheckpointsAboveTheBar) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kTerminal, 120);
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  out.str("");
  v1::Job job = RunningJob();
  job.mutable_checkpoint()->set_step(100);
  job.mutable_checkpoint()->set_path("/c.pt");
  job.mutable_checkpoint()->set_bytes(512);
  printer.Print(Event(v1::JobEvent::CHECKPOINT, job));
  EXPECT_THAT(out.str(), HasSubstr("\r\x1b[Kcheckpoint at step 100: /c.pt (512 B)\n\r["));
  EXPECT_THAT(out.str(), EndsWith("\x1b[K"));
}

TEST(WatchPrinterTest, EvaluationShowsPerplexityAndNoAbsentAccuracy) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kPlain, 80);
  v1::Job evaluated = RunningJob();
  evaluated.mutable_result()->set_eval_loss(2.3026);
  evaluated.mutable_result()->set_eval_perplexity(10);
  printer.Print(Event(v1::JobEvent::EVALUATION, evaluated));
  EXPECT_EQ(out.str(), "eval at step 100: loss 2.3026, perplexity 10.00\n");
}

TEST(WatchPrinterTest, SnapshotAnnouncementCanBeTurnedOff) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kPlain, 80);
  printer.set_announce_snapshot(false);
  printer.Print(Event(v1::JobEvent::SNAPSHOT, Queued()));
  EXPECT_EQ(out.str(), "");
  EXPECT_TRUE(printer.has_job());
}

TEST(WatchPrinterTest, StateChangeCarriesItsMessage) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kPlain, 80);
  printer.Print(Event(v1::JobEvent::STATE_CHANGED, Queued(), "waiting for a worker"));
  EXPECT_EQ(out.str(), "state: QUEUED (waiting for a worker)\n");
}

TEST(WatchPrinterTest, TerminalRedrawsOneLine) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kTerminal, 120);
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  v1::Job later = RunningJob();
  later.mutable_progress()->set_step(200);
  printer.Print(Event(v1::JobEvent::PROGRESS, later));
  const std::string text = out.str();
  EXPECT_EQ(text.find('\n'), std::string::npos) << "progress must not scroll";
  EXPECT_EQ(text.substr(0, 2), "\r[");
  EXPECT_THAT(text, HasSubstr("\r[######"));
  EXPECT_THAT(text, HasSubstr(" 200/938 "));
  EXPECT_THAT(text, EndsWith("\x1b[K"));
}

TEST(WatchPrinterTest, TerminalPrintsWarningsAboveTheBar) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kTerminal, 120);
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  out.str("");
  printer.Print(Event(v1::JobEvent::WARNING, RunningJob(), "loss spiked"));
  const std::string text = out.str();
  // Clear the bar, print the warning on its own line, draw the bar again.
  EXPECT_EQ(text.substr(0, 4), "\r\x1b[K");
  EXPECT_THAT(text, HasSubstr("\r\x1b[Kwarning: loss spiked\n\r["));
  EXPECT_THAT(text, EndsWith("\x1b[K"));
}

TEST(WatchPrinterTest, ClearLineRemovesTheBarOnce) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kTerminal, 120);
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  out.str("");
  printer.ClearLine();
  EXPECT_EQ(out.str(), "\r\x1b[K");
  printer.ClearLine();
  EXPECT_EQ(out.str(), "\r\x1b[K");
}

TEST(WatchPrinterTest, FinishedClearsTheBar) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kTerminal, 120);
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  out.str("");
  printer.Print(Event(v1::JobEvent::FINISHED, SucceededJob()));
  EXPECT_EQ(out.str(), "\r\x1b[K");
}

TEST(WatchPrinterTest, ProgressLinesCarryTheGradNormOnceSet) {
  std::ostringstream out;
  WatchPrinter printer(&out, WatchPrinter::Style::kPlain, 80);
  printer.Print(Event(v1::JobEvent::PROGRESS, RunningJob()));
  v1::Job normed = RunningJob();
  normed.mutable_progress()->set_step(110);
  normed.mutable_progress()->set_grad_norm(0.25);
  printer.Print(Event(v1::JobEvent::PROGRESS, normed));
  EXPECT_EQ(out.str(),
            "step 100/938 epoch 1/1 loss 0.5123 12345 items/s\n"
            "step 110/938 epoch 1/1 loss 0.5123 12345 items/s grad norm 0.25\n");
}

}  // namespace
}  // namespace mantissa::cli
