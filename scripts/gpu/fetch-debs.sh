#!/bin/bash
# On a Debian 12 machine that reaches the package archive: downloads the
# packages the GPU host lacks into $1 (default .gpu-debs, ignored by git).
# Copy that folder along with the checkout; scripts/gpu/build.sh unpacks it.
# (The project's own version of ../shared/gpu/fetch-debs.sh: its list also
# holds what flowrun needs beyond the verified recipe — libpng, libzip, Cairo,
# nlohmann-json, GoogleTest, gloo's headers for c10d's Gloo.)
set -euo pipefail
dest=${1:-.gpu-debs}
mkdir -p "$dest"
cd "$dest"
apt-get download libtbb12 libtbb-dev libtbbmalloc2 libtbbbind-2-5 \
  libturbojpeg0 libturbojpeg0-dev libjpeg62-turbo \
  libboost-program-options1.74.0 libboost-program-options1.74-dev libboost1.74-dev \
  libspdlog1.10 libspdlog-dev libfmt9 libfmt-dev \
  libpng16-16 libpng-dev zlib1g-dev libzip4 libzip-dev \
  libcairo2 libcairo2-dev libpixman-1-0 libfontconfig1 libfreetype6 libxrender1 libxext6 libx11-6 libxcb1 \
  libxcb-render0 libxcb-shm0 libxau6 libxdmcp6 libbsd0 libmd0 libbrotli1 libexpat1 \
  nlohmann-json3-dev libgtest-dev libgmock-dev libgloo-dev \
  libwebp7 libwebp-dev libwebpdemux2 libwebpmux3 libtiff6 libtiff-dev libtiffxx6 libjbig0 liblerc4 libdeflate0 \
  libstb0 libstb-dev
ls -1 "$PWD"
