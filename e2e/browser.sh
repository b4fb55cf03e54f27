#!/usr/bin/env bash
# Runs one page's browser tests: e2e/browser.sh NAME drives
# e2e/NAME/test_NAME.py (NAME: webchat, console) in Debian's Chromium
# (installed by scripts/test.sh when missing) with Playwright for Python,
# installed from PyPI into the git-ignored .cache/e2e/webchat-venv on first
# run (no browser download: it drives /usr/bin/chromium), and axe-core from
# npm into .cache/e2e/axe, against the relay binary built here.
# Screenshots of the main states are written to .cache/e2e/NAME-shots/.
set -euo pipefail
name=$1
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.cache/e2e/webchat-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import playwright, websockets' 2> /dev/null; then
    echo "installing playwright and websockets into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check playwright==1.65.2 websockets==17.4
fi
# axe-core (the accessibility checker the pages are held to), from npm.
axe=$root/.cache/e2e/axe
if [ ! -f "$axe/node_modules/axe-core/axe.min.js" ]; then
    echo "installing axe-core into $axe"
    mkdir -p "$axe"
    npm install --prefix "$axe" --silent --no-audit --no-fund axe-core@4.14.1
fi
if ! command -v "${CHROMIUM:-chromium}" > /dev/null; then
    echo "e2e/$name: Chromium is missing (Debian: apt-get install chromium)" >&2
    exit 1
fi
cargo build --quiet --bin clawrelay

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
AXE=$axe/node_modules/axe-core/axe.min.js CHROMIUM=$(command -v "${CHROMIUM:-chromium}") \
    "$venv/bin/python" "e2e/$name/test_$name.py" \
    "$root/target/debug/clawrelay" "$work" || status=$?
shots=$root/.cache/e2e/$name-shots
rm -rf "$shots" && mkdir -p "$shots" && cp "$work"/shots/*.png "$shots"/ 2> /dev/null || true
if [ "$status" -ne 0 ]; then
    echo "----- relay log"; tail -n 40 "$work/relay.log"
    echo "screenshots: $shots"
fi
exit "$status"
