// mantissa: the command-line client of the mantissad daemon: training jobs and
// served models.

#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/arg_parser.h"
#include "client/commands.h"
#include "client/daemon_channel.h"
#include "client/model_client.h"
#include "client/model_commands.h"
#include "client/training_client.h"

namespace mantissa::cli {
namespace {

constexpr char kDefaultServer[] = "127.0.0.1:50051";
constexpr char kServerEnv[] = "MANTISSA_SERVER";

constexpr char kTokenEnv[] = "MANTISSA_TOKEN";
constexpr char kTlsCaEnv[] = "MANTISSA_TLS_CA_FILE";
constexpr char kTlsCertEnv[] = "MANTISSA_TLS_CERT_FILE";
constexpr char kTlsKeyEnv[] = "MANTISSA_TLS_KEY_FILE";

struct GlobalOptions {
  std::optional<std::string> server;
  std::optional<std::string> token_file;
  std::optional<std::string> tls_ca_file;
  std::optional<std::string> tls_cert_file;
  std::optional<std::string> tls_key_file;
  bool json = false;
  bool help = false;
};

// The flags of every command; each command registers only its own part.
struct CommandFlags {
  SubmitOptions submit;
  ResumeOptions resume;
  ListOptions list;
  CompareOptions compare;
  ExportOptions export_model;
  LoadOptions load;
  InferOptions infer;
  std::optional<int64_t> delete_model_version;  // delete-model --version
};

struct Command {
  absl::string_view name;
  absl::string_view arguments;  // positional arguments, as shown in usage
  int argument_count;           // exactly this many positional arguments
  absl::string_view summary;
  absl::string_view description;
  void (*define_flags)(ArgParser& parser, CommandFlags* flags);
};

void AddGlobalFlags(ArgParser& parser, GlobalOptions* global) {
  parser.AddString(
      "server", &global->server,
      absl::StrCat("daemon address (default ", kDefaultServer, ", or $", kServerEnv, ")"),
      "HOST:PORT");
  parser.AddString("token-file", &global->token_file,
                   absl::StrCat("send the bearer token in FILE (or the token in $", kTokenEnv, ")"),
                   "FILE");
  parser.AddString(
      "tls-ca-file", &global->tls_ca_file,
      absl::StrCat("connect over TLS, trusting these CA certificates (or $", kTlsCaEnv, ")"),
      "PEM");
  parser.AddString("tls-cert-file", &global->tls_cert_file,
                   absl::StrCat("client certificate for mTLS (or $", kTlsCertEnv, ")"), "PEM");
  parser.AddString("tls-key-file", &global->tls_key_file,
                   absl::StrCat("key of --tls-cert-file (or $", kTlsKeyEnv, ")"), "PEM");
  parser.AddBool("json", &global->json,
                 "print JSON: protobuf's mapping (watch: one event per line; infer: the "
                 "v2 REST response)");
  parser.AddBool("help", &global->help, "show help");
  parser.AddShortName('h', "help");
}

// What to train on; shared by submit and compare.
void DefineWorkloadFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddString("model", &o.model, "model to train, e.g. mlp", "NAME");
  parser.AddRepeated("model-option", &o.model_options, "model option; repeatable", "KEY=VALUE");
  parser.AddString("dataset", &o.dataset, "dataset, e.g. synthetic or fashion-mnist", "NAME");
  parser.AddRepeated("dataset-option", &o.dataset_options, "dataset option; repeatable",
                     "KEY=VALUE");
}

// How to train; shared by submit and compare, which differ in the precision.
void DefineTrainingFlags(ArgParser& parser, SubmitOptions& o) {
  parser.AddInt("steps", &o.steps, "train for N steps (give --steps or --epochs, not both)");
  parser.AddInt("epochs", &o.epochs, "train for N epochs (default 1 epoch)");
  parser.AddInt("batch-size", &o.batch_size, "training batch size (default 64)");
  parser.AddString("optimizer", &o.optimizer, "sgd, adam or adamw (default adamw)", "NAME");
  parser.AddDouble("lr", &o.lr, "learning rate (default 1e-3)");
  parser.AddString("lr-schedule", &o.lr_schedule,
                   "constant, or cosine: linear warmup then cosine decay (default constant)",
                   "NAME");
  parser.AddInt("warmup-steps", &o.warmup_steps, "cosine schedule warmup steps (default 0)");
  parser.AddDouble("min-lr", &o.min_lr, "cosine schedule final learning rate (default 0)");
  parser.AddDouble("weight-decay", &o.weight_decay, "weight decay (default 0; adamw 0.01)");
  parser.AddDouble("momentum", &o.momentum, "SGD momentum (default 0)");
  parser.AddBool("nesterov", &o.nesterov, "SGD with Nesterov momentum (needs --momentum > 0)");
  parser.AddDouble("eps", &o.eps, "Adam/AdamW epsilon (default 1e-8)");
  parser.AddDouble("gradient-clip-norm", &o.gradient_clip_norm,
                   "clip the unscaled gradients' total L2 norm (default: no clipping)");
  parser.AddInt("accumulate-grad-batches", &o.accumulate_grad_batches,
                "sum the gradients of N batches per optimizer step (default 1)");
  parser.AddBool("grad-scaler-enabled", &o.grad_scaler_enabled,
                 "scale the loss (default: 16-mixed only); =false turns it off");
  parser.AddDouble("grad-scaler-init-scale", &o.grad_scaler_init_scale,
                   "the grad scaler's initial scale (default 65536)");
  parser.AddDouble("grad-scaler-growth-factor", &o.grad_scaler_growth_factor,
                   "scale multiplier after growth-interval clean steps (default 2)");
  parser.AddDouble("grad-scaler-backoff-factor", &o.grad_scaler_backoff_factor,
                   "scale multiplier after an inf/NaN step (default 0.5)");
  parser.AddInt("grad-scaler-growth-interval", &o.grad_scaler_growth_interval,
                "clean steps before the scale grows (default 2000)");
  parser.AddString("fp8-format", &o.fp8_format,
                   "transformer-engine: HYBRID (E4M3 forward, E5M2 gradients; default) or E4M3",
                   "FORMAT");
  parser.AddInt("fp8-amax-history-len", &o.fp8_amax_history_len,
                "transformer-engine: steps of amax history per tensor (default 1024)");
  parser.AddString("fp8-amax-compute-algo", &o.fp8_amax_compute_algo,
                   "transformer-engine: max (default) or most_recent", "ALGO");
  parser.AddInt("fp8-margin", &o.fp8_margin,
                "transformer-engine: scale = (fp8_max / amax) / 2^margin (default 0)");
  parser.AddBool("cuda-graph", &o.cuda_graph,
                 "CUDA only: capture the training step as a CUDA graph and replay it");
  parser.AddInt("memory-baseline-steps", &o.memory_baseline_steps,
                "fp32 steps run first as the memory baseline (default 2, 0 = off)");
  parser.AddUint("seed", &o.seed, "random seed");
  parser.AddString("name", &o.name, "label shown by 'mantissa list'", "TEXT");
  parser.AddInt("progress-every-n-steps", &o.progress_every_n_steps,
                "report progress every N steps (default 10)");
  parser.AddInt("eval-every-n-steps", &o.eval_every_n_steps,
                "evaluate every N steps (default: only at the end)");
  parser.AddInt("eval-max-batches", &o.eval_max_batches,
                "evaluate on at most N batches (default: the whole test split)");
  parser.AddInt("eval-batch-size", &o.eval_batch_size,
                "evaluation batch size (default: the training batch size)");
  parser.AddBool("no-eval", &o.no_eval, "skip evaluation");
  parser.AddInt("checkpoint-every", &o.checkpoint_every_n_steps,
                "write a checkpoint every N steps (default 0: only at the end)");
  parser.AddString("max-duration", &o.max_duration,
                   "stop the job FAILED after this long, e.g. 90s, 30m, 2h (default and cap: "
                   "the daemon's --max_job_duration)",
                   "DURATION");
  parser.AddInt("keep-checkpoints", &o.keep_checkpoints,
                "checkpoints kept on disk, newest first (default 1; the daemon caps it)");
}

void DefineSubmitFlags(ArgParser& parser, CommandFlags* flags) {
  SubmitOptions& o = flags->submit;
  DefineWorkloadFlags(parser, o);
  parser.AddString("precision", &o.precision,
                   "Lightning Fabric precision, e.g. bf16-mixed (default 32-true)");
  DefineTrainingFlags(parser, o);
  // Not a training flag: compare submits one spec per precision, and a
  // resumed job takes the spec of the job it continues.
  parser.AddString("resume-from", &o.resume_from,
                   "continue this ended job from its last checkpoint, as 'mantissa resume' does",
                   "JOB");
  parser.AddBool("wait", &o.wait, "watch the job until it ends; exit 0 only if it succeeds");
}

void DefineResumeFlags(ArgParser& parser, CommandFlags* flags) {
  ResumeOptions& o = flags->resume;
  parser.AddString("name", &o.name, "label shown by 'mantissa list'", "TEXT");
  parser.AddBool("wait", &o.wait, "watch the job until it ends; exit 0 only if it succeeds");
}

void DefineCompareFlags(ArgParser& parser, CommandFlags* flags) {
  CompareOptions& o = flags->compare;
  DefineWorkloadFlags(parser, o.spec);
  parser.AddString("precisions", &o.precisions,
                   "comma-separated precisions to compare, in order; required", "LIST");
  DefineTrainingFlags(parser, o.spec);
}

void DefineListFlags(ArgParser& parser, CommandFlags* flags) {
  parser.AddRepeated("state", &flags->list.states,
                     "only jobs in this state: QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED; "
                     "repeatable",
                     "STATE");
  parser.AddInt("limit", &flags->list.limit, "at most N jobs (default: all)");
}

// How a served model runs; shared by export and load --torchscript.
void DefineServingFlags(ArgParser& parser, ServingFlags& o) {
  parser.AddString("precision", &o.precision,
                   "serving precision: bf16-true, 16-true or 32-true (default 16-true where the "
                   "device computes fp16, else bf16-true)",
                   "NAME");
  parser.AddInt("max-batch-size", &o.max_batch_size,
                "most items merged into one forward, and per request (default 64)");
  parser.AddInt("max-queue-delay-us", &o.max_queue_delay_us,
                "how long a request waits for others to batch with, in microseconds "
                "(default 500)");
}

void DefineExportFlags(ArgParser& parser, CommandFlags* flags) {
  parser.AddString("name", &flags->export_model.name, "serve the model under this name; required",
                   "NAME");
  DefineServingFlags(parser, flags->export_model.serving);
}

void DefineLoadFlags(ArgParser& parser, CommandFlags* flags) {
  LoadOptions& o = flags->load;
  parser.AddString("torchscript", &o.torchscript,
                   "register this TorchScript file as NAME's next version", "FILE");
  parser.AddRepeated("input", &o.inputs,
                     "an input of the TorchScript model's forward(), in order, without the batch "
                     "dimension; -1 = variable; repeatable",
                     "NAME:DATATYPE:D1,D2,...");
  parser.AddRepeated("output", &o.outputs, "an output, in order; repeatable",
                     "NAME:DATATYPE:D1,D2,...");
  DefineServingFlags(parser, o.serving);
}

void DefineInferFlags(ArgParser& parser, CommandFlags* flags) {
  InferOptions& o = flags->infer;
  parser.AddString("input", &o.input, "send this KServe v2 REST request body; - reads stdin",
                   "FILE.json");
  parser.AddBool("random", &o.random, "send seeded random inputs of the model's declared shapes");
  parser.AddInt("batch", &o.batch, "items in the --random request (default 1)");
  parser.AddBool("output-fp32", &o.output_fp32,
                 "return outputs as FP32 instead of the model's datatype");
}

void DefineNoFlags(ArgParser&, CommandFlags*) {}

void DefineDeleteModelFlags(ArgParser& parser, CommandFlags* flags) {
  parser.AddInt("version", &flags->delete_model_version,
                "the version to delete (default: every version)");
}

constexpr Command kCommands[] = {
    {"submit", "", 0, "submit a training job",
     "Submits a training job. Flags left out take the daemon's defaults, and the\n"
     "daemon validates the spec.",
     DefineSubmitFlags},
    {"resume", "JOB", 1, "continue an ended job from its last checkpoint",
     "Submits a new job that continues JOB, a job that ended before finishing\n"
     "(cancelled or failed), from its last checkpoint. The new job takes JOB's\n"
     "spec; only its name may be set. Checkpoints are written every\n"
     "--checkpoint-every steps, at the end, and when a job is cancelled after its\n"
     "first checkpoint.",
     DefineResumeFlags},
    {"get", "JOB", 1, "show a job", "Shows a job: its spec, state, progress and result.",
     DefineNoFlags},
    {"list", "", 0, "list jobs, newest first", "Lists jobs, newest first.", DefineListFlags},
    {"cancel", "JOB", 1, "cancel a job",
     "Cancels a job. A queued job is cancelled at once, a running one within one step.",
     DefineNoFlags},
    {"watch", "JOB", 1, "follow a job until it ends",
     "Follows a job until it ends. Exits 0 only if the job succeeds.", DefineNoFlags},
    {"capabilities", "", 0, "show what the daemon's device can run",
     "Shows the daemon's device, versions, and the precisions, models, datasets and\n"
     "optimizers it supports, and what each precision runs as.",
     DefineNoFlags},
    {"compare", "", 0, "train once per precision and compare the runs",
     "Submits one job per precision in --precisions, in that order and with the same\n"
     "spec otherwise, waits for them all and prints them side by side: step time,\n"
     "throughput, peak memory against the fp32 baseline, steps the grad scaler\n"
     "skipped, final loss and accuracy. A precision the daemon refuses is listed\n"
     "with its reason while the other jobs still run. Takes every submit flag but\n"
     "--precision, --resume-from and --wait.\n"
     "\n"
     "Exits 0 only if every submitted job succeeds. Ctrl-C stops the waiting; the\n"
     "jobs keep running.",
     DefineCompareFlags},
    {"export", "JOB", 1, "serve a succeeded job's model",
     "Copies JOB's final weights into the daemon's model repository as the next\n"
     "version of --name, casts them to the serving precision, validates the cast\n"
     "against fp32 on a calibration batch of the job's dataset and serves it,\n"
     "replacing the version served before. Prints the validation figures. Exits 0\n"
     "only if the new version is READY.",
     DefineExportFlags},
    {"load", "NAME", 1, "reload a model, or register a TorchScript model",
     "Without --torchscript: (re)loads the latest version of NAME from the model\n"
     "repository; the version it replaces finishes the requests it holds.\n"
     "\n"
     "With --torchscript FILE: copies FILE into the repository as the next version of\n"
     "NAME and serves it. forward() takes the --input tensors in order and returns\n"
     "the --output tensors (a tensor or a tuple). DATATYPE is FP32, FP16, BF16 or\n"
     "INT64; shapes leave out the batch dimension, e.g.\n"
     "  mantissa load net --torchscript net.pt --input image:FP32:3,32,32 \\\n"
     "      --output logits:FP32:10\n"
     "\n"
     "Exits 0 only if the loaded version is READY.",
     DefineLoadFlags},
    {"models", "", 0, "list the served models",
     "Lists the models in the daemon's repository: the latest version of each, its\n"
     "state and serving precision, where it came from, and how its cast to that\n"
     "precision compared with fp32 (max |diff|, mean relative difference, top-1\n"
     "agreement). Models that are not READY follow with the reason.",
     DefineNoFlags},
    {"infer", "NAME", 1, "run a served model on some inputs",
     "Sends one inference request to NAME over the Open Inference Protocol and prints\n"
     "each output's datatype and shape, and for [batch, classes] outputs each item's\n"
     "argmax. --input takes a KServe v2 REST request body, data flat or nested:\n"
     "  {\"inputs\": [{\"name\": \"input\", \"shape\": [1, 4], \"datatype\": \"FP32\",\n"
     "               \"data\": [[0.1, 0.2, 0.3, 0.4]]}]}\n"
     "FP32, FP16, BF16 and INT64 inputs are sent as raw little-endian bytes. --random\n"
     "sends uniform [0, 1) floats (token ids 0 or 1) of the declared shapes, variable\n"
     "dimensions as 8. --json prints the KServe v2 REST response body.",
     DefineInferFlags},
    {"delete", "JOB", 1, "delete an ended job and its checkpoints",
     "Deletes JOB, which must have ended (cancel a queued or running job first), with\n"
     "its record and every checkpoint it wrote. Jobs that ended more than the\n"
     "daemon's --keep_finished_jobs_days ago are deleted automatically.",
     DefineNoFlags},
    {"delete-model", "NAME", 1, "delete a model version from the repository",
     "Deletes --version N of model NAME from the daemon's repository, or with no\n"
     "--version every version and the model. The version being served cannot be\n"
     "deleted: run 'mantissa unload NAME' first, or delete an older version.",
     DefineDeleteModelFlags},
    {"unload", "NAME", 1, "stop serving a model",
     "Stops serving NAME; requests already taken complete. Its files stay in the\n"
     "repository, so 'mantissa load NAME' serves it again.",
     DefineNoFlags},
};

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : kCommands) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

