"""The admin console in a real browser (Debian's Chromium, driven by
Playwright) against the real relay binary, seeded through the admin and app
APIs with agents (one answering over WebSocket, one that takes a message and
never acknowledges it), an app with a built-in account, conversations (one
holding markup, one with the words searched for), a dead letter and a
webhook that fails (its receiver does not listen).

Run by e2e/console/run.sh:  python test_console.py RELAY_BINARY WORK_DIR
Screenshots go to WORK_DIR/shots/.
"""

import asyncio
import http.server
import json
import os
import signal
import socket
import struct
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

ADMIN = "console-e2e-admin-token"
SCRIPT = "<script>window.__xss = 'script'</script> look <img src=x onerror=\"window.__xss = 'img'\"> here"
REFUND = "I would like a refund for order 1138, it arrived broken"
CHINESE = "我要退款，谢谢"


def png(width, height, rgb):
    """A PNG of one colour."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PHOTO = png(4, 3, (200, 30, 30))
SHOTS = None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Relay:
    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = os.path.join(work, "relay.db")
        self.config = os.path.join(work, "relay.toml")
        self.dead_port = free_port()  # nothing listens: the webhook fails
        with open(self.config, "w") as f:
            f.write(
                "[delivery]\nlease_secs = 2\nmax_lease_secs = 2\nmax_attempts = 1\n"
                "[clients]\nstale_after_secs = 3\ndisconnected_after_secs = 600\n"
                "[tasks]\nmaintenance_interval_secs = 1\n"
                "[webhooks]\nallow_private = true\nretry_initial_ms = 500\nretry_max_secs = 2\n"
                "[rate_limits]\nfailed_auth_per_min = 50\n"
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

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def api(self, method, path, body=None, token=ADMIN):
        """(status, JSON body) of a call with `token` as bearer."""
        req = urllib.request.Request(self.base + path, method=method)
        if token:
            req.add_header("Authorization", "Bearer " + token)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, data, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def ok(self, method, path, body=None, token=ADMIN):
        status, data = self.api(method, path, body, token)
        assert 200 <= status < 300, (method, path, status, data)
        return data


class Agent(threading.Thread):
    """An agent over the relay's WebSocket: answers every message with
    `Echo: <text>`; reconnects when dropped."""

    def __init__(self, relay, token):
        super().__init__(daemon=True)
        self.relay, self.token = relay, token
        self.received = []
        self.stop = False

    def run(self):
        asyncio.run(self.main())

    async def main(self):
        while not self.stop:
            try:
                await self.session()
            except Exception:
                await asyncio.sleep(0.3)

    async def session(self):
        async with websockets.connect(f"ws://127.0.0.1:{self.relay.port}/ws", open_timeout=5) as ws:
            await ws.send(json.dumps({"type": "req", "id": 1, "method": "connect",
                                      "params": {"role": "agent", "token": self.token}}))
            n = 1
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") != "event" or frame.get("event") != "message":
                    continue
                m = frame["payload"]
                self.received.append(m["text"])
                n += 1
                await ws.send(json.dumps({"type": "req", "id": n, "method": "send", "params": {
                    "conversationId": m["conversationId"], "to": m["from"], "text": "Echo: " + m["text"]}}))


def wait_for(what, check, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=False)


def login(page, base, token):
    page.goto(base + "/admin")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#token", token)
    page.click("#login-button")


def axe_violations(page):
    with open(os.environ["AXE"]) as f:
        page.evaluate(f.read())
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ["violations"]});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


# ---- seeding ---------------------------------------------------------------

def seed(relay):
    """Agents, an app with an account and a failing webhook, conversations,
    a dead letter. Answers what the tests need to know."""
    s = {}
    app = relay.ok("POST", "/apps", {"name": "website"})
    s["app"] = app
    relay.ok("POST", "/accounts", {"appId": app["appId"], "name": "carol", "password": "carol-password-1"})
    hook = relay.ok("POST", f"/apps/{app['appId']}/webhooks",
                    {"url": f"http://127.0.0.1:{relay.dead_port}/hook", "events": ["message"]})
    s["webhook"] = hook
    poller = relay.ok("POST", "/clients", {"name": "batch-poller"})
    s["poller"] = poller
    # The poller is the only live agent: the first conversation is its own.
    relay.ok("GET", "/poll?wait=0", token=poller["token"])
    dead = relay.ok("POST", "/inbound", {"from": "dave", "text": "please call me back about the invoice"},
                    token=app["token"])
    s["dead_message"] = dead["id"]
    polled = relay.ok("GET", "/poll?wait=5", token=poller["token"])
    assert [m["id"] for m in polled["messages"]] == [dead["id"]], polled
    # Taken and never acknowledged: with one attempt allowed, it dies at
    # the agent's next poll once its 2 s lease has ended.
    time.sleep(2.2)
    wait_for("the dead letter", lambda: relay.ok("GET", "/poll?wait=0", token=poller["token"]) is not None
             and relay.ok("GET", "/deliveries?state=dead")["deliveries"])
    # The poller goes stale (3 s): the answering agent takes what follows.
    wait_for("the poller to go stale", lambda: any(
        c["name"] == "batch-poller" and c["state"] != "connected" for c in relay.ok("GET", "/clients")["clients"]))
    answering = relay.ok("POST", "/clients", {"name": "gateway-ws"})
    s["answering"] = answering
    agent = Agent(relay, answering["token"])
    agent.start()
    s["agent"] = agent
    wait_for("the WebSocket agent", lambda: any(
        c["name"] == "gateway-ws" and c["state"] == "connected" for c in relay.ok("GET", "/clients")["clients"]))
    for user, text in (("erin", SCRIPT), ("frank", REFUND), ("gao", CHINESE)):
        relay.ok("POST", "/inbound", {"from": user, "text": text}, token=app["token"])
    # frank sends a photo of the damage too.
    req = urllib.request.Request(relay.base + "/attachments?filename=damage.png", data=PHOTO, method="POST")
    req.add_header("Authorization", "Bearer " + app["token"])
    req.add_header("Content-Type", "image/png")
    with urllib.request.urlopen(req, timeout=10) as r:
        photo = json.loads(r.read())
    relay.ok("POST", "/inbound", {"from": "frank", "text": "here is the photo", "attachments": [photo["attachmentId"]]},
             token=app["token"])
    wait_for("the answers", lambda: len(agent.received) >= 4)
    wait_for("the answers stored", lambda: sum(
        c["messageCount"] for c in relay.ok("GET", "/conversations?appId=" + app["appId"])["conversations"]) >= 9)
    # The answers' webhook events fail: the receiver does not listen.
    wait_for("a failed webhook attempt", lambda: relay.ok("GET", f"/webhooks/{hook['webhookId']}/attempts")["attempts"])
    return s


# ---- the tests ---------------------------------------------------------------

def test_wrong_token_then_right(ctx, relay):
    page = ctx["page"]
    login(page, relay.base, "not-the-admin-token")
    expect(page.locator("#login-error")).to_have_text("That is not the admin token.")
    expect(page.locator("#nav")).to_be_hidden()
    shot(page, "login-wrong-token")
    # An agent's token is a valid token, but not the admin's.
    login(page, relay.base, ctx["seed"]["answering"]["token"])
    expect(page.locator("#login-error")).to_have_text("That is not the admin token.")
    login(page, relay.base, ADMIN)
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#view-overview")).to_be_visible()
    # The token is nowhere the page can read: not in storage, not in a
    # readable cookie, not in the form.
    kept = page.evaluate("() => [localStorage.length, sessionStorage.length, document.cookie, document.getElementById('token').value]")
    assert kept == [0, 0, "", ""], kept
    cookies = {c["name"]: c for c in ctx["context"].cookies()}
    c = cookies["clawrelay_console"]
    assert c["httpOnly"] and c["sameSite"] == "Strict" and c["value"].startswith("cns_"), c
    assert ADMIN not in c["value"]
    assert 0 < c["expires"] - time.time() <= 30 * 60 + 5, c


def test_overview_shows_the_relay(ctx, relay):
    page = ctx["page"]
    page.goto(relay.base + "/admin#overview")
    tiles = page.locator("#tiles")
    expect(tiles).to_contain_text("agents connected")
    expect(tiles.locator(".tile", has_text="dead letters").locator(".value")).to_have_text("1")
    expect(tiles.locator(".tile", has_text="webhook backlog").locator(".value")).not_to_have_text("0")
    expect(tiles).to_contain_text("0.1.0")
    expect(tiles).to_contain_text("version, on SQLite")
    expect(page.locator("#queues")).to_contain_text("gateway-ws")
    expect(page.locator("#queues")).to_contain_text("batch-poller")
    expect(page.locator("#backlog")).to_contain_text(ctx["seed"]["webhook"]["webhookId"])
    # The chart has a bar for the messages just stored.
    bars = page.locator("#chart rect.bar")
    expect(bars).to_have_count(60)
    heights = page.eval_on_selector_all("#chart rect.bar", "els => els.map(e => Number(e.getAttribute('height')))")
    assert max(heights) > 0, heights
    label = page.locator("#chart svg").get_attribute("aria-label")
    assert "in all" in label and not label.startswith("Messages per minute over the last hour: 0 "), label
    shot(page, "overview-desktop-light")


def test_agents_create_token_once_poll_and_revoke_closes_socket(ctx, relay):
    page = ctx["page"]
    page.goto(relay.base + "/admin#agents")
    expect(page.locator("#agents")).to_contain_text("gateway-ws")
    expect(page.locator("#agents")).to_contain_text("batch-poller")
    page.fill("#agent-name", "new-gateway")
    page.click("#agent-create button[type=submit]")
    secret = page.locator("#agent-issued .secret-value")
    expect(secret).to_be_visible()
    token = secret.text_content().strip()
    assert token.startswith("cli_") and "." in token, token
    shot(page, "agent-token-shown-once")
    # The token works on /poll.
    status, body = relay.api("GET", "/poll?wait=0", token=token)
    assert status == 200, (status, body)
    # Shown once: gone from the page once put away, and nowhere in the list.
    page.click("#agent-issued button:has-text('I have stored it')")
    expect(page.locator("#agent-issued .secret-value")).to_have_count(0)
    page.reload()
    expect(page.locator("#agents")).to_contain_text("new-gateway")
    assert token.split(".")[1] not in page.content()

    # Its WebSocket closes when it is revoked.
    closed = {}

    async def hold():
        async with websockets.connect(f"ws://127.0.0.1:{relay.port}/ws", open_timeout=5) as ws:
            await ws.send(json.dumps({"type": "req", "id": 1, "method": "connect",
                                      "params": {"role": "agent", "token": token}}))
            closed["opened"] = True
            try:
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
            closed["code"] = ws.close_code

    holder = threading.Thread(target=lambda: asyncio.run(hold()), daemon=True)
    holder.start()
    wait_for("the socket", lambda: closed.get("opened"))
    row = page.locator("#agents tr", has_text="new-gateway")
    row.locator("button:has-text('Revoke')").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("new-gateway")
    shot(page, "agent-revoke-confirm")
    page.click("#confirm-ok")
    expect(row.locator(".badge")).to_have_text("revoked")
    holder.join(timeout=10)
    assert "code" in closed, "the revoked agent's WebSocket stayed open"
    status, _ = relay.api("GET", "/poll?wait=0", token=token)
    assert status == 401, status


def test_apps_accounts_and_failing_webhook(ctx, relay):
    page = ctx["page"]
    page.goto(relay.base + "/admin#apps")
    row = page.locator("#apps tr", has_text="website")
    expect(row).to_be_visible()
    row.locator("button:has-text('Accounts & webhooks')").click()
    detail = page.locator("#app-detail")
    expect(detail).to_contain_text("carol")
    # A new account: its password shown once, and it logs in.
    page.fill("#account-name", "dina")
    page.click("#app-detail form:has(#account-name) button[type=submit]")
    password = page.locator("#app-secret .secret-value")
    expect(password).to_be_visible()
    status, _ = relay.api("POST", "/login", {"name": "dina", "password": password.text_content().strip()}, token=None)
    assert status == 200, status
    # Disabling carol ends her logins.
    detail.locator("tr", has_text="carol").locator("button:has-text('Disable')").click()
    page.click("#confirm-ok")
    expect(detail.locator("tr", has_text="carol").locator(".badge")).to_have_text("disabled")
    status, _ = relay.api("POST", "/login", {"name": "carol", "password": "carol-password-1"}, token=None)
    assert status == 401, status
    # The failing webhook: its attempts, with the error, and a replay.
    hook = detail.locator("tr", has_text=f"127.0.0.1:{relay.dead_port}")
    expect(hook.locator(".badge")).to_have_text("failing")
    hook.locator("button:has-text('Attempts')").click()
    attempts = page.locator("#attempts")
    expect(attempts).to_contain_text("no answer")
    expect(attempts.locator("tbody tr").first).to_be_visible()
    shot(page, "app-accounts-webhooks")
    before = len(relay.ok("GET", f"/webhooks/{ctx['seed']['webhook']['webhookId']}/attempts?limit=100")["attempts"])
    attempts.locator("tbody tr").first.locator("button:has-text('Replay')").click()
    expect(page.locator("#status")).to_contain_text("queued again")
    wait_for("the replayed attempt", lambda: len(relay.ok(
        "GET", f"/webhooks/{ctx['seed']['webhook']['webhookId']}/attempts?limit=100")["attempts"]) > before)
    # Disable it; the relay's record agrees.
    hook.locator("button:has-text('Disable')").click()
    expect(hook.locator(".badge")).to_have_text("disabled")
    assert relay.ok("GET", f"/webhooks/{ctx['seed']['webhook']['webhookId']}")["enabled"] is False


def test_search_and_a_transcript_that_stays_inert(ctx, relay):
    page = ctx["page"]
    page.goto(relay.base + "/admin#conversations")
    expect(page.locator("#conversations tbody tr")).to_have_count(4)
    expect(page.locator("#conversations")).to_contain_text("please call me back")
    page.fill("#f-q", "refund")
    page.click("#conv-filter button[type=submit]")
    rows = page.locator("#conversations tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".snippet")).to_contain_text("refund")
    expect(rows.first).to_contain_text("frank")
    # Its transcript: the photo downloads with the bytes frank sent.
    rows.first.locator("button").click()
    transcript = page.locator("#transcript")
    expect(transcript.locator("li.msg")).to_have_count(4)
    with page.expect_download() as download:
        transcript.locator("button:has-text('damage.png')").click()
    assert download.value.suggested_filename == "damage.png"
    with open(download.value.path(), "rb") as f:
        assert f.read() == PHOTO
    page.fill("#f-q", "退款")
    page.click("#conv-filter button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("gao")
    # Filters: the user, and the agent.
    page.fill("#f-q", "")
    page.fill("#f-user", "erin")
    page.click("#conv-filter button[type=submit]")
    expect(rows).to_have_count(1)
    rows.first.locator("button").click()
    expect(transcript.locator("li.msg")).to_have_count(2)
    expect(transcript.locator("li.msg.inbound .text")).to_have_text(SCRIPT)
    expect(transcript.locator("li.msg.outbound .text")).to_have_text("Echo: " + SCRIPT)
    assert transcript.locator("img, script").count() == 0
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.__xss") is None
    shot(page, "transcript-inert")
    # An active conversation follows new messages.
    relay.ok("POST", "/inbound", {"from": "erin", "text": "one more thing"}, token=ctx["seed"]["app"]["token"])
    expect(transcript.locator("li.msg")).to_have_count(4, timeout=15000)
    expect(transcript.locator("li.msg").nth(3)).to_contain_text("Echo: one more thing")
    page.fill("#f-user", "")
    page.select_option("#f-agent", label="batch-poller")
    page.click("#conv-filter button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("dave")


def test_requeue_the_dead_letter(ctx, relay):
    page = ctx["page"]
    page.goto(relay.base + "/admin#deliveries")
    dead = page.locator("#deliveries tbody tr")
    expect(dead).to_have_count(1)
    expect(dead.first).to_contain_text("please call me back about the invoice")
    expect(dead.first).to_contain_text("not acknowledged within 1 attempt")
    expect(dead.first).to_contain_text("batch-poller")
    shot(page, "dead-letters")
    dead.first.locator("input[type=checkbox]").check()
    page.click("#requeue-selected")
    expect(page.locator("#status")).to_contain_text("1 of 1 requeued")
    expect(page.locator("#deliveries")).to_contain_text("No dead letters.")
    # Delivered again: to its agent, which polls once more.
    poller = ctx["seed"]["poller"]["token"]
    got = relay.ok("GET", "/poll?wait=10", token=poller)
    assert [m["id"] for m in got["messages"]] == [ctx["seed"]["dead_message"]], got
    relay.ok("POST", "/ack", {"ids": [ctx["seed"]["dead_message"]]}, token=poller)


def test_cross_site_requests_are_refused(ctx, relay):
    """A page on another site posts to the admin API with the browser's
    cookie: refused (SameSite=Strict keeps the cookie home, and a request
    the browser marks cross-site is refused even with it); no agent is
    made. A same-site request without the CSRF token is refused too."""
    evil_port = free_port()
    target = relay.base + "/clients"
    html = f"""<!doctype html><form id=f method=POST action="{target}" enctype="text/plain">
