#!/usr/bin/env bash
# Regenerates the sqlx offline query data in .sqlx/ (what `cargo sqlx prepare`
# does, without needing sqlx-cli), for both backends:
# - the relay's crate holds the SQLite statements: described against a scratch
#   SQLite file built from migrations/;
# - src/store/postgres/sql/ (the clawrelay-pgsql crate) holds the PostgreSQL
#   statements: described against a throwaway PostgreSQL cluster
#   (scripts/pg.sh, which installs Debian's postgresql when it is missing)
#   migrated with migrations/postgres/.
# sqlx's macros describe all of one crate's statements against one database,
# which each crate names in a .env file beside its Cargo.toml; this writes
# both for the build and removes them after. It recompiles both crates
# online with SQLX_OFFLINE_DIR set, so every query macro writes its
# description, and replaces .sqlx/ with the result.
#
#   scripts/sqlx-prepare.sh          rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check  fail if .sqlx/ is stale (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."

pg_crate=src/store/postgres/sql
for env_file in .env "$pg_crate/.env"; do
    if [ -e "$env_file" ]; then
        echo "$env_file exists; this script writes its own there (the database each crate's queries are checked against): move it away and run again" >&2
        exit 1
    fi
done

tmp=$(mktemp -d)
pgdir=$(mktemp -d)
cleanup() {
    rm -f .env "$pg_crate/.env"
    scripts/pg.sh stop "$pgdir" > /dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

db="$tmp/schema.db"
# The relay's own SQLite (bundled, 3.46) knows FTS5's contentless_delete
# (3.43); this scratch schema only describes the statements, and the
# system's sqlite3 may be older: there the option is left out.
python3 - "$db" migrations/*.sql <<'PY'
import re, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for path in sorted(sys.argv[2:]):
    sql = open(path).read()
    if sqlite3.sqlite_version_info < (3, 43, 0):
        sql = re.sub(r",\s*contentless_delete\s*=\s*1", "", sql)
    con.executescript(sql)
con.commit()
PY

pg_url=$(scripts/pg.sh start "$pgdir")
for migration in migrations/postgres/*.sql; do
    psql "$pg_url" --quiet --no-psqlrc -v ON_ERROR_STOP=1 -f "$migration" > /dev/null
done

mkdir "$tmp/queries"
echo "DATABASE_URL=sqlite://$db" > .env
echo "DATABASE_URL=$pg_url" > "$pg_crate/.env"

# The query macros run again only when their crate recompiles.
touch src/lib.rs "$pg_crate/lib.rs"
env -u DATABASE_URL SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$tmp/queries" \
    cargo build --lib --quiet

count() {
    local sqlite postgres
    sqlite=$(grep -l '"db_name": "SQLite"' "$1"/*.json | wc -l)
    postgres=$(grep -l '"db_name": "PostgreSQL"' "$1"/*.json | wc -l)
    echo "$sqlite SQLite and $postgres PostgreSQL queries"
}

if [ "${1:-}" = "--check" ]; then
    if ! diff -r .sqlx "$tmp/queries" > /dev/null 2>&1; then
        echo "sqlx offline data in .sqlx/ is stale; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
        diff -rq .sqlx "$tmp/queries" >&2 || true
        exit 1
    fi
    echo ".sqlx/ is up to date ($(count "$tmp/queries"))"
else
    rm -rf .sqlx
    cp -r "$tmp/queries" .sqlx
    echo "wrote .sqlx/ ($(count .sqlx))"
fi
