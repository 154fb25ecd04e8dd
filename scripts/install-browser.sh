#!/usr/bin/env bash
# Install what the browser end-to-end test (tests/browser/) needs, once:
#   - Debian's chromium (apt-get; headless, driven over its DevTools protocol);
#   - Converse.js from npm (a browser XMPP client with a UI; its package ships the built bundle,
#     dist/converse.min.js, with its CSS, fonts, emoji data and lazily loaded chunks), into the
#     cache directory. The test serves that dist/ directory itself: nothing comes from a CDN.
# The test fixture runs this script when either is missing, so `make test` works on a fresh
# machine and in CI. Cache: $IMACTOR_BROWSER_CACHE, default .cache/browser (gitignored).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${IMACTOR_BROWSER_CACHE:-$ROOT/.cache/browser}
# Pinned: the test drives Converse's UI (its login form, chat textarea and message elements).
CONVERSE_VERSION=14.0.0

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v chromium >/dev/null 2>&1; then
    echo "install-browser: installing chromium (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

installed=$(node -p "require('$CACHE/node_modules/converse.js/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$CONVERSE_VERSION" ]; then
    echo "install-browser: installing converse.js@$CONVERSE_VERSION (npm) into $CACHE" >&2
    mkdir -p "$CACHE"
    npm install --prefix "$CACHE" --no-audit --no-fund --no-save --loglevel=error "converse.js@$CONVERSE_VERSION"
fi

echo "chromium: $(command -v chromium)"
echo "converse: $CACHE/node_modules/converse.js"
