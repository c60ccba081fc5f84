#!/usr/bin/env bash
# The build dependencies of purbo as Debian 12 packages, for a GPU machine whose image has
# the CUDA toolkit and a compiler but not these libraries, and no network.
#
#   scripts/gpu-deps.sh download DIR   (on a Debian 12 machine with network) fetch the .debs
#   source scripts/gpu-deps.sh install DIR [PREFIX]
#                                      (on the GPU machine) unpack them under PREFIX
#                                      (default /tmp/purbo-deps) and export the variables that
#                                      make CMake, pkg-config, the compiler and the loader find them
set -u
packages=(libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libicu-dev libicu72
          libfmt-dev libfmt9 nlohmann-json3-dev libgtest-dev libopenblas-dev libopenblas0
          libopenblas-openmp-dev libopenblas0-openmp libcpp-httplib-dev libcpp-httplib0.11 libgfortran5 libquadmath0)

case "${1:-}" in
download)
    dir="${2:?usage: gpu-deps.sh download DIR}"
    mkdir -p "$dir" && (cd "$dir" && apt-get download "${packages[@]}")
    ;;
install)
    dir="${2:?usage: source gpu-deps.sh install DIR [PREFIX]}"
    prefix="${3:-/tmp/purbo-deps}"
    mkdir -p "$prefix"
    for deb in "$dir"/*.deb; do dpkg -x "$deb" "$prefix"; done
    lib="$prefix/usr/lib/x86_64-linux-gnu"
    # Debian selects the OpenBLAS variant with update-alternatives; make the links by hand.
    ln -sf "$lib/openblas-openmp/libopenblas.so.0" "$lib/libopenblas.so.0"
    ln -sf "$lib/openblas-openmp/libopenblas.so" "$lib/libopenblas.so"
    ln -sf "$lib/openblas-openmp/cblas.h" "$prefix/usr/include/cblas.h" 2>/dev/null || true
    [ -f "$prefix/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h" ] &&
        ln -sf "$prefix/usr/include/x86_64-linux-gnu/openblas-openmp/cblas.h" "$prefix/usr/include/cblas.h"
    for pc in "$lib"/pkgconfig/*.pc "$lib"/openblas-openmp/pkgconfig/*.pc; do
        [ -f "$pc" ] || continue
        sed -i "s|^prefix=/usr|prefix=$prefix/usr|; s|^libdir=/usr|libdir=$prefix/usr|; s|^includedir=/usr|includedir=$prefix/usr|" "$pc"
    done
    cp "$lib/openblas-openmp/pkgconfig/openblas.pc" "$lib/pkgconfig/openblas.pc"
    export PKG_CONFIG_PATH="$lib/pkgconfig:$prefix/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export CMAKE_PREFIX_PATH="$prefix/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
    export CPATH="$prefix/usr/include${CPATH:+:$CPATH}"
    export LIBRARY_PATH="$lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "gpu-deps: unpacked $(ls "$dir"/*.deb | wc -l) packages under $prefix"
    ;;
*)
    sed -n 2,10p "$0"
    exit 2
    ;;
esac
