#!/bin/bash
# Fetches real data files for the tests into $1 (a ctest fixture runs it):
#   iris.csv  scikit-learn's copy, from Debian's python3-sklearn package.
# Offline or without apt, it says why and exits 0: the tests that need a
# file skip themselves when it is absent.
set -uo pipefail

dest="${1:?usage: fetch_test_data.sh DEST_DIR}"
mkdir -p "$dest" || { echo "fetch_test_data: cannot create $dest"; exit 0; }

fetch_iris() {
  [[ -s "$dest/iris.csv" ]] && return 0
  local member=usr/lib/python3/dist-packages/sklearn/datasets/data/iris.csv
  local tmp
  tmp="$(mktemp -d)" || { echo "fetch_test_data: mktemp failed"; return 0; }
  # Cleaned up on return as well as on failure.
  trap 'rm -rf "$tmp"' RETURN
  if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
    echo "fetch_test_data: no apt-get/dpkg here; iris.csv not fetched"
    return 0
  fi
  if ! (cd "$tmp" && apt-get download -qq python3-sklearn >"$tmp/apt.log" 2>&1); then
    echo "fetch_test_data: apt-get download python3-sklearn failed (offline?); iris.csv not" \
         "fetched: $(tail -n 1 "$tmp/apt.log")"
    return 0
  fi
  local deb
  deb="$(ls "$tmp"/python3-sklearn_*.deb 2>/dev/null | head -n 1)"
  if [[ -z "$deb" ]] || ! dpkg -x "$deb" "$tmp/root" || [[ ! -s "$tmp/root/$member" ]]; then
    echo "fetch_test_data: $member not found in the python3-sklearn package"
    return 0
  fi
  # Copy then rename, so a concurrent reader never sees half a file.
  cp "$tmp/root/$member" "$dest/iris.csv.part" && mv "$dest/iris.csv.part" "$dest/iris.csv"
  echo "fetch_test_data: $dest/iris.csv"
}

fetch_iris
exit 0
