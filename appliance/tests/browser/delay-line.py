#!/usr/bin/env python3
"""A fixed delay for IP packets, for a kernel without the netem qdisc.

shaped-bench.sh routes the camera's packets to the shaped viewer through a
TUN device; this reads each packet from it, holds it DELAY_MS, and writes it
back, in order (the kernel then forwards it on, through the link's tbf).
It stops when the TUN device's namespace goes away or on SIGTERM.

Usage: delay-line.py TUN_NAME DELAY_MS
"""
import fcntl
import heapq
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    """The TUN device `name` (created if it does not exist), blocking reads off."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    name, delay = sys.argv[1], float(sys.argv[2]) / 1000.0
    fd = open_tun(name)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    held = []  # (due, sequence, packet): a heap, first due first, in arrival order
    sequence = 0
    print(f"delay-line: {name}, {delay * 1000:.0f} ms", flush=True)
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 1.0
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                heapq.heappush(held, (time.monotonic() + delay, sequence, packet))
                sequence += 1
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, packet = heapq.heappop(held)
            try:
                os.write(fd, packet)
            except OSError as error:
                print(f"delay-line: a packet could not be written back: {error}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
