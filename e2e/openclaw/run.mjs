// End-to-end test of the clawrelay OpenClaw channel plugin against real
// OpenClaw gateways (see README, "End-to-end test with OpenClaw").
//
// Starts a relay, the fake model, and OpenClaw gateways with the plugin, then
// checks everything through the relay's own API:
//   1. users of one app each get their own answer, in order, over several turns;
//   2. streamed deltas and the final reply reach an app watching the live stream;
//   3. two gateways share the load, and killing one mid-turn loses no message;
//   4. the relay dies mid-turn and restarts: the plugin reconnects, the reply
//      finished meanwhile is stored, nothing is lost;
//   5. a proactive send from the OpenClaw CLI reaches the app user;
//   6. a model error reaches the user as an error reply and is not retried forever;
//   7. the only gateway is killed mid-answer and restarted: OpenClaw's restart
//      recovery answers once, and the delivery is acked only by that answer;
//   8. a user's image reaches the model (as OpenClaw media), and a file the
//      agent answers with reaches the app as an attachment, bytes unchanged;
//   9. the relay dies mid-turn and is back before the turn ends: the
//      redelivery on the new connection waits for the running turn and
//      stores its reply, once;
//  10. a turn longer than the lease is answered and delivered once;
//  11. the official `openai` npm package asks through /v1/chat/completions,
//      plainly and streamed, and gets the gateway's answers.
// Prints one line per check and "N passed, M failed"; exits non-zero on failure.
//
// Each gateway gets the plugin the way a user installs it: `openclaw plugins
// install` of the packed tarball.
//
// Usage: node run.mjs <clawrelay binary> <plugin dir> <plugin tarball>
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import zlib from "node:zlib";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const [relayBin, pluginDir, pluginTarball] = process.argv.slice(2).map((p) => path.resolve(p));
const openclawBin = path.join(pluginDir, "node_modules/openclaw/openclaw.mjs");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "clawrelay-e2e-"));
const ADMIN = "e2e-admin-token";
const GATEWAY_TOKEN = "e2e-gateway-token";
const children = new Set();
const results = [];
const roundTrips = [];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...a);

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts a process in its own process group, output to a log file. */
function start(name, cmd, args, env = {}) {
  const out = fs.openSync(path.join(work, `${name}.log`), "a");
  const child = spawn(cmd, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", out, out],
    detached: true,
  });
  child.name = name;
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

function kill(child, signal = "SIGKILL") {
  if (!child || child.exitCode !== null) return Promise.resolve();
  const exited = new Promise((r) => child.once("exit", r));
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
  return Promise.race([exited, sleep(15_000)]);
}

