"""The web chat page in a real browser (Debian's Chromium, driven by
Playwright) against the real relay binary and a scripted agent.

The agent is a WebSocket client of the relay's agent role: for every
delivery it sends `typing`, a `progress` event, then its reply in pieces as
`reply.delta` events, and finally the whole reply with `send`. What it
replies depends on the user's text (see `Agent.reply_to`). A delivery with
attachments is answered with a file: the agent downloads the user's files,
and uploads a receipt naming their sizes and hashes.

Run by e2e/webchat/run.sh:  python test_webchat.py RELAY_BINARY WORK_DIR
Screenshots of the main states go to WORK_DIR/shots/ (kept when a test fails).
"""

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import zlib

import websockets
from playwright.sync_api import sync_playwright, expect

ADMIN = "e2e-admin"
XSS = '<img src=x onerror=alert(1)> and <a href="javascript:alert(2)">click</a> [me](javascript:alert(3))'
# As the page shows it: the raw HTML as the characters typed, the
# `javascript:` link as its text alone.
XSS_SHOWN = '<img src=x onerror=alert(1)> and <a href="javascript:alert(2)">click</a> me'
STREAMED = "Once upon a time, a relay carried every word, in order, and lost none of them."
MARKDOWN = """# Release notes

Here is what **changed** in ~~1.0~~ 1.1:

- faster claims
- [x] tested on PostgreSQL
- see https://example.com/notes

| area | before | after |
|---|---|---|
| claim p99 | 3.5 ms | 1.3 ms |

```rust
fn main() {
    println!("<not a tag>");
}
```

> Read the [full notes](https://example.com/full "Full notes") or `cargo doc`."""

# Script and markup payloads in Markdown's own constructs (links, reference
# links, autolinks, images, code, HTML blocks, entities, URL tricks,
# lookalikes), after OWASP's XSS filter evasion cheat sheet and the chat
# widgets' advisories. None may run, fetch or add markup.
XSS_CORPUS = "\n\n".join([
    "<script>alert('block')</script>",
    "<img src=x onerror=alert('img')>",
    "<svg/onload=alert('svg')>",
    "<iframe src=\"javascript:alert('iframe')\"></iframe>",
    "<a href=\"javascript:alert('a')\">raw link</a>",
    "<details open ontoggle=alert('details')>",
    "<div style=\"background:url(javascript:alert('css'))\">styled</div>",
    "<!-- comment --><b onmouseover=alert('b')>bold</b>",
    "[plain](javascript:alert('plain'))",
    "[case](JaVaScRiPt:alert('case'))",
    "[space]( javascript:alert('space'))",
    "[tab](java\tscript:alert('tab'))",
    "[entity](javascript&#58;alert('entity'))",
    "[hexentity](&#x6A;avascript:alert('hex'))",
    "[newline](java\nscript:alert('nl'))",
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgnZGF0YScpPC9zY3JpcHQ+)",
    "[vb](vbscript:msgbox('vb'))",
    "[ref][r1]\n\n[r1]: javascript:alert('ref')",
    "<javascript:alert('autolink')>",
    "![img](javascript:alert('image'))",
    "![remote](https://tracker.example/pixel.png)",
    "![data](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "[title](https://example.com \"\\\" onmouseover=alert('title') x=\\\"\")",
    "`<script>alert('code')</script>`",
    "```html\n<script>alert('fence')</script>\n```",
    "&lt;script&gt;alert('entities')&lt;/script&gt;",
    "[lookalike](ｊａｖａｓｃｒｉｐｔ:alert('fullwidth'))",
    "<math><mi xlink:href=\"javascript:alert('math')\">x</mi></math>",
    "<form action=\"javascript:alert('form')\"><button>go</button></form>",
    "<base href=\"https://evil.example/\">",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert('meta')\">",
])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Relay:
    """The relay binary on a temp database; can be killed and started again."""

    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = os.path.join(work, "relay.db")
        self.config = os.path.join(work, "relay.toml")
        with open(self.config, "w") as f:
            f.write(
                "[webchat]\nenabled = true\ntitle = \"Acme support\"\n"
                "[conversations]\nttl_secs = 6\n"
                "[tasks]\nmaintenance_interval_secs = 1\n"
                "[rate_limits]\nfailed_auth_per_min = 50\nuser_per_sec = 0\n"
            )
        self.proc = None
        self.log = open(os.path.join(work, "relay.log"), "ab")

    def start(self):
        env = dict(os.environ, ADMIN_TOKEN=ADMIN, LOG_LEVEL="warn")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config, "--db", self.db, "--port", str(self.port)],
            env=env, stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/ready", timeout=1).read()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("the relay did not become ready")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def api(self, method, path, body=None, token=ADMIN):
        req = urllib.request.Request(self.base + path, method=method)
        req.add_header("Authorization", "Bearer " + token)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, data, timeout=10) as r:
            raw = r.read()
            return json.loads(raw) if raw else None

    def cli(self, *args, stdin=None):
        out = subprocess.run(
            [self.binary, *args, "--config", self.config, "--db", self.db],
            input=stdin, capture_output=True, text=True, timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"clawrelay {args}: {out.stderr}")
        return out.stdout


