#!/bin/bash
# The sanitizer stage: builds tests/fuzz/ with clang (ASan + UBSan +
# libFuzzer) into build-fuzz/, runs each fuzz target over its corpus for a
# bounded time, then the parsers' unit tests under the same sanitizers.
# Fails on any crash, leak, timeout, out-of-memory or failed test.
#
# Needs the main build (build/, as tests/run_tests.sh leaves it); the
# libraries the targets link are brought up to date first.
#   FUZZ_SECONDS   time per target (default 20)
#   FUZZ_JOBS      parallel compiles (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
main_build=$root/build
fuzz_build=$root/build-fuzz
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-$(nproc)}
targets=(tensor_codec_fuzzer idx_fuzzer csv_fuzzer token_file_fuzzer job_spec_fuzzer kserve_json_fuzzer)

start=$(date +%s)
cmake --build "$main_build" -j"$jobs" --target mantissa_serving mantissa_training
if [ ! -f "$fuzz_build/CMakeCache.txt" ]; then
  cmake -S tests/fuzz -B "$fuzz_build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
    -DMANTISSA_MAIN_BUILD="$main_build"
fi
cmake --build "$fuzz_build" -j"$jobs"
echo "run_fuzz: built in $(($(date +%s) - start)) s"

# Any sanitizer finding is fatal; leaks are checked after every input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# LibTorch's intra-op pool would only add threads to each input.
export OMP_NUM_THREADS=1

status=0
for target in "${targets[@]}"; do
  # New inputs go to build-fuzz/, not into the repository's corpus;
  # anything that fails is saved as build-fuzz/artifacts/<target>-crash-*.
  found=$fuzz_build/found/$target
  mkdir -p "$found" "$fuzz_build/artifacts"
  dict=()
  dict_file=tests/fuzz/${target%_fuzzer}.dict
  [ -f "$dict_file" ] && dict=(-dict="$dict_file")
  echo "run_fuzz: $target for ${seconds} s"
  if ! "$fuzz_build/$target" "$found" "tests/fuzz/corpus/$target" "${dict[@]}" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
      -print_final_stats=1 -artifact_prefix="$fuzz_build/artifacts/$target-" \
      >"$fuzz_build/$target.log" 2>&1; then
    echo "run_fuzz: $target FAILED; the input is under $fuzz_build/artifacts/:"
    tail -60 "$fuzz_build/$target.log"
    status=1
  else
    echo "run_fuzz: $target: $(grep -E '^Done [0-9]+ runs' "$fuzz_build/$target.log" || true)"
  fi
done

echo "run_fuzz: sanitized unit tests"
"$fuzz_build/sanitized_parser_test" --gtest_brief=1 || status=1
echo "run_fuzz: done in $(($(date +%s) - start)) s"
exit $status
