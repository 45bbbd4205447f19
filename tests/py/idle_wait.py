"""IMAP IDLE with Python's imaplib: log in over IMAPS, SELECT INBOX, IDLE, print "idling",
then wait for the EXISTS of a new message, leave IDLE and fetch its Subject.

usage: idle_wait.py IMAPS_PORT USER PASSWORD SUBJECT"""
import imaplib
import sys
import time

from hermod_client import check, tls_context

port, user, password, subject = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls_context(), timeout=20)
typ, _ = m.login(user, password)
check(typ == "OK", "LOGIN")
typ, data = m.select("INBOX")
check(typ == "OK" and data[0] == b"0", f"SELECT: {typ} {data}")
m.send(b"I1 IDLE\r\n")
line = m.readline()
check(line.startswith(b"+"), f"IDLE continuation: {line!r}")
print("idling", flush=True)
deadline = time.time() + 20
got = b""
while time.time() < deadline and b"EXISTS" not in got:
    got += m.readline()
check(b"* 1 EXISTS" in got, f"no EXISTS during IDLE: {got!r}")
m.send(b"DONE\r\n")
while True:
    line = m.readline()
    if line.startswith(b"I1 "):
        check(b"OK" in line, line)
        break
typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
check(typ == "OK" and subject.encode() in data[0][1], f"FETCH: {data}")
m.logout()
print("heard", subject)
