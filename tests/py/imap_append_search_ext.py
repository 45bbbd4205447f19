"""MULTIAPPEND, CATENATE, ESORT, CONTEXT=SEARCH and PARTIAL over a real connection, the
way a client uses them: synchronizing literals answered by continuations, a message built
from another one's header by URL, paged SEARCH/SORT/FETCH, and a search kept up to date
while a second connection changes flags.

usage: imap_append_search_ext.py IMAPS_PORT USER PASSWORD"""
import re
import socket
import sys

from hermod_client import check, tls_context

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Conn:
    def __init__(self):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.s = tls_context().wrap_socket(sock, server_hostname="localhost")
        self.buf = b""
        self.line()  # greeting

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

    def command(self, tag, pieces):
        """Sends a command in pieces; before each piece after the first, waits for the
        continuation its synchronizing literal asks for. Returns (untagged, tagged)."""
        tag = tag.encode()
        self.s.sendall(pieces[0])
        for piece in pieces[1:]:
            line = self.line()
            check(line.startswith(b"+ "), f"expected a continuation, got {line!r}")
            self.s.sendall(piece)
        lines = []
        while True:
            line = self.line()
            m = re.search(rb"\{(\d+)\}$", line)
            if m:
                line += b"\r\n" + self.exact(int(m.group(1))) + self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def ok(self, tag, text):
        lines, t = self.command(tag, [f"{tag} {text}\r\n".encode()])
        check(t.startswith(tag.encode() + b" OK"), f"{text}: {t!r} {lines!r}")
        return lines, t


a = Conn()
a.ok("l", f"LOGIN {user} {password}")
caps = a.ok("c", "CAPABILITY")[0][0].split()
for cap in (b"MULTIAPPEND", b"CATENATE", b"ESORT", b"CONTEXT=SEARCH", b"CONTEXT=SORT", b"PARTIAL"):
    check(cap in caps, f"{cap!r} missing from {caps!r}")

# MULTIAPPEND: three messages, two synchronizing literals; one APPENDUID set.
msgs = [f"From: m{i}@example.org\r\nSubject: s{i}\r\n\r\nbody {i} {'x' * (10 * i)}\r\n".encode()
        for i in (3, 1, 2)]
_, t = a.command("m", [
    b"m APPEND INBOX {%d}\r\n" % len(msgs[0]),
    msgs[0] + b" (\\Seen) {%d}\r\n" % len(msgs[1]),
    msgs[1] + b" {%d+}\r\n" % len(msgs[2]) + msgs[2] + b"\r\n",
])
uidvalidity, uids = re.match(rb"m OK \[APPENDUID (\d+) ([0-9:,]+)\]", t).groups()
check(uids == b"1:3", f"MULTIAPPEND: {t!r}")

# CATENATE: the header of message 1 by URL, a new body as TEXT.
body = b"a new body\r\n"
_, t = a.command("k", [
    b'k APPEND Drafts CATENATE (URL "/INBOX;UIDVALIDITY=%s/;UID=1/;SECTION=HEADER" TEXT {%d+}\r\n'
    % (uidvalidity, len(body)) + body + b")\r\n"])
check(t.startswith(b"k OK [APPENDUID "), f"CATENATE: {t!r}")
_, t = a.command("b", [b'b APPEND Drafts CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")\r\n'])
check(t.startswith(b'b NO [BADURL "/INBOX;UIDVALIDITY=1/;UID=1"]'), f"BADURL: {t!r}")

a.ok("s", "SELECT Drafts")
lines, _ = a.ok("f", "FETCH 1 BODY.PEEK[]")
check(lines[0].endswith(msgs[0].split(b"\r\n\r\n")[0] + b"\r\n\r\n" + body + b")"), f"built: {lines!r}")

# ESORT and PARTIAL: by size the messages are 2, 3, 1 (message i has 10*i x's ...).
a.ok("s", "SELECT INBOX")
lines, _ = a.ok("o", "SORT RETURN (MIN MAX COUNT ALL) (SIZE) UTF-8 ALL")
check(lines == [b'* ESEARCH (TAG "o") MIN 2 MAX 1 COUNT 3 ALL 2:3,1'], f"ESORT: {lines!r}")
lines, _ = a.ok("p", "UID SEARCH RETURN (PARTIAL -1:-2) ALL")
check(lines == [b'* ESEARCH (TAG "p") UID PARTIAL (-1:-2 2:3)'], f"PARTIAL: {lines!r}")
lines, _ = a.ok("q", "UID FETCH 1:* (UID) (PARTIAL 1:1)")
check(lines == [b"* 1 FETCH (UID 1)"], f"FETCH PARTIAL: {lines!r}")

# CONTEXT=SEARCH: a kept search hears of another connection's change.
lines, _ = a.ok("u", "UID SEARCH RETURN (UPDATE ALL) SEEN")
check(lines == [b'* ESEARCH (TAG "u") UID ALL 2'], f"UPDATE: {lines!r}")
b = Conn()
b.ok("l", f"LOGIN {user} {password}")
b.ok("s", "SELECT INBOX")
b.ok("t", "STORE 3 +FLAGS (\\Seen)")
lines, _ = a.ok("n", "NOOP")
check(b'* ESEARCH (TAG "u") UID ADDTO (0 3)' in lines, f"ADDTO: {lines!r}")
a.ok("x", 'CANCELUPDATE "u"')
b.ok("t", "STORE 1 +FLAGS (\\Seen)")
lines, _ = a.ok("n", "NOOP")
check(not any(b"ESEARCH" in l for l in lines), f"after CANCELUPDATE: {lines!r}")
a.ok("z", "LOGOUT")
b.ok("z", "LOGOUT")
print("append search ext ok")
