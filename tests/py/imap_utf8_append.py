"""Thunderbird's save of a sent message after ENABLE UTF8=ACCEPT, byte for byte:
`APPEND "Sent" (\\Seen) UTF8 (~{452+}...)` (RFC 6855 section 4), then BINARY's plain
literal8 `~{n}` form; both must be stored byte-identical.

usage: imap_utf8_append.py IMAPS_PORT USER PASSWORD"""
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

    def command(self, tag, data):
        """Sends raw bytes; returns the untagged lines (literals inlined) and the tagged line."""
        self.s.sendall(data)
        lines = []
        while True:
            line = self.line()
            if line.startswith(b"+ "):
                continue
            m = re.search(rb"\{(\d+)\}$", line)
            if m:
                line += b"\r\n" + self.exact(int(m.group(1))) + self.line()
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)


def sent_message():
    head = ("Message-ID: <6f1c2b7e-3d4a-4b8e-9c1f-2a7d5e8b9c0d@example.org>\r\n"
            "Date: Thu, 3 Dec 2026 13:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "User-Agent: Mozilla Thunderbird\r\nContent-Language: en-US\r\n"
            "To: bob@example.net\r\nFrom: Alice <alice@example.org>\r\n"
            "Subject: Grüße aus Zürich\r\n"
            "Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nHallo Bob, schöne Grüße!\r\n").encode()
    msg = head + b"." * (450 - len(head)) + b"\r\n"
    check(len(msg) == 452, f"message is {len(msg)} bytes")
    return msg


c = Raw()
_, t = c.command(b"1", f"1 login {user} {password}\r\n".encode())
check(t.startswith(b"1 OK"), f"login: {t!r}")
_, t = c.command(b"2", b"2 enable UTF8=ACCEPT\r\n")
check(t.startswith(b"2 OK"), f"enable: {t!r}")
msg = sent_message()
_, t = c.command(b"3", b'3 APPEND "Sent" (\\Seen) UTF8 (~{452+}\r\n' + msg + b")\r\n")
check(t.startswith(b"3 OK [APPENDUID "), f"UTF8 APPEND: {t!r}")
other = msg.replace(b"Subject: Gr", b"Subject: 2 Gr", 1)
_, t = c.command(b"4", b"4 APPEND Sent ~{%d}\r\n" % len(other) + other + b"\r\n")
check(t.startswith(b"4 OK [APPENDUID "), f"literal8 APPEND: {t!r}")
_, t = c.command(b"5", b"5 select Sent\r\n")
check(t.startswith(b"5 OK"), f"select: {t!r}")
lines, t = c.command(b"6", b"6 fetch 1:2 (FLAGS BODY.PEEK[])\r\n")
check(t.startswith(b"6 OK"), f"fetch: {t!r}")
check(len(lines) == 2, f"two messages: {lines!r}")
check(b"\\Seen" in lines[0] and lines[0].endswith(msg + b")"), f"first: {lines[0]!r}")
check(lines[1].endswith(other + b")"), f"second: {lines[1]!r}")
c.command(b"7", b"7 logout\r\n")
print("utf8 append ok")
