#!/usr/bin/env bash
# Builds the dashboard's UI into dashboard/dist/ui, which `cargo build` then embeds in the
# ferry binary (controller/build.rs). Needs Node.js and npm; run it before cargo when the UI
# changed. `npm ci` installs exactly what package-lock.json names.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
