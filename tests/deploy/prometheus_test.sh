#!/bin/bash
# The dashboard and the alert rules, proven against a real Prometheus (Debian
# `prometheus`) scraping a real fleet of two mantissad workers that share a
# PostgreSQL job store (deploy/local-postgres.sh) and a state dir:
#   1. promtool accepts deploy/prometheus/{rules,prometheus}.yml and each
#      worker's /metrics with no warning, and every series has a `worker`;
#      the rules pass their unit tests (tests/deploy/rules_test.yml: the
#      cases that take longer than this run, such as 30 minutes of history);
#   2. the fleet trains real jobs: a healthy one (exported and served), one
#      whose grad scaler skips every other step, one whose inputs are inf
#      (NaN loss, every step skipped, the scale collapses to 0), one that
#      fails, a data-parallel one, and one whose gradient norm stays level for
#      several scrapes and then explodes as its learning rate rises, until it
#      fails on an inf loss; the first worker serves inference, OK and
#      refused, and a model with a 1 s queue delay takes waves of concurrent
#      requests (a backlog);
#   3. Prometheus scrapes both every second with deploy/prometheus/prometheus.yml
#      (targets and intervals replaced, its `authorization` lines uncommented:
#      the daemons run with --auth_tokens_file) and evaluates
#      deploy/prometheus/rules.yml;
#   4. the dashboard's running-jobs count never exceeds what the fleet can
#      run (two workers, one job each): every worker reports the fleet's
#      total, so summing across workers would count it twice;
#   5. the gradient-norm spike alert fires for the spiking job and no other;
#   6. check_promql.py evaluates the rules (each alert must fire) and every
#      PromQL expression of deploy/grafana/mantissa.json (each must return a
#      finite value), then the workers stop and the daemon-down alert must
#      fire.
# A renamed metric or label breaks this test.
#
#   prometheus_test.sh MANTISSAD MANTISSA SOURCE_DIR
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 MANTISSAD MANTISSA SOURCE_DIR" >&2
  exit 2
fi
mantissad=$1
cli=$2
src=$3
rules=$src/deploy/prometheus/rules.yml
config=$src/deploy/prometheus/prometheus.yml
dashboard=$src/deploy/grafana/mantissa.json
check="python3 $src/tests/deploy/check_promql.py"

for tool in prometheus promtool curl python3 openssl; do
  if ! command -v "$tool" >/dev/null; then
    echo "FAIL: $tool not found; deploy/install-deps.sh installs it" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
pg=""
daemon_pids=()
prometheus_pid=""
cleanup() {
  local rc=$? pid
  for pid in "${daemon_pids[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  [ -n "$prometheus_pid" ] && kill "$prometheus_pid" 2>/dev/null && wait "$prometheus_pid" 2>/dev/null
  [ -z "$pg" ] || bash "$src/deploy/local-postgres.sh" stop "$pg" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    for log in "$tmp"/mantissad-*.log; do
      echo "--- $(basename "$log") (tail)"; tail -n 20 "$log" 2>/dev/null || true
    done
    echo "--- prometheus log (tail)"; tail -n 20 "$tmp/prometheus.log" 2>/dev/null || true
  fi
  rm -rf "$tmp" ${pg:+"$pg"}
  exit "$rc"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "== $(date +%T) $*"; }

# promtool must pass with no warning: its output holds only its usual lines.
promtool_clean() {
  local out
  out=$("$@" 2>&1) || fail "$* failed:"$'\n'"$out"
  if grep -qiv -e '^Checking ' -e 'SUCCESS' -e '^$' <<<"$out"; then
    fail "$* warns:"$'\n'"$out"
  fi
}

step "promtool check rules / config"
promtool_clean promtool check rules "$rules"
promtool_clean promtool check config "$config"
out=$(promtool test rules "$src/tests/deploy/rules_test.yml" 2>&1) ||
  fail "promtool test rules:"$'\n'"$out"

