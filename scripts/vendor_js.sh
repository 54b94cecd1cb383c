#!/usr/bin/env bash
# Refresh the console's vendored browser libraries from the npm registry (not needed to run or
# test SAGA: the files are committed). Versions are pinned in frontend/vendor/package.json and
# package-lock.json; each library's licence is copied next to it. Plotly is not here: it comes
# from the plotly wheel (frontend/finders.py).
#   scripts/vendor_js.sh            install exactly what the lock file says and copy it
#   scripts/vendor_js.sh --check    exit 1 when the committed files differ from the lock file's
set -euo pipefail
cd "$(dirname "$0")/../frontend/vendor"
npm ci --no-audit --no-fund --ignore-scripts >/dev/null
out=../static/saga/vendor
declare -A files=(
  [cytoscape/cytoscape.min.js]=node_modules/cytoscape/dist/cytoscape.min.js
  [cytoscape/LICENSE]=node_modules/cytoscape/LICENSE
)
status=0
for target in "${!files[@]}"; do
  if [ "${1:-}" = "--check" ]; then
    cmp -s "${files[$target]}" "$out/$target" || { echo "differs: $out/$target"; status=1; }
  else
    mkdir -p "$(dirname "$out/$target")"
    cp "${files[$target]}" "$out/$target"
  fi
done
version=$(node -p 'require("./node_modules/cytoscape/package.json").version')
[ "${1:-}" = "--check" ] || echo "cytoscape $version (MIT) -> $out/cytoscape"
exit $status
