#!/bin/bash
# The CUDA path's checks as one command for a GPU machine held for minutes:
# build, the CUDA tests, the daemon on cuda:0 through the CLI, the training
# benchmark beside Lightning Fabric re-measured on the same GPU, and kernel
# profiles of the rows that matter. Every stage writes its figures into
# RESULTS_DIR as soon as it ends, so a run cut short still returns them.
#
#   here:   bash tests/gpu/stage.sh                  # fills .gpu/ (carry it)
#   there:  bash tests/gpu/gpu_check.sh "$OUT"       # in the project root
#   on a CPU machine, to check the script against an existing build:
#           bash tests/gpu/gpu_check.sh --cpu --build-dir build /tmp/gpu-check
#
# Options: --budget SECONDS (default 560: every stage's timeout is cut to what
# is left of it), --stages LIST (of build, tests, bench, daemon, fabric,
# graph, tuned, profile; default all, in that order: what the targets need
# first), --build-dir DIR (default build-gpu).
#
# RESULTS_DIR receives seven files: summary.txt (a line per stage: ok /
# FAILED / skipped, seconds, and the figures it checked), bench.jsonl,
# bench_graph.jsonl, fabric.jsonl (default and tuned Fabric rows),
# table.md (tests/gpu/benchmark_table.py: Mantissa and Fabric side by side,
# and the targets), logs.tar.gz (every stage's log, the daemon's, /metrics,
# the profiles' summaries) and profiles.tar.gz (the Kineto traces).
set -uo pipefail

cpu=0 budget=560 stages=build,tests,bench,daemon,fabric,graph,tuned,profile build=build-gpu
while [ $# -gt 1 ]; do
  case $1 in
    --cpu) cpu=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --stages) stages=$2; shift 2 ;;
    --build-dir) build=$2; shift 2 ;;
    *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
  esac
done
[ $# -eq 1 ] || { sed -n '2,23p' "$0" >&2; exit 2; }
results=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 2
mkdir -p "$results" || exit 2
results=$(cd "$results" && pwd)
work=$(mktemp -d /tmp/gpu-check.XXXXXX)
logs=$work/logs
profiles=$work/profiles
mkdir -p "$logs" "$profiles"
summary=$results/summary.txt
: >"$summary"
rm -f "$results"/*.jsonl "$results"/*.tar.gz "$results/table.md"
deadline=$((SECONDS + budget))
failed=0

if [ $cpu -eq 1 ]; then
  device=cpu
  stages=${stages//build/}  # the CPU build is the one named by --build-dir
  # Small enough for two cores; nothing here is comparable with Fabric's figures.
  bench_flags=(--scale=0.05 --warmup=1 --steps=3)
else
  device=cuda:0
  bench_flags=()
fi

note() { echo "$*" | tee -a "$summary"; }
wanted() { [[ ",$stages," == *",$1,"* ]]; }

# Everything under $logs goes back as one archive, the traces as another (a
# file over 16 MiB would not come back); written after each stage.
pack() {
  tar -czf "$results/logs.tar.gz" -C "$work" logs 2>/dev/null
  [ -n "$(ls "$profiles")" ] && tar -czf "$results/profiles.tar.gz" -C "$work" profiles
}

# stage NAME LIMIT FUNCTION: runs FUNCTION with its output in logs/NAME.log,
# under the smaller of LIMIT and what is left of the budget.
stage() {
  local name=$1 limit=$2 fn=$3 left=$((deadline - SECONDS)) start=$SECONDS rc
  if ! wanted "$name"; then return 0; fi
  if [ $left -lt 15 ]; then
    note "$name: skipped (budget spent)"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  "$fn" >"$logs/$name.log" 2>&1 &
  local pid=$!
  # The stage is a shell function: time it out by killing its process group.
  (sleep "$limit" && kill -TERM -- -$pid 2>/dev/null; sleep 5; kill -KILL -- -$pid 2>/dev/null) &
  local watchdog=$!
  wait $pid
  rc=$?
  kill -- -$watchdog 2>/dev/null
  wait $watchdog 2>/dev/null
  stop_daemon
  local took=$((SECONDS - start)) figures=""
  [ -f "$work/$name.figures" ] && figures=$(paste -sd';' "$work/$name.figures")
  if [ $rc -eq 0 ]; then
    note "$name: ok (${took}s) $figures"
  else
    failed=1
    [ $took -ge "$limit" ] && figures="timed out after ${limit}s; $figures"
    note "$name: FAILED rc=$rc (${took}s) $figures; tail of logs/$name.log:"
    tail -n 15 "$logs/$name.log" | sed 's/^/    /' | tee -a "$summary"
  fi
  pack
}
set -m  # each background stage in its own process group, for the watchdog

figure() { echo "$*" >>"$work/$current.figures"; }

environment() {
  current=environment
  {
    date -u
    uname -a
    nproc
    if [ $cpu -eq 0 ]; then
      nvidia-smi
      python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda,
        torch.cuda.get_device_name(0))'
      python3 -c 'import lightning; print("lightning", lightning.__version__)'
      pkg-config --version || echo "no pkg-config on the image (the staged one is used)"
      g++ --version | head -1
      cmake --version | head -1
    fi
    git log -1 --oneline 2>/dev/null
  } >"$logs/environment.log" 2>&1
}

build_stage() {
  current=build
  set -e
  # CMake 4 refuses package configs that ask for a policy version below 3.5.
  export CMAKE_POLICY_VERSION_MINIMUM=3.5
  # build.sh configures and builds the daemon and CLI; then only the test
  # binaries this script runs, not the whole suite.
  bash .gpu/build.sh -DMANTISSA_BUILD_TESTS=OFF
  source .gpu/env.sh
  # libpq's Kerberos libraries, only where the image has none of its own.
  if ! ldconfig -p | grep -q libgssapi_krb5.so.2; then
    for f in .gpu/fallback/*.deb; do dpkg -x "$f" /opt/deps; done
    figure "Kerberos libraries unpacked from .gpu/fallback"
  fi
  cmake -S . -B "$build" -DMANTISSA_BUILD_TESTS=ON >/dev/null
  cmake --build "$build" -j"$(nproc)" --target gpu_test precision_test mantissa_train_benchmark
  if ! grep -q MANTISSA_WITH_CUDA "$build/compile_commands.json"; then
    figure "the CUDA paths were NOT built (no CUDA in this LibTorch?)"
    return 1
  fi
  grep -q USE_C10D_NCCL "$build/compile_commands.json" || figure "built without NCCL"
  ! ldd "$build/server/mantissad" "$build/tests/gpu_test" | grep "not found"
}

# A gtest binary's pass/fail/skip counts, from the summary at the end of its log.
gtest_counts() {
  local log=$1 kind n out=""
  for kind in PASSED SKIPPED FAILED; do
    n=$(sed -n "s/^\[ *$kind *\] \([0-9]*\) tests\{0,1\}[,.].*/\1/p" "$log" | head -1)
    out+="${n:-0} ${kind,,}, "
  done
  echo "${out%, }"
}

