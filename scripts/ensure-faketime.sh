#!/bin/sh
# libfaketime (Debian's faketime package) for the cluster tests that run nodes with clocks set
# seconds apart (tests/support/cluster.py). Installed when missing and we may (root, apt-get).
set -eu
if command -v faketime >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-faketime: installing Debian's faketime package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends faketime >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends faketime >/dev/null; }
    exit 0
fi
echo "ensure-faketime: faketime is missing and cannot be installed (needs root and apt-get)" >&2
exit 1
