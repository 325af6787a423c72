#!/bin/bash
# Validates deploy/ without a cluster:
#  1. yamllint --strict on every YAML file under deploy/;
#  2. kubectl kustomize renders deploy/k8s/base and each overlay;
#  3. k8s_manifests_check.py asserts on each rendering that probes, ports,
#     volumes, grace period, security context, GPU request, Services,
#     ServiceMonitor and PodDisruptionBudget agree with the flags in the
#     ConfigMap, with the Dockerfile and with the scrape job name that
#     deploy/prometheus/rules.yml alerts on, that each worker advertises its
#     pod IP and the NetworkPolicy admits the workers (only) from each other
#     on the ranks' ports, and (--self-test) that it catches each of a list of
#     broken variants of the base;
#  4. the real mantissad starts on the base's ConfigMap flagfile (so every flag
#     in it exists and parses), with only the addresses, state dir, device and
#     the Secrets' files (a certificate made here by openssl, a tokens file)
#     overridden for this machine, --advertise_address as the StatefulSet's
#     args give it (127.0.0.1 for the pod IP), and --database and PGPASSWORD
#     as the mantissad-database Secret gives them, pointing at a real PostgreSQL
#     (deploy/local-postgres.sh); the CLI reaches it over TLS with a token
#     (the image's HEALTHCHECK command) and sees the PostgreSQL job store,
#     the log does not hold the password, /metrics answers over HTTPS with a
#     metrics token, and SIGTERM drains for the flagfile's --drain_seconds
#     and exits 0.
# `kubectl create --dry-run=client` is not run: it needs a cluster's API
# discovery even on the client side.
#
# Usage: k8s_manifests_test.sh SOURCE_DIR MANTISSAD MANTISSA_CLI
set -euo pipefail
src=$1 mantissad=$2 cli=$3
here=$(cd "$(dirname "$0")" && pwd)
cd "$src"

for tool in kubectl yamllint openssl; do
  command -v $tool >/dev/null || { echo "FAIL: $tool missing: run install-deps.sh"; exit 1; }
done
# Debian's python3 has python3-yaml (install-deps.sh); another first in PATH
# may not.
python=/usr/bin/python3
$python -c 'import yaml' 2>/dev/null || python=python3
$python -c 'import yaml' || { echo "FAIL: python3-yaml missing: run install-deps.sh"; exit 1; }

tmp=$(mktemp -d)
pg=
daemon=
cleanup() {
  [ -z "$daemon" ] || kill -KILL "$daemon" 2>/dev/null || true
  [ -z "$pg" ] || bash deploy/local-postgres.sh stop "$pg" || true
  rm -rf "$tmp" ${pg:+"$pg"}
}
trap cleanup EXIT

echo "== yamllint"
yamllint --strict -c deploy/.yamllint.yml deploy/

# Debian 12's kubernetes-client (1.20) embeds kustomize v2.0.3, which renders
# the base but predates the overlays' `resources: [dir]` and `patches:`.
minor=$(kubectl version --client -o json | $python -c \
  'import json, re, sys; print(re.sub(r"\D", "", json.load(sys.stdin)["clientVersion"]["minor"]))')
