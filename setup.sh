#!/usr/bin/env bash
# Sets flowrun up on Debian 12: installs the Debian packages it needs (when
# missing), then configures and builds flowrun, its plugins, benchmarks and
# test suites into build/. The sanitizer trees are ./test.sh's business.
#   ./setup.sh                 # Release-with-debug-info build in build/
#   BUILD_DIR=b ./setup.sh     # elsewhere
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config dpkg-dev
  libtorch-dev libgloo-dev libtbb-dev libturbojpeg0-dev libpng-dev libwebp-dev libtiff-dev libstb-dev zlib1g-dev libcairo2-dev libzip-dev
  libboost-program-options-dev libspdlog-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev valgrind
  python3-torch python3-torchvision dataset-fashion-mnist
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

BUILD_DIR="${BUILD_DIR:-build}"
# ccache keys on paths relative to the checkout: another clone (CI's) hits the same objects.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
cmake --build "$BUILD_DIR"
echo "setup: built $BUILD_DIR/flowrun"

