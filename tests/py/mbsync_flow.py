"""mbsync (isync) syncs a whole account both ways: server mail and folders come down into a
local Maildir; a message saved locally in Sent and a \\Seen flag set locally go up.

usage: mbsync_flow.py IMAPS_PORT LMTP_PORT USER PASSWORD CERTFILE WORKDIR"""
import imaplib
import os
import smtplib
import subprocess
import sys
import time

from hermod_client import check, tls_context

imaps_port, lmtp_port, user, password, cert, work = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6])

lmtp = smtplib.LMTP("127.0.0.1", lmtp_port, timeout=30)
for i in range(3):
    lmtp.sendmail("sender@example.org", [user],
                  f"From: sender@example.org\r\nSubject: mbsync {i}\r\n\r\nbody {i}\r\n".encode())
lmtp.quit()

local = os.path.join(work, "mail")
os.makedirs(local, exist_ok=True)
rc = os.path.join(work, "mbsyncrc")
with open(rc, "w") as f:
    f.write(f"""IMAPAccount hermod
Host 127.0.0.1
Port {imaps_port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}

IMAPStore remote
Account hermod

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")


def mbsync():
    p = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True, timeout=120)
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    check(p.returncode == 0, f"mbsync failed ({p.returncode}):\n{out}")
    return out


mbsync()
inbox_new = os.path.join(local, "INBOX", "new")
inbox_cur = os.path.join(local, "INBOX", "cur")
files = os.listdir(inbox_new) + os.listdir(inbox_cur)
check(len(files) == 3, f"local INBOX has {len(files)} messages")
for folder in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
    check(os.path.isdir(os.path.join(local, folder)), f"folder {folder} not synced down")

# Up: a message saved locally in Sent, and one INBOX message marked seen locally.
sent_new = os.path.join(local, "Sent", "new")
with open(os.path.join(sent_new, f"{int(time.time())}.local1.host"), "wb") as f:
    f.write(b"From: alice@localhost\r\nSubject: written offline\r\n\r\nsaved locally\r\n")
name = sorted(os.listdir(inbox_new) or os.listdir(inbox_cur))[0]
src_dir = inbox_new if name in os.listdir(inbox_new) else inbox_cur
base = name.split(":2,")[0]
os.rename(os.path.join(src_dir, name), os.path.join(inbox_cur, base + ":2,S"))
mbsync()

m = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=tls_context(), timeout=10)
m.login(user, password)
typ, data = m.status("Sent", "(MESSAGES)")
check(b"MESSAGES 1" in data[0], f"Sent on the server: {data}")
m.select("Sent", readonly=True)
typ, data = m.fetch("1", "(BODY.PEEK[])")
check(b"saved locally" in data[0][1], data)
m.select("INBOX", readonly=True)
typ, data = m.search(None, "SEEN")
check(len(data[0].split()) == 1, f"seen on the server: {data}")
m.logout()
print("mbsync ok")
