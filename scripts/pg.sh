#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks: initdb on a
# directory, pg_ctl start on a free loopback port, one database named
# clawrelay. Nothing outside the directory is touched; `stop` removes it.
#
#   scripts/pg.sh start DIR   prints the database URL (postgres://...)
#   scripts/pg.sh stop DIR    stops the server and deletes DIR
#
# PG_SERVER_OPTIONS adds server settings at start (e.g. the benchmark's
# "-c shared_preload_libraries=pg_stat_statements").
#
# Needs Debian's `postgresql` package (PostgreSQL 15 on bookworm): when its
# programs are missing and this runs as root with apt-get, it installs it.
# PostgreSQL refuses to run as root, so as root the cluster runs as the
# `postgres` user the package creates.
set -euo pipefail

usage() {
    echo "usage: scripts/pg.sh start DIR | scripts/pg.sh stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ]; then
            echo "$d"
            return
        fi
    done
    if command -v initdb > /dev/null; then
        dirname "$(command -v initdb)"
    fi
}

bin=$(bindir)
if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing postgresql (Debian package)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql > /dev/null
        bin=$(bindir)
    fi
    if [ -z "$bin" ]; then
        echo "scripts/pg.sh needs PostgreSQL's initdb and pg_ctl: install Debian's postgresql package (sudo apt-get install postgresql)" >&2
        exit 1
    fi
fi

# Runs a PostgreSQL program as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=clawrelay --auth=trust \
        --encoding=UTF8 --locale=C > "$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        exit 1
    }
    # fsync stays on: the tests check durability, not only behaviour.
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --silent \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200 ${PG_SERVER_OPTIONS:-}" \
        start || {
        cat "$dir/server.log" >&2
        exit 1
    }
    as_owner "$bin/createdb" --host=127.0.0.1 --port="$port" --username=clawrelay clawrelay
    echo "postgres://clawrelay@127.0.0.1:$port/clawrelay"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait --silent stop || true
    fi
    rm -rf "$dir"
    ;;
*)
    usage
    ;;
esac