std::string GlobalFlagsHelp() {
  GlobalOptions unused;
  ArgParser parser;
  AddGlobalFlags(parser, &unused);
  return parser.Help();
}

std::string Usage() {
  std::string out =
      "Usage: mantissa [--server=HOST:PORT] [--json] COMMAND [ARGS]\n"
      "\n"
      "Submits, follows and manages training jobs on a mantissad daemon, and serves\n"
      "the trained models for inference.\n"
      "\n"
      "Commands:\n";
  std::vector<std::pair<std::string, absl::string_view>> lines;
  size_t width = 0;
  for (const Command& command : kCommands) {
    std::string left = std::string(command.name);
    if (!command.arguments.empty()) absl::StrAppend(&left, " ", command.arguments);
    width = std::max(width, left.size());
    lines.emplace_back(std::move(left), command.summary);
  }
  lines.emplace_back("help [COMMAND]", "show help for a command");
  width = std::max(width, lines.back().first.size());
  for (const auto& [left, summary] : lines) {
    absl::StrAppend(&out, "  ", left, std::string(width - left.size() + 2, ' '), summary, "\n");
  }
  absl::StrAppend(&out,
                  "\n"
                  "Global flags (before or after the command):\n",
                  GlobalFlagsHelp(),
                  "\n"
                  "Flags take --flag=value or --flag value.\n"
                  "Exit status: 0 on success, 1 when a call fails or a watched job does not\n"
                  "succeed, 2 for a usage error.\n");
  return out;
}

