"""IMAP extensions with Python's imaplib carrying raw commands: CONDSTORE (MODSEQ,
CHANGEDSINCE, UNCHANGEDSINCE), QRESYNC (VANISHED (EARLIER) on SELECT), ESEARCH,
LIST-EXTENDED (selection and return options) and QUOTA (GETQUOTAROOT against a quota set
with `hermod user quota`).

usage: imap_extensions.py IMAPS_PORT USER PASSWORD QUOTA_KIB"""
import imaplib
import re
import sys

from hermod_client import check, tls_context

port, user, password, quota_kib = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls_context(), timeout=15)
typ, _ = m.login(user, password)
check(typ == "OK", "LOGIN")


def raw(command):
    """Send one command line; return (status, [response lines], tagged line) as bytes."""
    tag = m._new_tag()
    m.send(tag + b" " + command.encode() + b"\r\n")
    lines = []
    while True:
        line = m.readline()
        check(line, f"connection closed during {command}")
        literal = re.search(rb"\{(\d+)\}\r\n$", line)
        while literal:
            line += m.read(int(literal.group(1)))
            more = m.readline()
            line += more
            literal = re.search(rb"\{(\d+)\}\r\n$", more)
        if line.startswith(tag + b" "):
            return line.split()[1].decode(), lines, line
        lines.append(line)


def ok(command):
    status, lines, tagged = raw(command)
    check(status == "OK", f"{command}: {tagged!r} {lines!r}")
    return lines, tagged


caps = ok("CAPABILITY")[0][0].decode().upper().split()
for c in ("CONDSTORE", "QRESYNC", "ESEARCH", "LIST-EXTENDED", "QUOTA", "ENABLE", "UIDPLUS"):
    check(c in caps, f"{c} missing from {caps}")

for i in (1, 2, 3):
    typ, data = m.append("INBOX", None, None, f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode())
    check(typ == "OK", f"APPEND: {data}")

lines, _ = ok("ENABLE QRESYNC")
check(any(re.match(rb"\* ENABLED .*QRESYNC", l) for l in lines), f"ENABLE: {lines}")

# CONDSTORE: SELECT reports HIGHESTMODSEQ, FETCH reports each message's MODSEQ.
lines, tagged = ok("SELECT INBOX (CONDSTORE)")
text = b"".join(lines)
highest = int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1))
uidvalidity = int(re.search(rb"UIDVALIDITY (\d+)", text).group(1))
lines, _ = ok("UID FETCH 1:* (FLAGS MODSEQ)")
mods = {int(re.search(rb"UID (\d+)", l).group(1)): int(re.search(rb"MODSEQ \((\d+)\)", l).group(1))
        for l in lines if b"FETCH" in l}
check(len(mods) == 3 and max(mods.values()) <= highest, f"MODSEQ {mods} highest {highest}")
u1, u2, u3 = sorted(mods)

# A change raises the message's MODSEQ above HIGHESTMODSEQ; CHANGEDSINCE returns only it.
ok(f"UID STORE {u2} +FLAGS.SILENT (\\Flagged)")
lines, _ = ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
changed = [l for l in lines if b"FETCH" in l]
check(len(changed) == 1 and f"UID {u2} ".encode() in changed[0] and b"\\Flagged" in changed[0],
      f"CHANGEDSINCE: {lines}")
check(int(re.search(rb"MODSEQ \((\d+)\)", changed[0]).group(1)) > highest, changed)

# UNCHANGEDSINCE older than the message's MODSEQ: refused with MODIFIED, flags untouched.
lines, tagged = ok(f"UID STORE {u1} (UNCHANGEDSINCE {mods[u1] - 1}) +FLAGS (\\Seen)")
check(re.search(rf"\[MODIFIED {u1}\]".encode(), tagged), f"no MODIFIED: {tagged!r}")
lines, _ = ok(f"UID FETCH {u1} (FLAGS)")
check(b"\\Seen" not in b"".join(lines), f"conditional STORE applied anyway: {lines}")
# ... and with the current MODSEQ it applies.
ok(f"UID STORE {u1} (UNCHANGEDSINCE {mods[u1]}) +FLAGS (\\Seen)")
lines, _ = ok(f"UID FETCH {u1} (FLAGS)")
check(b"\\Seen" in b"".join(lines), f"conditional STORE not applied: {lines}")

ok(f"UID STORE {u3} +FLAGS.SILENT (\\Deleted)")
ok(f"UID EXPUNGE {u3}")
ok("CLOSE")

# QRESYNC: a re-SELECT with what we knew gets the expunged UID as VANISHED (EARLIER) and the
# changed messages as FETCH, without asking.
lines, _ = ok(f"SELECT INBOX (QRESYNC ({uidvalidity} {highest}))")
text = b"".join(lines)
check(re.search(rf"\* VANISHED \(EARLIER\) {u3}\r\n".encode(), text), f"no VANISHED: {text!r}")
fetched = [l for l in lines if b" FETCH " in l]
uids = sorted(int(re.search(rb"UID (\d+)", l).group(1)) for l in fetched)
check(uids == [u1, u2], f"QRESYNC FETCH: {fetched}")

# ESEARCH: one ESEARCH response with the requested return items.
lines, _ = ok("UID SEARCH RETURN (MIN MAX COUNT) ALL")
es = [l for l in lines if l.startswith(b"* ESEARCH")]
check(len(es) == 1, f"ESEARCH: {lines}")
check(re.search(rb"\(TAG \"[^\"]+\"\) UID", es[0]), es)
check(re.search(rf"MIN {u1}\b".encode(), es[0]) and re.search(rf"MAX {u2}\b".encode(), es[0])
      and re.search(rb"COUNT 2\b", es[0]), es)
lines, _ = ok("SEARCH RETURN (ALL) FLAGGED")
check(any(re.match(rb"\* ESEARCH \(TAG \"[^\"]+\"\) ALL 2\r\n", l) for l in lines), lines)

# LIST-EXTENDED: selection option SPECIAL-USE lists only special-use folders; RETURN
# (CHILDREN) marks a parent.
ok("CREATE Projects/2026")
lines, _ = ok('LIST (SPECIAL-USE) "" "*"')
names = b"".join(lines).decode()
check("\\Sent" in names and "\\Trash" in names and "INBOX" not in names
      and "Projects" not in names, f"LIST (SPECIAL-USE): {names}")
lines, _ = ok('LIST "" "%" RETURN (CHILDREN)')
projects = [l for l in lines if b"Projects" in l]
check(len(projects) == 1 and b"\\HasChildren" in projects[0], f"RETURN (CHILDREN): {lines}")
lines, _ = ok('LIST "" "*" RETURN (STATUS (MESSAGES))')
check(any(re.search(rb"\* STATUS \"?INBOX\"? \(MESSAGES 2\)", l) for l in lines),
      f"RETURN (STATUS): {lines}")

# QUOTA: the INBOX's quota root carries the limit set by the admin command.
lines, _ = ok("GETQUOTAROOT INBOX")
text = b"".join(lines)
check(re.search(rb"\* QUOTAROOT \"?INBOX\"? ", text), f"QUOTAROOT: {text!r}")
q = re.search(rb"\* QUOTA \S+ \(STORAGE (\d+) (\d+)\)", text)
check(q and int(q.group(2)) == quota_kib and 0 < int(q.group(1)) <= quota_kib,
      f"QUOTA: {text!r}")

m.logout()
print("imap-ext ok")
