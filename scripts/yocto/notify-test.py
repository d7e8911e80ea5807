#!/usr/bin/env python3
"""Check that `lookout` speaks the systemd notify protocol without systemd.

Usage: notify-test.py PATH/TO/lookout

The test plays the part of the service manager: it binds an AF_UNIX datagram
socket in a temporary directory, starts

    lookout --state-dir <tmp>/state --listen 127.0.0.1:0

with NOTIFY_SOCKET=<socket> and WATCHDOG_USEC=1000000 (a 1 s watchdog, so the
appliance should ping every 0.5 s), and then asserts that

  * READY=1 arrives within 60 s, and
  * at least 3 WATCHDOG=1 arrive within the 3 s after READY=1.

WATCHDOG_PID is deliberately not set (the child's PID is not known before it is
started). The child is killed by PID at the end, whatever happened. Prints one
PASS/FAIL line and exits non-zero on failure. Python standard library only.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

READY_TIMEOUT_S = 60.0
WATCHDOG_WINDOW_S = 3.0
WATCHDOG_MIN_PINGS = 3
WATCHDOG_USEC = 1_000_000


def fail(message, output_path=None):
    print(f"notify-test: FAIL: {message}", flush=True)
    if output_path and os.path.exists(output_path):
        with open(output_path, "rb") as f:
            tail = f.read()[-4000:].decode("utf-8", "replace")
        if tail.strip():
            print("---- last output of lookout ----", flush=True)
            print(tail.rstrip(), flush=True)
            print("--------------------------------", flush=True)
    return 1


def assignments(datagram):
    """Split one notification datagram into its KEY=VALUE lines."""
    text = datagram.decode("utf-8", "replace")
    return [line for line in text.split("\n") if line]


def stop(child):
    """Kill the child by PID and reap it."""
    if child.poll() is not None:
        return
    try:
        os.kill(child.pid, signal.SIGTERM)
        child.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    if child.poll() is None:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait(timeout=5)


def run(binary):
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        return fail(f"{binary!r} is not an executable file")

    with tempfile.TemporaryDirectory(prefix="lookout-notify-") as tmp:
        sock_path = os.path.join(tmp, "notify.sock")
        state_dir = os.path.join(tmp, "state")
        os.mkdir(state_dir, 0o700)
        output_path = os.path.join(tmp, "lookout.log")

        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(sock_path)

        env = dict(os.environ)
        for key in ("WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(key, None)
        env["NOTIFY_SOCKET"] = sock_path
        env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)

        argv = [binary, "--state-dir", state_dir, "--listen", "127.0.0.1:0"]
        print(f"notify-test: starting {' '.join(argv)}", flush=True)
        print(f"notify-test: NOTIFY_SOCKET={sock_path} WATCHDOG_USEC={WATCHDOG_USEC}", flush=True)
        with open(output_path, "wb") as output:
            try:
                child = subprocess.Popen(
                    argv, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
                )
            except OSError as e:
                server.close()
                return fail(f"cannot start {binary}: {e}")
        try:
            return watch(server, child, output_path)
        finally:
            stop(child)
            server.close()


def receive(server, deadline):
    """Next datagram before `deadline` (monotonic), or None on timeout."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    server.settimeout(min(remaining, 0.25))
    try:
        return server.recv(4096)
    except socket.timeout:
        return b""


def watch(server, child, output_path):
    started = time.monotonic()
    ready_at = None
    deadline = started + READY_TIMEOUT_S
    while ready_at is None:
        datagram = receive(server, deadline)
        if datagram is None:
            return fail(f"no READY=1 within {READY_TIMEOUT_S:.0f} s", output_path)
        if datagram:
            lines = assignments(datagram)
            print(f"notify-test: received {lines}", flush=True)
            if "READY=1" in lines:
                ready_at = time.monotonic()
                print(f"notify-test: READY=1 after {ready_at - started:.2f} s", flush=True)
        elif child.poll() is not None:
            return fail(f"lookout exited with status {child.returncode} before READY=1", output_path)

    pings = []
    deadline = ready_at + WATCHDOG_WINDOW_S
    while True:
        datagram = receive(server, deadline)
        if datagram is None:
            break
        if datagram:
            lines = assignments(datagram)
            offset = time.monotonic() - ready_at
            if "WATCHDOG=1" in lines and offset <= WATCHDOG_WINDOW_S:
                pings.append(offset)
            else:
                print(f"notify-test: received {lines}", flush=True)
        elif child.poll() is not None:
            return fail(f"lookout exited with status {child.returncode} after READY=1", output_path)

    offsets = ", ".join(f"{p:.2f}" for p in pings)
    print(f"notify-test: {len(pings)} WATCHDOG=1 in {WATCHDOG_WINDOW_S:.0f} s (at +[{offsets}] s)", flush=True)
    if len(pings) < WATCHDOG_MIN_PINGS:
        return fail(
            f"expected at least {WATCHDOG_MIN_PINGS} WATCHDOG=1 within {WATCHDOG_WINDOW_S:.0f} s "
            f"of READY=1 with WATCHDOG_USEC={WATCHDOG_USEC}, got {len(pings)}",
            output_path,
        )
    if child.poll() is not None:
        return fail(f"lookout exited with status {child.returncode} during the test", output_path)
    print(
        f"notify-test: PASS: READY=1 and {len(pings)} WATCHDOG=1 in {WATCHDOG_WINDOW_S:.0f} s",
        flush=True,
    )
    return 0


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH/TO/lookout", file=sys.stderr)
        return 2
    return run(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
