#!/usr/bin/env bash
# The whole test suite: the relay's own tests (cargo test: unit tests and the
# integration tests against a real server), a schemathesis fuzzing run of the
# whole HTTP API against its OpenAPI document, the web chat page in a real
# browser, then the end-to-end test of the OpenClaw plugin against real
# OpenClaw gateways. What the last three need (schemathesis; Playwright;
# Node 24, openclaw) they install into git-ignored folders.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the suite uses beyond cargo: curl (the fuzzing run's set-up; with
# jq, README's walk-through, which tests/api/readme.rs runs as written),
# python3 with venv (schemathesis), npm (Node for the plugin and OpenClaw),
# setpriv (tests run the relay as an unprivileged user), systemd-analyze (a
# test verifies deploy/clawrelay.service), chromium (the web chat's browser
# tests), postgresql (initdb and pg_ctl: the PostgreSQL backend's tests start
# throwaway clusters with scripts/pg.sh), nginx (a test runs three relays
# behind deploy/cluster/nginx.conf), fonts-noto-cjk (the chat page in Chinese,
# in the browser tests' screenshots). Missing ones are
# installed from Debian's packages when this runs as root with apt-get;
# otherwise the script names them and stops.
missing=()
command -v curl > /dev/null || missing+=(curl)
command -v jq > /dev/null || missing+=(jq)
command -v npm > /dev/null || missing+=(npm)
command -v setpriv > /dev/null || missing+=(util-linux)
command -v systemd-analyze > /dev/null || missing+=(systemd)
command -v chromium > /dev/null || missing+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' > /dev/null || command -v initdb > /dev/null || missing+=(postgresql)
[ -x /usr/sbin/nginx ] || command -v nginx > /dev/null || missing+=(nginx)
compgen -G '/usr/share/fonts/opentype/noto/NotoSansCJK-*' > /dev/null || missing+=(fonts-noto-cjk)
if ! command -v python3 > /dev/null; then
    missing+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' 2> /dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing ${missing[*]} (Debian packages)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
    else
        echo "scripts/test.sh needs these Debian packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

cargo test --locked --workspace

# The whole API suite again with every test app on PostgreSQL (a database
# each, on one throwaway cluster); the tests about the SQLite file itself say
# so and pass over. The postgres_* tests, which start clusters of their own,
# ran above.
# (Directly under /tmp: as root the cluster runs as `postgres`, which must
# reach its directory.)
pg_dir=/tmp/clawrelay-suite-pg-$$
trap 'bash scripts/pg.sh stop "$pg_dir" > /dev/null 2>&1 || true' EXIT
TEST_POSTGRES_URL=$(bash scripts/pg.sh start "$pg_dir")
echo "the API suite on PostgreSQL ($TEST_POSTGRES_URL)"
TEST_POSTGRES_URL=$TEST_POSTGRES_URL cargo test --locked --test api -- --skip postgres
bash scripts/pg.sh stop "$pg_dir"
trap - EXIT
e2e/fuzz/run.sh
e2e/webchat/run.sh
e2e/console/run.sh
e2e/openclaw/run.sh
