#!/bin/bash
# Stages into .gpu/ (git-ignored) what tests/gpu/gpu_check.sh needs on a CUDA
# machine: ../shared/gpu/stage.sh's Debian packages, plus those that the
# project gained since (RapidJSON, libpq and its LDAP/SASL runtime, Gloo's
# headers, pkg-config). Run here, in the project root; then carry .gpu/.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
shared=${MANTISSA_SHARED:-../shared}
bash "$shared/gpu/stage.sh" rapidjson-dev libpq-dev libpq5 libldap-2.5-0 libsasl2-2 \
  libsasl2-modules-db libgloo-dev pkgconf libpkgconf3 pkg-config
