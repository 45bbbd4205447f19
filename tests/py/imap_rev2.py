"""IMAP4rev2 (RFC 9051) after ENABLE, next to an IMAP4rev1 session, with BINARY (RFC 3516),
SEARCHRES (RFC 5182), OBJECTID (RFC 8474) and SAVEDATE (RFC 8514), over a raw TLS socket.

usage: imap_rev2.py IMAPS_PORT USER PASSWORD"""
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

    def exact(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            check(chunk, "server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def command(self, tag, data):
        """Sends raw bytes; returns the untagged lines (literals inlined) and the tagged line."""
        self.s.sendall(tag + b" " + data + b"\r\n")
        lines = []
        while True:
            line = self.line()
            if line.startswith(b"+ "):
                continue
            while True:
                m = re.search(rb"\{(\d+)\}$", line)
                if not m:
                    break
                line += b"\r\n" + self.exact(int(m.group(1))) + self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def ok(self, tag, data):
        lines, t = self.command(tag, data)
        check(t.startswith(tag + b" OK"), f"{data!r}: {t!r} after {lines!r}")
        return lines, t


def one(lines, pattern):
    found = [l for l in lines if re.search(pattern, l)]
    check(len(found) == 1, f"{pattern!r} once in {lines!r}")
    return re.search(pattern, found[0])


binary_msg = (b"From: a@example.org\r\nSubject: bin\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01-\xff\r\n")
b64_msg = (b"From: b@example.org\r\nSubject: b64\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"aGVsbG8g\r\nd29ybGQ=\r\n")

old = Raw()
check(b"IMAP4rev1" in old.greeting and b"IMAP4rev2" in old.greeting, old.greeting)
old.ok(b"l", f"login {user} {password}".encode())
lines, _ = old.ok(b"c", b"capability")
for cap in (b"BINARY", b"SEARCHRES", b"OBJECTID", b"SAVEDATE", b"IMAP4rev2"):
    check(cap in lines[0].split(), f"{cap!r} in {lines!r}")
_, t = old.ok(b"a1", b"APPEND INBOX ~{%d}\r\n" % len(binary_msg) + binary_msg)
check(b"APPENDUID" in t, t)
old.ok(b"a2", b"APPEND INBOX {%d+}\r\n" % len(b64_msg) + b64_msg)

# An IMAP4rev1 session sees \Recent, RECENT and SEARCH as before.
lines, _ = old.ok(b"s", b"SELECT INBOX")
one(lines, rb"^\* 2 RECENT$")
lines, _ = old.ok(b"f", b"FETCH 1 (FLAGS BODY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[1])")
check(b"\\Recent" in lines[0], lines)
check(b"\x00" not in lines[0].split(b"BINARY[1]")[0], f"BODY[1] holds no NUL: {lines!r}")
check(lines[0].endswith(b"BINARY.SIZE[1] 6 BINARY[1] ~{6}\r\n\x00\x01-\xff\r\n)"), lines)
lines, _ = old.ok(b"x", b"SEARCH ALL")
check(lines == [b"* SEARCH 1 2"], lines)

new = Raw()
new.ok(b"l", f"login {user} {password}".encode())
lines, _ = new.ok(b"e", b"ENABLE IMAP4rev2")
check(lines == [b"* ENABLED IMAP4rev2"], lines)
lines, _ = new.ok(b"s", b"SELECT INBOX")
check(not any(b"RECENT" in l or b"UNSEEN" in l for l in lines), lines)
one(lines, rb'^\* LIST \(\) "/" INBOX$')
mailbox_id = one(lines, rb"^\* OK \[MAILBOXID \(([A-Za-z0-9_-]+)\)\]").group(1)
lines, _ = new.ok(b"f", b"FETCH 1:2 (FLAGS BINARY.PEEK[1] EMAILID THREADID SAVEDATE)")
check(not any(b"\\Recent" in l for l in lines), lines)
check(b'BINARY[1] {11}\r\nhello world EMAILID (' in lines[1], lines)
email_id = re.search(rb"EMAILID \(([A-Za-z0-9_-]+)\)", lines[1]).group(1)
check(b"THREADID NIL SAVEDATE \"" in lines[1], lines)
lines, _ = new.ok(b"x", b"UID SEARCH ALL")
check(lines == [b'* ESEARCH (TAG "x") UID ALL 1:2'], lines)
lines, _ = new.ok(b"y", b"SEARCH RETURN (SAVE) EMAILID " + email_id)
check(lines == [], f"SAVE alone returns nothing: {lines!r}")
lines, _ = new.ok(b"z", b"FETCH $ (UID)")
check(lines == [b"* 2 FETCH (UID 2)"], lines)
lines, _ = new.ok(b"t", b"STATUS INBOX (MESSAGES DELETED SIZE MAILBOXID)")
check(len(lines) == 1 and lines[0].startswith(b"* STATUS INBOX (MESSAGES 2 DELETED 0 SIZE ")
      and lines[0].endswith(b" MAILBOXID (" + mailbox_id + b"))"), lines)
lines, _ = new.ok(b"u", b"SELECT INBOX")
one(lines, rb"^\* OK \[CLOSED\]")
new.ok(b"w", b"LOGOUT")
old.ok(b"w", b"LOGOUT")
print("imap rev2 ok")
