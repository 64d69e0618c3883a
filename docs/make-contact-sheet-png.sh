#!/usr/bin/env bash
# Regenerate docs/contact-sheet.png, the README's picture of a contact sheet: classify the
# first $N photos of seg_pred with the shipped model, write the sheet, screenshot it in
# headless Chromium (apt-get install chromium) and save it as a small 256-colour PNG.
#
#   bash docs/make-contact-sheet-png.sh                     # after `make export`
#   MODEL=other.onnx OUT=/tmp/shot.png bash docs/make-contact-sheet-png.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-scenetool/models/scenes.onnx}
if [ -z "${PHOTOS:-}" ]; then
    for PHOTOS in data/intel/seg_pred ../shared/data/intel/seg_pred; do
        [ -d "$PHOTOS" ] && break
    done
fi
N=${N:-120}
OUT=${OUT:-docs/contact-sheet.png}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}

[ -f "$MODEL" ] || { echo "no model at $MODEL: run make export first, or set MODEL" >&2; exit 2; }
[ -d "$PHOTOS" ] || { echo "no seg_pred folder: set PHOTOS" >&2; exit 2; }
[ -n "$CHROMIUM" ] || { echo "no chromium on PATH: apt-get install chromium" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/photos"
# Symlinks, so no photo is copied anywhere.
find "$PHOTOS" -maxdepth 1 -type f -name '*.jpg' | sort | head -n "$N" | while read -r f; do
    ln -s "$(realpath "$f")" "$tmp/photos/$(basename "$f")"
done
export SCENETOOL_STORE="$tmp/store.db"
PYTHONPATH=. "$PY" -m scenetool classify "$tmp/photos" --model "$MODEL" -q
PYTHONPATH=. "$PY" -m scenetool report --html "$tmp/sheet.html" --html-limit 6 > /dev/null
"$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --user-data-dir="$tmp/profile" --hide-scrollbars \
    --screenshot="$tmp/shot.png" --window-size=1000,700 "file://$tmp/sheet.html" 2> /dev/null
"$PY" - "$tmp/shot.png" "$OUT" <<'EOF'
import sys
from PIL import Image

with Image.open(sys.argv[1]) as im:
    small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.NONE)
small.save(sys.argv[2], optimize=True)
EOF
echo "wrote $OUT ($(du -k "$OUT" | cut -f1) KB)"
