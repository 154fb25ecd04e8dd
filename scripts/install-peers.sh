#!/bin/sh
# Install Debian's Prosody and ejabberd for the side-by-side benchmarks (bench/peers/), with
# what their PostgreSQL variants need (ejabberd-pg, prosody-pg: bench/peers/postgres.py).
#
# Only the packages: their system services are never started or enabled. A policy-rc.d that
# answers 101 ("action forbidden") keeps the maintainer scripts from starting them while they
# install (it is removed again afterwards if this script put it there), and any daemon the
# packages started anyway is stopped by the pid it wrote. bench/peers/ then runs each server as
# the user running the bench, on loopback, with its own config and data dirs under a temp dir.
#
# Run as root: sh scripts/install-peers.sh [prosody|ejabberd ...]
# With no argument it installs both peers and PostgreSQL 15 (what the benchmarks need); with
# names, only those peers and what they need (the federation tests install Prosody alone).
set -eu

# lua-dbi-sqlite3 and erlang-p1-sqlite3: their SQLite stores (bench.run --peer-store sqlite);
# lua-dbi-postgresql and erlang-p1-pgsql: their PostgreSQL stores (the -pg variants), on a
# throw-away cluster the bench starts itself with postgresql-15's initdb and pg_ctl;
# lua-unbound: Prosody's DNS library (without it Prosody warns at every start).
prosody_packages="prosody lua-dbi-sqlite3 lua-dbi-postgresql lua-unbound"
ejabberd_packages="ejabberd erlang-p1-sqlite3 erlang-p1-pgsql"
if [ "$#" -eq 0 ]; then
    packages="$prosody_packages $ejabberd_packages postgresql-15"
else
    packages=""
    for peer in "$@"; do
        case "$peer" in
            prosody) packages="$packages $prosody_packages" ;;
            ejabberd) packages="$packages $ejabberd_packages" ;;
            *) echo "install-peers: unknown peer '$peer' (prosody or ejabberd)" >&2; exit 2 ;;
        esac
    done
fi
missing=""
for package in $packages; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $package"
    fi
done
if [ -z "$missing" ]; then
    echo "already installed:$packages"
    exit 0
fi

policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT INT TERM

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $missing

# Belt and braces: if a maintainer script started a daemon despite the policy, stop it by the pid
# file it wrote (no pkill by name: other processes of the same name may be ours to keep).
for pidfile in /run/prosody/prosody.pid /run/ejabberd/ejabberd.pid; do
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            echo "stopping the system service's pid $pid ($pidfile)"
            kill "$pid" || true
        fi
    fi
done
# The packages enable their units for systemd (and epmd's, with Erlang): disable them again, so
# that no boot starts them either. deb-systemd-helper works without a running systemd (it wants
# to be called from a maintainer script: the two variables say which).
units="prosody:prosody.service ejabberd:ejabberd.service erlang-base:epmd.service erlang-base:epmd.socket"
# PostgreSQL's units only if this script installed it: a system cluster set up before is not ours.
case " $missing " in *" postgresql-15 "*) units="$units postgresql:postgresql.service" ;; esac
for unit in $units; do
    DPKG_MAINTSCRIPT_PACKAGE=${unit%%:*} DPKG_MAINTSCRIPT_NAME=postinst \
        deb-systemd-helper disable "${unit#*:}" >/dev/null 2>&1 || true
done
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    # shellcheck disable=SC2086 # one word per unit
    systemctl stop $(for unit in $units; do printf '%s ' "${unit#*:}"; done) 2>/dev/null || true
fi
for package in prosody ejabberd; do
    version=$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null || true)
    if [ -n "$version" ]; then echo "installed: $package $version"; fi
done
