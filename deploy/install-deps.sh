#!/bin/bash
# Installs the Debian 12 packages Mantissa builds, runs and tests with.
# Packages already present are left alone, so a prepared machine needs no
# network. Used by the README commands and .ci/run.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config xz-utils curl ca-certificates
  # tests/fuzz/: clang with libFuzzer and the sanitizer runtimes
  clang libclang-rt-14-dev
  # libraries
  libtorch-dev libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libcpp-httplib-dev libsqlite3-dev zlib1g-dev
  # KServe v2 REST bodies (header-only); curl drives the REST and /metrics tests
  rapidjson-dev curl
  # the PostgreSQL job store (--database=postgresql://...): libpq, and the
  # server that the tests and the local fleet demo start in a temp dir
  libpq-dev postgresql
  # c10d's Gloo headers (data-parallel jobs on the CPU; the library is in libtorch)
  libgloo-dev
  # TLS (cpp-httplib's HTTPS /metrics, token digests); openssl makes test certificates
  libssl-dev openssl
  # tests and data; prometheus (with promtool) and python3 for
  # tests/deploy/prometheus_test.sh
  libgtest-dev libgmock-dev dataset-fashion-mnist prometheus python3
  # deploy/ checks: YAML lint and parsing for the Kubernetes manifests test
  yamllint python3-yaml
)
# kubectl renders the kustomizations. Debian's is kubernetes-client; a kubectl
# from another package (e.g. Google Cloud SDK's "kubectl", which owns the same
# /usr/bin/kubectl) is used as it is.
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# LibTorch's CPU matmul is ~40x slower on the reference BLAS, and OpenBLAS's
# pthread build runs its own pool beside LibTorch's OpenMP one. The OpenMP
# build shares LibTorch's pool, so it is the BLAS (and LAPACK) in use.
blas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp
for name in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  current=$(update-alternatives --query "$name-x86_64-linux-gnu" 2>/dev/null | sed -n 's/^Value: //p')
  if [ -f "$blas_dir/$name" ] && [ "$current" != "$blas_dir/$name" ]; then
    $sudo update-alternatives --set "$name-x86_64-linux-gnu" "$blas_dir/$name" >/dev/null ||
      echo "install-deps: could not select $blas_dir/$name" >&2
  fi
done
echo "install-deps: done"
