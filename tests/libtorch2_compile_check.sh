#!/bin/bash
# Syntax-checks every server source that sees LibTorch, and the tests with
# CUDA-only code, against LibTorch 2.x headers, so code that only compiles
# with Debian's LibTorch 1.13 cannot land.
# No linking: the 2.x libraries (with CUDA) are not on the CI machines, only
# their headers. A source sees LibTorch when it includes a LibTorch header,
# directly or through the project's headers, or when its target compiles it
# with the <torch/torch.h> PCH (BUILD_DIR/compile_commands.json); the rest
# compile the same against any LibTorch and are skipped. A stage of
# tests/run_tests.sh, after ctest; exits 77 when the headers are absent.
#   libtorch2_compile_check.sh HEADERS.tar.xz SOURCE_DIR BUILD_DIR
set -euo pipefail
tarball=$1 src=$2 build=$3
if [ ! -f "$tarball" ]; then
  # ctest reports 77 as skipped: a user's machine may not have the headers.
  echo "libtorch2_compile_check: $tarball not found; skipped" >&2
  exit 77
fi
work=$build/libtorch2-check
inc=$work/include
if [ ! -f "$work/.extracted" ] || [ "$tarball" -nt "$work/.extracted" ]; then
  rm -rf "$work" && mkdir -p "$work"
  tar -xJf "$tarball" -C "$work"
  touch "$work/.extracted"
fi
# 2.x keeps the version in torch/headeronly/version.h, 1.x in torch/version.h.
version=$(cat "$inc"/torch/headeronly/version.h "$inc"/torch/csrc/api/include/torch/version.h \
  2>/dev/null | sed -n 's/^#define TORCH_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' |
  head -3 | paste -sd.) || true

# LibTorch's include/ carries its own google/protobuf headers; the generated
# code needs the protobuf it was generated for, so that one comes first.
mkdir -p "$work/protobuf-first"
ln -sfn "$(dirname "$(find /usr/include -maxdepth 3 -path '*/google/protobuf/message.h' | head -1)")/.." \
  "$work/protobuf-first/google"
# MANTISSA_WITH_CUDA: the CUDA paths are checked too. USE_C10D_GLOO and
# USE_C10D_NCCL declare c10d's Gloo and NCCL process groups (data parallel);
# their headers need Gloo's (libgloo-dev) and nccl.h (CUDA's include dir).
flags=(-std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -DMANTISSA_VERSION=\"check\" -DMANTISSA_WITH_CUDA=1
  -DUSE_C10D_GLOO -DUSE_C10D_NCCL
  -isystem "$work/protobuf-first" -isystem "$inc" -isystem "$inc/torch/csrc/api/include")
[ -d /usr/local/cuda/include ] && flags+=(-isystem /usr/local/cuda/include)
flags+=(-I"$src" -I"$build/proto" $(pkg-config --cflags cpp-httplib))

# One precompiled <torch/torch.h> for 2.x, then every TU against it.
echo '#include <torch/torch.h>' > "$work/torch_pch.h"
SECONDS=0
g++ "${flags[@]}" -x c++-header "$work/torch_pch.h" -o "$work/torch_pch.h.gch"
pch_seconds=$SECONDS

cd "$src"
# Sources whose own includes reach LibTorch ("a/b.h" is relative to the root).
declare -A sees_torch
sees() {
  local file=$1 inc
  if [[ -n ${sees_torch[$file]:-} ]]; then [[ ${sees_torch[$file]} == 1 ]]; return; fi
  sees_torch[$file]=0  # also ends include cycles
  if grep -qE '^\s*#\s*include\s*<(torch|ATen|c10|caffe2)/' "$file"; then
    sees_torch[$file]=1
    return 0
  fi
  for inc in $(sed -nE 's/^\s*#\s*include\s*"([^"]+)".*/\1/p' "$file"); do
    if [[ -f $inc ]] && sees "$inc"; then
      sees_torch[$file]=1
      return 0
    fi
  done
  return 1
}
# Sources the build compiles with the <torch/torch.h> PCH (all, without the
# build's compile commands).
pch_sources=$(find server -name '*.cc')
[ -f "$build/compile_commands.json" ] && pch_sources=$(python3 -c '
import json, sys
for entry in json.load(open(sys.argv[1])):
    if "cmake_pch" in entry["command"] and entry["file"].startswith(sys.argv[2] + "/server/"):
        print(entry["file"][len(sys.argv[2]) + 1:])
' "$build/compile_commands.json" "$src")
sources=()
all=$(find server -name '*.cc' | sort)
for file in $all; do
  if sees "$file" || grep -qxF "$file" <<<"$pch_sources"; then sources+=("$file"); fi
done
total=$(wc -l <<<"$all")
# Tests whose code differs on CUDA or that use LibTorch's internals (the
# profiler): a GPU machine builds them, and only there would they fail.
tests=($(grep -rlE 'MANTISSA_WITH_CUDA|<(c10|ATen)/cuda|<torch/csrc/' tests --include='*.cc' | sort))
sources+=("${tests[@]}")
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -I{} sh -c \
  'g++ "$@" -include "'"$work"'/torch_pch.h" -fsyntax-only {} || { echo "FAILED: {}" >&2; exit 255; }' \
  _ "${flags[@]}"
echo "libtorch2_compile_check: $((${#sources[@]} - ${#tests[@]})) server sources that see" \
  "LibTorch (of $total) and ${#tests[@]} CUDA-specific test sources" \
  "compile against LibTorch $version (PCH ${pch_seconds} s, sources $((SECONDS - pch_seconds)) s)"