dirs=(deploy/k8s/base)
if [ "$minor" -ge 21 ]; then
  dirs+=(deploy/k8s/overlays/*/)
else
  echo "note: kubectl 1.$minor's kustomize cannot render the overlays; checking the base only"
fi
# The base and the GPU/CPU overlays are fleets (several workers, a
# ReadWriteMany volume); the dev overlay brings its own PostgreSQL and, for
# laptop clusters, a ReadWriteOnce volume.
check_mode() {
  case $1 in
    dev) echo --postgres ;;
    *) echo --fleet ;;
  esac
}
for dir in "${dirs[@]}"; do
  dir=${dir%/}
  echo "== kubectl kustomize $dir"
  out=$tmp/$(basename "$dir").yaml
  kubectl kustomize "$dir" > "$out"
  $python "$here/k8s_manifests_check.py" "$out" --dockerfile=Dockerfile \
    --rules=deploy/prometheus/rules.yml --flagfile-out="$tmp/$(basename "$dir").flags" \
    "$(check_mode "$(basename "$dir")")"
done
[ "$minor" -lt 21 ] || [ -f "$tmp/dev.yaml" ] || { echo "FAIL: no dev overlay"; exit 1; }
echo "== self-test of the checks"
for name in base dev; do
  [ -f "$tmp/$name.yaml" ] || continue
  $python "$here/k8s_manifests_check.py" "$tmp/$name.yaml" --self-test \
    --rules=deploy/prometheus/rules.yml "$(check_mode $name)"
done

echo "== mantissad on the base's flagfile, with PostgreSQL"
# The Secret's two keys: the URI without the password, and the password.
pg=$(mktemp -d)
eval "$(bash deploy/local-postgres.sh start "$pg")"
[ -n "${MANTISSA_DATABASE:-}" ] || { echo "FAIL: PostgreSQL did not start"; exit 1; }
drain=$(sed -n 's/^--drain_seconds=//p' "$tmp/base.flags")
# What the Secrets hold: a self-signed certificate for localhost, and tokens.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
admin_token=$(openssl rand -hex 32)
metrics_token=$(openssl rand -hex 32)
{
  echo "$(printf %s "$admin_token" | sha256sum | cut -d' ' -f1) ops admin"
  echo "$(printf %s "$metrics_token" | sha256sum | cut -d' ' -f1) prometheus metrics"
} > "$tmp/tokens"
# Later flags win over the flagfile's: only what this machine needs changes.
# The StatefulSet's args follow: --advertise_address (this machine's address
# for the pod IP) and --database.
"$mantissad" --flagfile="$tmp/base.flags" --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0 \
  --metrics_address=127.0.0.1:0 --health_address=127.0.0.1:0 --state_dir="$tmp/state" \
  --device=cpu --intra_op_threads=1 --tls_cert_file="$tmp/tls.crt" \
  --tls_key_file="$tmp/tls.key" --auth_tokens_file="$tmp/tokens" \
  --port_file="$tmp/ports" --advertise_address=127.0.0.1 --database="$MANTISSA_DATABASE" \
  > "$tmp/log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
  [ -f "$tmp/ports" ] && break
  kill -0 $daemon 2>/dev/null || { cat "$tmp/log"; echo "FAIL: mantissad exited"; exit 1; }
  sleep 0.1
done
[ -f "$tmp/ports" ] || { cat "$tmp/log"; echo "FAIL: no port file"; exit 1; }
grpc_port=$(sed 's/.*"grpc": \([0-9]*\).*/\1/' "$tmp/ports")
metrics_port=$(sed 's/.*"metrics": \([0-9]*\).*/\1/' "$tmp/ports")
MANTISSA_TOKEN=$admin_token "$cli" --server="localhost:$grpc_port" --tls-ca-file="$tmp/tls.crt" \
  capabilities > "$tmp/capabilities"
grep -q 'cpu' "$tmp/capabilities" || { cat "$tmp/capabilities"; echo "FAIL: capabilities"; exit 1; }
grep -qi 'postgres' "$tmp/capabilities" \
  || { cat "$tmp/capabilities"; echo "FAIL: capabilities show no PostgreSQL job store"; exit 1; }
if "$cli" --server="localhost:$grpc_port" --tls-ca-file="$tmp/tls.crt" capabilities \
  >/dev/null 2>&1; then
  echo "FAIL: a call without a token was answered"; exit 1
fi
curl -fsS --cacert "$tmp/tls.crt" -H "Authorization: Bearer $metrics_token" \
  "https://localhost:$metrics_port/metrics" > "$tmp/metrics"
grep -q '^mantissa_jobs_running{.*worker="' "$tmp/metrics" \
  || { echo "FAIL: /metrics has no mantissa_jobs_running with a worker label"; exit 1; }
kill -TERM $daemon
for _ in $(seq 100); do
  grep -q "draining for $drain s" "$tmp/log" && break
  sleep 0.1
done
grep -q "draining for $drain s" "$tmp/log" \
  || { cat "$tmp/log"; echo "FAIL: no ${drain} s drain (the flagfile's)"; exit 1; }
kill -TERM $daemon  # a second signal ends the drain
status=0
wait $daemon || status=$?
daemon=
[ $status -eq 0 ] || { cat "$tmp/log"; echo "FAIL: mantissad exited $status on SIGTERM"; exit 1; }
if grep -qF "$PGPASSWORD" "$tmp/log"; then
  echo "FAIL: the database password is in mantissad's log"; exit 1
fi
echo "PASS"