class Agent(threading.Thread):
    """A scripted agent over the relay's WebSocket; reconnects when dropped."""

    def __init__(self, relay, token):
        super().__init__(daemon=True)
        self.relay, self.token = relay, token
        self.received = []  # texts of deliveries, in order
        self.files = []  # sha256 of every attachment downloaded
        self.cancelled = set()  # ids of messages whose turn the user stopped
        self.stop = False

    def http(self, method, path, data=None, headers=None):
        req = urllib.request.Request(self.relay.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def receipt(self, attachments):
        """Downloads the user's files; uploads a receipt; answers its id."""
        lines = []
        for a in attachments:
            data = self.http("GET", a["url"])
            digest = hashlib.sha256(data).hexdigest()
            assert digest == a["sha256"], f"{a['name']} arrived changed"
            self.files.append(digest)
            lines.append(f"{a['name']} {len(data)} {digest}")
        body = ("\n".join(lines) + "\n").encode()
        up = json.loads(self.http("POST", "/attachments?filename=receipt.txt", body,
                                  {"Content-Type": "text/plain"}))
        return up["attachmentId"]

    @staticmethod
    def reply_to(text):
        if text.startswith("xss corpus streamed"):
            return XSS_CORPUS, 0.01
        if text.startswith("xss corpus"):
            return XSS_CORPUS, 0.0
        if text.startswith("xss"):
            return XSS, 0.0
        if text.startswith("markdown"):
            return MARKDOWN, 0.05
        if text.startswith("think"):
            return "Thought it over: " + STREAMED, 0.1
        if text.startswith("slow"):
            return "Slowly: " + STREAMED, 0.35
        if text.startswith("stop me"):
            return "A long answer, told slowly. " + " ".join([STREAMED] * 4), 0.4
        return "You said: " + text + ". " + STREAMED, 0.12

    def run(self):
        asyncio.run(self.main())

    async def main(self):
        while not self.stop:
            try:
                await self.session()
            except Exception:
                await asyncio.sleep(0.3)

    async def session(self):
        url = f"ws://127.0.0.1:{self.relay.port}/ws"
        async with websockets.connect(url, open_timeout=5) as ws:
            n = 0

            async def request(method, params):
                nonlocal n
                n += 1
                await ws.send(json.dumps({"type": "req", "id": n, "method": method, "params": params}))

            await request("connect", {"role": "agent", "token": self.token, "maxInFlight": 4})
            turns = set()
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") != "event":
                    continue
                if frame.get("event") == "cancel":
                    # Stopped by the user: the turn ends at its next piece.
                    self.cancelled.update(frame["payload"]["messageIds"])
                    continue
                if frame.get("event") != "message":
                    continue
                m = frame["payload"]
                self.received.append(m["text"])
                # Each turn on its own, so that a cancel is read while it runs.
                task = asyncio.create_task(self.turn(m, request))
                turns.add(task)
                task.add_done_callback(turns.discard)

    async def turn(self, m, request):
        try:
            await self.answer(m, request)
        except websockets.ConnectionClosed:
            pass  # the relay went away mid-turn: the delivery comes again

    async def answer(self, m, request):
        if m["text"].startswith("bulk "):
            # History filler (test_history_by_page): taken, not answered.
            await request("ack", {"ids": [m["id"]]})
            return
        conv = m["conversationId"]
        reply, pause = self.reply_to(m["text"])
        files = []
        if m.get("attachments"):
            files = [await asyncio.to_thread(self.receipt, m["attachments"])]
            reply, pause = "Got your files, here is a receipt.", 0.0
        reply_id = "r-" + m["id"]
        await request("typing", {"conversationId": conv})
        await asyncio.sleep(0.3)
        await request("progress", {"conversationId": conv, "kind": "tool_start", "data": {"name": "search"}})
        # "think ...": the tool runs a while (test_activity_is_visible looks
        # at the activity bubble before the reply ends it).
        await asyncio.sleep(4.0 if m["text"].startswith("think") else 0.3)
        words = reply.split(" ")
        if pause:
            for i in range(0, len(words), 3):
                if m["id"] in self.cancelled:
                    return
                piece = " ".join(words[i:i + 3]) + ("" if i + 3 >= len(words) else " ")
                await request("reply.delta", {"conversationId": conv, "replyId": reply_id, "text": piece})
                await asyncio.sleep(pause)
        if m["id"] in self.cancelled:
            return
        await request("send", {"conversationId": conv, "to": m["from"], "text": reply,
                                "replyId": reply_id, "attachments": files})


# ---- helpers -------------------------------------------------------------

SHOTS = None


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=False)


def login(page, base, name, password, keyboard=False):
    page.goto(base + "/chat")
    expect(page.locator("#login")).to_be_visible()
    if keyboard:
        page.locator("#name").focus()
        page.keyboard.type(name)
        page.keyboard.press("Tab")
        page.keyboard.type(password)
        page.keyboard.press("Enter")
    else:
        page.fill("#name", name)
        page.fill("#password", password)
        page.click("#login-button")


def send(page, text):
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")


def bubbles(page):
    """(direction, text, id) of every message shown."""
    return page.eval_on_selector_all(
        "#messages li.msg",
        "els => els.map(e => [e.classList.contains('inbound') ? 'in' : 'out',"
        " e.querySelector('.body').textContent.trim(), e.dataset.id || null,"
        " e.classList.contains('streaming')])",
    )


def visible_bubbles(page):
    """(direction, text) of the messages of the conversation shown."""
    return [tuple(b) for b in page.eval_on_selector_all(
        "#messages li.msg:not([hidden])",
        "els => els.map(e => [e.classList.contains('inbound') ? 'in' : 'out',"
        " e.querySelector('.body').textContent.trim()])")]


