#!/usr/bin/env bash
# Builds a ThreadSanitizer-instrumented oneTBB for the TSan test tree.
#   scripts/tsan-onetbb.sh DIR     # -> DIR/prefix (lib/cmake/TBB for TBB_DIR=)
#
# Why: TSan sees a happens-before edge only where instrumented code makes it.
# Debian's libtbb is not instrumented, so every handoff inside the flow graph's
# scheduler (task recycling, its atomics) looks like a race in our code. So we
# build the very oneTBB the main build uses -- the source of the installed
# libtbb-dev package, from Debian's archive -- with -fsanitize=thread. Only the
# core library (no tbbmalloc, no tests): about 30 s on 2 cores. Kept between
# runs: a second call with the same version does nothing.
set -euo pipefail
dir=$(mkdir -p "$1" && cd "$1" && pwd)
version=$(dpkg-query -W -f='${source:Version}' libtbb-dev)
upstream=${version%-*}
upstream=${upstream#*:}
prefix="$dir/prefix"
stamp="$prefix/.flowrun-onetbb-version"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then
  exit 0
fi
rm -rf "$dir/fetch" "$dir/build" "$prefix"
mkdir -p "$dir/fetch/lists/partial" "$dir/fetch/cache/archives/partial"
cd "$dir/fetch"

# A private apt configuration with the deb-src twins of the machine's Debian
# sources: the system's apt setup is left as it is, and no root is needed.
# apt checks the archive's signature and the files' checksums as usual.
apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Origin: Debian' | sort -u >repos || true
[ -s repos ] || printf '%s\n' "http://deb.debian.org/debian bookworm main" \
  "http://deb.debian.org/debian bookworm-updates main" "http://deb.debian.org/debian-security bookworm-security main" >repos
while read -r uri suite component; do
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite $component"
done <repos >sources.list
apt=(apt-get -q -o Dir::Etc::SourceList="$PWD/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o Dir::State::Lists="$PWD/lists" -o Dir::Cache="$PWD/cache" -o Debug::NoLocking=1
  -o APT::Sandbox::User="$(id -un)")
if ! "${apt[@]}" update >update.log 2>&1 || ! "${apt[@]}" source "onetbb=$version" >source.log 2>&1; then
  cat update.log source.log 2>/dev/null >&2 || true
  echo "tsan-onetbb: could not fetch oneTBB $version's source from Debian's archive (needed for the" \
    "ThreadSanitizer tree). SANITIZERS=0 ./setup.sh skips the sanitizer trees." >&2
  exit 1
fi

cmake -S "onetbb-$upstream" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DTBB_SANITIZE=thread -DTBB_TEST=OFF -DTBB_STRICT=OFF \
  -DTBBMALLOC_BUILD=OFF -DTBB_DISABLE_HWLOC_AUTOMATIC_SEARCH=ON -DCMAKE_INSTALL_PREFIX="$prefix" >"$dir/configure.log"
cmake --build "$dir/build" >"$dir/build.log" || { tail -40 "$dir/build.log" >&2; exit 1; }
cmake --install "$dir/build" >/dev/null
echo "$version" >"$stamp"
rm -rf "$dir/fetch"
echo "tsan-onetbb: built oneTBB $version with ThreadSanitizer in $prefix"
