#!/usr/bin/env bash
# Fuzzes the running relay against its own OpenAPI document with schemathesis
# (installed from PyPI into the git-ignored .cache/fuzz/ on first run): every
# operation, with each role's token, checking that no response is a 5xx and
# that every status code, content type and body matches the document.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
venv=$root/.cache/fuzz/venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "installing schemathesis into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis==4.32.5
fi
cargo build --quiet --bin clawrelay

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat > "$work/relay.toml" <<TOML
[delivery]
long_poll_max_secs = 1
[rate_limits]
app_per_sec = 0
user_per_sec = 0
agent_per_sec = 0
failed_auth_per_min = 0
[openai]
reply_timeout_secs = 1
TOML
ADMIN_TOKEN=fuzz-admin LOG_LEVEL=warn target/debug/clawrelay serve --config "$work/relay.toml" \
    --port "$port" --db "$work/relay.db" > "$work/relay.log" 2>&1 &
relay=$!
trap 'kill $relay 2>/dev/null || true; wait $relay 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    curl -sf "$base/health" > /dev/null && break
    sleep 0.1
done

token() {
    curl -sf -X POST "$base/$1" -H "Authorization: Bearer fuzz-admin" -d "{\"name\":\"fuzz\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
client=$(token clients)
app=$(token apps)
user=$(curl -sf -X POST "$base/sessions" -H "Authorization: Bearer $app" -d '{"userId":"fuzz","ttlSecs":86400}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
total=0
for role in admin agent app user; do
    case $role in
        admin) auth=fuzz-admin; filter=(--include-tag admin --include-tag public --include-tag any) ;;
        agent) auth=$client; filter=(--include-tag agent) ;;
        app) auth=$app; filter=(--include-tag app) ;;
        # Not /logout: it would end the session the other operations use.
        user) auth=$user; filter=(--include-tag user --exclude-path /logout) ;;
    esac
    echo "== schemathesis, $role operations"
    out="$work/$role.txt"
    # Run from the scratch folder: schemathesis keeps a cache (.schemathesis/)
    # in its working directory, which must not be the checkout.
    if ! (cd "$work" && "$venv/bin/schemathesis" run "$base/openapi.json" -H "Authorization: Bearer $auth" \
        "${filter[@]}" --exclude-path /events --exclude-path /ws \
        -c "$checks" --max-examples "${FUZZ_EXAMPLES:-60}" --request-timeout 10 \
        --seed 20261121 --no-color > "$out" 2>&1); then
        status=1
        cat "$out" # the failures in full, with the requests that reproduce them
    else
        tail -n 25 "$out"
    fi
    n=$(grep -oE '[0-9]+ generated' "$out" | awk '{ s += $1 } END { print s + 0 }')
    total=$((total + ${n:-0}))
done
if [ "$status" -ne 0 ]; then
    echo "----- relay log"; tail -n 40 "$work/relay.log"
    echo "fuzz: 0 passed, 1 failed ($total generated cases)"
    exit 1
fi
echo "fuzz: 4 passed, 0 failed ($total generated cases)"