def wait_settled(page, reply, timeout=20):
    """Waits until `reply` is shown as a stored (not streaming) message."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for d, text, mid, streaming in bubbles(page):
            if d == "out" and text.strip() == reply.strip() and mid and not streaming:
                return
        time.sleep(0.05)
    raise AssertionError(f"reply never settled: {reply!r}; shown: {bubbles(page)}")


def assert_no_duplicates(page):
    ids = [b[2] for b in bubbles(page) if b[2]]
    assert len(ids) == len(set(ids)), f"a message is shown twice: {bubbles(page)}"


# ---- the tests -----------------------------------------------------------

def test_wrong_password(ctx, relay):
    page = ctx["browser"].new_page()
    login(page, relay.base, "alice", "not her password")
    expect(page.locator("#login-error")).to_have_text("Wrong name or password.")
    expect(page.locator("#chat")).to_be_hidden()
    shot(page, "login-wrong-password")
    page.close()


def test_streamed_reply_settles_once_and_history_survives_reload(ctx, relay):
    page = ctx["alice"]
    login(page, relay.base, "alice", ctx["alice_password"], keyboard=True)
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#who")).to_have_text("alice")
    shot(page, "chat-empty")
    send(page, "hello there")
    reply = "You said: hello there. " + STREAMED
    # Watch the reply being written: it must grow piece by piece.
    seen, deadline = [], time.time() + 20
    while time.time() < deadline:
        # (As text: white space at the end is the rendered form's, seen once
        # in CI as the reply settled; what grows is the words.)
        partial = page.eval_on_selector_all("#messages li.streaming .body", "els => els.map(e => e.textContent.trimEnd())")
        if partial and (not seen or partial[0] != seen[-1]):
            seen.append(partial[0])
        if any(b[1] == reply and b[2] for b in bubbles(page)):
            break
        time.sleep(0.03)
    assert len(seen) >= 3, f"the reply did not stream: {seen}"
    assert all(reply.startswith(p) for p in seen), seen
    assert all(len(a) < len(b) for a, b in zip(seen, seen[1:])), seen
    wait_settled(page, reply)
    shot(page, "chat-streamed")
    time.sleep(0.5)
    shown = bubbles(page)
    assert [(d, t) for d, t, _, _ in shown] == [("in", "hello there"), ("out", reply)], shown
    assert page.locator("#messages li.streaming").count() == 0

    page.reload()
    expect(page.locator("#chat")).to_be_visible()
    wait_settled(page, reply)
    assert [(d, t) for d, t, _, _ in bubbles(page)] == [("in", "hello there"), ("out", reply)]
    assert_no_duplicates(page)


def test_typing_and_progress_are_shown(ctx, relay):
    page = ctx["alice"]
    # Each notice shows for a moment only (the next event replaces it), so
    # record every text #activity shows rather than poll for it.
    page.evaluate(
        "() => { window.activitySeen = []; new MutationObserver(() => {"
        " const a = document.getElementById('activity');"
        " if (!a.hidden && a.textContent) window.activitySeen.push(a.textContent); })"
        ".observe(document.getElementById('activity'), {childList: true, characterData: true, subtree: true, attributes: true}); }")
    send(page, "what is up")
    page.wait_for_function(
        "() => ['The agent is typing…', 'Using search…'].every(t => window.activitySeen.includes(t))",
        timeout=10000)
    seen = page.evaluate("() => window.activitySeen")
    assert seen.index("The agent is typing…") < seen.index("Using search…"), seen
    wait_settled(page, "You said: what is up. " + STREAMED)


def make_png(w, h):
    """A real w×h RGB PNG."""
    def chunk(kind, data):
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    rows = b"".join(b"\0" + b"".join(bytes((x * 2 % 256, y * 3 % 256, 160)) for x in range(w)) for y in range(h))
    header = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_files_travel_both_ways(ctx, relay):
    page = ctx["alice"]
    image = make_png(120, 80)
    path = os.path.join(relay.work, "photo.png")
    with open(path, "wb") as f:
        f.write(image)
    page.set_input_files("#file", path)
    expect(page.locator("#picked li")).to_have_count(1)
    expect(page.locator("#picked li")).to_contain_text("photo.png")
    send(page, "here is a photo")
    expect(page.locator("#picked")).to_be_hidden()
    digest = hashlib.sha256(image).hexdigest()
    deadline = time.time() + 20
    while digest not in ctx["agent"].files and time.time() < deadline:
        time.sleep(0.05)
    assert digest in ctx["agent"].files, "the agent never got the photo's bytes"
    # The photo shows in Alice's message, decoded from the relay's bytes.
    page.wait_for_function(
        "() => { const i = [...document.querySelectorAll('li.msg.inbound .files img')].pop();"
        " return i && i.complete && i.naturalWidth === 120 }", timeout=10000)
    wait_settled(page, "Got your files, here is a receipt.")
    link = page.locator("li.msg.outbound .files a").last
    expect(link).to_contain_text("receipt.txt")
    with page.expect_download() as download:
        link.click()
    with open(download.value.path(), "rb") as f:
        got = f.read().decode()
    assert got == f"photo.png {len(image)} {digest}\n", got
    shot(page, "chat-attachments")
    # After a reload the files come back with the history.
    page.reload()
    wait_settled(page, "Got your files, here is a receipt.")
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.msg.inbound .files img')].some(i => i.naturalWidth === 120)",
        timeout=10000)
    expect(page.locator("li.msg.outbound .files a").last).to_contain_text("receipt.txt")
    assert_no_duplicates(page)


def test_relay_restart_mid_conversation(ctx, relay):
    page = ctx["alice"]
    before = len(bubbles(page))
    send(page, "slow story please")
    # Wait until the reply is being written, then kill the relay.
    expect(page.locator("#messages li.streaming")).to_have_count(1, timeout=15000)
    relay.kill()
    expect(page.locator("#status")).to_contain_text("Reconnecting", timeout=15000)
    # A message sent while the relay is down fails and offers a retry.
    send(page, "sent while down")
    expect(page.locator("#messages li.failed")).to_have_count(1, timeout=15000)
    shot(page, "relay-down")
    relay.start()
    page.locator("#messages li.failed .retry").click()
    expect(page.locator("#status")).to_be_hidden(timeout=20000)
    slow = "Slowly: " + STREAMED
    wait_settled(page, slow, timeout=40)
    wait_settled(page, "You said: sent while down. " + STREAMED, timeout=40)
    time.sleep(1)
    shot(page, "relay-recovered")
    texts = [t for _, t, _, _ in bubbles(page)]
    assert texts.count("slow story please") == 1, texts
    assert texts.count("sent while down") == 1, texts
    assert texts.count(slow) == 1, texts
    assert page.locator("#messages li.failed").count() == 0
    assert_no_duplicates(page)
    # And the page agrees with a fresh load of the history (which has the
    # reply where it was stored; the live page kept it where it began).
    page.reload()
    wait_settled(page, slow)
    time.sleep(0.5)
    reloaded = [t for _, t, _, _ in bubbles(page)]
    assert sorted(reloaded) == sorted(texts), (texts, reloaded)
    assert len(texts) == before + 4


def test_users_never_see_each_other(ctx, relay):
    bob = ctx["bob"]
    login(bob, relay.base, "bob", ctx["bob_password"])
    expect(bob.locator("#chat")).to_be_visible()
    send(bob, "bob's secret")
    wait_settled(bob, "You said: bob's secret. " + STREAMED)
    alice = ctx["alice"]
    send(alice, "alice again")
    wait_settled(alice, "You said: alice again. " + STREAMED)
    time.sleep(1)
    bob_texts = " ".join(t for _, t, _, _ in bubbles(bob))
    alice_texts = " ".join(t for _, t, _, _ in bubbles(alice))
    assert "alice" not in bob_texts and "hello there" not in bob_texts, bob_texts
    assert "bob's secret" not in alice_texts, alice_texts
    shot(bob, "bob")


def test_agent_markup_renders_inert(ctx, relay):
    page = ctx["alice"]
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    send(page, "xss please")
    wait_settled(page, XSS_SHOWN)
    time.sleep(1)
    # No image from text; no link but to the web.
    assert page.locator("#messages .body img").count() == 0
    hrefs = page.eval_on_selector_all("#messages .body a", "els => els.map(e => e.getAttribute('href'))")
    assert all(h.startswith(("http:", "https:", "mailto:")) for h in hrefs), hrefs
    assert page.locator("#messages img").count() == page.locator("#messages .files img").count()
    assert page.locator("#messages a").count() == page.locator("#messages .files a").count()
    assert page.locator("#messages script").count() == 0
    assert dialogs == [], dialogs
    shot(page, "xss-inert")


ALLOWED = {
    "P", "BR", "HR", "H1", "H2", "H3", "H4", "H5", "H6", "STRONG", "EM", "DEL", "CODE", "PRE",
    "BLOCKQUOTE", "UL", "OL", "LI", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "A", "INPUT",
    # the page's own: the code bar
    "DIV", "SPAN", "BUTTON",
}
ALLOWED_ATTRS = {"href", "title", "target", "rel", "start", "data-lang", "type", "checked", "disabled", "class"}


def test_xss_corpus_stays_inert(ctx, relay):
    """The corpus as a stored reply and as a streamed one: no dialog, no
    element or attribute outside the allow-list, links to the web only,
    and no request to any host but the relay."""
    context = ctx["browser"].new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs, hosts = [], set()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: hosts.add(r.url.split("/")[2] if "://" in r.url else r.url.split(":")[0]))
    login(page, relay.base, "alice", ctx["alice_password"])
    expect(page.locator("#chat")).to_be_visible()
    for ask in ("xss corpus", "xss corpus streamed"):
        send(page, ask)
        deadline = time.time() + 30
        while True:
            done = page.eval_on_selector_all(
                "#messages li.msg.outbound.md", "els => els.length")
            if done >= (1 if ask == "xss corpus" else 2):
                break
            assert time.time() < deadline, f"the corpus reply never settled: {bubbles(page)[-2:]}"
            time.sleep(0.1)
    time.sleep(1)
    found = page.eval_on_selector_all(
        "#messages li.msg .body *",
        "els => els.map(e => [e.tagName, Array.from(e.attributes).map(a => [a.name, a.value])])")
    for tag, attrs in found:
        assert tag in ALLOWED, f"element {tag} {attrs} is not allowed"
        for name, value in attrs:
            assert name in ALLOWED_ATTRS, f"attribute {name}={value!r} on {tag}"
            if name == "href":
                assert value.startswith(("http:", "https:", "mailto:")), value
    scripts = page.eval_on_selector_all("#messages script, #messages iframe, #messages img:not(.files img)",
                                        "els => els.length")
    assert scripts == 0
    assert dialogs == [], dialogs
    relay_host = relay.base.split("/")[2]
    assert hosts <= {relay_host, "blob", "data"}, hosts
    shot(page, "xss-corpus")
    context.close()


def test_markdown_reads_as_written(ctx, relay):
    """A reply with a heading, a list, a table, a code block and links:
    formatted once it settles, the code block with its language and a copy
    button that copies it; links open in a new tab without a referrer.
    Desktop light and phone dark."""
    for name, options in (("desktop-light", {"viewport": {"width": 1280, "height": 900}, "color_scheme": "light"}),
                          ("phone-dark", {"viewport": {"width": 390, "height": 844}, "color_scheme": "dark",
                                          "device_scale_factor": 2, "is_mobile": True, "has_touch": True})):
        context = ctx["browser"].new_context(**options)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=relay.base)
        page = context.new_page()
        login(page, relay.base, "alice", ctx["alice_password"])
        expect(page.locator("#chat")).to_be_visible()
        send(page, f"markdown on the {name}")
        reply = page.locator("#messages li.msg.outbound.md").last
        expect(reply.locator("h1")).to_have_text("Release notes", timeout=20000)
        expect(reply.locator("del")).to_have_text("1.0")
        expect(reply.locator("ul li")).to_have_count(3)
        expect(reply.locator("input[type=checkbox][checked]")).to_have_count(1)
        expect(reply.locator("table th")).to_have_count(3)
        expect(reply.locator("table td").first).to_have_text("claim p99")
        code = reply.locator("pre code[data-lang=rust]")
        expect(code).to_contain_text('println!("<not a tag>");')
        expect(reply.locator(".codebar span")).to_have_text("rust")
        family = code.evaluate("e => getComputedStyle(e).fontFamily")
        assert "mono" in family.lower() or "consolas" in family.lower(), family
        # Highlighted by class: a keyword and a string coloured apart from
        # the code's own colour (the CSP forbids inline styles).
        keyword = code.locator("span.hl-kw").first
        expect(keyword).to_have_text("fn")
        string = code.locator("span.hl-str").first
        colours = {e.evaluate("e => getComputedStyle(e).color") for e in (code, keyword, string)}
        assert len(colours) == 3, colours
        assert code.locator("[style]").count() == 0
        links = reply.locator("a")
        expect(links).to_have_count(2)
        for i in range(2):
            assert links.nth(i).get_attribute("target") == "_blank"
            assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
        assert links.nth(0).get_attribute("href") == "https://example.com/notes"
        assert links.nth(1).get_attribute("href") == "https://example.com/full"
        page.bring_to_front()  # the clipboard answers the focused page only
        reply.locator(".codebar .copy").click()
        expect(reply.locator(".codebar .copy")).to_have_text("Copied")
        copied = page.evaluate("navigator.clipboard.readText()")
        assert 'println!("<not a tag>");' in copied, copied
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= options["viewport"]["width"], f"the page scrolls sideways: {width}"
        reply.scroll_into_view_if_needed()
        shot(page, f"markdown-{name}")
        context.close()


def test_times_copy_drop_and_icon(ctx, relay):
    """Times read relative with the exact time on hover; an agent's message
    has a copy button that copies its text as written; a file dropped on the
    chat is attached; the page has its icon."""
    context = ctx["browser"].new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=relay.base)
    page = context.new_page()
    icons = []
    page.on("response", lambda r: icons.append(r.status) if r.url.endswith("/favicon.svg") else None)
    login(page, relay.base, "alice", ctx["alice_password"])
    expect(page.locator("#chat")).to_be_visible()
    href = page.eval_on_selector("link[rel=icon]", "e => e.href")
    assert href.endswith("/chat/favicon.svg"), href
    assert page.request.get(href).status == 200
    send(page, "markdown to copy")
    reply = page.locator("#messages li.msg.outbound.md").last
    expect(reply.locator("h1")).to_have_text("Release notes", timeout=20000)
    when = reply.locator(".meta time")
    expect(when).to_have_text("just now")
    title = when.get_attribute("title")
    assert title and any(ch.isdigit() for ch in title), title
    page.bring_to_front()  # the clipboard answers the focused page only
    reply.locator(".meta .copy-msg").click()
    expect(reply.locator(".meta .copy-msg")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN
    # A file dropped on the chat joins the files to send.
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
        const chat = document.getElementById("chat");
        chat.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
        chat.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    expect(page.locator("#picked li")).to_contain_text("dropped.txt")
    shot(page, "dropped-file")
    context.close()


def test_parallel_conversations(ctx, relay):
    """A user keeps several conversations: New conversation starts one beside
    the other, the list shows both (title, date), each shows its own
    messages, and a message goes to the conversation shown. Desktop, and
    the list as a drawer on a phone."""
    context = ctx["browser"].new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    login(page, relay.base, "erin", ctx["erin_password"])
    expect(page.locator("#chat")).to_be_visible()
    first = "You said: first topic. " + STREAMED
    send(page, "first topic")
    wait_settled(page, first)
    expect(page.locator("#conv-list li")).to_have_count(1)
    page.click("#new-conv")
    expect(page.locator("#conv-list li")).to_have_count(2)
    assert visible_bubbles(page) == [], visible_bubbles(page)
    send(page, "second topic")
    wait_settled(page, "You said: second topic. " + STREAMED)
    assert [t for _, t in visible_bubbles(page)] == ["second topic", "You said: second topic. " + STREAMED]
    titles = page.locator("#conv-list .conv-title")
    expect(titles).to_have_text(["second topic", "first topic"])
    shot(page, "conversations-desktop")
    # Back to the first: its messages only, and a message goes there.
    page.locator("#conv-list button").filter(has_text="first topic").click()
    assert [t for _, t in visible_bubbles(page)] == ["first topic", first]
    send(page, "more on the first")
    wait_settled(page, "You said: more on the first. " + STREAMED)
    shown = [t for _, t in visible_bubbles(page)]
    assert shown[:2] == ["first topic", first] and "more on the first" in shown, shown
    listed = relay.api("GET", "/conversations?userId=erin")["conversations"]
    by_title = {c["title"]: c for c in listed}
    assert by_title["first topic"]["messageCount"] == 4, listed
    assert by_title["second topic"]["messageCount"] == 2, listed
    context.close()

    phone = ctx["browser"].new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                       device_scale_factor=2, is_mobile=True, has_touch=True)
    page = phone.new_page()
    login(page, relay.base, "erin", ctx["erin_password"])
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#convs")).to_be_hidden()
    # Opened at once, before the list has loaded: the drawer stays open
    # while the list comes in.
    page.click("#convs-toggle")
    expect(page.locator("#convs")).to_be_visible()
    expect(page.locator("#conv-list li")).to_have_count(2)
    time.sleep(0.5)
    expect(page.locator("#convs")).to_be_visible()
    shot(page, "conversations-phone-drawer")
    page.locator("#conv-list button").filter(has_text="second topic").click()
    expect(page.locator("#convs")).to_be_hidden()
    # Its history is read when it is first shown.
    expect(page.locator("#messages li.msg:not([hidden]) .body").first).to_have_text("second topic")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}"
    shot(page, "conversations-phone")
    phone.close()


def axe_violations(page):
    """axe-core's serious and critical violations on the page as it is."""
    with open(os.environ["AXE"]) as f:
        page.evaluate(f.read())
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def test_accessible(ctx, relay):
    """axe-core finds no serious or critical violation on the login page and
    the chat (with a conversation list, a formatted reply and a code
    block), light and dark, desktop and phone."""
    found = []
    for scheme in ("light", "dark"):
        for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
            # axe is injected by the test: the page's own CSP would refuse it.
            context = ctx["browser"].new_context(viewport=viewport, color_scheme=scheme, bypass_csp=True)
            page = context.new_page()
            page.goto(relay.base + "/chat")
            expect(page.locator("#login")).to_be_visible()
            found += [(scheme, name, "login", v) for v in axe_violations(page)]
            login(page, relay.base, "erin", ctx["erin_password"])
            expect(page.locator("#chat")).to_be_visible()
            expect(page.locator("#conv-list li").first).to_be_visible() if name == "desktop" else None
            # The page opens on the most recently active conversation.
            wait_settled(page, "You said: more on the first. " + STREAMED)
            found += [(scheme, name, "chat", v) for v in axe_violations(page)]
            if name == "phone":
                page.click("#convs-toggle")
                expect(page.locator("#convs")).to_be_visible()
                time.sleep(0.3)
                found += [(scheme, name, "drawer", v) for v in axe_violations(page)]
            context.close()
    assert not found, "\n".join(f"{s} {n} {where}: {v['id']} ({v['impact']}) {v['help']} at {v['nodes']}"
                                for s, n, where, v in found)


