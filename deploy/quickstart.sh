#!/bin/bash
# The main job, on a fresh Debian 12 machine: install, build, start mantissad
# on its embedded defaults, train an MLP on Fashion-MNIST through the CLI,
# then serve it cast to bf16 and run an inference request.
set -euo pipefail
cd "$(dirname "$0")/.."

# Never run mantissad as root in earnest: it reads the files clients name
# (confined to --data_root) and, once an operator turns TorchScript on with
# --torchscript_root, runs those modules' code with its own rights. (A
# throwaway container is the one place this demo may run as root.)
if [ "$(id -u)" -eq 0 ]; then
  echo "quickstart: WARNING: running as root; never run mantissad as root outside a throwaway" \
    "container: a TorchScript module runs arbitrary code with the daemon's rights" >&2
fi

bash deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target mantissad mantissa

mantissa=./build/client/mantissa
./build/server/mantissad &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  $mantissa capabilities >/dev/null 2>&1 && break
  kill -0 $daemon 2>/dev/null || { echo "quickstart: mantissad did not start" >&2; exit 1; }
  sleep 0.1
done

$mantissa capabilities
echo
$mantissa submit --name quickstart --model mlp --model-option hidden=256,128 \
  --dataset fashion-mnist --epochs 1 --optimizer adam --lr 0.001 \
  --progress-every-n-steps 50 --wait
echo
$mantissa list
echo

# Serve the trained model in true half precision and ask it something.
job=$($mantissa --json list --limit 1 | sed -n 's/^ *"id": "\([0-9a-f]*\)".*/\1/p' | head -1)
$mantissa export "$job" --name quickstart
echo
$mantissa models
echo
$mantissa infer quickstart --random --batch 4
