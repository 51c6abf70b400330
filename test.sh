#!/usr/bin/env bash
# The tests (what .ci/run runs after ./setup.sh): every suite in build/, then
# the engine and data-path suites under AddressSanitizer + UBSan
# (build-asan/), then the same suites -- the executor's tests above all --
# under ThreadSanitizer (build-tsan/). The sanitizer trees are built here the
# first time (a few minutes; scripts/sanitizer-trees.sh), and only brought up
# to date after that; SANITIZERS=0 skips them. Tests that run the flowrun
# binary or load the example plugin only run in build/.
set -euo pipefail
cd "$(dirname "$0")"
ctest --test-dir build --output-on-failure -j2
[ "${SANITIZERS:-1}" != 0 ] || exit 0
scripts/sanitizer-trees.sh
echo "== AddressSanitizer + UndefinedBehaviorSanitizer: engine and data path"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tests/sanitizers/ubsan.supp \
  LSAN_OPTIONS=suppressions=$PWD/tests/sanitizers/lsan.supp \
  ctest --test-dir build-asan --output-on-failure -j2 -E '^(Cli|Plugins)\.'
echo "== ThreadSanitizer: engine and data path"
# A race report makes the test exit 66, and so fail.
TSAN_OPTIONS=exitcode=66:second_deadlock_stack=1:history_size=4 \
  ctest --test-dir build-tsan --output-on-failure -j2 -E '^(Cli|Plugins)\.'
