#!/bin/bash
# Syntax-checks every server source against LibTorch 2.x headers, so code that
# only compiles with Debian's LibTorch 1.13 cannot land. No linking: the 2.x
# libraries (with CUDA) are not on the CI machines, only their headers.
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
version=$(sed -n 's/^#define TORCH_VERSION "\(.*\)"/\1/p' "$inc/torch/csrc/api/include/torch/version.h")

# LibTorch's include/ carries its own google/protobuf headers; the generated
# code needs the protobuf it was generated for, so that one comes first.
mkdir -p "$work/protobuf-first"
ln -sfn "$(dirname "$(find /usr/include -maxdepth 3 -path '*/google/protobuf/message.h' | head -1)")/.." \
  "$work/protobuf-first/google"
# MANTISSA_WITH_CUDA: the CUDA paths are checked too.
flags=(-std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -DMANTISSA_VERSION=\"check\" -DMANTISSA_WITH_CUDA=1
  -isystem "$work/protobuf-first" -isystem "$inc" -isystem "$inc/torch/csrc/api/include")
[ -d /usr/local/cuda/include ] && flags+=(-isystem /usr/local/cuda/include)
flags+=(-I"$src" -I"$build/proto" $(pkg-config --cflags cpp-httplib))

# One precompiled <torch/torch.h> for 2.x, then every TU against it.
echo '#include <torch/torch.h>' > "$work/torch_pch.h"
g++ "${flags[@]}" -x c++-header "$work/torch_pch.h" -o "$work/torch_pch.h.gch"

cd "$src"
sources=$(find server -name '*.cc' | sort)
count=$(echo "$sources" | wc -l)
echo "$sources" | xargs -P "$(nproc)" -I{} sh -c \
  'g++ "$@" -include "'"$work"'/torch_pch.h" -fsyntax-only {} || { echo "FAILED: {}" >&2; exit 255; }' \
  _ "${flags[@]}"
echo "libtorch2_compile_check: $count server sources compile against LibTorch $version"
