#!/usr/bin/env bash
# The tests (what .ci/run runs after ./setup.sh): every suite in build/
# (Debian's LibTorch 1.13, CPU), then the engine and data-path suites under
# AddressSanitizer + UBSan (build-asan/), then the same suites -- the
# executor's tests above all -- under ThreadSanitizer (build-tsan/), then
# every suite again in build-torch2/: flowrun built against PyPI's LibTorch
# 2.x with CUDA compiled in (scripts/torch2.sh), run on the CPU, device tests
# skipped where there is no GPU. The sanitizer trees and build-torch2/ are
# built here the first time (scripts/sanitizer-trees.sh, scripts/torch2.sh)
# and only brought up to date after that. On a developer's machine
# SANITIZERS=0 skips the sanitizer trees and TORCH2=0 the LibTorch 2.x lane;
# under CI (CI=true) nothing is skipped. Tests that run the flowrun binary or
# load the example plugin only run in build/ and build-torch2/.
set -euo pipefail
cd "$(dirname "$0")"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if [ "${CI:-}" = true ]; then SANITIZERS=1 TORCH2=1; fi
ctest --test-dir build --output-on-failure -j2
if [ "${TORCH2:-1}" != 0 ]; then
  echo "== LibTorch 2.x with CUDA compiled in (build-torch2/), on the CPU"
  scripts/torch2.sh
  ctest --test-dir build-torch2 --output-on-failure -j2
fi
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
