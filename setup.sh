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
  libtorch-dev libgloo-dev libtbb-dev libturbojpeg0-dev libpng-dev libwebp-dev libtiff-dev libstb-dev libhwy-dev zlib1g-dev libcairo2-dev libzip-dev
  libboost-program-options-dev libspdlog-dev nlohmann-json3-dev libprotobuf-dev protobuf-compiler
  libgtest-dev libgmock-dev libbenchmark-dev valgrind
  python3-torch python3-torchvision python3-venv dataset-fashion-mnist
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

# The TensorBoard oracle of the tests: PyPI's tensorboard (its own event
# reader) in the ignored venv .venv-tensorboard/. Not needed to run flowrun:
# without PyPI this warns, and the tests that read event files fail naming it.
TENSORBOARD_VERSION=2.21.0
tb_venv=.venv-tensorboard
have_tensorboard() {
  "$tb_venv/bin/python" -c "import tensorboard, sys; sys.exit(tensorboard.__version__ != '$TENSORBOARD_VERSION')" 2>/dev/null
}
if ! have_tensorboard; then
  echo "setup: installing tensorboard==$TENSORBOARD_VERSION from PyPI into $tb_venv (the tests' TensorBoard oracle)"
  rm -rf "$tb_venv"
  if ! { /usr/bin/python3 -m venv "$tb_venv" &&
         "$tb_venv/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check \
           "tensorboard==$TENSORBOARD_VERSION" && have_tensorboard; }; then
    echo "setup: WARNING: could not install tensorboard==$TENSORBOARD_VERSION from PyPI into $tb_venv (see pip's" \
         "message above): flowrun builds and runs, but the tests that read TensorBoard files back will FAIL" >&2
  fi
fi

BUILD_DIR="${BUILD_DIR:-build}"
# ccache keys on paths relative to the checkout: another clone (CI's) hits the same objects.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
cmake --build "$BUILD_DIR"
echo "setup: built $BUILD_DIR/flowrun"

