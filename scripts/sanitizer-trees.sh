#!/usr/bin/env bash
# Builds (or brings up to date) the sanitizer trees ./test.sh runs: the engine
# and data-path suites under AddressSanitizer + UBSan (build-asan/), and again
# under ThreadSanitizer (build-tsan/), linked against a oneTBB built with TSan
# from the installed package's Debian source (TSan cannot see the handoffs
# inside an uninstrumented libtbb). No model room and no flowrun binary there.
# ./test.sh calls this; ./setup.sh does not, so a user who only runs flowrun
# never waits for them.
set -euo pipefail
cd "$(dirname "$0")/.."

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
sanitizer_tree build-asan address,undefined "" engine_tests data_tests replay_graph replay_decode
echo "sanitizer-trees: build-asan/ is up to date"
scripts/tsan-onetbb.sh build-tsan/onetbb
sanitizer_tree build-tsan thread "-DTBB_DIR=$PWD/build-tsan/onetbb/prefix/lib/cmake/TBB" engine_tests data_tests
echo "sanitizer-trees: build-tsan/ is up to date"
