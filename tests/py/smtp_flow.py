"""SMTP end to end with Python's smtplib: submission with STARTTLS + AUTH PLAIN and LOGIN,
wrong password 535, AUTH refused before TLS, sender ownership 553, SIZE refusal, pipelining,
465 implicit TLS, SMTPUTF8, MX role rules; then the message is found in the recipient's
Maildir with its body byte-exact and Received, Return-Path and Delivered-To headers.

usage: smtp_flow.py SMTP_PORT SUBMISSION_PORT SUBMISSIONS_PORT DATA_DIR"""
import smtplib
import socket
import ssl
import sys
import time

from hermod_client import check, maildir_messages, tls_context, wait_for

smtp_port, sub_port, subs_port, data_dir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
HOST = "127.0.0.1"
ALICE, BOB = "alice@localhost", "bob@localhost"


def message(subject, body, sender=ALICE, to=BOB, extra=""):
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\n{body}").encode()


# --- 587: no AUTH before TLS; AUTH before TLS is refused; MAIL before AUTH is refused.
s = smtplib.SMTP(HOST, sub_port, timeout=10)
code, ehlo = s.ehlo("client.example")
check(code == 250, ehlo)
check(not s.has_extn("auth"), f"AUTH offered before TLS: {ehlo!r}")
check(s.has_extn("starttls"), "STARTTLS not offered")
code, resp = s.docmd("AUTH", "PLAIN AGFsaWNlQGxvY2FsaG9zdABwYXNzd29yZA==")
check(code >= 500, f"AUTH before TLS answered {code} {resp!r}")
code, resp = s.docmd("MAIL", f"FROM:<{ALICE}>")
check(code == 530, f"MAIL before AUTH answered {code} {resp!r}")
s.starttls(context=tls_context())
s.ehlo("client.example")
check(s.has_extn("auth"), "AUTH not offered after TLS")
check("PLAIN" in s.esmtp_features.get("auth", "").upper(), s.esmtp_features)
try:
    s.login(ALICE, "wrong password")
    raise AssertionError("wrong password accepted")
except smtplib.SMTPAuthenticationError as e:
    check(e.smtp_code == 535, e)
s.quit()

# --- AUTH PLAIN and sending to a local user; sender ownership.
s = smtplib.SMTP(HOST, sub_port, timeout=10)
s.starttls(context=tls_context())
s.ehlo("client.example")
s.auth_plain = s.auth_plain  # smtplib picks PLAIN first when offered
s.login(ALICE, "wonderland")
try:
    s.sendmail("bob@localhost", [BOB], message("forged", "not mine\r\n", sender=BOB))
    raise AssertionError("sent as someone else")
except smtplib.SMTPSenderRefused as e:
    check(e.smtp_code == 553, e)
body = "Hello Bob,\r\n.a line with a leading dot\r\n..two\r\nbye\r\n"
refused = s.sendmail(ALICE, [BOB], message("hello over 587", body))
check(refused == {}, refused)
# SIZE refusal at MAIL time.
code, resp = s.docmd("MAIL", f"FROM:<{ALICE}> SIZE=999999999999")
check(code == 552, f"SIZE refusal answered {code} {resp!r}")
s.rset()
# SMTPUTF8: a UTF-8 subject and local part in the body only.
utf8 = "Subject: grüße\r\nFrom: alice@localhost\r\nTo: bob@localhost\r\n\r\nÄrger? Nö.\r\n".encode()
s.sendmail(ALICE, [BOB], utf8, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
s.quit()

# --- AUTH LOGIN over 465 (implicit TLS).
s = smtplib.SMTP_SSL(HOST, subs_port, context=tls_context(), timeout=10)
s.ehlo("client.example")
s.user, s.password = ALICE, "wonderland"
code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
check(code == 235, f"AUTH LOGIN answered {code} {resp!r}")
s.sendmail(ALICE, [BOB], message("over 465", "implicit TLS\r\n"))
s.quit()

# --- Pipelining: several commands in one write, replies in order.
raw = socket.create_connection((HOST, smtp_port), timeout=10)
f = raw.makefile("rb")
def reply():
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if line[3:4] != b"-":
            return lines
check(reply()[0].startswith(b"220"), "greeting")
raw.sendall(b"EHLO client.example\r\n")
check(any(b"PIPELINING" in l for l in reply()), "PIPELINING not offered")
raw.sendall(b"MAIL FROM:<someone@example.net>\r\nRCPT TO:<bob@localhost>\r\nRCPT TO:<nobody@localhost>\r\nDATA\r\n")
check(reply()[0].startswith(b"250"), "MAIL")
check(reply()[0].startswith(b"250"), "RCPT bob")
r = reply()[0]
check(r.startswith(b"550") and b"5.1.1" in r, f"unknown user: {r!r}")
check(reply()[0].startswith(b"354"), "DATA")
raw.sendall(b"Subject: pipelined\r\n\r\nfrom the internet\r\n.\r\nQUIT\r\n")
check(reply()[0].startswith(b"250"), "end of data")
check(reply()[0].startswith(b"221"), "QUIT")
raw.close()

# --- Port 25: no AUTH offered; relaying refused; null sender accepted; postmaster accepted.
s = smtplib.SMTP(HOST, smtp_port, timeout=10)
s.ehlo("mx.example.net")
check(not s.has_extn("auth"), "AUTH offered on port 25")
code, _ = s.docmd("MAIL", "FROM:<>")
check(code == 250, "null sender refused")
code, resp = s.docmd("RCPT", "TO:<postmaster@localhost>")
check(code == 250, f"postmaster refused: {code} {resp!r}")
s.rset()
code, resp = s.docmd("VRFY", "bob@localhost")
check(code == 252, f"VRFY answered {code} {resp!r}")
s.quit()

# --- The messages arrive in Bob's Maildir.
msgs = wait_for(lambda: (lambda m: m if len(m) >= 4 else None)(maildir_messages(data_dir, BOB)),
                timeout=15, what="4 messages in bob's Maildir")
first = next(m for m in msgs if b"hello over 587" in m)
head, _, stored_body = first.partition(b"\r\n\r\n")
check(stored_body == body.encode(), f"body not byte-exact: {stored_body!r}")
check(head.startswith(b"Return-Path: <alice@localhost>"), head[:200])
check(b"\r\nDelivered-To: bob@localhost" in head, head)
check(b"\r\nReceived: from client.example" in head, head)
check(b"Message-ID:" in head or b"Message-Id:" in head, "Message-ID not added on submission")
check(b"\r\nDate:" in head, "Date not added on submission")
check(any("Ärger".encode() in m for m in msgs), "SMTPUTF8 message missing")
check(any(b"implicit TLS" in m for m in msgs), "465 message missing")
check(any(b"from the internet" in m for m in msgs), "pipelined message missing")
print("smtp ok", len(msgs))