step "start PostgreSQL and two mantissad workers"
pg=$(mktemp -d)
eval "$(bash "$src/deploy/local-postgres.sh" start "$pg")"
[ -n "${MANTISSA_DATABASE:-}" ] || fail "PostgreSQL did not start"
# Tokens as the README makes them: the CLI calls as admin, Prometheus scrapes
# with a metrics token from a file.
admin_token=$(openssl rand -hex 32)
metrics_token=$(openssl rand -hex 32)
printf %s "$metrics_token" >"$tmp/metrics-token"
{
  echo "$(printf %s "$admin_token" | sha256sum | cut -d' ' -f1) ops admin"
  echo "$(printf %s "$metrics_token" | sha256sum | cut -d' ' -f1) prometheus metrics"
} >"$tmp/tokens"
grpc_ports=()
metrics_ports=()
for w in a b; do
  "$mantissad" --grpc_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 --http_address=127.0.0.1:0 \
    --database="$MANTISSA_DATABASE" --state_dir="$tmp/state" --port_file="$tmp/ports-$w" \
    --intra_op_threads=1 --auth_tokens_file="$tmp/tokens" \
    --max_concurrent_jobs=1 >"$tmp/mantissad-$w.log" 2>&1 &
  daemon_pids+=($!)
done
for w in a b; do
  for _ in $(seq 100); do
    [ -s "$tmp/ports-$w" ] && break
    for pid in "${daemon_pids[@]}"; do kill -0 "$pid" 2>/dev/null || fail "mantissad exited"; done
    sleep 0.1
  done
  [ -s "$tmp/ports-$w" ] || fail "mantissad $w wrote no port file"
  read -r grpc_port metrics_port < <(python3 -c \
    'import json,sys; p=json.load(open(sys.argv[1])); print(p["grpc"], p["metrics"])' "$tmp/ports-$w")
  grpc_ports+=("$grpc_port")
  metrics_ports+=("$metrics_port")
done
# Calls go to the first worker; `list` goes to the second, which answers
# for the whole fleet.
mantissa() { MANTISSA_TOKEN=$admin_token "$cli" --server="127.0.0.1:${grpc_ports[0]}" "$@"; }
mantissa_b() { MANTISSA_TOKEN=$admin_token "$cli" --server="127.0.0.1:${grpc_ports[1]}" "$@"; }

step "start prometheus"
# The shipped config with the test's targets, 1 s intervals and the rules'
# absolute path; each replacement must apply exactly once.
python3 - "$config" "$tmp/prometheus.yml" \
  "'127.0.0.1:${metrics_ports[0]}', '127.0.0.1:${metrics_ports[1]}'" "$rules" \
  "$tmp/metrics-token" <<'EOF'
import re, sys
source, out, targets, rules, token_file = sys.argv[1:]
text = open(source).read()
for pattern, replacement in [
    (r"scrape_interval: \S+", "scrape_interval: 1s"),
    (r"evaluation_interval: \S+", "evaluation_interval: 1s"),
    (r"- rules\.yml", "- " + rules),
    (r"targets: \['127\.0\.0\.1:9464'\]", "targets: [%s]" % targets),
    (r"# authorization:\n(\s*)#   type: Bearer\n(\s*)#   credentials_file: \S+",
     r"authorization:\n\1  type: Bearer\n\2  credentials_file: " + token_file),
]:
    text, n = re.subn(pattern, replacement, text)
    if n != 1:
        sys.exit("%s: %r matched %d times, expected once" % (source, pattern, n))
open(out, "w").write(text)
EOF
promtool_clean promtool check config "$tmp/prometheus.yml"
prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
prom=http://127.0.0.1:$prom_port
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prometheus_pid=$!

