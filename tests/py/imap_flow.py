"""IMAP end to end with Python's imaplib: capabilities, LOGINDISABLED before TLS, STARTTLS,
LIST with SPECIAL-USE, SELECT, FETCH (flags, BODY[] byte-exact, partial, BODYSTRUCTURE),
STORE, SEARCH (UTF-8 text), APPEND with APPENDUID, COPY/MOVE with COPYUID, EXPUNGE, two
sessions seeing each other's changes, IDLE hearing of mail delivered over SMTP.
(CONDSTORE, QRESYNC and the other extensions: imap_extensions.py.)

usage: imap_flow.py IMAP_PORT IMAPS_PORT SMTP_PORT USER PASSWORD"""
import imaplib
import re
import smtplib
import socket
import ssl
import sys
import time

from hermod_client import check, tls_context, wait_for

imap_port, imaps_port, smtp_port, user, password = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
HOST = "127.0.0.1"


def ok(result, what):
    typ, data = result
    check(typ == "OK", f"{what}: {typ} {data!r}")
    return data


def send(subject, body, charset="us-ascii"):
    s = smtplib.SMTP(HOST, smtp_port, timeout=10)
    msg = (f"From: Bob <bob@example.org>\r\nTo: {user}\r\nSubject: {subject}\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset={charset}\r\n"
           f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}").encode()
    s.sendmail("bob@example.org", [user], msg)
    s.quit()
    return msg


# --- 143: greeting carries capabilities; LOGINDISABLED until STARTTLS.
m = imaplib.IMAP4(HOST, imap_port, timeout=10)
check("LOGINDISABLED" in m.capabilities, f"no LOGINDISABLED before TLS: {m.capabilities}")
check("STARTTLS" in m.capabilities, m.capabilities)
try:
    m.login(user, password)
    raise AssertionError("LOGIN accepted before TLS")
except imaplib.IMAP4.error:
    pass
m.starttls(ssl_context=tls_context())
check("LOGINDISABLED" not in m.capabilities, m.capabilities)
try:
    m.login(user, "wrong")
    raise AssertionError("wrong password accepted")
except imaplib.IMAP4.error as e:
    # The specific refusal, not just any NO (RFC 5530).
    check("[AUTHENTICATIONFAILED]" in str(e), e)
ok(m.login(user, password), "LOGIN after STARTTLS")
m.logout()

# --- 993 session A.
a = imaplib.IMAP4_SSL(HOST, imaps_port, ssl_context=tls_context(), timeout=10)
ok(a.login(user, password), "LOGIN")
caps = ok(a.capability(), "CAPABILITY")[0].decode().upper().split()
for c in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "NAMESPACE", "SPECIAL-USE", "LITERAL+"):
    check(c in caps, f"{c} missing from {caps}")
folders = ok(a.list('""', "*"), "LIST")
text = b"\n".join(folders).decode()
for name, attr in (("Sent", "\\Sent"), ("Drafts", "\\Drafts"), ("Trash", "\\Trash"), ("Junk", "\\Junk")):
    check(re.search(r"\(.*" + re.escape(attr) + r".*\) \"/\" \"?" + name, text), f"{name} {attr} not listed:\n{text}")
check("INBOX" in text, text)

m1 = send("first", "plain body line\r\n.dot line\r\n")
m2 = send("Grüße aus Köln", "Straße und Öl\r\n", charset="utf-8")
# Delivery runs from the queue: wait until both messages are in INBOX.
wait_for(lambda: b"MESSAGES 2" in a.status("INBOX", "(MESSAGES)")[1][0], timeout=15,
         what="2 messages in INBOX")
data = ok(a.select("INBOX"), "SELECT")
check(int(data[0]) == 2, f"EXISTS {data}")

typ, data = a.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
check(typ == "OK" and len([d for d in data if d]) == 2, data)
uids = [int(re.search(rb"UID (\d+)", d).group(1)) for d in data if d]
check(uids == sorted(uids) and len(set(uids)) == 2, uids)

typ, data = a.uid("FETCH", str(uids[0]), "(BODY.PEEK[])")
raw = data[0][1]
check(raw.endswith(m1.split(b"\r\n\r\n", 1)[1]), f"BODY[] not byte-exact: {raw!r}")
check(raw.startswith(b"Return-Path:") or b"Received:" in raw, raw[:200])
typ, data = a.uid("FETCH", str(uids[0]), "(FLAGS)")
check(b"\\Seen" not in data[0], f"PEEK set \\Seen: {data}")
typ, data = a.uid("FETCH", str(uids[0]), "(BODY[TEXT]<0.10>)")
check(data[0][1] == b"plain body", data)
typ, data = a.uid("FETCH", str(uids[0]), "(FLAGS)")
check(b"\\Seen" in data[0], f"BODY[] fetch did not set \\Seen: {data}")
typ, data = a.uid("FETCH", str(uids[1]), "(BODYSTRUCTURE ENVELOPE)")
flat = b"".join(b"".join(x) if isinstance(x, tuple) else x for x in data).upper()
check(b'("TEXT" "PLAIN" ("CHARSET" "UTF-8")' in flat, f"BODYSTRUCTURE: {flat!r}")
check("GRÜßE AUS KÖLN".encode().upper() in flat or "GRüßE AUS KöLN".encode() in flat, f"ENVELOPE subject: {flat!r}")

