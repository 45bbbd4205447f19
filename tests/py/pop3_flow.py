"""POP3 end to end with Python's poplib: STLS, CAPA, plaintext refusal, AUTH PLAIN over 995,
STAT/LIST/UIDL/TOP/RETR byte-exact (dot-stuffed lines too), DELE+RSET, DELE+QUIT, the IN-USE
lock, a dropped connection deleting nothing, garbage and overlong lines.

usage: pop3_flow.py POP3_PORT POP3S_PORT USER PASSWORD N_MESSAGES_EXPECTED BODYFILE..."""
import base64
import poplib
import socket
import ssl
import sys

from hermod_client import check, tls_context

pop3_port, pop3s_port, user, password, expected = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
bodies = [open(p, "rb").read() for p in sys.argv[6:]]
HOST = "127.0.0.1"


def crlf(data):
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# --- Port 110: CAPA before TLS offers STLS but no login; USER is refused in clear.
p = poplib.POP3(HOST, pop3_port, timeout=10)
check(p.getwelcome().startswith(b"+OK"), p.getwelcome())
caps = p.capa()
check("STLS" in caps, f"STLS not offered: {caps}")
check("USER" not in caps and "SASL" not in caps, f"login offered before TLS: {caps}")
try:
    p.user(user)
    raise AssertionError("USER accepted before TLS")
except poplib.error_proto as e:
    check(b"-ERR" in e.args[0], e)
# Garbage and an overlong line get -ERR and the session goes on.
p._putcmd("FROBNICATE now")
check(p._getline()[0].startswith(b"-ERR"), "garbage")
p._putcmd("NOOP " + "x" * 5000)
check(p._getline()[0].startswith(b"-ERR"), "overlong line")
p.stls(context=tls_context())
caps = p.capa()
check("USER" in caps and "UIDL" in caps and "TOP" in caps, f"after STLS: {caps}")
check(any(c.startswith("SASL") and "PLAIN" in " ".join(caps[c]) for c in caps), caps)
p.user(user)
try:
    p.pass_("wrong password")
    raise AssertionError("wrong password accepted")
except poplib.error_proto as e:
    check(b"[AUTH]" in e.args[0], f"no [AUTH] code: {e}")
p.quit()

# --- Port 995: AUTH PLAIN with initial response.
def login995():
    c = poplib.POP3_SSL(HOST, pop3s_port, context=tls_context(), timeout=10)
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    resp = c._shortcmd("AUTH PLAIN " + token)
    check(resp.startswith(b"+OK"), resp)
    return c


p = login995()
count, size = p.stat()
check(count == expected, f"STAT count {count} != {expected}")
listing = p.list()[1]
sizes = [int(l.split()[1]) for l in listing]
check(sum(sizes) == size, f"STAT size {size} != sum of LIST {sum(sizes)}")
uidl1 = [l.split()[1] for l in p.uidl()[1]]
check(len(set(uidl1)) == count, "UIDLs not unique")
for i, body in enumerate(bodies, start=1):
    _, lines, octets = p.retr(i)
    got = b"\r\n".join(lines) + b"\r\n"
    check(got.endswith(crlf(body)), f"message {i} body differs:\n{got!r}\n{crlf(body)!r}")
    check(octets - 0 >= len(got), f"octets {octets} < {len(got)}")
    check(sizes[i - 1] == len(got), f"LIST size {sizes[i-1]} != RETR size {len(got)}")
# TOP n 0 gives the headers only; TOP n 5 the headers and 5 body lines.
_, top0, _ = p.top(1, 0)
check(top0[-1] == b"", "TOP 0 must end with the blank line after the headers")
_, top5, _ = p.top(1, 5)
check(len(top5) == len(top0) + min(5, len(bodies[0].splitlines())), "TOP 5 lines")

# The IN-USE lock: a second session for the same user is refused.
second = poplib.POP3_SSL(HOST, pop3s_port, context=tls_context(), timeout=10)
token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
try:
    second._shortcmd("AUTH PLAIN " + token)
    raise AssertionError("second session got the maildrop")
except poplib.error_proto as e:
    check(b"[IN-USE]" in e.args[0], e)
second.close()

# DELE then RSET undoes it.
p.dele(1)
try:
    p.retr(1)
    raise AssertionError("RETR of a deleted message worked")
except poplib.error_proto:
    pass
p.rset()
check(p.stat()[0] == count, "RSET did not undelete")
# DELE then a dropped connection deletes nothing.
p.dele(1)
p.sock.shutdown(socket.SHUT_RDWR)
p.sock.close()

p = login995()
check(p.stat()[0] == count, "a dropped connection deleted mail")
uidl2 = [l.split()[1] for l in p.uidl()[1]]
check(uidl1 == uidl2, "UIDLs changed between sessions")
# DELE then QUIT deletes.
p.dele(1)
p.quit()
p = login995()
check(p.stat()[0] == count - 1, "DELE+QUIT did not delete")
uidl3 = [l.split()[1] for l in p.uidl()[1]]
check(uidl3 == uidl1[1:], "UIDLs of remaining messages changed")
# Wrong state: STAT before login, on a fresh connection.
p.quit()
q = poplib.POP3_SSL(HOST, pop3s_port, context=tls_context(), timeout=10)
try:
    q.stat()
    raise AssertionError("STAT before login worked")
except poplib.error_proto:
    pass
q.quit()
print("pop3 ok", count, uidl1[0].decode())