# A query's single value, or empty.
value() {
  curl -sf --max-time 5 "$prom/api/v1/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
for _ in $(seq 150); do
  curl -sf --max-time 1 "$prom/-/ready" >/dev/null 2>&1 && break
  kill -0 "$prometheus_pid" 2>/dev/null || fail "prometheus exited"
  sleep 0.2
done
# Jobs must start after the first scrape, so that the per-job counters are
# seen at 0 before they rise (rate() ignores a series' first sample).
for _ in $(seq 100); do
  [ "$(value 'sum(up{job="mantissad"})')" = "2" ] && break
  sleep 0.2
done
[ "$(value 'sum(up{job="mantissad"})')" = "2" ] || fail "prometheus does not scrape both workers"

step "train"
common=(--model=mlp --model-option=hidden=32 --dataset=synthetic --progress-every-n-steps=10)
submit_spec() { mantissa --json submit "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job"]["id"])'; }
submit() { submit_spec "${common[@]}" "$@"; }
healthy=$(submit --precision=32-true --steps=300)
mantissa watch "$healthy" >/dev/null || fail "job $healthy did not succeed"
# A gradient-norm spike (the spike alert's condition): full-batch SGD on data
# too noisy to fit, so the loss levels off and the norm stays level (about 2)
# while the learning rate rises linearly (a warmup longer than the job runs).
# Near lr 0.48 (step ~1250) it passes the stability threshold: the norm
# explodes (1e14 within 40 steps) and 32-true without a scaler fails on the
# inf loss that follows; the gauge keeps the last finite interval's norm.
# Wide full batches make the steps slow (~15 ms on 2 cores) so that
# Prometheus scrapes ~15 s of level norms first: the rule needs 10 samples,
# and the level ones must outnumber those of the spike, which the gauge holds
# from the job's end until the alert is checked. Submitted first: a worker
# takes it at once.
spike=$(submit_spec --model=mlp --model-option=hidden=256 --dataset=synthetic \
  --dataset-option=noise=20 --batch-size=4096 --precision=32-true --optimizer=sgd --seed=1 \
  --lr=1 --lr-schedule=cosine --warmup-steps=2600 --steps=2600 --progress-every-n-steps=10 \
  --memory-baseline-steps=0 --no-eval)
# bf16-mixed with the scale at float32's maximum and growth after every clean
# step: the scale doubles into overflow and backs off, so every other step is
# skipped (the skip-storm alert's condition). See tests/integration/precision_test.cc.
storm=$(submit --precision=bf16-mixed --steps=5000 --optimizer=sgd --lr=0.01 \
  --dataset-option=noise=50 --grad-scaler-enabled --grad-scaler-init-scale=3.4e38 \
  --grad-scaler-growth-interval=1)
# noise=1e39 overflows float32: inputs are inf, every loss NaN, every step skipped and the
# scale halves down to 0 (the collapse and non-finite-loss alerts' conditions).
diverged=$(submit --precision=bf16-mixed --steps=3000 --optimizer=sgd \
  --dataset-option=noise=1e39 --grad-scaler-enabled)
# The same without a grad scaler fails at its first step.
failing=$(submit --precision=32-true --steps=100 --dataset-option=noise=1e39)
# Data parallel: the daemon exports what rank 0 reports (the gradient norm too).
parallel=$(submit --precision=32-true --steps=20 --devices=2)

step "serve"
mantissa export "$healthy" --name=classifier >/dev/null
mantissa export "$healthy" --name=refused >/dev/null
# Spread over a few scrapes: rate() needs a series to rise after its first sample.
for i in 1 2 3 4; do
  mantissa infer classifier --random --batch="$i" >/dev/null
  mantissa infer classifier --random >/dev/null
  # Over max_batch_size 64: INVALID_ARGUMENT. `refused` never answers OK.
  if mantissa infer refused --random --batch=65 >/dev/null 2>&1; then
    fail "a batch of 65 was accepted"
  fi
  sleep 1.1
done
if mantissa infer classifier --random --batch=65 >/dev/null 2>&1; then
  fail "a batch of 65 was accepted"
fi

