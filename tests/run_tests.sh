#!/bin/bash
# Installs what is missing, builds everything once and runs every test
# (unit, integration against the real daemon and CLI, and the LibTorch 2.x
# compile check) with ctest, in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
