#!/usr/bin/env bash
# Installs and tests the Backstage scaffolder module (jitgate:access:request) and the pages plugin
# (@jitgate/backstage-plugin-jitgate), and builds the pages' dev app that the browser test serves.
# Needs only node >= 20 and npm; exits non-zero when the install, the type check or a test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="$here/plugins/scaffolder-backend-module-jitgate"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "backstage/ci.sh: node and npm are required" >&2
  exit 1
fi
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "backstage/ci.sh: node >= 20 is required, found $(node --version)" >&2
  exit 1
fi

cd "$module"
export CI=true
echo "== npm ci ($module)"
npm ci --no-audit --no-fund
echo "== npm test"
npm test
echo "== npm run build"
npm run build

pages="$here/plugins/jitgate"
cd "$pages"
echo "== npm ci ($pages)"
npm ci --no-audit --no-fund
echo "== npm test (pages)"
npm test
echo "== npm run build, and the dev app for the browser test (pages)"
npm run build
npm run dev-app
