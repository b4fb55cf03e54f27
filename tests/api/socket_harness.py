"""What systemd does for a socket-activated service, for a test: holds a
listening socket on a free loopback port and starts the service with it as
fd 3 (LISTEN_FDS=1, LISTEN_PID set to the service's own pid), and restarts
it as `systemctl restart` does: SIGTERM, wait for the process to exit, start
it again on the same socket, which stayed open all along.

    python3 socket_harness.py COMMAND [ARG...]

Prints `port N`, then `started PID` for each start. Reads lines on stdin:
`restart` (prints `stopped STATUS` and `started PID`) and `stop` (prints
`stopped STATUS` and exits).
"""
import os
import signal
import socket
import subprocess
import sys

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
# The service finds its socket at fd 3 (SD_LISTEN_FDS_START).
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)
print("port", listener.getsockname()[1], flush=True)

env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="clawrelay.socket")


def start():
    # LISTEN_PID is the service's pid: `exec` keeps the shell's.
    child = subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] + sys.argv[1:],
        env=env,
        pass_fds=(3,),
        stdin=subprocess.DEVNULL,
    )
    print("started", child.pid, flush=True)
    return child


def stop(child):
    child.send_signal(signal.SIGTERM)
    print("stopped", child.wait(), flush=True)


child = start()
for line in sys.stdin:
    command = line.strip()
    if command == "restart":
        stop(child)
        child = start()
    elif command == "stop":
        break
stop(child)