step "a queue backlog"
# Each request waits out the 1 s queue delay (a batch of 64 never fills):
# the p99 queue wait is past the backlog alert's 0.5 s, and the queue-depth
# gauge holds the waiting requests over a scrape or two.
mantissa export "$healthy" --name=backlog --max-queue-delay-us=1000000 >/dev/null
for wave in 1 2 3; do
  pids=()
  for i in 1 2 3 4 5 6; do
    mantissa infer backlog --random >/dev/null &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || fail "a backlog request failed (wave $wave)"; done
done

step "wait for the jobs"
for job in "$storm" "$diverged" "$failing" "$parallel" "$spike"; do
  mantissa watch "$job" >/dev/null || true
done
states=$(mantissa_b --json list | python3 -c '
import json, sys
print(" ".join(j["id"] + "=" + j["state"] for j in json.load(sys.stdin)["jobs"]))')
for expected in "$healthy=SUCCEEDED" "$storm=SUCCEEDED" "$diverged=SUCCEEDED" "$failing=FAILED" \
  "$parallel=SUCCEEDED" "$spike=FAILED"; do
  [[ " $states " == *" $expected "* ]] || fail "expected $expected, jobs are: $states"
done

step "promtool check metrics"
: >"$tmp/metrics.txt"
for port in "${metrics_ports[@]}"; do
  curl -sf --max-time 10 -H "Authorization: Bearer $metrics_token" \
    "http://127.0.0.1:$port/metrics" >"$tmp/metrics-$port.txt"
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/metrics")
  [ "$code" = "401" ] || fail "/metrics without a token answered $code, not 401"
  out=$(promtool check metrics <"$tmp/metrics-$port.txt" 2>&1) ||
    fail "promtool check metrics:"$'\n'"$out"
  [ -z "$out" ] || fail "promtool check metrics warns:"$'\n'"$out"
  cat "$tmp/metrics-$port.txt" >>"$tmp/metrics.txt"
done
# Each job's series are on the worker that trained it: look in both.
grep -q '^mantissa_train_loss{\(.*,\)\?job="'"$diverged"'"[,}].* Nan$' "$tmp/metrics.txt" ||
  fail "the diverged job's loss is not exported as NaN"
grep -q '^mantissa_train_grad_norm{\(.*,\)\?job="'"$parallel"'"[,}]' "$tmp/metrics.txt" ||
  fail "the data-parallel job exports no gradient norm"
grep -q '^mantissa_device_memory_used_bytes{\(.*,\)\?device="cpu"[,}]' "$tmp/metrics.txt" ||
  fail "no device memory series"
# Every series names its worker (the daemon's id), so a fleet's series differ.
unlabelled=$(grep '^mantissa_' "$tmp/metrics.txt" | grep -v '[{,]worker="[^"]' | head -n 3 || true)
[ -z "$unlabelled" ] || fail "series without a worker label:"$'\n'"$unlabelled"

step "wait for prometheus to see everything"
for _ in $(seq 100); do
  [ "$(value 'sum(mantissa_jobs_finished_total)')" = "6" ] &&
    [ "$(value 'sum(mantissa_inference_requests_total{status="INVALID_ARGUMENT"})')" = "5" ] && break
  sleep 0.2
done
[ "$(value 'sum(mantissa_jobs_finished_total)')" = "6" ] || fail "prometheus does not see 6 finished jobs"
sleep 2

step "gradient norm spike"
# The job reports its norm, Prometheus saw it level long enough for the
# rule's guard and median, and the alert fires for this job and no other.
reported=$(mantissa --json get "$spike" | python3 -c '
import json, sys
print(json.load(sys.stdin)["job"].get("progress", {}).get("maxGradNorm", ""))')
[ -n "$reported" ] || fail "job $spike reports no max_grad_norm"
norm="mantissa_train_grad_norm{job=\"$spike\"}"
last=$(value "$norm")
median=$(value "quantile_over_time(0.5, $norm[30m])")
scrapes=$(value "count_over_time($norm[30m])")
python3 -c 'import sys; last, median, n = map(float, sys.argv[1:]); sys.exit(not (last > 10 * median and n >= 10))' \
  "${last:-0}" "${median:-0}" "${scrapes:-0}" ||
  fail "job $spike: gradient norm $last (reported $reported), median $median over $scrapes scrapes: no spike past 10x its median after 10 scrapes"
alert="ALERTS{alertname=\"MantissaGradNormSpike\",alertstate=\"firing\"}"
for _ in $(seq 50); do
  [ "$(value "count($alert)")" = "1" ] && [ -n "$(value "$alert and on (job) $norm")" ] && break
  sleep 0.2
done
[ -n "$(value "$alert and on (job) $norm")" ] || fail "MantissaGradNormSpike does not fire for job $spike"
others=$(value "count($alert)")
[ "$others" = "1" ] || fail "MantissaGradNormSpike fires for $others jobs, expected only $spike"
echo "ok   job $spike: gradient norm $last, $(python3 -c 'import sys; print("%.3g" % (float(sys.argv[1]) / float(sys.argv[2])))' "$last" "$median")x its median over $scrapes scrapes"

# Right after the spike job's end: the gauge holds its last norm from then
# on, and once those samples outnumber the level ones the median is the
# spike itself.
step "alerts while the daemon runs"
$check "$prom" "$dashboard" "$rules" alerts-up

step "queue depth and timing"
# The gauge saw the waiting requests and is back at 0 now that all are
# answered; every OK request was timed in both histograms.
peak=$(value 'max_over_time(sum(mantissa_inference_queue_depth{model="backlog"})[5m:1s])')
python3 -c 'import sys; sys.exit(not float(sys.argv[1] or 0) >= 2)' "$peak" ||
  fail "the backlog's queue depth peaked at '$peak', expected at least 2 of 6 waiting requests"
[ "$(value 'sum(mantissa_inference_queue_depth)')" = "0" ] || fail "the queue depth is not back at 0"
for stage in queue compute; do
  n=$(value "sum(mantissa_inference_${stage}_duration_seconds_count{model=\"backlog\"})")
  [ "$n" = "18" ] || fail "mantissa_inference_${stage}_duration_seconds_count is '$n', not 18"
done
wait_p99=$(value 'histogram_quantile(0.99, sum by (le) (rate(mantissa_inference_queue_duration_seconds_bucket{model="backlog"}[5m])))')
python3 -c 'import sys; sys.exit(not float(sys.argv[1] or 0) > 0.5)' "$wait_p99" ||
  fail "the backlog's p99 queue wait is '$wait_p99', expected over 0.5 s"
echo "ok   backlog queue depth peaked at $peak, p99 queue wait $wait_p99 s"

step "fleet totals counted once"
# mantissa_jobs_running is the fleet's total on every worker. At most two
# jobs ran at once (two workers, one job each), and the storm and diverged
# jobs ran together: summed across workers, the panel would have shown four.
running_expr=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(next(t["expr"] for p in d["panels"] if p.get("title") == "Jobs by state"
           for t in p["targets"] if t.get("legendFormat") == "RUNNING"))' "$dashboard")
peak=$(value "max_over_time(($running_expr)[5m:1s])")
if [ -z "$peak" ] || ! python3 -c 'import sys; sys.exit(not 1 <= float(sys.argv[1]) <= 2)' "$peak"; then
  fail "the dashboard's running jobs ($running_expr) peaked at '$peak', not 1 or 2"
fi
echo "ok   $running_expr peaked at $peak"

step "dashboard queries"
$check "$prom" "$dashboard" "$rules" dashboard

step "stop the workers"
for pid in "${daemon_pids[@]}"; do kill -TERM "$pid"; done
for pid in "${daemon_pids[@]}"; do wait "$pid" || fail "mantissad exited non-zero on SIGTERM"; done
daemon_pids=()
step "alerts with the daemon down"
$check "$prom" "$dashboard" "$rules" alerts-down
step "PASS"
