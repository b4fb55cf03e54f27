"""The official `openai` Python package against the relay's
/v1/chat/completions and /v1/models (run by tests/api/openai.rs, which starts
the relay and a scripted agent; see there for what the agent answers).
Prints one JSON object of what it saw for the Rust side to check against the
store; exits non-zero, naming the check, when one fails here."""

import base64
import hashlib
import json
import os
import sys
import threading
import time

import openai
from openai import OpenAI

BASE = os.environ["RELAY"] + "/v1"
APP = os.environ["APP_TOKEN"]
OTHER_APP = os.environ["OTHER_APP_TOKEN"]
SESSION = os.environ["SESSION_TOKEN"]
SESSION_USER = os.environ["SESSION_USER"]
AGENT = os.environ["AGENT_NAME"]
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

seen = {}


def check(ok, what):
    if not ok:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def raises(kind, call, what):
    try:
        call()
    except kind as e:
        return e
    except Exception as e:  # noqa: BLE001
        check(False, f"{what}: expected {kind.__name__}, got {type(e).__name__}: {e}")
    check(False, f"{what}: expected {kind.__name__}, nothing was raised")


app = OpenAI(base_url=BASE, api_key=APP)


def ask(messages, user, client=app, **kw):
    return client.chat.completions.create(model="clawrelay", user=user, messages=messages, **kw)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# The models: any agent, and the agent by name.
models = [m.id for m in app.models.list()]
check("clawrelay" in models and AGENT in models, f"models listed: {models}")

# A plain completion.
r = ask([user("hello")], "py-plain")
check(r.object == "chat.completion", f"object {r.object}")
check(r.choices[0].message.content == "echo: hello", f"plain answer {r.choices[0].message.content!r}")
check(r.choices[0].finish_reason == "stop", "finish_reason")
# The agent by name.
r = app.chat.completions.create(model=AGENT, user="py-named", messages=[user("by name")])
check(r.choices[0].message.content == "echo: by name", "answer of the agent named")

# A streamed one: pieces as the agent writes them.
pieces, times, last = [], [], None
for chunk in ask([user("stream: a story")], "py-stream", stream=True):
    last = chunk
    check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
        times.append(time.monotonic())
check(last is not None and last.choices[0].finish_reason == "stop", "the last chunk says stop")
check(len(pieces) >= 4, f"streamed in pieces: {pieces}")
# The agent pauses 250 ms between pieces: they came as it wrote them.
check(times[-1] - times[0] >= 0.6, f"pieces spread over {times[-1] - times[0]:.3f} s")
seen["streamed"] = "".join(pieces)

# Two parallel chats of one user stay apart.
results = {}


def chat(name):
    first = ask([user(f"{name}1")], "py-par")
    second = ask(
        [user(f"{name}1"), assistant(first.choices[0].message.content), user(f"{name}2")],
        "py-par",
    )
    results[name] = (first.choices[0].message.content, second.choices[0].message.content)


threads = [threading.Thread(target=chat, args=(n,)) for n in ("A", "B")]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(results.get("A") == ("echo: A1", "echo: A2"), f"chat A {results.get('A')}")
check(results.get("B") == ("echo: B1", "echo: B2"), f"chat B {results.get('B')}")

# The conversation a request went to comes back in a header, and naming it
# continues it.
raw = app.chat.completions.with_raw_response.create(
    model="clawrelay", user="py-par", messages=[user("C1")]
)
conversation = raw.headers.get("x-clawrelay-conversation")
check(conversation and conversation.startswith("conv_"), f"conversation header {conversation}")
r = ask([user("C2")], "py-par", extra_headers={"X-Clawrelay-Conversation": conversation})
check(r.choices[0].message.content == "echo: C2", "named conversation continued")
seen["named_conversation"] = conversation

