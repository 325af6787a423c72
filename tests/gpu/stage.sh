#!/bin/bash
# Stages into .gpu/ (git-ignored) what tests/gpu/gpu_check.sh needs on a CUDA
# machine: ../shared/gpu/stage.sh's Debian packages, plus those that the
# project gained since (RapidJSON, libpq and its LDAP/SASL/Kerberos runtime,
# Gloo's headers, pkg-config). Run here, in the project root; then carry .gpu/.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
shared=${MANTISSA_SHARED:-../shared}
bash "$shared/gpu/stage.sh" rapidjson-dev libpq-dev libpq5 libldap-2.5-0 libsasl2-2 \
  libsasl2-modules-db libgloo-dev pkgconf pkgconf-bin libpkgconf3 pkg-config
# libpq5's Kerberos libraries: unpacked there only where the image lacks them
# (in .gpu/fallback/, which build.sh does not unpack), since the unpacked
# tree comes first on LD_LIBRARY_PATH and would shadow the image's own.
mkdir -p .gpu/fallback
(cd .gpu/fallback && apt-get -qq download libgssapi-krb5-2 libkrb5-3 libk5crypto3 \
  libkrb5support0 libkeyutils1 libcom-err2 2>&1 | grep -v '^W: Download is performed' || true)
echo "fallback: $(ls .gpu/fallback | wc -l) packages"
