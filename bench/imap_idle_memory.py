#!/usr/bin/env python3
"""Memory per idle IMAP connection the way a mail client leaves one: plain connect,
STARTTLS, LOGIN, SELECT INBOX, IDLE, then nothing. Opens N such connections with at most
INFLIGHT handshakes+logins at once (bursts, like clients reconnecting after a restart),
waits, and prints the server's memory growth per connection (Pss from smaps_rollup and RSS,
summed over the server's whole process tree, so Dovecot's per-connection processes count),
the handshake-to-IDLE time percentiles, then closes them all and prints what stays.
Loopback only; a benchmark, not a test.

usage: bench/imap_idle_memory.py PID PORT N [--inflight 50] [--users U] [--password P]
                                 [--user-format load{k}@example.org] [--settle 3]
Users: U users named by --user-format with {k} = 0..U-1, all with the same password.
The server needs connection limits above N from 127.0.0.1 and `ulimit -n` above N."""
import argparse
import asyncio
import os
import resource
import ssl
import sys
import time


def tree(pid):
    """pid and all its descendants."""
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def memory_kib(pid):
    """(Pss, Rss) in KiB summed over the process tree of pid."""
    pss = rss = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            pass
    return pss, rss


async def expect(reader, tag, timeout=60):
    """Reads lines until one starts with tag; returns it."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("closed")
        if line.startswith(tag):
            return line


async def open_idle(port, user, password, ctx, gate, times, conns):
    async with gate:
        start = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        await expect(reader, b"* ")
        writer.write(b"a STARTTLS\r\n")
        await expect(reader, b"a ")
        await writer.start_tls(ctx, server_hostname="localhost")
        writer.write(f'b LOGIN "{user}" "{password}"\r\n'.encode())
        line = await expect(reader, b"b ")
        if not line.startswith(b"b OK"):
            raise RuntimeError(f"login failed: {line!r}")
        writer.write(b"c SELECT INBOX\r\n")
        await expect(reader, b"c OK")
        writer.write(b"d IDLE\r\n")
        await expect(reader, b"+")
        times.append(time.monotonic() - start)
        conns.append((reader, writer))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--inflight", type=int, default=50)
    ap.add_argument("--users", type=int, default=2)
    ap.add_argument("--user-format", default="load{k}@example.org")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--settle", type=float, default=3.0)
    a = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (a.n + 200, a.n + 200))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    before = memory_kib(a.pid)
    gate = asyncio.Semaphore(a.inflight)
    times, conns = [], []
    started = time.monotonic()
    jobs = [
        open_idle(a.port, a.user_format.format(k=i % a.users), a.password, ctx, gate, times, conns)
        for i in range(a.n)
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    took = time.monotonic() - started
    await asyncio.sleep(a.settle)
    during = memory_kib(a.pid)
    n = len(conns)
    times.sort()
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000 if times else 0
    print(f"{n} idle connections (STARTTLS, LOGIN, SELECT, IDLE; {a.inflight} in flight) "
          f"in {took:.1f} s, {len(failed)} failed"
          + (f" (first: {failed[0]!r})" if failed else ""))
    print(f"handshake-to-IDLE ms: p50 {pct(0.5):.0f}, p90 {pct(0.9):.0f}, p99 {pct(0.99):.0f}")
    print(f"server before: Pss {before[0]} KiB, RSS {before[1]} KiB")
    print(f"server with {n} open: Pss {during[0]} KiB, RSS {during[1]} KiB")
    if n:
        print(f"per connection: Pss {(during[0] - before[0]) / n:.1f} KiB, "
              f"RSS {(during[1] - before[1]) / n:.1f} KiB")
    for _, w in conns:
        w.transport.abort()
    conns.clear()
    await asyncio.sleep(a.settle + 2)
    after = memory_kib(a.pid)
    print(f"server {a.settle + 2:.0f} s after closing: Pss {after[0]} KiB, RSS {after[1]} KiB "
          f"(kept {(after[0] - before[0]) / 1024:.1f} MiB Pss over before)")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
