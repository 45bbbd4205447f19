"""UIDONLY (RFC 9586) over a raw TLS socket: a UIDONLY session beside a plain one on the
same mailbox never sees a message sequence number, and may not send one.

usage: imap_uidonly.py IMAPS_PORT USER PASSWORD"""
import re
import socket
import sys

from hermod_client import check, tls_context

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Raw:
    def __init__(self):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s = tls_context().wrap_socket(sock, server_hostname="localhost")
        self.buf = b""
        self.greeting = self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            check(chunk, "server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def command(self, tag, data):
        """Sends a command; returns the untagged lines and the tagged line."""
        self.s.sendall(tag + b" " + data + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def ok(self, tag, data):
        lines, t = self.command(tag, data)
        check(t.startswith(tag + b" OK"), f"{data!r}: {t!r} after {lines!r}")
        return lines, t

    def uidrequired(self, tag, data):
        lines, t = self.command(tag, data)
        check(t.startswith(tag + b" BAD [UIDREQUIRED]"), f"{data!r}: {t!r}")
        check(lines == [], f"{data!r} answered {lines!r}")


def no_sequence_numbers(lines):
    for l in lines:
        check(not re.match(rb"^\* \d+ (FETCH|EXPUNGE)\b", l), f"sequence number in {l!r}")
        check(b"UNSEEN" not in l, f"sequence number in {l!r}")


plain = Raw()
plain.ok(b"l", f"login {user} {password}".encode())
for i in range(1, 5):
    msg = b"From: a@example.org\r\nSubject: m%d\r\n\r\nbody\r\n" % i
    plain.ok(b"a%d" % i, b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
plain.ok(b"s", b"SELECT INBOX")

uo = Raw()
uo.ok(b"l", f"login {user} {password}".encode())
lines, _ = uo.ok(b"c", b"CAPABILITY")
check(b"UIDONLY" in lines[0].split(), lines)
lines, _ = uo.ok(b"e", b"ENABLE UIDONLY")
check(lines == [b"* ENABLED UIDONLY"], lines)
lines, _ = uo.ok(b"s", b"SELECT INBOX")
no_sequence_numbers(lines)
check(b"* 4 EXISTS" in lines, lines)

for i, cmd in enumerate([b"FETCH 1 (FLAGS)", b"STORE 1 +FLAGS (\\Seen)", b"COPY 1 INBOX",
                         b"MOVE 1 INBOX", b"SEARCH ALL", b"UID SEARCH 1:2",
                         b"UID SEARCH RETURN (ALL) NOT 2"]):
    uo.uidrequired(b"r%d" % i, cmd)

lines, t = uo.ok(b"f", b"UID FETCH 2:3 (FLAGS)")
check(lines == [b"* 2 UIDFETCH (FLAGS ())", b"* 3 UIDFETCH (FLAGS ())"], lines)
lines, _ = uo.ok(b"t", b"UID STORE 3 +FLAGS (\\Seen)")
check(lines == [b"* 3 UIDFETCH (FLAGS (\\Seen))"], lines)

# The other session expunges UID 1 and flags its message 3, which is UID 4 by then.
plain.ok(b"d", b"STORE 1 +FLAGS.SILENT (\\Deleted)")
lines, _ = plain.ok(b"x", b"EXPUNGE")
check(lines == [b"* 1 EXPUNGE"], lines)
plain.ok(b"g", b"STORE 3 +FLAGS.SILENT (\\Flagged)")
lines, _ = uo.ok(b"n", b"NOOP")
no_sequence_numbers(lines)
check(lines == [b"* 4 UIDFETCH (FLAGS (\\Flagged))", b"* VANISHED 1"], lines)

# IDLE reports by UID too.
uo.s.sendall(b"i IDLE\r\n")
check(uo.line().startswith(b"+ "), "IDLE continuation")
plain.ok(b"u", b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
plain.ok(b"v", b"UID EXPUNGE 2")
seen = []
while b"* VANISHED 2" not in seen:
    seen.append(uo.line())
no_sequence_numbers(seen)
uo.s.sendall(b"DONE\r\n")
rest = []
while True:
    line = uo.line()
    if line.startswith(b"i "):
        check(line.startswith(b"i OK"), line)
        break
    rest.append(line)
no_sequence_numbers(rest)

lines, _ = uo.ok(b"q", b"UID SEARCH RETURN (ALL) ALL")
check(lines == [b'* ESEARCH (TAG "q") UID ALL 3:4'], lines)
uo.ok(b"w", b"LOGOUT")
plain.ok(b"w", b"LOGOUT")
print("imap uidonly ok")
