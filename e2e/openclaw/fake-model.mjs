// A tiny OpenAI-compatible model for end-to-end tests, on loopback.
//
// POST /v1/chat/completions answers `echo: <user text>`, deterministically.
// The user's text picks a mode:
//   contains "[stream]" → the answer comes in several chunks, 300 ms apart;
//   contains "[slow]"   → chunks 1 s apart for ~20 s (time to kill a gateway mid-turn);
//   contains "[late]"   → nothing for 15 s, then the whole answer (a turn that
//                          works silently: a long tool call);
//   contains "[fail]"   → HTTP 500, every time;
//   is "[file] <path>"  → "here is your file" and a `MEDIA:<path>` line, which
//                          OpenClaw turns into a media reply.
// Every image the model is shown (an `image_url` part) is recorded in /stats
// as {mime, sha256, size}: what reached the model, for the tests to check.
// A streamed answer whose request the caller closed before its end is
// counted in /stats as `aborted` (with the user text in `abortedTexts`).
// OpenClaw sends the user's turn as "[<timestamp>] <text>\n\nRuntime: …".
//
// Usage: node fake-model.mjs <port>   (prints "listening <port>" when ready)
import { createHash } from "node:crypto";
import http from "node:http";

const port = Number(process.argv[2] ?? 0);
const stats = { requests: 0, failures: 0, images: [], aborted: 0, abortedTexts: [] };

/** Records the images of a request (data: URLs of `image_url` parts). */
function recordImages(body) {
  for (const m of Array.isArray(body.messages) ? body.messages : []) {
    if (!Array.isArray(m.content)) continue;
    for (const part of m.content) {
      const url = part?.type === "image_url" ? (typeof part.image_url === "string" ? part.image_url : part.image_url?.url) : undefined;
      const match = typeof url === "string" ? url.match(/^data:([^;,]+);base64,(.*)$/s) : null;
      if (!match) continue;
      const bytes = Buffer.from(match[2], "base64");
      const sha256 = createHash("sha256").update(bytes).digest("hex");
      if (!stats.images.some((i) => i.sha256 === sha256)) stats.images.push({ mime: match[1], sha256, size: bytes.length });
    }
  }
}

function userText(body) {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.role !== "user") continue;
    const content = typeof m.content === "string"
      ? m.content
      : Array.isArray(m.content) ? m.content.map((p) => p.text ?? "").join("\n\n") : "";
    if (content.startsWith("<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>")) continue;
    // OpenClaw's notes of the turn's media, then a timestamp, then the text.
    return content
      .replace(/^\s*\[[^\]]*\d:\d\d[^\]]*\]\s*/, "")
      .replace(/\[media attached[^\n]*\]\s*/g, "")
      .split(/\n*Runtime:/)[0]
      .trim();
  }
  return "";
}

function chunk(id, content, finish) {
  return `data: ${JSON.stringify({
    id, object: "chat.completion.chunk", created: Math.floor(Date.now() / 1000), model: "fake",
    choices: [{ index: 0, delta: content === null ? {} : { role: "assistant", content }, finish_reason: finish }],
  })}\n\n`;
}

const wait = (ms) => new Promise((r) => setTimeout(r, ms));

const server = http.createServer(async (req, res) => {
  if (req.method === "GET" && req.url === "/stats") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify(stats));
  }
  if (req.method === "GET" && req.url?.startsWith("/v1/models")) {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({ object: "list", data: [{ id: "fake", object: "model" }] }));
  }
  if (req.method !== "POST" || !req.url?.startsWith("/v1/chat/completions")) {
    res.writeHead(404);
    return res.end();
  }
  let raw = "";
  for await (const part of req) raw += part;
  const body = JSON.parse(raw || "{}");
  stats.requests += 1;
  recordImages(body);
  const text = userText(body);
  if (text.includes("[fail]")) {
    stats.failures += 1;
    res.writeHead(500, { "content-type": "application/json" });
    return res.end(JSON.stringify({ error: { message: "the fake model fails on purpose", type: "server_error" } }));
  }
  const file = text.match(/^\[file\]\s+(\S+)$/);
  const answer = file ? `here is your file\n\nMEDIA:${file[1]}` : `echo: ${text}`;
  const id = `chatcmpl-${stats.requests}`;
  if (!body.stream) {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({
      id, object: "chat.completion", created: Math.floor(Date.now() / 1000), model: "fake",
      choices: [{ index: 0, message: { role: "assistant", content: answer }, finish_reason: "stop" }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    }));
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
  res.on("close", () => {
    if (!res.writableFinished) {
      stats.aborted += 1;
      stats.abortedTexts.push(text);
    }
  });
  if (text.includes("[late]")) await wait(15_000);
  const slow = text.includes("[slow]");
  const streamed = slow || text.includes("[stream]");
  const pieces = streamed ? answer.match(/.{1,6}/gs) ?? [answer] : [answer];
  const gap = slow ? 1000 : streamed ? 300 : 0;
  for (const piece of pieces) {
    if (res.destroyed) return;
    res.write(chunk(id, piece, null));
    if (gap) await wait(gap);
  }
  res.write(chunk(id, null, "stop"));
  res.write("data: [DONE]\n\n");
  res.end();
});

server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
