#!/bin/bash
# On the GPU host (see ../shared/gpu/README.md, the verified recipe): unpacks
# the Debian packages fetched by fetch-debs.sh into a private prefix (never
# into /), then builds flowrun with scripts/torch2.sh -- the same script, and
# so the same configuration, that every CI run compiles on the CPU machines --
# against the LibTorch of the host's Python torch (CUDA) into $BUILD_DIR
# (default /tmp/flowrun-gpu). Prints the environment line that the built
# binary needs, last.
#   BUILD_DIR=dir TESTS=ON scripts/gpu/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
debs=${DEBS:-.gpu-debs}
prefix=${DEPS_PREFIX:-/opt/deps}
build=${BUILD_DIR:-/tmp/flowrun-gpu}
[ -d "$debs" ] || { echo "build.sh: $debs missing: run scripts/gpu/fetch-debs.sh on a Debian machine first" >&2; exit 1; }
mkdir -p "$prefix"
for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
TORCH2_PYTHON=${PYTHON:-python3} TORCH2_BUILD_DIR="$build" DEPS_PREFIX="$prefix" BUILD_TYPE=Release \
  scripts/torch2.sh -DBoost_DIR="$prefix/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0" -DBoost_NO_SYSTEM_PATHS=ON \
  -DFLOWRUN_BUILD_TESTS=${TESTS:-ON} >&2
echo "export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:\$LD_LIBRARY_PATH"
