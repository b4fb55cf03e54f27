#!/usr/bin/env bash
# The whole test suite: the relay's own tests (cargo test: unit tests and the
# integration tests against a real server), then the end-to-end test of the
# OpenClaw plugin against real OpenClaw gateways, which installs what it needs
# (Node 24, openclaw) into git-ignored folders on its first run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
e2e/openclaw/run.sh
