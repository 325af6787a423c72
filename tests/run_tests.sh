#!/bin/bash
# Installs what is missing, builds everything once and runs every test
# (unit, integration against the real daemon and CLI, and the LibTorch 2.x
# compile check) with ctest, in parallel, then the sanitizer stage.
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
# The sanitizer stage: libFuzzer targets over their corpus and the parser
# tests under ASan + UBSan (clang, build-fuzz/), a few minutes.
bash tests/fuzz/run_fuzz.sh
