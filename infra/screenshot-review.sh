#!/usr/bin/env bash
# Renders a yearly review in headless Chromium and saves a PNG, to check that the page and its
# inline SVG charts display without network access.
#   infra/screenshot-review.sh data/demo/reports/review-2021/review.html docs/review-2021.png
# Needs Chromium (Debian: apt-get install chromium).
set -euo pipefail
html="${1:?usage: $0 REVIEW.html OUT.png [WIDTHxHEIGHT]}"
out="${2:?usage: $0 REVIEW.html OUT.png [WIDTHxHEIGHT]}"
size="${3:-1100x1500}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "screenshot-review.sh: Chromium not found (Debian: apt-get install chromium)" >&2; exit 1; }
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# No network: the page must stand on its own.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="${size/x/,}" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$html")" 2>/dev/null
[ -s "$out" ] && echo "saved $out"
