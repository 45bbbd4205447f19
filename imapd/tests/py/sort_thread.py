"""SORT and THREAD (RFC 5256) with Python's imaplib against a running hermod IMAPS listener
holding the five messages that imapd/tests/imaplib_sort_thread.rs delivers.

usage: sort_thread.py IMAPS_PORT CERT_FILE USER PASSWORD"""
import imaplib
import ssl
import sys

port, cert, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(result, what):
    typ, data = result
    check(typ == "OK", f"{what}: {typ} {data!r}")
    return data[0].decode()


ctx = ssl.create_default_context(cafile=cert)
ctx.check_hostname = False  # the test certificate names "localhost", we dial 127.0.0.1
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=10)
ok(m.login(user, password), "LOGIN")
caps = ok(m.capability(), "CAPABILITY").upper().split()
for c in ("SORT", "SORT=DISPLAY", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"):
    check(c in caps, f"{c} not advertised: {caps}")
ok(m.select("INBOX"), "SELECT")

got = ok(m.sort("(DATE)", "UTF-8", "ALL"), "SORT DATE")
check(got == "3 4 1 2 5", f"SORT (DATE): {got!r}")
got = ok(m.uid("SORT", "(REVERSE SUBJECT DATE)", "UTF-8", "ALL"), "UID SORT")
check(got == "1 2 5 3 4", f"UID SORT (REVERSE SUBJECT DATE): {got!r}")
got = ok(m.sort("(FROM)", "US-ASCII", "ALL"), "SORT FROM")
check(got == "2 3 4 5 1", f"SORT (FROM): {got!r}")
got = ok(m.sort("(DISPLAYFROM)", "UTF-8", "ALL"), "SORT DISPLAYFROM")
check(got == "2 3 4 5 1", f"SORT (DISPLAYFROM): {got!r}")
m.literal = "grüße".encode()
got = ok(m.sort("(REVERSE DATE)", "UTF-8", "SUBJECT"), "SORT with a UTF-8 literal")
check(got == "5 2 1", f"SORT (REVERSE DATE) SUBJECT grüße: {got!r}")

got = ok(m.thread("REFERENCES", "UTF-8", "ALL"), "THREAD REFERENCES")
check(got == "(3 4)(1 (2)(5))", f"THREAD REFERENCES: {got!r}")
got = ok(m.uid("THREAD", "ORDEREDSUBJECT", "UTF-8", "ALL"), "UID THREAD")
check(got == "(3 4)(1 (2)(5))", f"UID THREAD ORDEREDSUBJECT: {got!r}")
typ, data = m.sort("(DATE)", "KOI8-R", "ALL")
check(typ == "NO", f"unknown charset: {typ} {data!r}")
m.logout()
print("sort-thread ok")