def test_chinese_and_the_language_switch(ctx, relay):
    """A browser asking for Chinese gets the page in Simplified Chinese; the
    switch turns it to English and the choice is remembered; agents' and
    users' words are never translated. Desktop and phone."""
    for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
        context = ctx["browser"].new_context(viewport=viewport, locale="zh-CN")
        page = context.new_page()
        page.goto(relay.base + "/chat")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page.locator("#login h2")).to_have_text("登录")
        expect(page.locator("label[for=password]")).to_have_text("密码")
        if name == "desktop":
            shot(page, "zh-login")
        login(page, relay.base, "erin", ctx["erin_password"])
        expect(page.locator("#chat")).to_be_visible()
        expect(page.locator("#text")).to_have_attribute("placeholder", "输入消息")
        expect(page.locator("#send")).to_have_text("发送")
        if name == "desktop":
            # A conversation of its own, listed first: erin's earlier ones
            # may not have expired yet (ttl_secs = 6), and a message would
            # join the one the page opened on.
            expect(page.locator("#conv-list li").first).to_be_visible()
            page.click("#new-conv")
            expect(page.locator("#messages li.msg:not([hidden])")).to_have_count(0)
        send(page, "你好，我想申请退款")
        wait_settled(page, "You said: 你好，我想申请退款. " + STREAMED)
        expect(page.locator("#messages li.msg.outbound .meta time").last).to_have_text("刚刚")
        if name == "desktop":
            expect(page.locator("#new-conv")).to_have_text("新对话")
            expect(page.locator("#conv-list .conv-title").first).to_have_text("你好，我想申请退款")
        shot(page, f"zh-chat-{name}")
        if name == "desktop":
            page.select_option("#lang", "en")
            expect(page.locator("#send")).to_have_text("Send")
            expect(page.locator("html")).to_have_attribute("lang", "en")
            page.reload()
            expect(page.locator("#chat")).to_be_visible()
            expect(page.locator("#send")).to_have_text("Send")
            expect(page.locator("#new-conv")).to_have_text("New conversation")
        context.close()


