#!/usr/bin/env bash
# The LibTorch 2.x lane: flowrun built against the LibTorch inside PyPI's
# torch wheel, with CUDA compiled in, beside the default build against
# Debian's LibTorch 1.13 (CPU).
#  1. a virtual environment .venv-torch2/ (ignored) with a pinned torch and
#     the torchvision made for it: the LibTorch to build against, and the
#     oracle the parity tests compare with in this tree;
#  2. build-torch2/ configured against that LibTorch with CUDA enabled
#     (architectures 80;90: A100, H100, H200) and built whole:
#     flowrun, plugins (the out-of-tree examples too), test suites (the
#     benchmarks are built on request: cmake --build build-torch2 --target benchmarks).
# Runs on a machine without a GPU: CUDA code compiles and links, and at run
# time CUDA is simply unavailable. On a GPU host it is the same command.
#   scripts/torch2.sh                  # venv + configure + build
#   TORCH2_BUILD_DIR=dir scripts/torch2.sh [CMAKE ARGS...]
#   TORCH2_PYTHON=python3 scripts/torch2.sh   # a Python whose torch is already
#       installed (a GPU host without PyPI): no venv, no download
#   DEPS_PREFIX=/opt/deps ...          # libraries unpacked from Debian packages
#       (scripts/gpu/build.sh) are searched there first
# Pinned to what the GPU hosts run (../shared/gpu/README.md): torch 2.11 built
# for CUDA 13, the major of the toolkit on the development and CI machines.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
venv=${TORCH2_VENV:-.venv-torch2}
build=${TORCH2_BUILD_DIR:-build-torch2}

have_pins() {
  "$venv/bin/python" - "$TORCH_VERSION" "$TORCHVISION_VERSION" 2>/dev/null <<'EOF'
import sys, torch, torchvision
ok = torch.__version__.split("+")[0] == sys.argv[1] and torchvision.__version__.split("+")[0] == sys.argv[2]
sys.exit(0 if ok else 1)
EOF
}

if [ -n "${TORCH2_PYTHON:-}" ]; then
  "$TORCH2_PYTHON" -c "import torch" || { echo "torch2: error: $TORCH2_PYTHON has no torch" >&2; exit 1; }
  python=$(command -v "$TORCH2_PYTHON")
elif ! have_pins; then
  if [ ! -x "$venv/bin/python" ]; then
    # The machine's python3 (pyenv on the development image); Debian's needs python3-venv.
    if ! python3 -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q python3-venv
      /usr/bin/python3 -m venv "$venv"
    fi
  fi
  echo "torch2: installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION from PyPI into $venv"
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir \
      "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"; then
    echo "torch2: error: could not fetch torch==$TORCH_VERSION and torchvision==$TORCHVISION_VERSION from PyPI" \
         "(see pip's message above); the LibTorch 2.x lane cannot be built" >&2
    exit 1
  fi
  have_pins || { echo "torch2: error: $venv does not hold torch $TORCH_VERSION after the install" >&2; exit 1; }
fi

[ -n "${TORCH2_PYTHON:-}" ] || python=$(cd "$venv/bin" && pwd)/python
torch_cmake=$("$python" -c "import torch; print(torch.utils.cmake_prefix_path)")
torch_root=$(dirname "$(dirname "$torch_cmake")")  # site-packages/torch: include/, lib/
cuda_root=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")}
[ -x "$cuda_root/bin/nvcc" ] || { echo "torch2: error: no CUDA toolkit (nvcc) found; set CUDA_HOME" >&2; exit 1; }

# Same compiler cache set-up as setup.sh: another clone's objects are hits too.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
# The wheel's folder comes first in the prefix path: Debian's libtorch-dev
# (1.13, the default build's) also has a libtorch.so, in a system folder that
# LibTorch's CMake would otherwise search before its own.
# TORCH_CUDA_ARCH_LIST is what LibTorch's CMake reads for CUDA sources
# (it warns about and ignores CMAKE_CUDA_ARCHITECTURES): 8.0 = A100, 9.0 =
# H100/H200, i.e. CMake's 80;90.
prefix_path="$torch_root;$torch_cmake"
[ -z "${DEPS_PREFIX:-}" ] || prefix_path="$DEPS_PREFIX/usr;$prefix_path"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
  -DCMAKE_PREFIX_PATH="$prefix_path" -DCUDAToolkit_ROOT="$cuda_root" \
  -DCMAKE_CUDA_COMPILER="$cuda_root/bin/nvcc" -DTORCH_CUDA_ARCH_LIST="8.0;9.0" \
  -DFLOWRUN_REQUIRE_CUDA=ON -DFLOWRUN_DEPRECATED_ERRORS=ON -DFLOWRUN_ORACLE_PYTHON="$python" "$@"
cmake --build "$build"
echo "torch2: built $build/flowrun against LibTorch $("$python" -c 'import torch; print(torch.__version__)')"