function tail(name, lines = 30) {
  try {
    return fs.readFileSync(path.join(work, `${name}.log`), "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function eventually(what, check, timeoutMs = 60_000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ---------------------------------------------------------------- the relay

const relay = { port: 0, base: "", child: undefined, db: path.join(work, "relay.db") };

async function startRelay({ leaseSecs = 120 } = {}) {
  const config = path.join(work, "relay.toml");
  fs.writeFileSync(
    config,
    [
      "[delivery]",
      `lease_secs = ${leaseSecs}`,
      "max_attempts = 3",
      "[clients]",
      "stale_after_secs = 3",
      "disconnected_after_secs = 8",
      "[tasks]",
      "maintenance_interval_secs = 1",
      "[ws]",
      "ping_interval_secs = 2",
      "idle_timeout_secs = 6",
      "",
    ].join("\n"),
  );
  relay.child = start("relay", relayBin, ["serve", "--config", config, "--port", String(relay.port), "--db", relay.db], {
    ADMIN_TOKEN: ADMIN,
    LOG_LEVEL: "info",
  });
  await eventually("the relay to answer /health", async () => (await fetch(`${relay.base}/health`)).ok, 30_000);
}

async function api(method, pathname, token, body) {
  const res = await fetch(`${relay.base}${pathname}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${method} ${pathname}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** A real w×h RGB PNG (so that any image decoder on the way accepts it). */
function makePng(w, h) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(w, 0);
  header.writeUInt32BE(h, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const rows = [];
  for (let y = 0; y < h; y++) {
    const row = Buffer.alloc(1 + w * 3);
    for (let x = 0; x < w; x++) row.set([(x * 255) / w, (y * 255) / h, 128], 1 + x * 3);
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", zlib.deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** Uploads `bytes` to the relay as `name`; answers the attachment. */
async function upload(token, bytes, name) {
  const res = await fetch(`${relay.base}/attachments?filename=${encodeURIComponent(name)}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
    body: bytes,
  });
  const json = await res.json();
  if (res.status !== 201) throw new Error(`upload: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function download(token, url) {
  const res = await fetch(`${relay.base}${url}`, { headers: { authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

async function clientState(clientId) {
  const { clients } = await api("GET", "/clients", ADMIN);
  return clients.find((c) => c.clientId === clientId)?.state;
}

/** The outbound messages of one conversation, oldest first. */
async function replies(conversationId) {
  const c = await api("GET", `/conversations/${conversationId}`, ADMIN);
  return c.messages.filter((m) => m.direction === "outbound");
}

/** Waits until the delivery of inbound message `m` is leased: its turn has begun. */
async function turnInProgress(m) {
  await eventually(
    `the turn of "${m.text}" to be in progress`,
    async () => (await api("GET", `/deliveries?state=leased&conversationId=${m.conversationId}`, ADMIN)).deliveries.length === 1,
    60_000,
  );
}

/** Posts a user message and waits for the reply in its conversation. */
async function ask(appToken, from, text, timeoutMs = 60_000) {
  const m = await api("POST", "/inbound", appToken, { from, text });
  const reply = await eventually(
    `a reply to "${text}" from ${from}`,
    async () => (await replies(m.conversationId)).find((r) => r.timestamp >= m.timestamp),
    timeoutMs,
  );
  return { inbound: m, reply };
}

// ---------------------------------------------------------------- gateways

async function startGateway(name, clientToken, modelPort) {
  const home = path.join(work, name);
  const port = await freePort();
  fs.mkdirSync(path.join(home, ".openclaw"), { recursive: true });
  fs.mkdirSync(path.join(home, "workspace"), { recursive: true });
  const config = {
    gateway: {
      mode: "local",
      bind: "loopback",
      port,
      auth: { mode: "token", token: GATEWAY_TOKEN },
      controlUi: { enabled: false },
    },
    session: { dmScope: "per-channel-peer" },
    models: {
      mode: "merge",
      providers: {
        fake: {
          baseUrl: `http://127.0.0.1:${modelPort}/v1`,
          apiKey: "fake",
          api: "openai-completions",
          models: [
            {
              id: "fake",
              name: "fake",
              reasoning: false,
              input: ["text", "image"],
              cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
              contextWindow: 128000,
              maxTokens: 4096,
            },
          ],
        },
      },
    },
    agents: { defaults: { model: { primary: "fake/fake" }, workspace: path.join(home, "workspace") } },
    plugins: { slots: { memory: "none" } },
    cron: { enabled: false },
  };
  const file = path.join(home, ".openclaw", "openclaw.json");
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  const env = gatewayEnv(home);
  const gateway = { name, home, port, env, child: undefined };

  // Installed as a user would; the channel block is accepted once it is.
  const install = await runCli(gateway, ["plugins", "install", "--force", "--accept-capabilities", pluginTarball]);
  if (install.code !== 0) throw new Error(`openclaw plugins install failed (${install.code}): ${install.out.slice(-800)}`);
  const installed = JSON.parse(fs.readFileSync(file, "utf8"));
  installed.plugins = { ...installed.plugins, allow: ["clawrelay"], entries: { ...installed.plugins?.entries, clawrelay: { enabled: true } } };
  installed.channels = {
    clawrelay: {
      serverUrl: relay.base,
      token: clientToken,
      reconnect: { baseDelayMs: 300, maxDelayMs: 3000, jitter: 0.2 },
    },
  };
  fs.writeFileSync(file, JSON.stringify(installed, null, 2));
  gateway.child = start(name, process.execPath, [openclawBin, "gateway", "run", "--verbose"], env);
  return gateway;
}