def test_new_conversation_after_expiry(ctx, relay):
    page = ctx["alice"]
    # [conversations] ttl_secs = 6: the idle conversation expires.
    expect(page.locator("#messages li.divider").filter(has_text="This conversation has ended")).to_have_count(1, timeout=20000)
    send(page, "starting over")
    wait_settled(page, "You said: starting over. " + STREAMED)
    shot(page, "conversation-ended")
    # Loaded again, the page opens on the new conversation; the ended one is
    # in the list, marked.
    page.reload()
    wait_settled(page, "You said: starting over. " + STREAMED)
    shown = visible_bubbles(page)
    assert [t for _, t in shown] == ["starting over", "You said: starting over. " + STREAMED], shown
    expect(page.locator("#conv-list li.ended").first).to_be_visible()
    expect(page.locator("#conv-list button[aria-current=true] .conv-title")).to_have_text("starting over")


def test_phone_viewport_and_dark_mode(ctx, relay):
    phone = ctx["browser"].new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                       device_scale_factor=2, is_mobile=True, has_touch=True)
    page = phone.new_page()
    login(page, relay.base, "alice", ctx["alice_password"])
    expect(page.locator("#chat")).to_be_visible()
    wait_settled(page, "You said: starting over. " + STREAMED)
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}"
    box = page.locator("#composer").bounding_box()
    assert box and box["y"] + box["height"] <= 844 + 1, box
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(21, 23, 26)", f"not dark: {bg}"
    shot(page, "phone-dark")
    page.goto(relay.base + "/chat")
    page.set_viewport_size({"width": 390, "height": 844})
    phone.close()


