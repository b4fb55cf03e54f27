// Unit tests of account resolution and reconnect backoff (node --test, on dist/).
import assert from "node:assert/strict";
import { test } from "node:test";
import { backoffDelay, listAccountIds, resolveAccount } from "../dist/config.js";

const cfg = (clawrelay) => ({ channels: { clawrelay } });

test("a top-level account is the default account", () => {
  const c = cfg({ serverUrl: "http://relay:9876/", token: "cli_x.y" });
  assert.deepEqual(listAccountIds(c), ["default"]);
  const a = resolveAccount(c, null);
  assert.equal(a.accountId, "default");
  assert.equal(a.serverUrl, "http://relay:9876");
  assert.equal(a.configured, true);
  assert.equal(a.transport, "ws");
  assert.deepEqual(a.forward, { streaming: true, toolProgress: true, typing: true });
});

test("named accounts inherit settings but never the default token", () => {
  const c = cfg({
    serverUrl: "http://relay:9876",
    token: "cli_default.t",
    transport: "poll",
    accounts: { eu: { token: "cli_eu.t" }, bare: {} },
  });
  assert.deepEqual(listAccountIds(c), ["default", "eu", "bare"]);
  const eu = resolveAccount(c, "eu");
  assert.equal(eu.token, "cli_eu.t");
  assert.equal(eu.transport, "poll");
  assert.equal(eu.serverUrl, "http://relay:9876");
  assert.equal(resolveAccount(c, "bare").configured, false);
  assert.equal(resolveAccount(c, "bare").token, "");
});

test("missing settings leave the account unconfigured", () => {
  assert.equal(resolveAccount({}, null).configured, false);
  assert.equal(resolveAccount(cfg({ serverUrl: "http://x" }), null).configured, false);
});

test("backoff grows exponentially to the cap, with bounded jitter", () => {
  const s = { baseDelayMs: 500, maxDelayMs: 30_000, jitter: 0 };
  assert.deepEqual([0, 1, 2, 3].map((n) => backoffDelay(s, n)), [500, 1000, 2000, 4000]);
  assert.equal(backoffDelay(s, 20), 30_000);
  const j = { ...s, jitter: 0.5 };
  assert.equal(backoffDelay(j, 1, () => 0), 500);
  assert.equal(backoffDelay(j, 1, () => 1), 1500);
  assert.ok(backoffDelay(j, 40, () => 1) <= 30_000);
});
