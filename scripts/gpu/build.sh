#!/bin/bash
# On the GPU host (see ../shared/gpu/README.md, the verified recipe): unpacks
# the Debian packages fetched by fetch-debs.sh into a private prefix (never
# into /), finds LibTorch in the Python torch (CUDA) and builds flowrun into
# $BUILD_DIR (default /tmp/flowrun-gpu). Prints the environment line that
# the built binary needs.
set -euo pipefail
cd "$(dirname "$0")/../.."
debs=${DEBS:-.gpu-debs}
prefix=${DEPS_PREFIX:-/opt/deps}
build=${BUILD_DIR:-/tmp/flowrun-gpu}
[ -d "$debs" ] || { echo "build.sh: $debs missing: run scripts/gpu/fetch-debs.sh on a Debian machine first" >&2; exit 1; }
mkdir -p "$prefix"
for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
torch_prefix=$(python3 -c "import torch;print(torch.utils.cmake_prefix_path)")
configure() {  # extra cmake arguments
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix/usr;$torch_prefix" \
    -DBoost_DIR="$prefix/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0" -DBoost_NO_SYSTEM_PATHS=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DFLOWRUN_BUILD_BENCH=OFF -DFLOWRUN_BUILD_EXAMPLE_PLUGIN=OFF \
    -DFLOWRUN_BUILD_TESTS=${TESTS:-OFF} "$@"
}
# Data-parallel jobs (stages/dist/, NCCL + Gloo from the wheel's LibTorch) are
# compiled against LibTorch 2.x here for the first time: if that fails, say
# so and build without them rather than lose the GPU session.
configure -DFLOWRUN_DISTRIBUTED=${DISTRIBUTED:-ON}
if ! cmake --build "$build"; then
  echo "build.sh: the build with data-parallel jobs failed (above); building without them" >&2
  configure -DFLOWRUN_DISTRIBUTED=OFF
  cmake --build "$build"
fi
echo "export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:\$LD_LIBRARY_PATH"