def test_token_from_the_embedding_site(ctx, relay):
    session = relay.api("POST", "/sessions", {"userId": "carol"}, token=ctx["app_token"])
    page = ctx["browser"].new_page()
    page.goto(relay.base + "/chat#token=" + session["token"])
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#who")).to_have_text("carol")
    assert "token" not in page.url, page.url
    send(page, "hi from carol")
    wait_settled(page, "You said: hi from carol. " + STREAMED)
    texts = " ".join(t for _, t, _, _ in bubbles(page))
    assert "alice" not in texts and "bob" not in texts, texts
    # The app revokes... its own session ends when the user logs out.
    page.click("#logout")
    expect(page.locator("#ended")).to_be_visible()
    try:
        relay.api("GET", "/session", token=session["token"])
        raise AssertionError("the session still works after logout")
    except urllib.error.HTTPError as e:
        assert e.code == 401
    page.close()


def test_history_by_page(ctx, relay):
    """A long conversation opens with its latest 50 messages; scrolling up
    brings the earlier ones, above what the reader was looking at, which
    stays in view."""
    app = ctx["app_token"]
    first = relay.api("POST", "/inbound", {"from": "paula", "text": "bulk 00"}, token=app)
    for i in range(1, 70):
        relay.api("POST", "/inbound", {"from": "paula", "text": f"bulk {i:02}",
                                       "conversationId": first["conversationId"]}, token=app)
    session = relay.api("POST", "/sessions", {"userId": "paula"}, token=app)
    context = ctx["browser"].new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(relay.base + "/chat#token=" + session["token"])
    expect(page.locator("#chat")).to_be_visible()
    texts = page.locator("#messages li.msg .body")
    expect(texts.last).to_have_text("bulk 69")
    expect(texts).to_have_count(50)
    expect(texts.first).to_have_text("bulk 20")
    shot(page, "history-latest-page")
    # The reader scrolls to the top: the 20 before come in above.
    page.eval_on_selector("#messages", "e => { e.scrollTop = 0; }")
    expect(texts).to_have_count(70)
    expect(texts.first).to_have_text("bulk 00")
    # What was at the top stays where the reader left it (not pushed down
    # out of sight, not jumped to).
    top = page.eval_on_selector("#messages", "e => e.getBoundingClientRect().top")
    seen = page.locator("#messages li.msg", has_text="bulk 20").evaluate("e => e.getBoundingClientRect().top")
    assert abs(seen - top) < 80, (seen, top)
    assert_no_duplicates(page)
    shot(page, "history-earlier-page")
    context.close()


