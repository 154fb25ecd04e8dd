#!/usr/bin/env bash
# Install what the browser end-to-end test (tests/browser/) needs, once:
#   - Debian's chromium (apt-get; headless, driven over its DevTools protocol);
#   - Strophe.js from npm (the XMPP library of Converse.js; it ships a browser bundle,
#     dist/strophe.umd.min.js, with WebSocket and BOSH transports), into the cache directory.
# The test fixture runs this script when either is missing, so `make test` works on a fresh
# machine and in CI. Cache: $IMACTOR_BROWSER_CACHE, default .cache/browser (gitignored).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${IMACTOR_BROWSER_CACHE:-$ROOT/.cache/browser}
STROPHE_VERSION=5.0.0

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v chromium >/dev/null 2>&1; then
    echo "install-browser: installing chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

installed=$(node -p "require('$CACHE/node_modules/strophe.js/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$STROPHE_VERSION" ]; then
    echo "install-browser: installing strophe.js@$STROPHE_VERSION (npm) into $CACHE" >&2
    mkdir -p "$CACHE"
    npm install --prefix "$CACHE" --no-audit --no-fund --no-save --loglevel=error "strophe.js@$STROPHE_VERSION"
fi

echo "chromium: $(command -v chromium)"
echo "strophe: $CACHE/node_modules/strophe.js"
