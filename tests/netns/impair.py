#!/usr/bin/env python3
"""A netem in userspace, for kernels without sch_netem.

Creates two TUN devices, moves one into each of two existing network namespaces
(A and B), gives them point-to-point addresses and relays every IP packet between
them. Packets from A to B are held for --delay-ms and dropped with probability
--loss (like netem on A's egress); packets from B to A pass at once. So a probe
from A sees its round trip grow by the delay, and each probe is lost once with
probability --loss (a request lost and a reply lost are never both counted).

Prints "ready" on stdout once both ends are up, then relays until stdin closes or
SIGTERM arrives (the test keeps stdin open: if the test dies, the relay ends).
Prints counters on stderr when it stops. Exit status 77: no TUN device could be
made here (the caller skips).

python3 standard library only; needs root (CAP_NET_ADMIN).
"""

import argparse
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
EXIT_SKIP = 77


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def ip(*args):
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"impair: ip {' '.join(args)}: {result.stderr.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns-a", required=True)
    parser.add_argument("--ns-b", required=True)
    parser.add_argument("--tun-a", required=True, help="device name (at most 15 characters)")
    parser.add_argument("--tun-b", required=True)
    parser.add_argument("--addr-a", required=True, help="e.g. 10.203.1.1/24")
    parser.add_argument("--addr-b", required=True, help="e.g. 10.203.1.2/24")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="A to B")
    parser.add_argument("--loss", type=float, default=0.0, help="A to B, fraction 0..1")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    try:
        fd_a = open_tun(args.tun_a)
        fd_b = open_tun(args.tun_b)
    except OSError as error:
        print(f"impair: cannot create a TUN device: {error}", file=sys.stderr)
        sys.exit(EXIT_SKIP)
    # The open fds keep working after the devices move to other namespaces.
    for tun, ns, addr in ((args.tun_a, args.ns_a, args.addr_a), (args.tun_b, args.ns_b, args.addr_b)):
        ip("link", "set", tun, "netns", ns)
        ip("-n", ns, "addr", "add", addr, "dev", tun)
        ip("-n", ns, "link", "set", tun, "up")
        ip("-n", ns, "link", "set", "lo", "up")

    rng = random.Random(args.seed)
    delay = args.delay_ms / 1000.0
    held = []  # heap of (due, order, fd, packet)
    order = 0
    counts = {"a_to_b": 0, "dropped": 0, "b_to_a": 0}
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)

    stdin = sys.stdin.fileno()
    watched = [fd_a, fd_b, stdin]
    while not stopping:
        now = time.monotonic()
        wait = max(0.0, held[0][0] - now) if held else 1.0
        try:
            readable, _, _ = select.select(watched, [], [], wait)
        except InterruptedError:
            continue
        if stdin in readable:
            if not os.read(stdin, 4096):
                break
        for fd in readable:
            if fd == stdin:
                continue
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    break
                if not packet:
                    break
                if fd == fd_a:
                    counts["a_to_b"] += 1
                    if rng.random() < args.loss:
                        counts["dropped"] += 1
                        continue
                    order += 1
                    heapq.heappush(held, (time.monotonic() + delay, order, fd_b, packet))
                else:
                    counts["b_to_a"] += 1
                    order += 1
                    heapq.heappush(held, (time.monotonic(), order, fd_a, packet))
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, fd, packet = heapq.heappop(held)
            try:
                os.write(fd, packet)
            except OSError:
                pass  # the other end went down: a lost packet, as on a wire
    print(
        f"impair: a_to_b={counts['a_to_b']} dropped={counts['dropped']} b_to_a={counts['b_to_a']}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
