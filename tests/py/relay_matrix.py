"""The open-relay matrix: address tricks on port 25 without authentication must all be
refused at RCPT, while plain local delivery still works.

usage: relay_matrix.py SMTP_PORT"""
import smtplib
import sys

from hermod_client import check

port = int(sys.argv[1])
TRICKS = [
    "user@other.example",
    "user%other.example@localhost",
    "user%other.example@[127.0.0.1]",
    "other.example!user@localhost",
    "other.example!user",
    "@localhost:user@other.example",
    "@localhost,@other.example:user@other.example",
    '"user@other.example"@localhost',
    '"user%other.example"@localhost',
    "user@other.example@localhost",
    "user@[192.0.2.1]",
    "user@[127.0.0.1]",
    "user@other.example.",
    "user@localhost.other.example",
    "user@LOCALHOST.other.example",
    "user@other.example ",
    "USER@OTHER.EXAMPLE",
    "user@other.example\\@localhost",
    "user@other.example%localhost",
    "<user@other.example>",
    "user@other.example>@localhost",
    "user@[IPv6:::1]",
    "user@localhost@other.example",
    "postmaster@other.example",
]
refused = 0
for addr in TRICKS:
    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
    s.ehlo("probe.example")
    code, _ = s.docmd("MAIL", "FROM:<probe@example.net>")
    check(code == 250, f"MAIL refused: {code}")
    target = addr if addr.startswith("<") else f"<{addr}>"
    code, resp = s.docmd("RCPT", f"TO:{target}")
    check(code >= 500, f"relay trick accepted: RCPT TO:{target} -> {code} {resp!r}")
    refused += 1
    s.quit()
# Local delivery still works from the same client.
s = smtplib.SMTP("127.0.0.1", port, timeout=10)
check(s.sendmail("probe@example.net", ["bob@localhost"], b"Subject: local\r\n\r\nstill works\r\n") == {}, "local")
s.quit()
print("relay ok", refused)
