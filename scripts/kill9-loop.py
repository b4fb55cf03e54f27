#!/usr/bin/env python3
"""Kill -9 under load, many times: nothing acknowledged may be lost.

Usage: scripts/kill9-loop.py <relay binary> <rounds>

Starts the relay on a fresh SQLite file (under /tmp/clawrelay-kill9), creates
an app, and per round has 16 threads post messages to /inbound (texts of up
to 3000 bytes) for 0.5-2 s, then kills the relay with SIGKILL. It then opens
the file with Python's sqlite3, checks that every message the relay answered
2xx for is stored and runs PRAGMA integrity_check, and starts the relay
again. It stops at the first loss or fault. A benchmark-like run (minutes),
not part of the test suite.
"""

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

DIR = "/tmp/clawrelay-kill9"
DB = os.path.join(DIR, "relay.db")
PORT = 18777
ADMIN = "kill9-admin-token"
WRITERS = 16


def start(binary):
    log = open(os.path.join(DIR, "relay.log"), "a")
    relay = subprocess.Popen(
        [binary, "serve", "--port", str(PORT), "--db", DB],
        env=dict(os.environ, ADMIN_TOKEN=ADMIN, LOG_LEVEL="error"),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/ready", timeout=1)
            return relay
        except OSError:
            time.sleep(0.05)
    sys.exit("the relay did not become ready (see relay.log)")


def post(path, token, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}{path}",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def main():
    binary, rounds = sys.argv[1], int(sys.argv[2])
    shutil.rmtree(DIR, ignore_errors=True)
    os.makedirs(DIR)
    relay = start(binary)
    app = post("/apps", ADMIN, {"name": "kill9"})["token"]
    acknowledged, lock = set(), threading.Lock()
    for n in range(rounds):
        stop = threading.Event()

        def write(w):
            i = 0
            while not stop.is_set():
                text = f"round {n} writer {w} #{i} " + "x" * random.randint(0, 3000)
                try:
                    m = post("/inbound", app, {"from": f"u{w}-{i % 7}", "text": text})
                    with lock:
                        acknowledged.add(m["id"])
                except OSError:
                    pass  # refused or cut off by the kill: not acknowledged
                i += 1

        writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for t in writers:
            t.start()
        time.sleep(random.uniform(0.5, 2.0))
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        stop.set()
        for t in writers:
            t.join()
        db = sqlite3.connect(DB)
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        stored = {row[0] for row in db.execute("SELECT id FROM messages")}
        db.close()
        missing = acknowledged - stored
        print(
            f"round {n}: acknowledged {len(acknowledged)}, stored {len(stored)}, "
            f"missing {len(missing)}, integrity {check}",
            flush=True,
        )
        if missing or check != "ok":
            sys.exit("LOST OR CORRUPT")
        relay = start(binary)
    relay.send_signal(signal.SIGKILL)
    relay.wait()
    print("all rounds: nothing acknowledged lost, the file sound")


if __name__ == "__main__":
    main()