std::string CommandUsage(const Command& command) {
  std::string out = absl::StrCat("Usage: mantissa [GLOBAL FLAGS] ", command.name);
  CommandFlags unused;
  ArgParser parser;
  command.define_flags(parser, &unused);
  const std::string flags = parser.Help();
  if (!flags.empty()) absl::StrAppend(&out, " [FLAGS]");
  if (!command.arguments.empty()) absl::StrAppend(&out, " ", command.arguments);
  absl::StrAppend(&out, "\n\n", command.description, "\n");
  if (!flags.empty()) absl::StrAppend(&out, "\nFlags:\n", flags);
  absl::StrAppend(&out, "\nGlobal flags:\n", GlobalFlagsHelp());
  return out;
}

int UsageError(const Command* command, absl::string_view message) {
  if (command == nullptr) {
    std::cerr << "mantissa: " << message << "\nRun 'mantissa --help' for usage.\n";
  } else {
    std::cerr << "mantissa " << command->name << ": " << message << "\nRun 'mantissa help "
              << command->name << "' for usage.\n";
  }
  return kExitUsage;
}

int TerminalWidth() {
  winsize size{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

volatile sig_atomic_t g_clear_line_on_interrupt = 0;
volatile sig_atomic_t g_waiting_for_many_jobs = 0;

// Ctrl-C only stops the watching; say so, since the job itself runs on.
void OnInterrupt(int) {
  // The terminal has echoed "^C" after the output; either wipe it together
  // with the progress line or move past it.
  static constexpr char kClear[] = "\r\x1b[K";
  static constexpr char kNewline[] = "\n";
  static constexpr char kMessage[] = "mantissa: stopped watching; the job keeps running\n";
  static constexpr char kManyMessage[] = "mantissa: stopped waiting; the jobs keep running\n";
  if (g_clear_line_on_interrupt) {
    (void)!write(STDOUT_FILENO, kClear, sizeof(kClear) - 1);
  } else {
    (void)!write(STDERR_FILENO, kNewline, sizeof(kNewline) - 1);
  }
  if (g_waiting_for_many_jobs) {
    (void)!write(STDERR_FILENO, kManyMessage, sizeof(kManyMessage) - 1);
  } else {
    (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
  }
  _exit(130);
}

std::string ServerAddress(const GlobalOptions& global) {
  if (global.server.has_value()) return *global.server;
  const char* env = std::getenv(kServerEnv);
  if (env != nullptr && *env != '\0') return env;
  return kDefaultServer;
}

// A flag's value, else the environment variable's, else "".
std::string FlagOrEnv(const std::optional<std::string>& flag, const char* env) {
  if (flag.has_value()) return *flag;
  const char* value = std::getenv(env);
  return value != nullptr ? value : "";
}

absl::StatusOr<ChannelOptions> BuildChannelOptions(const GlobalOptions& global,
                                                   const std::string& server) {
  ChannelOptions options;
  options.target = server;
  options.tls_ca_file = FlagOrEnv(global.tls_ca_file, kTlsCaEnv);
  options.tls_cert_file = FlagOrEnv(global.tls_cert_file, kTlsCertEnv);
  options.tls_key_file = FlagOrEnv(global.tls_key_file, kTlsKeyEnv);
  if (global.token_file.has_value()) {
    absl::StatusOr<std::string> token = ReadTokenFile(*global.token_file);
    if (!token.ok()) return token.status();
    options.token = *std::move(token);
  } else if (const char* token = std::getenv(kTokenEnv); token != nullptr) {
    options.token = std::string(absl::StripAsciiWhitespace(token));
  }
  return options;
}

int Main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  GlobalOptions global;

  // Global flags may come before the command ...
  ArgParser leading;
  AddGlobalFlags(leading, &global);
  leading.set_stop_at_positional(true);
  absl::StatusOr<std::vector<std::string>> rest = leading.Parse(args);
  if (!rest.ok()) return UsageError(nullptr, rest.status().message());
  if (rest->empty()) {
    if (global.help) {
      std::cout << Usage();
      return kExitOk;
    }
    std::cerr << Usage();
    return kExitUsage;
  }

  const std::string name = rest->front();
  const std::vector<std::string> command_args(rest->begin() + 1, rest->end());
  if (name == "help") {
    if (command_args.empty()) {
      std::cout << Usage();
      return kExitOk;
    }
    if (command_args.size() > 1) return UsageError(nullptr, "help takes at most one command");
    const Command* command = FindCommand(command_args.front());
    if (command == nullptr) {
      return UsageError(nullptr, absl::StrCat("unknown command '", command_args.front(), "'"));
    }
    std::cout << CommandUsage(*command);
    return kExitOk;
  }
  const Command* command = FindCommand(name);
  if (command == nullptr) return UsageError(nullptr, absl::StrCat("unknown command '", name, "'"));

  // ... or after it.
  CommandFlags flags;
  ArgParser parser;
  command->define_flags(parser, &flags);
  AddGlobalFlags(parser, &global);
  absl::StatusOr<std::vector<std::string>> positional = parser.Parse(command_args);
  if (!positional.ok()) return UsageError(command, positional.status().message());
  if (global.help) {
    std::cout << CommandUsage(*command);
    return kExitOk;
  }
  if (static_cast<int>(positional->size()) != command->argument_count) {
    if (positional->size() > static_cast<size_t>(command->argument_count)) {
      return UsageError(command, absl::StrCat("unexpected argument '",
                                              (*positional)[command->argument_count], "'"));
    }
    return UsageError(command, absl::StrCat("missing ", command->arguments));
  }

  // Validate everything before any call, so a usage error never half-runs.
  std::optional<v1::JobSpec> spec;
  std::optional<v1::ListJobsRequest> list_request;
  std::optional<CompareRequest> compare_request;
  std::optional<v1::ExportModelRequest> export_request;
  std::optional<LoadRequest> load_request;
  std::optional<InferPlan> infer_plan;
  if (command->name == "submit") {
    absl::StatusOr<v1::JobSpec> built = BuildJobSpec(flags.submit);
    if (!built.ok()) return UsageError(command, built.status().message());
    spec = *std::move(built);
  } else if (command->name == "resume") {
    absl::StatusOr<v1::JobSpec> built = BuildResumeSpec(positional->front(), flags.resume);
    if (!built.ok()) return UsageError(command, built.status().message());
    spec = *std::move(built);
  } else if (command->name == "list") {
    absl::StatusOr<v1::ListJobsRequest> built = BuildListRequest(flags.list);
    if (!built.ok()) return UsageError(command, built.status().message());
    list_request = *std::move(built);
  } else if (command->name == "compare") {
    absl::StatusOr<CompareRequest> built = BuildCompareRequest(flags.compare);
    if (!built.ok()) return UsageError(command, built.status().message());
    compare_request = *std::move(built);
  } else if (command->name == "export") {
    absl::StatusOr<v1::ExportModelRequest> built =
        BuildExportRequest(positional->front(), flags.export_model);
    if (!built.ok()) return UsageError(command, built.status().message());
    export_request = *std::move(built);
  } else if (command->name == "load") {
    absl::StatusOr<LoadRequest> built = BuildLoadRequest(positional->front(), flags.load);
    if (!built.ok()) return UsageError(command, built.status().message());
    load_request = *std::move(built);
  } else if (command->name == "infer") {
    absl::StatusOr<InferPlan> built = BuildInferPlan(positional->front(), flags.infer);
    if (!built.ok()) return UsageError(command, built.status().message());
    infer_plan = *std::move(built);
  } else if (command->name == "unload" && positional->front().empty()) {
    return UsageError(command, "NAME is empty; give the name of a model");
  } else if (command->name == "delete-model" && positional->front().empty()) {
    return UsageError(command, "NAME is empty; give the name of a model");
  } else if (command->name == "delete-model" && flags.delete_model_version &&
             *flags.delete_model_version < 1) {
    return UsageError(command, "--version must be >= 1 (leave it out to delete every version)");
  }
  const std::string server = ServerAddress(global);
  if (server.empty()) return UsageError(command, "--server is empty");
  absl::StatusOr<ChannelOptions> channel_options = BuildChannelOptions(global, server);
  if (!channel_options.ok()) return UsageError(command, channel_options.status().message());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = CreateDaemonChannel(*channel_options);
  if (!channel.ok()) return UsageError(command, channel.status().message());

  CommandIo io;
  io.json = global.json;
  io.terminal = isatty(STDOUT_FILENO) != 0;
  io.terminal_width = TerminalWidth();
  const bool watches = command->name == "watch" ||
                       (command->name == "submit" && flags.submit.wait) ||
                       (command->name == "resume" && flags.resume.wait);
  if (watches) {
    g_clear_line_on_interrupt = io.terminal && !io.json;
    signal(SIGINT, OnInterrupt);
  } else if (command->name == "compare") {
    // compare draws no live line; it reports on stderr.
    g_waiting_for_many_jobs = 1;
    signal(SIGINT, OnInterrupt);
  }

  if (command->name == "export" || command->name == "load" || command->name == "models" ||
      command->name == "infer" || command->name == "unload" || command->name == "delete-model") {
    auto models = std::make_unique<ModelClient>(*channel, server);
    if (command->name == "export") return RunExport(*models, *export_request, io);
    if (command->name == "load") return RunLoad(*models, *load_request, io);
    if (command->name == "models") return RunModels(*models, io);
    if (command->name == "infer") return RunInfer(*models, *infer_plan, io);
    if (command->name == "delete-model") {
      return RunDeleteModel(*models, positional->front(), flags.delete_model_version.value_or(0),
                            io);
    }
    return RunUnload(*models, positional->front(), io);
  }
  auto client = std::make_unique<TrainingClient>(*channel, server);
  const std::string job_id = command->argument_count == 1 ? positional->front() : "";
  if (command->name == "submit") return RunSubmit(*client, *spec, flags.submit.wait, io);
  if (command->name == "resume") return RunSubmit(*client, *spec, flags.resume.wait, io);
  if (command->name == "get") return RunGet(*client, job_id, io);
  if (command->name == "list") return RunList(*client, *list_request, io);
  if (command->name == "cancel") return RunCancel(*client, job_id, io);
  if (command->name == "delete") return RunDelete(*client, job_id, io);
  if (command->name == "watch") return RunWatch(*client, job_id, io);
  if (command->name == "compare") return RunCompare(*client, *compare_request, io);
  return RunCapabilities(*client, io);
}

}  // namespace
}  // namespace mantissa::cli

int main(int argc, char** argv) { return mantissa::cli::Main(argc, argv); }
