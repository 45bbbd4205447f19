#!/usr/bin/env python3
"""Resident memory per idle connection of a running hermod: opens N connections to one port,
says hello on each (EHLO for SMTP, nothing for IMAP/POP3), and prints the growth of the
server's RSS divided by N. Loopback only.

usage: bench/idle_memory.py PID PORT N [smtp|imap|pop3]
The server needs limits that allow N connections from 127.0.0.1, e.g.
[limits] max_connections = 20000, max_connections_per_ip = 20000 (and `ulimit -n` raised)."""
import resource
import socket
import sys
import time

pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
proto = sys.argv[4] if len(sys.argv) > 4 else "smtp"
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 100, n + 100))


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no such process")


before = rss_kib()
conns = []
start = time.time()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.recv(4096)  # greeting
    if proto == "smtp":
        s.sendall(b"EHLO bench.example\r\n")
        s.recv(4096)
    conns.append(s)
time.sleep(1.0)
after = rss_kib()
print(f"{proto}: {n} idle connections opened in {time.time() - start:.1f} s")
print(f"RSS before {before} KiB, after {after} KiB: {(after - before) / n:.1f} KiB per idle connection")
for s in conns:
    s.close()