function gatewayEnv(home) {
  return {
    HOME: home,
    OPENCLAW_DISABLE_BONJOUR: "1",
    OPENCLAW_NO_RESPAWN: "1",
    OPENCLAW_EXEC_SHELL_SNAPSHOT: "0",
    OPENCLAW_SKIP_CANVAS_HOST: "1",
  };
}

function runCli(gateway, args, timeoutMs = 120_000) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [openclawBin, ...args], {
      env: { ...process.env, ...gateway.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** An app's live stream over WebSocket, collecting events. */
function watchApp(appToken) {
  const events = [];
  const ws = new WebSocket(`${relay.base.replace(/^http/, "ws")}/ws`);
  const ready = new Promise((resolve, reject) => {
    ws.onopen = () => ws.send(JSON.stringify({ type: "req", id: 1, method: "connect", params: { role: "app", token: appToken } }));
    ws.onerror = () => reject(new Error("app socket failed"));
    ws.onmessage = (e) => {
      const f = JSON.parse(e.data);
      if (f.type === "res" && f.id === 1) (f.ok ? resolve() : reject(new Error(JSON.stringify(f.error))));
      if (f.type === "event") events.push(f);
    };
  });
  return { events, ready, close: () => ws.close() };
}

// ---------------------------------------------------------------- checks

/** `E2E_ONLY=8,2` runs only those checks (while working on them). */
const only = process.env.E2E_ONLY ? process.env.E2E_ONLY.split(",") : undefined;

async function check(name, f) {
  if (only && !only.includes(name.split(".")[0])) return;
  const started = Date.now();
  try {
    await f();
    results.push({ name, ok: true });
    log(`ok - ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push({ name, ok: false, error: e.message });
    log(`not ok - ${name}: ${e.message}`);
  }
}

function recordRoundTrip(inbound, reply) {
  roundTrips.push(reply.timestamp - inbound.timestamp);
}

async function main() {
  log(`work dir ${work}`);
  relay.port = await freePort();
  relay.base = `http://127.0.0.1:${relay.port}`;

  const model = start("model", process.execPath, [path.join(path.dirname(new URL(import.meta.url).pathname), "fake-model.mjs"), "0"]);
  const modelPort = await eventually("the fake model", async () => {
    const m = fs.readFileSync(path.join(work, "model.log"), "utf8").match(/listening (\d+)/);
    return m ? Number(m[1]) : undefined;
  });
  await startRelay();

  const gw1Client = await api("POST", "/clients", ADMIN, { name: "gateway-1" });
  const gw2Client = await api("POST", "/clients", ADMIN, { name: "gateway-2" });
  const web = (await api("POST", "/apps", ADMIN, { name: "e2e-web" })).token;

  log("starting gateway-1");
  const gw1 = await startGateway("gateway-1", gw1Client.token, modelPort);
  await eventually("gateway-1 to connect to the relay", async () => (await clientState(gw1Client.clientId)) === "connected", 180_000, 500);
  log("gateway-1 connected");

  const conversations = {};

  await check("1. each user gets their own answer, in order, over several turns", async () => {
    const users = ["ana", "ben", "cleo"];
    await Promise.all(
      users.map(async (user) => {
        for (let turn = 1; turn <= 3; turn++) {
          const text = `turn ${turn} from ${user}`;
          const { inbound, reply } = await ask(web, user, text, 90_000);
          assert(reply.text === `echo: ${text}`, `${user} got "${reply.text}" for "${text}"`);
          assert(reply.to === user, `a reply for ${user} went to ${reply.to}`);
          conversations[user] ??= inbound.conversationId;
          assert(inbound.conversationId === conversations[user], `${user} changed conversation`);
          if (turn > 1) recordRoundTrip(inbound, reply);
        }
      }),
    );
    for (const user of users) {
      const all = (await api("GET", `/conversations/${conversations[user]}`, ADMIN)).messages.map((m) => m.text);
      const expected = [1, 2, 3].flatMap((t) => [`turn ${t} from ${user}`, `echo: turn ${t} from ${user}`]);
      assert(JSON.stringify(all) === JSON.stringify(expected), `${user}'s history is ${JSON.stringify(all)}`);
    }
  });

  await check("2. streamed deltas, then the final reply, reach an app watching live", async () => {
    const watcher = watchApp(web);
    await watcher.ready;
    const text = "[stream] write this slowly please";
    const { reply } = await ask(web, "dora", text);
    await eventually("the final message event", () => watcher.events.some((e) => e.event === "message" && e.payload.message.id === reply.id), 10_000);
    watcher.close();
    const deltas = watcher.events.filter((e) => e.event === "reply.delta");
    assert(deltas.length >= 2, `only ${deltas.length} reply.delta events`);
    assert(deltas.every((d) => d.payload.replyId === reply.replyId), "deltas carry another replyId than the final reply");
    const joined = deltas.map((d) => d.payload.text).join("");
    assert(joined === reply.text, `deltas spell "${joined}", the reply is "${reply.text}"`);
    const finalIndex = watcher.events.findIndex((e) => e.event === "message" && e.payload.message.id === reply.id);
    const lastDelta = watcher.events.lastIndexOf(deltas[deltas.length - 1]);
    assert(finalIndex > lastDelta, "the final message came before the last delta");
    const finals = watcher.events.filter((e) => e.event === "message" && e.payload.message.replyId === reply.replyId);
    assert(finals.length === 1, `the final reply came ${finals.length} times`);
  });

  await check("12. Stop: the running turn is aborted (its model request too), what was streamed is kept, the next message is answered", async () => {
    const watcher = watchApp(web);
    await watcher.ready;
    const m = await api("POST", "/inbound", web, { from: "sol", text: "[slow] tell me a very long story" });
    const pieces = () => watcher.events.filter((e) => e.event === "reply.delta" && e.payload.conversationId === m.conversationId);
    await eventually("two streamed pieces of the slow answer", () => pieces().length >= 2, 60_000);
    const stopped = await api("POST", `/conversations/${m.conversationId}/stop`, web, {});
    assert(stopped.stopped === true && stopped.cancelled.length === 1 && stopped.cancelled[0] === m.id, `stop answered ${JSON.stringify(stopped)}`);
    const kept = stopped.message;
    assert(kept && kept.stopped === true, `no stopped reply stored: ${JSON.stringify(stopped)}`);
    assert(kept.text.length > 0 && `echo: ${m.text}`.startsWith(kept.text), `the stopped reply is "${kept.text}"`);
    await eventually(
      "the model's request to be aborted",
      async () => {
        const stats = await (await fetch(`http://127.0.0.1:${modelPort}/stats`)).json();
        return stats.abortedTexts.includes(m.text);
      },
      20_000,
    );
    // Long enough for a full answer (one piece a second) had the turn gone on.
    await sleep(4000);
    watcher.close();
    const all = await replies(m.conversationId);
    assert(all.length === 1 && all[0].id === kept.id, `replies after the stop: ${JSON.stringify(all.map((r) => r.text))}`);
    const seen = pieces().map((e) => e.payload.text).join("");
    assert(seen === kept.text, `the app saw "${seen}", the relay kept "${kept.text}"`);
    const d = (await api("GET", `/deliveries?conversationId=${m.conversationId}`, ADMIN)).deliveries.find((x) => x.messageId === m.id);
    assert(d.state === "acked" && d.attempts === 1, `the stopped delivery is ${d.state}, ${d.attempts} attempts`);
    const next = await api("POST", "/inbound", web, { from: "sol", text: "a short one then" });
    const answer = await eventually(
      "the answer to the message after the stop",
      async () => (await replies(m.conversationId)).find((r) => r.text === `echo: ${next.text}`),
      60_000,
    );
    assert(!answer.stopped, "the next answer is marked stopped");
  });

  await check("11. an openai SDK request goes through the relay to the gateway and back", async () => {
    // The official npm package (run.sh installs it into .cache/openai/node).
    const sdk = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../.cache/openai/node/node_modules/openai/index.mjs");
    const { default: OpenAI } = await import(sdk);
    const client = new OpenAI({ baseURL: `${relay.base}/v1`, apiKey: web });
    const plain = await client.chat.completions.create({
      model: "clawrelay",
      user: "olga",
      messages: [{ role: "user", content: "hello through the door" }],
    });
    const answer = plain.choices[0].message.content;
    assert(answer === "echo: hello through the door", `the answer is "${answer}"`);
    // Streamed, continuing the same conversation (the last answer names it).
    const pieces = [];
    const stream = await client.chat.completions.create({
      model: "gateway-1",
      user: "olga",
      stream: true,
      messages: [
        { role: "user", content: "hello through the door" },
        { role: "assistant", content: answer },
        { role: "user", content: "[stream] and once more, slowly" },
      ],
    });
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content;
      if (piece) pieces.push(piece);
    }
    const joined = pieces.join("");
    assert(joined === "echo: [stream] and once more, slowly", `streamed "${joined}" in ${pieces.length} pieces`);
    const olga = (await api("GET", "/conversations?userId=olga", web)).conversations;
    assert(olga.length === 1, `olga has ${olga.length} conversations`);
    const texts = (await api("GET", `/conversations/${olga[0].id}`, ADMIN)).messages.map((m) => m.text);
    const expected = ["hello through the door", answer, "[stream] and once more, slowly", joined];
    assert(JSON.stringify(texts) === JSON.stringify(expected), `the history is ${JSON.stringify(texts)}`);
  });

  await check("5. a proactive send from the OpenClaw CLI reaches the app user", async () => {
    const conv = conversations.ana;
    const text = `proactive note ${Date.now()}`;
    const r = await runCli(gw1, ["message", "send", "--channel", "clawrelay", "--target", conv, "-m", text]);
    assert(r.code === 0, `openclaw message send exited ${r.code}: ${r.out.slice(-500)}`);
    const out = await api("GET", "/outbox?after=0&limit=1000", web);
    const found = out.messages.find((m) => m.text === text);
    assert(found, "the proactive message is not in the app's outbox");
    assert(found.to === "ana" && found.conversationId === conv, `it went to ${found.to} in ${found.conversationId}`);
    const status = await runCli(gw1, ["channels", "status"]);
    assert(/clawrelay default:.*connected/.test(status.out), `channels status says: ${status.out.slice(-300)}`);
  });

  await check("8. a user's image reaches the model; the agent's file reaches the app, bytes unchanged", async () => {
    const image = makePng(64, 48);
    const up = await upload(web, image, "photo.png");
    assert(up.mime === "image/png", `the relay sniffed ${up.mime}`);
    const text = "what is in this picture?";
    const m = await api("POST", "/inbound", web, { from: "gus", text, attachments: [up.attachmentId] });
    const answer = await eventually(
      "the answer to the picture",
      async () => (await replies(m.conversationId)).find((r) => r.timestamp >= m.timestamp),
      90_000,
    );
    assert(answer.text === `echo: ${text}`, `answered "${answer.text}"`);
    const seen = (await (await fetch(`http://127.0.0.1:${modelPort}/stats`)).json()).images;
    const same = seen.find((i) => i.sha256 === sha256(image));
    log(`images the model saw: ${JSON.stringify(seen)}`);
    assert(seen.length > 0, "the model was shown no image");
    assert(same, `the model saw other bytes than the user's image (${sha256(image)})`);
    assert(same.mime === "image/png", `the model was told the image is ${same.mime}`);

    // The agent answers with a file (a MEDIA: line of the model's reply).
    const dir = path.join(gw1.home, ".openclaw", "media", "e2e");
    fs.mkdirSync(dir, { recursive: true });
    const report = path.join(dir, "report.txt");
    const content = Buffer.from(`quarterly numbers ${Date.now()}\nalpha,1\nbeta,2\n`);
    fs.writeFileSync(report, content);
    const ask2 = await api("POST", "/inbound", web, { from: "gus", text: `[file] ${report}` });
    const withFile = await eventually(
      "the reply carrying the file",
      async () => (await replies(ask2.conversationId)).find((r) => r.timestamp >= ask2.timestamp && r.attachments?.length),
      90_000,
    );
    const a = withFile.attachments[0];
    assert(a.name === "report.txt" && a.mime === "text/plain", `attachment ${JSON.stringify(a)}`);
    assert(a.sha256 === sha256(content), "the relay stored other bytes than the file");
    const bytes = await download(web, a.url);
    assert(bytes.equals(content), "the app downloaded other bytes than the agent's file");
    assert(!withFile.text.includes("MEDIA:"), `the MEDIA: line reached the user: ${withFile.text}`);
    const outbox = await api("GET", "/outbox?after=0&limit=1000", web);
    assert(outbox.messages.some((x) => x.id === withFile.id && x.attachments?.[0]?.id === a.id), "the reply is not in the outbox with its attachment");

    // A proactive send of a file from the OpenClaw CLI (outbound.sendMedia).
    const r = await runCli(gw1, ["message", "send", "--channel", "clawrelay", "--target", ask2.conversationId, "--media", report, "-m", "the report again"]);
    assert(r.code === 0, `openclaw message send --media exited ${r.code}: ${r.out.slice(-500)}`);
    const again = (await api("GET", "/outbox?after=0&limit=1000", web)).messages.find((x) => x.text === "the report again");
    assert(again?.attachments?.[0]?.sha256 === sha256(content), `the proactive file did not arrive: ${JSON.stringify(again)}`);
  });

  await check("4. the relay dies mid-turn and restarts: the plugin reconnects, the finished reply is stored, nothing is lost", async () => {
    // A turn in progress when the relay dies, which ends while it is down:
    // its reply cannot be stored then, and OpenClaw skips the redelivery.
    const before = await api("POST", "/inbound", web, { from: "eli", text: "[slow] just before the restart" });
    await turnInProgress(before);
    await kill(relay.child, "SIGKILL");
    log("relay killed mid-turn");
    await sleep(9000);
    await startRelay();
    log("relay restarted");
    const after = await api("POST", "/inbound", web, { from: "eli", text: "just after the restart" });
    for (const m of [before, after]) {
      const reply = await eventually(
        `the answer to "${m.text}"`,
        async () => (await replies(m.conversationId)).find((r) => r.text === `echo: ${m.text}`),
        90_000,
      );
      assert(reply.to === "eli", "answered to someone else");
    }
    const all = await replies(before.conversationId);
    for (const m of [before, after]) {
      const n = all.filter((r) => r.text === `echo: ${m.text}`).length;
      assert(n === 1, `"${m.text}" was answered ${n} times`);
    }
    assert((await clientState(gw1Client.clientId)) === "connected", "gateway-1 is not connected again");
  });

  await check("9. the relay dies mid-turn and is back before the turn ends: the reply is stored once, at once", async () => {
    // The turn outlives the outage: the plugin reconnects and the relay
    // delivers the message again while its first turn still runs. That turn
    // cannot answer on the connection it came from; the redelivery must send
    // its reply, rather than leave it to the lease (120 s here) or OpenClaw's
    // restart recovery (minutes).
    const m = await api("POST", "/inbound", web, { from: "jay", text: "[slow] a turn that outlives a short outage of the relay" });
    await turnInProgress(m);
    await kill(relay.child, "SIGKILL");
    log("relay killed mid-turn, restarting it at once");
    await startRelay();
    const reply = await eventually(
      `the answer to "${m.text}"`,
      async () => (await replies(m.conversationId)).find((r) => r.text === `echo: ${m.text}`),
      45_000,
    );
    assert(reply.to === "jay", "answered to someone else");
    await sleep(2000);
    const n = (await replies(m.conversationId)).filter((r) => r.text === reply.text).length;
    assert(n === 1, `answered ${n} times`);
    const d = (await api("GET", `/deliveries?conversationId=${m.conversationId}`, ADMIN)).deliveries.find((x) => x.messageId === m.id);
    assert(d.state === "acked", `the delivery is ${d.state}`);
    assert(d.attempts >= 2, `delivered ${d.attempts} times: the relay was back only after the turn ended`);
  });

  await check("6. a model error reaches the user as an error reply, once, and is not retried forever", async () => {
    const { inbound, reply } = await ask(web, "fay", "[fail] this will break", 200_000);
    assert(reply.text.trim().length > 0, "empty error reply");
    assert(!reply.text.startsWith("echo:"), `an ordinary answer: ${reply.text}`);
    const d = await api("GET", `/deliveries?conversationId=${inbound.conversationId}`, ADMIN);
    const delivery = d.deliveries.find((x) => x.messageId === inbound.id);
    assert(delivery.state === "acked", `the delivery is ${delivery.state}`);
    assert(delivery.attempts === 1, `it was delivered ${delivery.attempts} times`);
    log(`error reply: ${JSON.stringify(reply.text.slice(0, 120))}`);
  });

  await check("7. the only gateway dies mid-answer and restarts: one answer, acked only by it", async () => {
    const slow = await api("POST", "/inbound", web, { from: "ivy", text: "[slow] answer after my crash" });
    await turnInProgress(slow);
    await sleep(3000);
    log("killing gateway-1 mid-answer, then starting it again");
    await kill(gw1.child, "SIGKILL");
    gw1.child = start(gw1.name, process.execPath, [openclawBin, "gateway", "run", "--verbose"], gw1.env);
    // The fake model answers "echo: <last user text>"; the recovery's own
    // notice ("I'm continuing your interrupted request…") is not an answer.
    const isAnswer = (r) => r.text.startsWith("echo:");
    const answer = await eventually(
      "the answer from OpenClaw's restart recovery",
      async () => (await replies(slow.conversationId)).find(isAnswer),
      300_000,
      1000,
    );
    await sleep(3000);
    const all = await replies(slow.conversationId);
    const answers = all.filter(isAnswer);
    assert(answers.length === 1, `${answers.length} answers: ${JSON.stringify(answers.map((r) => r.text))}`);
    log(`replies in that conversation: ${JSON.stringify(all.map((r) => r.text.slice(0, 60)))}`);
    const delivery = await eventually(
      "the delivery to be acked",
      async () => {
        const d = (await api("GET", `/deliveries?conversationId=${slow.conversationId}`, ADMIN)).deliveries.find((x) => x.messageId === slow.id);
        return d.state === "acked" ? d : undefined;
      },
      30_000,
    );
    assert(delivery.attempts >= 2, `delivered ${delivery.attempts} times: the kill did not interrupt the turn`);
    assert(delivery.updatedAt >= answer.timestamp, `acked at ${delivery.updatedAt}, before the answer was stored at ${answer.timestamp}`);
    await eventually("gateway-1 to be connected again", async () => (await clientState(gw1Client.clientId)) === "connected", 60_000, 500);
  });

  log("starting gateway-2");
  const gw2 = await startGateway("gateway-2", gw2Client.token, modelPort);
  await eventually("gateway-2 to connect", async () => (await clientState(gw2Client.clientId)) === "connected", 180_000, 500);
  log("gateway-2 connected");

  await check("3. two gateways share the load; killing one mid-turn loses no message", async () => {
    const users = ["g1", "g2", "g3", "g4", "g5", "g6"];
    const asked = await Promise.all(users.map((u) => ask(web, u, `hello from ${u}`, 120_000)));
    const holders = new Set(asked.map((a) => a.reply.clientId));
    assert(holders.has(gw1Client.clientId) && holders.has(gw2Client.clientId), `only ${[...holders]} answered`);
    for (const a of asked) assert(a.reply.text === `echo: hello from ${a.inbound.from}`, `wrong answer ${a.reply.text}`);

    // A slow turn; kill the gateway working on it.
    const slow = await api("POST", "/inbound", web, { from: "hal", text: "[slow] take your time" });
    const owner = slow.clientId;
    await turnInProgress(slow);
    await sleep(2000);
    const victim = owner === gw1Client.clientId ? gw1 : gw2;
    const survivor = owner === gw1Client.clientId ? gw2Client.clientId : gw1Client.clientId;
    log(`killing ${victim.name} mid-turn`);
    await kill(victim.child, "SIGKILL");
    const reply = await eventually(
      "the slow message to be answered by the other gateway",
      async () => (await replies(slow.conversationId)).find((r) => r.text === `echo: ${slow.text}`),
      120_000,
      500,
    );
    assert(reply.clientId === survivor, `answered by ${reply.clientId}, expected ${survivor}`);
    const n = (await replies(slow.conversationId)).length;
    assert(n === 1, `${n} replies to the slow message`);
  });

  await check("10. a turn longer than the lease, working silently, is answered once and never delivered again", async () => {
    // Leases of 4 s; the fake model says nothing for 15 s. The plugin keeps
    // the claim alive while OpenClaw works (POST /renew through its socket).
    await kill(relay.child, "SIGTERM");
    await startRelay({ leaseSecs: 4 });
    log("relay restarted with 4 s leases");
    const gateways = [gw1Client.clientId, gw2Client.clientId];
    await eventually(
      "a gateway to connect again",
      async () => {
        for (const id of gateways) if ((await clientState(id)) === "connected") return true;
        return false;
      },
      60_000,
    );
    const m = await api("POST", "/inbound", web, { from: "kim", text: "[late] a long think" });
    const reply = await eventually(
      `the answer to "${m.text}"`,
      async () => (await replies(m.conversationId)).find((r) => r.text === `echo: ${m.text}`),
      90_000,
    );
    assert(reply.to === "kim", "answered to someone else");
    await sleep(2000);
    const n = (await replies(m.conversationId)).filter((r) => r.text === reply.text).length;
    assert(n === 1, `answered ${n} times`);
    const d = (await api("GET", `/deliveries?conversationId=${m.conversationId}`, ADMIN)).deliveries.find((x) => x.messageId === m.id);
    assert(d.state === "acked", `the delivery is ${d.state}`);
    assert(d.attempts === 1, `delivered ${d.attempts} times in a turn of four leases`);
  });

  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  if (roundTrips.length) {
    const sorted = [...roundTrips].sort((a, b) => a - b);
    const p = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    log(`round trip relay in → reply out (warm turns, ${sorted.length}): min ${sorted[0]} ms, p50 ${p(0.5)} ms, max ${sorted[sorted.length - 1]} ms`);
  }
  if (failed) {
    for (const name of ["relay", "gateway-1", "gateway-2", "model"]) {
      console.log(`----- last lines of ${name}.log\n${tail(name)}`);
    }
    // Last, so that a CI log cut to its tail still names what failed and why.
    for (const r of results.filter((x) => !x.ok)) console.log(`not ok - ${r.name}: ${r.error}`);
  }
  console.log(`openclaw-e2e: ${passed} passed, ${failed} failed`);
  return failed === 0 && passed === (only ? only.length : 12);
}

let ok = false;
try {
  ok = await main();
} catch (e) {
  for (const name of ["relay", "gateway-1", "gateway-2", "model"]) console.log(`----- last lines of ${name}.log\n${tail(name)}`);
  log(`aborted: ${e.stack ?? e}`);
} finally {
  await Promise.all([...children].map((c) => kill(c)));
}
if (ok && !process.env.KEEP_E2E_DIR) fs.rmSync(work, { recursive: true, force: true });
process.exit(ok ? 0 : 1);
