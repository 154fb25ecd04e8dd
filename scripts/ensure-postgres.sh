#!/bin/sh
# The PostgreSQL server programs the postgres-marked tests run (tests/support/postgres.py starts a
# throw-away cluster with initdb and pg_ctl from /usr/lib/postgresql/<version>/bin). The machine
# image has Debian's postgresql package; a machine without it gets it here when we may install
# (root with apt-get), as `make test` must work on a fresh machine. Nothing is started here.
set -eu
for bin in /usr/lib/postgresql/*/bin; do
    if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then
        exit 0
    fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: installing Debian's postgresql package for the PostgreSQL tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    exit 0
fi
echo "ensure-postgres: no PostgreSQL server programs and cannot install them: the postgres tests" \
     "will be skipped (and fail under CI=true)" >&2