# Another app's user of the same name, and another session's user, see
# nothing of py-par's: the same history does not continue its conversation,
# and naming it is "not found".
other = OpenAI(base_url=BASE, api_key=OTHER_APP)
raw = other.chat.completions.with_raw_response.create(
    model="clawrelay", user="py-par", messages=[user("A1"), assistant("echo: A1"), user("A3")]
)
seen["other_app_conversation"] = raw.headers.get("x-clawrelay-conversation")
check(raw.parse().choices[0].message.content == "echo: A3", "the other app's answer")
raises(
    openai.NotFoundError,
    lambda: ask([user("x")], "py-par", client=other, extra_headers={"X-Clawrelay-Conversation": conversation}),
    "another app naming the conversation",
)
session = OpenAI(base_url=BASE, api_key=SESSION)
raw = session.chat.completions.with_raw_response.create(
    model="clawrelay", messages=[user("A1"), assistant("echo: A1"), user("A4")]
)
seen["session_conversation"] = raw.headers.get("x-clawrelay-conversation")
check(raw.parse().choices[0].message.content == "echo: A4", "the session's answer")
raises(
    openai.NotFoundError,
    lambda: session.chat.completions.create(
        model="clawrelay", messages=[user("x")], extra_headers={"X-Clawrelay-Conversation": conversation}
    ),
    "a session naming another user's conversation",
)
raises(
    openai.PermissionDeniedError,
    lambda: session.chat.completions.create(model="clawrelay", user="py-par", messages=[user("x")]),
    "a session speaking as another user",
)

# A client that goes away mid-stream loses nothing: the same request with
# the same key joins the answer from its start, then reads it stored; the
# agent answers once.
key = {"Idempotency-Key": "py-drop-1"}
hold = [user("hold: the long one")]
stream = ask(hold, "py-drop", stream=True, extra_headers=key)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        break
stream.close()
rejoined = "".join(
    c.choices[0].delta.content or ""
    for c in ask(hold, "py-drop", stream=True, extra_headers=key)
    if c.choices
)
stored = ask(hold, "py-drop", extra_headers=key).choices[0].message.content
check(rejoined == stored, f"rejoined stream {rejoined!r} is the stored answer {stored!r}")
seen["dropped"] = stored

# Errors come as the SDK's own exception types.
raises(
    openai.AuthenticationError,
    lambda: ask([user("x")], "py-err", client=OpenAI(base_url=BASE, api_key="app_nobody.wrong")),
    "a wrong token",
)
e = raises(
    openai.BadRequestError,
    lambda: app.chat.completions.create(model="clawrelay", messages=[user("x")]),
    "no `user` with an app token",
)
check(e.body.get("param") == "user", f"the missing field is named: {e.body}")
e = raises(
    openai.BadRequestError,
    lambda: ask(
        [user("x")],
        "py-err",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    ),
    "tools",
)
check(e.body.get("param") == "tools", f"tools named: {e.body}")
e = raises(
    openai.BadRequestError,
    lambda: ask(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}],
        "py-err",
    ),
    "a remote image",
)
check("data:" in e.message, f"the remote image refusal says what to do: {e.message}")
raises(
    openai.NotFoundError,
    lambda: app.chat.completions.create(model="no-such-agent", user="py-err", messages=[user("x")]),
    "an unknown model",
)
limited = OpenAI(base_url=BASE, api_key=APP, max_retries=0)


def flood():
    for i in range(20):
        ask([user(f"n{i}")], "py-limited", client=limited)


e = raises(openai.RateLimitError, flood, "a user over the rate limit")
check(e.response.headers.get("retry-after"), "429 says when to retry")

# Harmless parameters are accepted.
r = ask([user("params")], "py-params", temperature=0.2, max_tokens=50, stop=["\n\n"], top_p=0.9)
check(r.choices[0].message.content == "echo: params", "harmless parameters")

# An image part reaches the agent as an attachment with the same bytes.
r = ask(
    [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
            ],
        }
    ],
    "py-image",
)
check(
    r.choices[0].message.content == "sha256:" + hashlib.sha256(PNG).hexdigest(),
    f"the agent saw the image's bytes: {r.choices[0].message.content}",
)

print(json.dumps(seen))
