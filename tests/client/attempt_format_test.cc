#include "client/attempt_format.h"

#include <string>

#include "client/job_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_jobs.h"

namespace mantissa::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// A job on its third attempt: the first worker's lease ran out, the second
// worker shut down and released it, and w3 runs it now.
v1::Job ThirdAttempt() {
  v1::Job job = RunningJob();
  job.MergeFrom(JobFromText(R"pb(
    spec { max_attempts: 3 }
    attempt: 3
    worker: "w3"
    attempts {
      number: 1
      worker: "w1"
      start_time { seconds: 1700000005 }
      end_time { seconds: 1700000065 }
      end: LEASE_EXPIRED
      reason: "lease expired (worker w1 stopped renewing)"
    }
    attempts {
      number: 2
      worker: "w2"
      start_time { seconds: 1700000070 }
      end_time { seconds: 1700000100 }
      end: RELEASED
      reason: "worker w2 shut down"
      start_step: 40
    }
    attempts {
      number: 3
      worker: "w3"
      start_time { seconds: 1700000105 }
      start_step: 80
    }
  )pb"));
  return job;
}

TEST(AttemptFormatTest, AttemptOfMaxAndReleasedAttemptsAreNotCounted) {
  v1::Job job = RunningJob();
  EXPECT_EQ(FormatAttempt(job), "");  // a daemon that does not number attempts
  job.set_attempt(1);
  EXPECT_EQ(FormatAttempt(job), "1");
  job.mutable_spec()->set_max_attempts(3);
  EXPECT_EQ(FormatAttempt(job), "1 of 3");
  EXPECT_EQ(FormatAttempt(ThirdAttempt()), "3 (max 3; 1 released at shutdown, not counted)");
}

TEST(AttemptFormatTest, EndNames) {
  v1::Job job = ThirdAttempt();
  EXPECT_EQ(AttemptEndName(job, 0), "lease expired");
  EXPECT_EQ(AttemptEndName(job, 1), "released");
  EXPECT_EQ(AttemptEndName(job, 2), "running");
  job.set_state(v1::FAILED);
  job.mutable_attempts(2)->set_end(v1::Attempt::FINISHED);
  EXPECT_EQ(AttemptEndName(job, 2), "failed");
  job.mutable_attempts(2)->set_end(static_cast<v1::Attempt::End>(9));
  EXPECT_EQ(AttemptEndName(job, 2), "END_9");
}

TEST(AttemptFormatTest, SectionIsATableOfEveryAttempt) {
  EXPECT_EQ(FormatAttemptsSection(ThirdAttempt(), absl::UTCTimeZone()),
            "Attempts\n"
            "  #  WORKER  FROM STEP  STARTED              ENDED                END            "
            "REASON\n"
            "  1  w1              0  2023-11-14 22:13:25  2023-11-14 22:14:25  lease expired  "
            "lease expired (worker w1 stopped renewing)\n"
            "  2  w2             40  2023-11-14 22:14:30  2023-11-14 22:15:00  released       "
            "worker w2 shut down\n"
            "  3  w3             80  2023-11-14 22:15:05  -                    running\n");
}

TEST(AttemptFormatTest, NoSectionForAJobThatRanOnce) {
  v1::Job job = RunningJob();
  EXPECT_THAT(FormatAttemptsSection(job, absl::UTCTimeZone()), IsEmpty());
  job.add_attempts()->set_number(1);
  EXPECT_THAT(FormatAttemptsSection(job, absl::UTCTimeZone()), IsEmpty());
}

TEST(AttemptFormatTest, JobViewShowsTheAttemptWorkerAndSection) {
  const std::string view = FormatJob(ThirdAttempt(), absl::UTCTimeZone());
  EXPECT_THAT(view, HasSubstr("State:          RUNNING\n"
                              "Attempt:        3 (max 3; 1 released at shutdown, not counted)\n"
                              "Worker:         w3\n"));
  EXPECT_THAT(view, HasSubstr("\nAttempts\n  #  WORKER"));
  // Before the Precision section, which ends the view.
  EXPECT_LT(view.find("Attempts\n"), view.find("Precision\n"));
}

TEST(AttemptFormatTest, ListShowsAnAttemptColumnOnlyWhenSomeJobRetried) {
  google::protobuf::RepeatedPtrField<v1::Job> jobs;
  v1::Job once = SucceededJob();
  once.set_attempt(1);
  *jobs.Add() = once;
  EXPECT_FALSE(AnyJobRetried(jobs));
  EXPECT_THAT(FormatJobTable(jobs, absl::UTCTimeZone()), Not(HasSubstr("ATTEMPT")));

  *jobs.Add() = ThirdAttempt();
  EXPECT_TRUE(AnyJobRetried(jobs));
  EXPECT_EQ(FormatJobTable(jobs, absl::UTCTimeZone()),
            "ID  NAME      MODEL  DATASET    PRECISION   STATE      ATTEMPT     STEP    LOSS"
            "  ACCURACY  SKIPPED  SAVINGS  CREATED\n"
            "j1  baseline  mlp    synthetic  bf16-mixed  SUCCEEDED        1  938/938  0.3012"
            "    88.45%        -        -  2023-11-14 22:13:20\n"
            "j1  baseline  mlp    synthetic  bf16-mixed  RUNNING          3  100/938  0.5123"
            "         -        -        -  2023-11-14 22:13:20\n");
}

}  // namespace
}  // namespace mantissa::cli
