#!/usr/bin/env bash
# The tests (what .ci/run runs after ./setup.sh): every suite in build/, then
# the engine and data-path suites under AddressSanitizer + UBSan
# (build-asan/, built by ./setup.sh). Tests that run the flowrun binary or
# load the example plugin only run in build/.
set -euo pipefail
cd "$(dirname "$0")"
ctest --test-dir build --output-on-failure -j2
if [ -d build-asan ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer: engine and data path"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$PWD/tests/sanitizers/ubsan.supp \
    LSAN_OPTIONS=suppressions=$PWD/tests/sanitizers/lsan.supp \
    ctest --test-dir build-asan --output-on-failure -j2 -E '^(Cli|Plugins)\.'
fi
