#!/usr/bin/env bash
# The whole test suite: the relay's own tests (cargo test: unit tests and the
# integration tests against a real server), a schemathesis fuzzing run of the
# whole HTTP API against its OpenAPI document, then the end-to-end test of the
# OpenClaw plugin against real OpenClaw gateways. What the last two need
# (schemathesis; Node 24, openclaw) they install into git-ignored folders.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked
e2e/fuzz/run.sh
e2e/openclaw/run.sh
