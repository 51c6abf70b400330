#!/bin/bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UBSan) in
# build-fuzz/ and runs each for SECONDS seconds (default 600), growing the
# corpora kept in fuzz/corpus/ (new inputs are added there; commit them).
# Crashes are written to build-fuzz/findings/, and make the script exit 1
# (findings of an earlier run count until removed). Needs clang and
# libclang-rt-14-dev (Debian). Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
for package in clang libclang-rt-14-dev; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "$package"
  fi
done
[ ${#targets[@]} -eq 0 ] && targets=(graph pth safetensors decode)
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOWRUN_FUZZ=ON \
  -DFLOWRUN_BUILD_TESTS=OFF -DFLOWRUN_BUILD_BENCH=OFF -DFLOWRUN_BUILD_EXAMPLE_PLUGIN=OFF >/dev/null
ninja -C build-fuzz "${targets[@]/#/fuzz_}"
mkdir -p build-fuzz/findings
export LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp  # leaks inside LibTorch are not findings
for target in "${targets[@]}"; do
  echo "== fuzz_$target for ${seconds}s"
  # New inputs go to a work corpus; the kept one (fuzz/corpus) gains only
  # those that add coverage (merge), so it stays small enough to commit.
  mkdir -p build-fuzz/corpus/$target
  # Each input gets 10 s and 2 GB at most: a hang or a runaway allocation is a finding too.
  build-fuzz/fuzz/fuzz_$target -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix=build-fuzz/findings/$target- -print_final_stats=1 \
    build-fuzz/corpus/$target fuzz/corpus/$target > build-fuzz/fuzz_$target.log 2>&1 || true
  grep -E "^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))|ERROR|SUMMARY" \
    build-fuzz/fuzz_$target.log || true
  build-fuzz/fuzz/fuzz_$target -merge=1 -artifact_prefix=build-fuzz/findings/$target-merge- \
    fuzz/corpus/$target build-fuzz/corpus/$target > /dev/null 2>&1 || true
done
# A finding fails the script (and so CI): crashes, leaks, timeouts and
# out-of-memory inputs are all written there.
if [ -n "$(ls -A build-fuzz/findings)" ]; then
  echo "fuzz: findings in build-fuzz/findings:" >&2
  ls -l build-fuzz/findings >&2
  exit 1
fi
echo "fuzz: no findings"
