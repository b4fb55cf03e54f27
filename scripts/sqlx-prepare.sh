#!/usr/bin/env bash
# Regenerates the sqlx offline query data in .sqlx/ (what `cargo sqlx prepare`
# does, without needing sqlx-cli): builds a scratch database from migrations/,
# recompiles the crate online with SQLX_OFFLINE_DIR set so every query! macro
# writes its description, and replaces .sqlx/ with the result.
#
#   scripts/sqlx-prepare.sh          rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check  fail if .sqlx/ is stale (used by CI)
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
db="$tmp/schema.db"
python3 - "$db" migrations/*.sql <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for path in sorted(sys.argv[2:]):
    con.executescript(open(path).read())
con.commit()
PY
mkdir "$tmp/queries"

# The query macros run again only when the crate recompiles.
touch src/lib.rs
DATABASE_URL="sqlite://$db" SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$tmp/queries" \
    cargo build --lib --quiet

if [ "${1:-}" = "--check" ]; then
    if ! diff -r .sqlx "$tmp/queries" >/dev/null 2>&1; then
        echo "sqlx offline data in .sqlx/ is stale; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
        diff -rq .sqlx "$tmp/queries" >&2 || true
        exit 1
    fi
    echo ".sqlx/ is up to date ($(ls "$tmp/queries" | wc -l) queries)"
else
    rm -rf .sqlx
    cp -r "$tmp/queries" .sqlx
    echo "wrote .sqlx/ ($(ls .sqlx | wc -l) queries)"
fi