<input name='{{"name":"evil-form","x":"' value='"}}'></form>
<script>
fetch("{target}", {{method: "POST", credentials: "include", headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{name: "evil-fetch"}})}}).then(r => document.title = "fetch " + r.status,
  e => document.title = "fetch blocked").finally(() => document.getElementById("f").submit());
</script>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", evil_port), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = ctx["context"].new_page()
    # "localhost" is another site than "127.0.0.1".
    with page.expect_navigation(url=target, timeout=15000) as nav:
        page.goto(f"http://localhost:{evil_port}/")
    status = nav.value.status if nav.value else None
    assert status in (401, 403), status
    page.close()
    server.shutdown()
    names = [c["name"] for c in relay.ok("GET", "/clients")["clients"]]
    assert not any(n.startswith("evil") for n in names), names
    # The console's own origin, the cookie, but no CSRF token.
    page = ctx["page"]
    answer = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({name: "no-csrf"})});
        return [r.status, (await r.json()).error.code];
    }""", target)
    assert answer == [403, "forbidden"], answer
    assert "no-csrf" not in [c["name"] for c in relay.ok("GET", "/clients")["clients"]]


def test_screens_on_phone_and_dark_are_accessible(ctx, relay):
    found = []
    for scheme in ("light", "dark"):
        for name, viewport in (("desktop", {"width": 1280, "height": 800}), ("phone", {"width": 390, "height": 844})):
            context = ctx["browser"].new_context(viewport=viewport, color_scheme=scheme, bypass_csp=True)
            page = context.new_page()
            page.goto(relay.base + "/admin")
            expect(page.locator("#login")).to_be_visible()
            found += [(scheme, name, "login", v) for v in axe_violations(page)]
            login(page, relay.base, ADMIN)
            for view, ready in (("overview", "#chart svg"), ("agents", "#agents table"), ("apps", "#apps table"),
                                ("conversations", "#conversations table"), ("deliveries", "#deliveries")):
                page.goto(f"{relay.base}/admin#{view}")
                expect(page.locator(ready).first).to_be_visible()
                page.wait_for_timeout(200)
                found += [(scheme, name, view, v) for v in axe_violations(page)]
                if view in ("overview", "conversations") and not (scheme == "light" and name == "desktop"):
                    if view == "conversations":
                        page.locator("#conversations tbody tr button").first.click()
                        expect(page.locator("#transcript li.msg").first).to_be_visible()
                        page.locator("#transcript").scroll_into_view_if_needed()
                    shot(page, f"{view}-{name}-{scheme}")
            context.close()
    assert not found, found


def test_logout_ends_the_login(ctx, relay):
    page = ctx["page"]
    page.goto(relay.base + "/admin#overview")
    expect(page.locator("#logout")).to_be_visible()
    cookie = {c["name"]: c for c in ctx["context"].cookies()}["clawrelay_console"]["value"]
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("Logged out.")
    # The old cookie is worth nothing now.
    req = urllib.request.Request(relay.base + "/admin/overview", headers={"Cookie": "clawrelay_console=" + cookie})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a logged-out console cookie still works")
    except urllib.error.HTTPError as e:
        assert e.code == 401, e.code
    page.reload()
    expect(page.locator("#login")).to_be_visible()


TESTS = [
    test_wrong_token_then_right,
    test_overview_shows_the_relay,
    test_agents_create_token_once_poll_and_revoke_closes_socket,
    test_apps_accounts_and_failing_webhook,
    test_search_and_a_transcript_that_stays_inert,
    test_requeue_the_dead_letter,
    test_cross_site_requests_are_refused,
    test_screens_on_phone_and_dark_are_accessible,
    test_logout_ends_the_login,
]


def main():
    global SHOTS
    binary, work = sys.argv[1], sys.argv[2]
    SHOTS = os.path.join(work, "shots")
    os.makedirs(SHOTS, exist_ok=True)
    relay = Relay(binary, work)
    relay.start()
    seeded = seed(relay)
    only = [t for t in os.environ.get("CONSOLE_ONLY", "").split(",") if t]
    tests = [t for t in TESTS if not only or t.__name__ in only]
    failed = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                    args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        ctx = {"browser": browser, "context": context, "page": context.new_page(), "seed": seeded}
        # Every test but the first starts logged in.
        for test in tests:
            started = time.time()
            try:
                if test is not test_wrong_token_then_right and ctx["page"].locator("#nav").is_hidden():
                    login(ctx["page"], relay.base, ADMIN)
                    expect(ctx["page"].locator("#nav")).to_be_visible()
                test(ctx, relay)
                print(f"ok   {test.__name__} ({time.time() - started:.1f} s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {test.__name__}", flush=True)
                traceback.print_exc()
                try:
                    shot(ctx["page"], f"FAILED-{test.__name__}")
                except Exception:
                    pass
        browser.close()
    seeded["agent"].stop = True
    relay.stop()
    print(f"console: {len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
