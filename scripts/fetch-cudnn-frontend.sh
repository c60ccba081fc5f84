#!/usr/bin/env bash
# Fetches the header-only cuDNN frontend (NVIDIA/cudnn-frontend, MIT licence) into
# .cache/cudnn-frontend/include. The CUDA backend then also builds its cuDNN attention path
# (fused flash-attention prefill), provided CMake finds the cuDNN library and C headers (the
# CUDA toolkit's, or the nvidia-cudnn-cu13 / -cu12 wheel's that PyTorch installs).
# The headers ship in the PyPI wheel nvidia-cudnn-frontend; one pinned wheel is downloaded
# (whatever the local Python), its sha256 checked, and include/ moved into place whole.
#
# usage: scripts/fetch-cudnn-frontend.sh
# exit 0: the headers are in place; 1: no network, download failed or hash mismatch.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/cudnn-frontend"
version="1.32.0"
wheel="nvidia_cudnn_frontend-$version-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
sha256="c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0"

if [[ -f "$dest/include/cudnn_frontend.h" && "$(cat "$dest/VERSION" 2>/dev/null)" == "$version" ]]; then
    echo "fetch-cudnn-frontend: $version already in $dest"
    exit 0
fi
command -v python3 >/dev/null || { echo "fetch-cudnn-frontend: python3 is needed (for pip)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-cudnn-frontend: downloading nvidia-cudnn-frontend $version from PyPI (12 MB)"
if ! python3 -m pip download --quiet --disable-pip-version-check --retries 2 --timeout 30 --no-deps \
        --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64 \
        -d "$tmp" "nvidia-cudnn-frontend==$version"; then
    echo "fetch-cudnn-frontend: download failed (no network?); the cuDNN attention path is not built" >&2
    exit 1
fi
if [[ "$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)" != "$sha256" ]]; then
    echo "fetch-cudnn-frontend: $wheel has an unexpected sha256; not used" >&2
    exit 1
fi
python3 -m zipfile -e "$tmp/$wheel" "$tmp/wheel"
mkdir -p "$tmp/out"
mv "$tmp/wheel/include" "$tmp/out/include"
echo "$version" > "$tmp/out/VERSION"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.old"
[[ -d "$dest" ]] && mv "$dest" "$dest.old"
mv "$tmp/out" "$dest"
rm -rf "$dest.old"
echo "fetch-cudnn-frontend: headers in $dest/include"