# SEARCH with UTF-8 text over the decoded body and subject.
a.literal = "Straße".encode()
typ, data = a.uid("SEARCH", "CHARSET", "UTF-8", "BODY")
check(data[0].split() == [str(uids[1]).encode()], f"UTF-8 SEARCH: {data}")
typ, data = a.uid("SEARCH", "UNSEEN")
check(data[0].split() == [str(uids[1]).encode()], f"SEARCH UNSEEN: {data}")

# Session B sees A's flag change and new mail at its next command.
b = imaplib.IMAP4_SSL(HOST, imaps_port, ssl_context=tls_context(), timeout=10)
ok(b.login(user, password), "LOGIN B")
ok(b.select("INBOX"), "SELECT B")
ok(a.uid("STORE", str(uids[1]), "+FLAGS", "(\\Flagged)"), "STORE")
ok(b.noop(), "NOOP B")
fetches = b"".join(x if isinstance(x, bytes) else x[0] for x in b.untagged_responses.get("FETCH", []))
check(b"\\Flagged" in fetches, f"B did not see the flag change: {b.untagged_responses}")

# IDLE in B hears of mail delivered over SMTP within a few seconds.
b.send(b"I1 IDLE\r\n")
line = b.readline()
check(line.startswith(b"+"), f"IDLE continuation: {line!r}")
send("while idling", "ping\r\n")
b.sock.settimeout(10)
deadline = time.time() + 10
got = b""
while time.time() < deadline and b"EXISTS" not in got:
    got += b.readline()
check(b"* 3 EXISTS" in got, f"no EXISTS during IDLE: {got!r}")
b.send(b"DONE\r\n")
while True:
    line = b.readline()
    if line.startswith(b"I1 "):
        check(b"OK" in line, line)
        break

# APPEND to Sent with APPENDUID.
msg = b"From: alice@localhost\r\nSubject: saved\r\n\r\nkept in Sent\r\n"
typ, data = a.append("Sent", "(\\Seen)", None, msg)
check(typ == "OK" and b"APPENDUID" in data[0], f"APPEND: {typ} {data}")
# COPY and MOVE with COPYUID; EXPUNGE.
typ, data = a.uid("COPY", str(uids[0]), "Archive")
check(typ == "OK", f"COPY: {typ} {data}")
code, copyuid = a.response("COPYUID")
check(copyuid and copyuid[0] and len(copyuid[0].split()) == 3, f"no COPYUID: {copyuid}")
typ, data = a.uid("MOVE", str(uids[1]), "Trash")
check(typ == "OK", f"MOVE: {typ} {data}")
typ, data = a.uid("SEARCH", "ALL")
check(str(uids[1]).encode() not in data[0].split(), f"moved message still here: {data}")
ok(a.uid("STORE", str(uids[0]), "+FLAGS", "(\\Deleted)"), "STORE Deleted")
typ, data = a.expunge()
check(typ == "OK" and data and data[0] is not None, f"EXPUNGE: {data}")
typ, data = a.status("Trash", "(MESSAGES UIDNEXT UNSEEN)")
check(b"MESSAGES 1" in data[0], f"STATUS Trash: {data}")
typ, data = a.status("Archive", "(MESSAGES)")
check(b"MESSAGES 1" in data[0], f"STATUS Archive: {data}")
# Mailbox names that try to escape are refused.
for bad in ("../evil", "/etc", "a/../../b"):
    typ, data = a.create(bad)
    check(typ == "NO", f"CREATE {bad!r} answered {typ} {data}")
    listed = b"\n".join(ok(a.list('""', "*"), "LIST")).decode()
    check("evil" not in listed and "etc" not in listed and '"b"' not in listed,
          f"CREATE {bad!r} made a folder anyway: {listed}")
ok(a.create("Projects/2026"), "CREATE nested")
ok(a.rename("Projects", "Work"), "RENAME")
text = b"\n".join(ok(a.list('""', "Work*"), "LIST Work*")).decode()
check("Work/2026" in text, text)
a.logout()
b.logout()
print("imap ok", uids[0], uids[1])
