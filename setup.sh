#!/usr/bin/env bash
# Sets flowrun up on Debian 12: installs the Debian packages it needs (when
# missing), then configures and builds everything into build/.
#   ./setup.sh                 # Release-with-debug-info build in build/
#   BUILD_DIR=b ./setup.sh     # elsewhere
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  cmake ninja-build g++ ccache pkg-config dpkg-dev
  libtorch-dev libgloo-dev libtbb-dev libturbojpeg0-dev libpng-dev zlib1g-dev libcairo2-dev libzip-dev
  libboost-program-options-dev libspdlog-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
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
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
cmake --build "$BUILD_DIR"
echo "setup: built $BUILD_DIR/flowrun"

# The sanitizer trees ./test.sh runs (SANITIZERS=0 skips them): the engine and
# data-path suites under AddressSanitizer + UBSan (build-asan/), and again
# under ThreadSanitizer (build-tsan/), linked against a oneTBB built with TSan
# from the installed package's Debian source (TSan cannot see the handoffs
# inside an uninstrumented libtbb). No model room and no flowrun binary there:
# a few minutes.
if [ "${SANITIZERS:-1}" != 0 ]; then
  sanitizer_tree() {  # DIR SANITIZERS "CMAKE ARGS" TARGETS...
    local dir=$1 sanitize=$2 args=$3
    shift 3
    # -O1 -g1: the sanitizers' recommended optimisation, line numbers in reports, and a quicker build.
    # shellcheck disable=SC2086
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
      -DFLOWRUN_SANITIZE="$sanitize" $args \
      -DFLOWRUN_BUILD_BENCH=OFF -DFLOWRUN_BUILD_EXAMPLE_PLUGIN=OFF >/dev/null
    cmake --build "$dir" --target "$@"
  }
  sanitizer_tree build-asan address,undefined "" engine_tests data_tests
  echo "setup: built the sanitizer tree build-asan/"
  scripts/tsan-onetbb.sh build-tsan/onetbb
  sanitizer_tree build-tsan thread "-DTBB_DIR=$PWD/build-tsan/onetbb/prefix/lib/cmake/TBB" engine_tests data_tests
  echo "setup: built the sanitizer tree build-tsan/"
fi
