#ifndef MANTISSA_TESTS_CLIENT_TEST_JOBS_H_
#define MANTISSA_TESTS_CLIENT_TEST_JOBS_H_

#include "google/protobuf/text_format.h"
#include "mantissa/v1/training.pb.h"

namespace mantissa::cli {

// Parses a Job from text format, failing loudly on typos in test data.
inline v1::Job JobFromText(const char* text) {
  v1::Job job;
  if (!google::protobuf::TextFormat::ParseFromString(text, &job)) abort();
  return job;
}

// A running job part-way through, with everything the views show.
inline v1::Job RunningJob() {
  return JobFromText(R"pb(
    id: "j1"
    spec {
      model: "mlp"
      model_options { key: "hidden" value: "128" }
      model_options { key: "depth" value: "2" }
      dataset: "synthetic"
      precision: "16-mixed"
      steps: 938
      batch_size: 64
      optimizer: "adamw"
      lr: 0.001
      weight_decay: 0.01
      seed: 7
      eval { every_n_steps: 100 max_batches: 10 }
      name: "baseline"
    }
    state: RUNNING
    effective_precision: "bf16-mixed"
    progress {
      step: 100
      total_steps: 938
      epoch: 1
      total_epochs: 1
      loss: 0.51234
      items_per_second: 12345.4
      step_seconds: 0.005
    }
    warnings: "16-mixed runs as bf16-mixed on cpu"
    create_time { seconds: 1700000000 }
    start_time { seconds: 1700000005 }
    parameter_count: 101770
  )pb");
}

inline v1::Job SucceededJob() {
  v1::Job job = RunningJob();
  job.set_state(v1::SUCCEEDED);
  job.mutable_progress()->set_step(938);
  job.mutable_result()->set_final_loss(0.30121);
  job.mutable_result()->set_eval_accuracy(0.8845);
  job.mutable_result()->set_eval_loss(0.31);
  job.mutable_result()->set_steps_completed(938);
  job.mutable_result()->set_train_seconds(65);
  job.mutable_end_time()->set_seconds(1700000070);
  return job;
}

// A finished 16-mixed job with the grad scaler on and memory measured while
// another job shared the device.
inline v1::Job ScaledJob() {
  v1::Job job = SucceededJob();
  job.MergeFrom(JobFromText(R"pb(
    id: "j2"
    spec { precision: "16-mixed" }
    effective_precision: "16-mixed"
    precision_stats {
      grad_scaler_enabled: true
      skipped_steps: 3
      scale: 65536
      optimizer_steps: 200
      parameter_dtype: "float32"
      compute_dtype: "float16"
    }
    memory {
      peak_bytes: 1572864
      baseline_fp32_peak_bytes: 2621440
      savings_ratio: 0.4
      parameter_bytes: 407080
      gradient_bytes: 407080
      optimizer_state_bytes: 814160
      source: "cuda caching allocator"
      exact: false
    }
  )pb"));
  job.clear_warnings();
  return job;
}

// A language-model job resumed from j0's checkpoint at step 400, with a
// checkpoint of its own at step 600.
inline v1::Job ResumedJob() {
  v1::Job job = SucceededJob();
  job.set_id("j5");
  v1::JobSpec& spec = *job.mutable_spec();
  spec.set_resume_from("j0");
  spec.set_optimizer("sgd");
  spec.set_momentum(0.9);
  spec.set_nesterov(true);
  spec.set_accumulate_grad_batches(4);
  spec.set_checkpoint_every_n_steps(200);
  job.set_start_step(400);
  v1::JobResult& result = *job.mutable_result();
  result.clear_eval_accuracy();
  result.set_eval_loss(2.3026);
  result.set_eval_perplexity(10.0);
  v1::Checkpoint& checkpoint = *job.mutable_checkpoint();
  checkpoint.set_step(600);
  checkpoint.set_path("/state/jobs/j5/checkpoint.pt");
  checkpoint.set_bytes(1258291);
  checkpoint.mutable_time()->set_seconds(1700000060);
  return job;
}

}  // namespace mantissa::cli

#endif  // MANTISSA_TESTS_CLIENT_TEST_JOBS_H_
