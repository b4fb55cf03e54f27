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