def test_security_headers(ctx, relay):
    with urllib.request.urlopen(relay.base + "/chat") as r:
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
        assert "unsafe-inline" not in csp, csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        html = r.read().decode()
        assert "<script>" not in html and "onclick" not in html


def test_demo_answers_at_once(ctx, relay):
    """`serve --demo` on a new database: the chat's address and the demo
    account's password are printed; logged in with them, a person talks to
    the built-in echo agent at once (desktop and phone)."""
    port = free_port()
    db = os.path.join(relay.work, "demo.db")
    proc = subprocess.Popen(
        [relay.binary, "serve", "--demo", "--db", db, "--port", str(port)],
        env={k: v for k, v in os.environ.items() if k != "ADMIN_TOKEN"} | {"LOG_LEVEL": "warn"},
        stdout=subprocess.PIPE, stderr=relay.log, text=True,
    )
    try:
        url = password = None
        while password is None:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError("the demo printed no password")
            if "open http" in line:
                url = line.split("open ", 1)[1].split()[0]
            if line.strip().startswith("password:"):
                password = line.split(":", 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/chat", url
        for name, viewport in (("desktop", {"width": 1280, "height": 800}),
                               ("phone", {"width": 390, "height": 844})):
            context = ctx["browser"].new_context(viewport=viewport)
            page = context.new_page()
            login(page, url.removesuffix("/chat"), "demo", password)
            expect(page.locator("#chat")).to_be_visible()
            send(page, f"hello from the {name}")
            echo = f"Echo: hello from the {name}"  # **Echo:** rendered
            deadline = time.time() + 20
            while not any(d == "out" and t.startswith(echo) and mid and not streaming
                          for d, t, mid, streaming in bubbles(page)):
                assert time.time() < deadline, f"no echo: {bubbles(page)}"
                time.sleep(0.05)
            shot(page, f"demo-{name}")
            context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_waiting_for_an_agent(ctx, relay):
    """A message sent while no agent is connected says so, and says when an
    agent takes it; the agent's answer then shows as usual."""
    work = os.path.join(relay.work, "no-agent")
    os.makedirs(work, exist_ok=True)
    lonely = Relay(relay.binary, work)
    lonely.start()
    try:
        app = lonely.api("POST", "/apps", {"name": "web"})
        password = json.loads(lonely.cli("user", "create", "--app", app["appId"], "--name", "carol"))["password"]
        page = ctx["browser"].new_page()
        login(page, lonely.base, "carol", password)
        expect(page.locator("#chat")).to_be_visible()
        send(page, "is anyone there?")
        activity = page.locator("#activity")
        expect(activity).to_contain_text("No agent is connected yet")
        time.sleep(1.5)  # it stays while nobody comes
        expect(activity).to_contain_text("No agent is connected yet")
        shot(page, "waiting-for-an-agent")
        client = lonely.api("POST", "/clients", {"name": "late agent"})
        taken = lonely.api("GET", "/poll", token=client["token"])["messages"]
        assert [m["text"] for m in taken] == ["is anyone there?"], taken
        expect(activity).to_contain_text("An agent has connected")
        shot(page, "an-agent-took-it")
        lonely.api("POST", "/send", {"conversationId": taken[0]["conversationId"], "to": "carol",
                                     "text": "Here now. How can I help?"}, token=client["token"])
        wait_settled(page, "Here now. How can I help?")
        expect(activity).to_be_hidden()
        page.close()
    finally:
        lonely.stop()


def test_stop_keeps_what_was_written(ctx, relay):
    """While the agent answers, Stop ends its turn: the reply stays as far as
    it was written, marked stopped, no more of it comes, the agent is told
    (it stops writing), and the next message is answered as usual. The
    stopped reply reads the same after a reload, on a phone, in the dark."""
    context = ctx["browser"].new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    login(page, relay.base, "sol", ctx["sol_password"])
    expect(page.locator("#chat")).to_be_visible()
    stop = page.locator("#stop")
    expect(stop).to_be_hidden()
    send(page, "stop me when you have heard enough")
    expect(stop).to_be_visible()
    full = "A long answer, told slowly. " + " ".join([STREAMED] * 4)
    page.wait_for_function(
        "() => { const b = document.querySelector('#messages li.streaming .body');"
        " return b && b.textContent.split(' ').length >= 8; }", timeout=15000)
    expect(page.locator("#activity")).to_be_hidden()
    shot(page, "stop-while-streaming")
    stop.click()
    stopped = page.locator("#messages li.msg.stopped")
    expect(stopped).to_have_count(1)
    expect(stopped.locator(".stopped-tag")).to_have_text("Stopped")
    expect(stop).to_be_hidden()
    assert page.locator("#messages li.streaming").count() == 0
    kept = stopped.locator(".body").text_content().strip()
    assert len(kept.split(" ")) >= 8 and full.startswith(kept) and kept != full, kept
    # No more of it comes: the agent was told, and a late piece is refused.
    time.sleep(2.5)
    assert stopped.locator(".body").text_content().strip() == kept
    shown = visible_bubbles(page)
    assert shown == [("in", "stop me when you have heard enough"), ("out", kept)], shown
    conv = page.evaluate("() => document.querySelector('#messages li.msg.stopped').dataset.conv")
    stored = relay.api("GET", f"/conversations/{conv}")["messages"]
    assert [(m["direction"], m["text"].strip(), m.get("stopped", False)) for m in stored] == [
        ("inbound", "stop me when you have heard enough", False), ("outbound", kept, True)], stored
    message_id = stored[0]["id"]
    assert message_id in ctx["agent"].cancelled, "the agent never heard of the stop"
    shot(page, "stopped-reply")

    page.reload()
    expect(page.locator("#messages li.msg.stopped .stopped-tag")).to_have_text("Stopped")
    assert page.locator("#messages li.msg.stopped .body").text_content().strip() == kept
    send(page, "after the stop")
    wait_settled(page, "You said: after the stop. " + STREAMED)
    expect(stop).to_be_hidden()
    context.close()

    phone = ctx["browser"].new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                       device_scale_factor=2, is_mobile=True, has_touch=True)
    page = phone.new_page()
    login(page, relay.base, "sol", ctx["sol_password"])
    expect(page.locator("#messages li.msg.stopped .stopped-tag")).to_have_text("Stopped")
    page.locator("#messages li.msg.stopped").scroll_into_view_if_needed()
    shot(page, "stopped-reply-phone-dark")
    phone.close()


