// The official `openai` npm package against the relay's /v1/chat/completions
// and /v1/models (run by tests/api/openai.rs: the relay and a scripted agent
// are running). Prints one JSON object of what it saw; exits non-zero, naming
// the check, when one fails.
import OpenAI from "openai";

const base = process.env.RELAY + "/v1";
const app = new OpenAI({ baseURL: base, apiKey: process.env.APP_TOKEN });
const seen = {};

function check(ok, what) {
  if (!ok) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
}

async function raises(kind, call, what) {
  try {
    await call();
  } catch (e) {
    check(e instanceof kind, `${what}: expected ${kind.name}, got ${e.constructor.name}: ${e.message}`);
    return e;
  }
  check(false, `${what}: expected ${kind.name}, nothing was raised`);
}

const user = (content) => ({ role: "user", content });

const models = (await app.models.list()).data.map((m) => m.id);
check(models.includes("clawrelay") && models.includes(process.env.AGENT_NAME), `models ${models}`);

const plain = await app.chat.completions.create({
  model: "clawrelay",
  user: "js-plain",
  messages: [user("hello from node")],
});
check(plain.choices[0].message.content === "echo: hello from node", `plain ${plain.choices[0].message.content}`);

const pieces = [];
const times = [];
let last;
const stream = await app.chat.completions.create({
  model: "clawrelay",
  user: "js-stream",
  messages: [user("stream: node")],
  stream: true,
});
for await (const chunk of stream) {
  last = chunk;
  const piece = chunk.choices[0]?.delta?.content;
  if (piece) {
    pieces.push(piece);
    times.push(performance.now());
  }
}
check(last?.choices[0]?.finish_reason === "stop", "the last chunk says stop");
check(pieces.length >= 4, `streamed in pieces: ${JSON.stringify(pieces)}`);
check(times.at(-1) - times[0] >= 600, `pieces spread over ${times.at(-1) - times[0]} ms`);
seen.streamed = pieces.join("");

await raises(
  OpenAI.AuthenticationError,
  () =>
    new OpenAI({ baseURL: base, apiKey: "app_nobody.wrong" }).chat.completions.create({
      model: "clawrelay",
      user: "js-err",
      messages: [user("x")],
    }),
  "a wrong token",
);
const missing = await raises(
  OpenAI.BadRequestError,
  () => app.chat.completions.create({ model: "clawrelay", messages: [user("x")] }),
  "no user",
);
check(missing.param === "user", `the missing field is named: ${missing.param}`);
const tools = await raises(
  OpenAI.BadRequestError,
  () =>
    app.chat.completions.create({
      model: "clawrelay",
      user: "js-err",
      messages: [user("x")],
      tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }],
    }),
  "tools",
);
check(tools.param === "tools", `tools named: ${tools.param}`);

console.log(JSON.stringify(seen));
