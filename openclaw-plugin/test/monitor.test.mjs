// Unit tests of the monitor: when a turn that delivered no text acks its delivery, and turns one at a time per message (node --test, on dist/).
import assert from "node:assert/strict";
import { test } from "node:test";
import { isInterimNotice, OneAtATime, silentByDesign } from "../dist/monitor.js";

test("a turn OpenClaw skipped (a redelivery it already took) does not ack", () => {
  assert.equal(silentByDesign({ queuedFinal: false, counts: { tool: 0, block: 0, final: 0 } }), false);
  assert.equal(silentByDesign(undefined), false);
});

test("a reply that is silent by design acks", () => {
  assert.equal(silentByDesign({ queuedFinal: false, counts: {}, deliberateSilentTerminalReply: true }), true);
  assert.equal(silentByDesign({ queuedFinal: false, counts: {}, sendPolicyDenied: true }), true);
  assert.equal(silentByDesign({ queuedFinal: false, counts: {}, beforeAgentRunBlocked: true }), true);
});

test("a turn that ran to its final reply acks even without text", () => {
  assert.equal(silentByDesign({ queuedFinal: true, counts: { final: 0 } }), true);
  assert.equal(silentByDesign({ queuedFinal: false, counts: { final: 1 } }), true);
});

test("OpenClaw's restart notice is an interim notice; its answers and terminal notices are not", () => {
  assert.equal(
    isInterimNotice(
      "I'm continuing your interrupted request now (the gateway has just restarted).  Don't be concerned with the lack of typing; I am working behind the scenes and I'll send a message when I'm done!",
    ),
    true,
  );
  assert.equal(isInterimNotice("echo: [slow] answer after my crash"), false);
  assert.equal(
    isInterimNotice("I couldn't continue this session after a gateway restart. Your transcript is safe."),
    false,
  );
});

test("a redelivery waits for the running turn of the same message, other messages do not", async () => {
  const turns = new OneAtATime();
  const events = [];
  let endFirst;
  const first = turns.run("msg_1", async () => {
    events.push("turn 1 starts");
    await new Promise((r) => (endFirst = r));
    events.push("turn 1 ends");
    throw new Error("the connection it came from is gone");
  });
  const redelivery = turns.run("msg_1", async () => {
    events.push("redelivery starts");
  });
  const other = turns.run("msg_2", async () => {
    events.push("other message starts");
  });
  await other;
  assert.deepEqual(events, ["turn 1 starts", "other message starts"]);
  assert.equal(turns.size, 1);
  endFirst();
  await assert.rejects(first);
  await redelivery;
  assert.deepEqual(events, ["turn 1 starts", "other message starts", "turn 1 ends", "redelivery starts"]);
  assert.equal(turns.size, 0, "finished keys are forgotten");
});

test("a running turn's claim is renewed at half of what is left, until the relay's cap or the end of the turn", async () => {
  const start = Date.now();
  const clock = () => Date.now() - start;
  const calls = [];
  // The relay renews to 900 ms from now, capped at 2000 ms from the claim.
  const renew = async () => {
    calls.push(clock());
    return { renewed: 1, leaseUntil: Math.min(clock() + 900, 2000) };
  };
  const stop = (await import("../dist/monitor.js")).keepClaimed(600, renew, clock);
  await new Promise((r) => setTimeout(r, 2600));
  stop();
  assert.ok(calls.length >= 2, `renewed ${calls.length} times`);
  assert.ok(calls[0] >= 250, "not before half of the first lease");
  // Once the cap stops the claim from moving, the renewals stop.
  const last = calls.length;
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(calls.length, last, "no renewal past the cap");
});

test("renewals stop when the relay holds nothing more, when stopped, and without a lease end", async () => {
  const { keepClaimed } = await import("../dist/monitor.js");
  let asked = 0;
  const gone = keepClaimed(Date.now() + 600, async () => (asked++, { renewed: 0, leaseUntil: null }));
  await new Promise((r) => setTimeout(r, 900));
  assert.equal(asked, 1, "one try, then nothing: the delivery was answered or moved");
  gone();
  let stoppedAsked = 0;
  const stop = keepClaimed(Date.now() + 600, async () => (stoppedAsked++, { renewed: 1, leaseUntil: Date.now() + 600 }));
  stop();
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(stoppedAsked, 0, "a stopped keeper renews nothing");
  let none = 0;
  keepClaimed(undefined, async () => (none++, { renewed: 1, leaseUntil: 1 }))();
  assert.equal(none, 0);
});

test("a stop aborts the running turn: OpenClaw's run is aborted, nothing is sent or acked", async () => {
  const { AccountMonitor } = await import("../dist/monitor.js");
  let signal;
  let started;
  const running = new Promise((resolve) => (started = resolve));
  const channel = {
    routing: { resolveAgentRoute: () => ({ sessionKey: "s", accountId: "default" }) },
    reply: {
      finalizeInboundContext: (x) => x,
      // As OpenClaw's dispatch: streams, then runs until its abort signal fires.
      dispatchReplyWithBufferedBlockDispatcher: async ({ replyOptions, dispatcherOptions }) => {
        signal = replyOptions.abortSignal;
        await replyOptions.onPartialReply({ text: "Once upon" });
        started();
        await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
        await dispatcherOptions.deliver({ text: "Once upon a time" }, { kind: "final" });
        return { queuedFinal: true, counts: { final: 1 } };
      },
    },
  };
  const quiet = { info() {}, warn() {}, error() {}, debug() {} };
  const ctx = {
    account: {
      accountId: "default",
      serverUrl: "http://127.0.0.1:9",
      token: "t",
      forward: { streaming: true, typing: false, toolProgress: false },
    },
    cfg: {},
    log: quiet,
    setStatus() {},
    getStatus: () => ({}),
    abortSignal: new AbortController().signal,
    channelRuntime: channel,
  };
  const monitor = new AccountMonitor(ctx, undefined);
  const calls = [];
  const sink = {
    send: async () => calls.push("send"),
    ack: async () => calls.push("ack"),
    renew: async () => ({ renewed: 1, leaseUntil: null }),
    delta: async (_m, _reply, text) => calls.push(`delta:${text}`),
  };
  const m = { id: "msg_1", conversationId: "conv_1", from: "alice", text: "a story", timestamp: 1, leaseUntil: Date.now() + 60_000 };
  const turn = monitor.handle(m, sink);
  await running;
  monitor.cancel({ conversationId: "conv_1", messageIds: ["msg_1"], replyId: "oc-msg_1" });
  await turn;
  assert.equal(signal.aborted, true, "OpenClaw's run got the abort");
  assert.deepEqual(calls, ["delta:Once upon"], "nothing sent or acked after the stop");

  // The same message again (it is not redelivered, but a late push must not run a turn).
  await monitor.handle(m, sink);
  assert.deepEqual(calls, ["delta:Once upon"]);
});