def test_activity_is_visible(ctx, relay):
    """The agent's typing and tool progress show as a bubble with moving
    dots, on the agent's side, light and dark; with it and the Stop button
    shown, axe-core finds no serious or critical violation."""
    for scheme in ("light", "dark"):
        # axe is injected by the test: the page's own CSP would refuse it.
        context = ctx["browser"].new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme,
                                             bypass_csp=True)
        page = context.new_page()
        login(page, relay.base, "sol", ctx["sol_password"])
        expect(page.locator("#chat")).to_be_visible()
        # Typing and progress are not kept: only an open stream sees them.
        expect(page.locator("body")).to_have_attribute("data-connection", "open")
        send(page, f"think it over, in the {scheme}")
        activity = page.locator("#activity")
        expect(activity).to_be_visible()
        expect(activity.locator(".dots i")).to_have_count(3)
        moving = page.evaluate("() => getComputedStyle(document.querySelector('#activity .dots i')).animationName")
        assert moving == "bounce", moving
        box = activity.bounding_box()
        assert box and box["x"] < 400 and box["height"] >= 28, box
        shot(page, f"activity-{scheme}")
        expect(page.locator("#stop")).to_be_visible()
        found = axe_violations(page)
        assert not found, found
        wait_settled(page, "Thought it over: " + STREAMED)
        expect(activity).to_be_hidden()
        context.close()


TESTS_ALL = [
    test_security_headers,
    test_wrong_password,
    test_streamed_reply_settles_once_and_history_survives_reload,
    test_typing_and_progress_are_shown,
    test_files_travel_both_ways,
    test_relay_restart_mid_conversation,
    test_users_never_see_each_other,
    test_agent_markup_renders_inert,
    test_xss_corpus_stays_inert,
    test_markdown_reads_as_written,
    test_times_copy_drop_and_icon,
    test_parallel_conversations,
    test_accessible,
    test_chinese_and_the_language_switch,
    test_new_conversation_after_expiry,
    test_phone_viewport_and_dark_mode,
    test_token_from_the_embedding_site,
    test_history_by_page,
    test_demo_answers_at_once,
    test_waiting_for_an_agent,
    test_stop_keeps_what_was_written,
    test_activity_is_visible,
]
# WEBCHAT_ONLY=test_a,test_b runs only those (while working on them).
TESTS = [t for t in TESTS_ALL if not os.environ.get("WEBCHAT_ONLY") or t.__name__ in os.environ["WEBCHAT_ONLY"].split(",")]


def main():
    global SHOTS
    binary, work = sys.argv[1], sys.argv[2]
    SHOTS = os.path.join(work, "shots")
    os.makedirs(SHOTS, exist_ok=True)
    relay = Relay(binary, work)
    relay.start()
    app = relay.api("POST", "/apps", {"name": "web"})
    client = relay.api("POST", "/clients", {"name": "scripted agent"})
    passwords = {}
    for name in ("alice", "bob", "erin", "sol"):
        out = json.loads(relay.cli("user", "create", "--app", app["appId"], "--name", name))
        passwords[name] = out["password"]
    agent = Agent(relay, client["token"])
    agent.start()

    failed = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=["--no-sandbox"])
        alice_ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        bob_ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        ctx = {
            "browser": browser,
            "alice": alice_ctx.new_page(),
            "bob": bob_ctx.new_page(),
            "alice_password": passwords["alice"],
            "bob_password": passwords["bob"],
            "erin_password": passwords["erin"],
            "sol_password": passwords["sol"],
            "app_token": app["token"],
            "agent": agent,
        }
        for test in TESTS:
            started = time.time()
            try:
                test(ctx, relay)
                print(f"ok   {test.__name__} ({time.time() - started:.1f} s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {test.__name__}", flush=True)
                traceback.print_exc()
                for name in ("alice", "bob"):
                    try:
                        shot(ctx[name], f"FAILED-{test.__name__}-{name}")
                    except Exception:
                        pass
                if relay.proc.poll() is not None:
                    relay.start()
        browser.close()
    agent.stop = True
    relay.stop()
    passed = len(TESTS) - failed
    print(f"webchat: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