tests_stage() {
  current=tests
  local rc=0 t
  for t in "gpu_test:*" "precision_test:*Cuda*"; do
    local bin=${t%%:*} filter=${t#*:}
    echo "== $bin --gtest_filter=$filter"
    "$build/tests/$bin" --gtest_filter="$filter" 2>&1 | tee "$work/$bin.log" || rc=1
    figure "$bin: $(gtest_counts "$work/$bin.log")"
  done
  return $rc
}

# --- the daemon on the device, through the CLI --------------------------------

mantissa=""
metrics_port=""
# The stage runs in a subshell that a timeout kills: the main shell stops the
# daemon it left behind.
stop_daemon() {
  [ -f "$work/daemon.pid" ] || return 0
  local pid
  pid=$(cat "$work/daemon.pid")
  kill -TERM "$pid" 2>/dev/null && for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  rm -f "$work/daemon.pid"
}
start_daemon() {
  local state=$work/daemon
  mkdir -p "$state"
  # --check_free_memory=false: the out-of-memory job must reach the device.
  "$build/server/mantissad" --device="$device" --grpc_address=127.0.0.1:0 \
    --metrics_address=127.0.0.1:0 --http_address=127.0.0.1:0 --state_dir="$state" \
    --port_file="$state/ports.json" --check_free_memory=false --max_concurrent_jobs=1 \
    >"$logs/mantissad.log" 2>&1 &
  daemon=$!
  echo $daemon >"$work/daemon.pid"
  for _ in $(seq 300); do
    [ -s "$state/ports.json" ] && break
    kill -0 $daemon 2>/dev/null || { echo "mantissad exited"; return 1; }
    sleep 0.1
  done
  local ports
  ports=$(python3 -c 'import json,sys; p = json.load(open(sys.argv[1])); print(p["grpc"], p["metrics"])' \
    "$state/ports.json") || return 1
  metrics_port=${ports#* }
  mantissa="$build/client/mantissa --server=127.0.0.1:${ports% *}"
  for _ in $(seq 100); do
    $mantissa capabilities >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# job_field JOB PYTHON_EXPR: a field of `mantissa --json get JOB` (j is the job).
job_field() {
  $mantissa --json get "$1" |
    python3 -c "import json,sys; j=json.load(sys.stdin)['job']; print($2)"
}
last_job() {
  $mantissa --json list --limit 1 | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["jobs"][0]["id"])'
}

# Device memory as the daemon exports it and as nvidia-smi sees it, in MiB.
check_memory_metrics() {
  local scrape
  # Python rather than curl, which CUDA images often lack.
  scrape=$(python3 -c 'import sys, urllib.request as u;
print(u.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:$metrics_port/metrics") || return 1
  echo "$scrape" >"$logs/metrics.txt"
  local used total
  used=$(echo "$scrape" | awk '/^mantissa_device_memory_used_bytes/ {print int($2 / 1048576)}')
  total=$(echo "$scrape" | awk '/^mantissa_device_memory_total_bytes/ {print int($2 / 1048576)}')
  echo "metrics: used $used MiB of $total MiB"
  if [ $cpu -eq 1 ]; then
    figure "device memory metrics: used $used MiB of $total MiB (no nvidia-smi on the CPU)"
    return 0
  fi
  local smi
  smi=$(nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits -i 0)
  local smi_used=${smi%%,*} smi_total=${smi##*, }
  echo "nvidia-smi: used $smi_used MiB of $smi_total MiB"
  figure "memory used: metrics $used MiB, nvidia-smi $smi_used MiB; total $total vs $smi_total MiB"
  # Both read the driver; nvidia-smi rounds and may leave out reserved memory.
  python3 -c "import sys; u, su, t, st = map(float, sys.argv[1:]);
sys.exit(0 if abs(u - su) <= max(256, 0.02 * st) and abs(t - st) <= 0.01 * st else 1)" \
    "$used" "$smi_used" "$total" "$smi_total"
}

daemon_stage() {
  current=daemon
  start_daemon || return 1
  local rc=0
  $mantissa capabilities

  # A job in every precision, through the CLI. eps 1e-4: 1e-8 is 0 in float16.
  local precisions=32-true,64-true,16-mixed,bf16-mixed,16-true,bf16-true
  precisions+=,transformer-engine,transformer-engine-float16
  local d=256 seq=128 steps=40
  [ $cpu -eq 1 ] && d=64 seq=32 steps=10
  local gpt=(--model gpt --model-option d_model=$d --model-option layers=2
    --model-option heads=4 --model-option seq_len=$seq --dataset synthetic-tokens
    --dataset-option vocab=512 --dataset-option seq_len=$seq)
  # compare's status counts only the jobs the daemon took: count them all.
  $mantissa compare "${gpt[@]}" --steps $steps --batch-size 16 --eps 1e-4 --seed 1 \
    --progress-every-n-steps 10 --precisions=$precisions 2>&1 | tee "$work/compare.txt"
  local succeeded  # the table's rows: PRECISION RUNS-AS STATE ...
  succeeded=$(awk '$3 == "SUCCEEDED"' "$work/compare.txt" | wc -l)
  figure "compare: $succeeded of 8 precisions succeeded"
  [ "$succeeded" -eq 8 ] || [ $cpu -eq 1 ] || rc=1  # the CPU refuses 16-true and FP8

  check_memory_metrics || { figure "memory metrics disagree with nvidia-smi"; rc=1; }

  # A large job, then a small one: each job's peak is its own.
  $mantissa submit --name big "${gpt[@]}" --steps 10 --batch-size 64 --wait || rc=1
  local big small
  big=$(last_job)
  if [ $cpu -eq 0 ]; then
    # Out of memory: ~70 GB of float32 logits alone (4096 x 512 x 8192). The
    # data must hold a whole batch: the loader cuts a batch to the data set.
    $mantissa submit --name oom --model gpt --model-option d_model=768 --model-option layers=12 \
      --model-option heads=12 --model-option seq_len=512 --dataset synthetic-tokens \
      --dataset-option vocab=8192 --dataset-option seq_len=512 \
      --dataset-option train_tokens=$((4096 * 512 + 1)) --batch-size 4096 --steps 2 \
      --memory-baseline-steps 0 --no-eval --wait && rc=1
    local oom error
    oom=$(last_job)
    error=$(job_field "$oom" 'j.get("state", "") + ": " + j.get("error", "")')
    echo "oom job: $error"
    if [[ $error == *FAILED* && $error == *"out of memory"* ]]; then
      figure "out-of-memory job FAILED with its message"
    else
      figure "out-of-memory job: unexpected end: $error"
      rc=1
    fi
  fi
  $mantissa submit --name small --model mlp --model-option hidden=256 --dataset synthetic \
    --dataset-option features=64 --dataset-option classes=10 --dataset-option train_size=4096 \
    --steps 20 --batch-size 64 --wait || { figure "the job after the large ones failed"; rc=1; }
  small=$(last_job)
  local peaks
  peaks=$(python3 -c "import sys; b, s = int(sys.argv[1]), int(sys.argv[2]);
print(f'peak big {b / 2**20:.1f} MiB, small {s / 2**20:.1f} MiB'); sys.exit(0 if s < b / 4 else 1)" \
    "$(job_field "$big" 'j["memory"]["peakBytes"]')" \
    "$(job_field "$small" 'j["memory"]["peakBytes"]')")
  local peak_rc=$?
  figure "$peaks"
  [ $peak_rc -eq 0 ] || { figure "the small job's peak is not its own"; rc=1; }

  # Serve it in true half precision on the device.
  local serving=16-true
  [ $cpu -eq 1 ] && serving=bf16-true  # no float16 compute on the CPU
  if $mantissa export "$small" --name served --precision $serving &&
    $mantissa infer served --random --batch 4 | tee "$work/infer.txt"; then
    figure "export and serve in $serving: ok ($(grep -o 'FP16\|BF16' "$work/infer.txt" | head -1))"
  else
    figure "export or serve in $serving failed"
    rc=1
  fi
  check_memory_metrics || rc=1
  $mantissa list
  return $rc
}

# --- the benchmark beside Fabric ----------------------------------------------

bench_stage() {
  current=bench
  "$build/tests/mantissa_train_benchmark" --device="$device" "${bench_flags[@]}" |
    tee "$results/bench.jsonl"
}

graph_stage() {
  current=graph
  "$build/tests/mantissa_train_benchmark" --device="$device" "${bench_flags[@]}" --cuda_graph |
    tee "$results/bench_graph.jsonl"
}

# Fabric's own Python process: none of the libraries env.sh put first.
fabric() {
  local flags=(--device="$device")
  if [ $cpu -eq 1 ]; then
    flags+=(--scale=0.05 --warmup=1 --steps=3)
    python3 -c 'import lightning' 2>/dev/null || { figure "skipped: no lightning here"; return 0; }
  fi
  env -u LD_LIBRARY_PATH python3 tests/gpu/fabric_benchmark.py "${flags[@]}" "$@" |
    tee -a "$results/fabric.jsonl"
}

fabric_stage() {
  current=fabric
  fabric --mode=default
}

# Tuned Fabric (fused AdamW, torch.compile: a cold compile each) for the rows
# with a hand-tuned anchor; gpt first, whose compiles are the slow ones and
# whose rows have the targets that are hardest to meet.
tuned_stage() {
  current=tuned
  fabric --mode=tuned --workloads=gpt,mlp --precisions=16-mixed,bf16-mixed,bf16-true
}

profile_stage() {
  current=profile
  # The rows with targets of their own; timings here carry the profiler's cost.
  local rc=0
  "$build/tests/mantissa_train_benchmark" --device="$device" "${bench_flags[@]}" \
    --workloads=gpt --precisions=bf16-mixed,bf16-true,transformer-engine --warmup=3 --steps=3 \
    --profile="$profiles" || rc=1
  "$build/tests/mantissa_train_benchmark" --device="$device" "${bench_flags[@]}" \
    --workloads=mlp --precisions=16-mixed,bf16-true --warmup=3 --steps=3 \
    --profile="$profiles" || rc=1
  return $rc
}

# table.md from what has been measured so far; --final notes its verdict.
table() {
  [ -s "$results/bench.jsonl" ] || return 0
  local args=("$results/bench.jsonl" --markdown --targets)
  [ -s "$results/bench_graph.jsonl" ] && args+=(--cuda-graph "$results/bench_graph.jsonl")
  [ -s "$results/fabric.jsonl" ] && args+=(--fabric "$results/fabric.jsonl")
  python3 tests/gpu/benchmark_table.py "${args[@]}" >"$results/table.md" 2>&1
  [ "${1:-}" = --final ] || return 0
  note "table: $(grep -c ' MISS ' "$results/table.md") targets missed (table.md)"
}

environment
stage build 300 build_stage
# The stages run in subshells: the libraries build.sh unpacked (gRPC, Abseil,
# ...) reach the binaries through the environment it wrote.
[ -f .gpu/env.sh ] && source .gpu/env.sh
[ -x "$build/server/mantissad" ] || { note "no $build/server/mantissad: nothing to run"; exit 1; }
stage tests 60 tests_stage
stage bench 75 bench_stage
table
stage daemon 90 daemon_stage
stage fabric 75 fabric_stage
table
stage graph 75 graph_stage
stage tuned 120 tuned_stage
table
stage profile 45 profile_stage
table --final
pack
note "total ${SECONDS}s of ${budget}s"
exit $failed
