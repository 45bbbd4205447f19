#!/usr/bin/env python3
"""Writes the hand-made seed inputs into fuzz/corpus/<target>/ (run.sh merges the fuzzers'
finds into the same directories). Rerunning it is harmless: files are named by content."""
import base64, hashlib, os, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def crlf(s):
    return s.replace("\r\n", "\n").replace("\n", "\r\n")

PLAIN = crlf("""From: Bob <bob@example.net>
To: alice@example.org
Subject: Re: lunch
Date: Mon, 1 Jun 2020 10:00:00 +0000
Message-ID: <1@example.net>
In-Reply-To: <0@example.net>

See you at noon.
""")
MULTI = crlf("""From: =?utf-8?q?Ren=C3=A9?= <rene@example.com>
To: alice@example.org, "Carol" <carol@example.org>
Cc: undisclosed-recipients:;
Subject: =?iso-8859-1?b?cmVwb3J0IOk=?=
Date: Tue, 2 Jun 2020 11:30:00 +0200
Message-ID: <2@example.com>
References: <0@example.net> <1@example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

preamble
--b1
Content-Type: multipart/alternative; boundary=b2

--b2
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9
--b2
Content-Type: text/html; charset=utf-8

<p>Caf\xc3\xa9</p>
--b2--
--b1
Content-Type: application/pdf; name="a.pdf"
Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQK
--b1
Content-Type: message/rfc822

Subject: inner
From: x@example.org
Content-Type: text/plain

inner body
--b1--
epilogue
""")
BARE_LF = "From: c@example.org\nSubject: bare\n\n.\n..dots\nFrom the start\nno end"

# --- SMTP (first byte: bits 0-1 role, 2 mynetworks, 3 TLS, 4 small limits)
def smtp(mode, text):
    put("smtp_session", bytes([mode]) + crlf(text).encode())
smtp(0, "EHLO client.example.net\nMAIL FROM:<bob@example.net> SIZE=120 BODY=8BITMIME\nRCPT TO:<alice@example.org>\nRCPT TO:<nobody@example.org>\nDATA\nSubject: hi\n\n..dot\nHello\n.\nQUIT\n")
smtp(0, "HELO x\nMAIL FROM:<>\nRCPT TO:<postmaster>\nDATA\n" + PLAIN + ".\nRSET\nNOOP\nVRFY alice\nHELP\nQUIT\n")
smtp(8, "EHLO c\nMAIL FROM:<bob@example.net> RET=HDRS ENVID=abc SMTPUTF8\nRCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.org\nBDAT 20\nSubject: x\r\n\r\nbody\r\nBDAT 0 LAST\nQUIT\n")
smtp(1, "EHLO c\nSTARTTLS\nEHLO c\nAUTH PLAIN " + base64.b64encode(b"\0alice@example.org\0secret").decode() + "\nMAIL FROM:<alice@example.org>\nRCPT TO:<someone@example.com>\nDATA\n" + MULTI + ".\nQUIT\n")
smtp(2, "EHLO c\nAUTH LOGIN\n" + base64.b64encode(b"alice@example.org").decode() + "\n" + base64.b64encode(b"secret").decode() + "\nMAIL FROM:<alice@example.org>\nRCPT TO:<x@[192.0.2.1]>\nDATA\nx\n.\nQUIT\n")
smtp(4 | 16, "EHLO c\nMAIL FROM:<a@example.net>\nRCPT TO:<a@example.com>\nRCPT TO:<b@example.com>\nRCPT TO:<c@example.com>\nRCPT TO:<d@example.com>\nDATA\n" + "x" * 600 + "\n" + "y" * 600 + "\n.\nQUIT\n")
smtp(2, "EHLO c\nAUTH PLAIN\n*\nAUTH CRAM-MD5\nMAIL FROM:<full@example.org>\nBDAT 3 LAST\nabcQUIT\n")

# --- LMTP (first byte: bit 0 small limits)
def lmtp(mode, text):
    put("lmtp_session", bytes([mode]) + crlf(text).encode())
lmtp(0, "LHLO mx.example.org\nMAIL FROM:<bob@example.net>\nRCPT TO:<alice@example.org>\nRCPT TO:<bad@example.org>\nRCPT TO:<carol@example.org>\nDATA\n" + PLAIN + ".\nQUIT\n")
lmtp(1, "LHLO x\nMAIL FROM:<> SIZE=2000\nRCPT TO:<a@x>\nDATA\nFAIL\n" + "z" * 1500 + "\n.\nRSET\nNOOP\nVRFY a\nQUIT\n")
lmtp(0, "LHLO x\nMAIL FROM:<a@b>\nRCPT TO:<a@x>\nRCPT TO:<b@x>\nDATA\nFAIL\n..x\n.\nQUIT\n")

# --- IMAP (first byte: bit 0 TLS, 1 logged in, 2 selected, 3 small limits)
def imap(mode, text):
    put("imap_session", bytes([mode]) + crlf(text).encode())
imap(1, "a CAPABILITY\nb ID (\"name\" \"Thunderbird\" \"version\" \"153.7\")\nc LOGIN alice@example.org secret\nd NAMESPACE\ne LIST (SUBSCRIBED) \"\" \"*\" RETURN (SPECIAL-USE)\nf LIST \"\" \"INBOX\"\ng SELECT INBOX\nh UID fetch 1:* (FLAGS)\ni LOGOUT\n")
imap(0, "a STARTTLS\n")
imap(0, "a LOGIN alice@example.org secret\nb AUTHENTICATE PLAIN\n" + base64.b64encode(b"\0alice@example.org\0secret").decode() + "\nc LOGIN {5}\nalice {6}\nsecret\n")
imap(1, "a AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice@example.org\0wrong").decode() + "\nb AUTHENTICATE LOGIN\n*\nc LOGOUT\n")
imap(3 | 4, "a UID fetch 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])\nb FETCH 1:2 (ENVELOPE BODYSTRUCTURE BODY INTERNALDATE)\nc UID fetch 2 (BODY.PEEK[1.1] BODY.PEEK[2.MIME] BODY.PEEK[3.HEADER] BODY.PEEK[TEXT]<0.2048> BINARY.PEEK[1.1.1])\nd uid store 1 +Flags (\\Seen $Junk)\ne STORE 2 FLAGS.SILENT (\\Deleted)\nf EXPUNGE\ng NOOP\nh CLOSE\n")
imap(3 | 4, "a SEARCH OR FROM bob SUBJECT report SINCE 1-Jan-2020\nb UID SORT (REVERSE DATE SUBJECT) UTF-8 ALL\nc THREAD REFERENCES UTF-8 ALL\nd THREAD ORDEREDSUBJECT UTF-8 UNSEEN\ne SEARCH RETURN (MIN MAX COUNT) TEXT cafe\nf UID SEARCH CHARSET UTF-8 BODY {4}\ncaf\xc3\xa9\n".replace("\xc3\xa9", "e"))
imap(3, "a CREATE \"Work/Project &AOk-\"\nb CREATE Archive2 (USE (\\Archive))\nc RENAME \"Work/Project &AOk-\" Done\nd SUBSCRIBE Done\ne LSUB \"\" *\nf STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)\ng DELETE Done\nh LIST \"\" \"%\"\ni GETQUOTAROOT INBOX\nj ENABLE CONDSTORE QRESYNC UTF8=ACCEPT\nk EXAMINE INBOX\n")
imap(3 | 4, "a APPEND Sent (\\Seen) {" + str(len(PLAIN)) + "+}\n" + PLAIN + "\nb APPEND Drafts {11}\nSubject: x\n\nc COPY 1:* Trash\nd UID MOVE 1 Archive\ne UID EXPUNGE 2\nf IDLE\nDONE\ng CHECK\nh UNSELECT\n")
imap(3 | 4 | 8, "a APPEND INBOX {5000}\nb LIST \"\" \"" + "*" * 40 + "\"\nc FETCH 1 BODY[]<0.10>\n")
imap(3, "a SELECT INBOX (CONDSTORE)\nb FETCH 1:* (FLAGS) (CHANGEDSINCE 1)\nc UID FETCH 1:* (MODSEQ) (CHANGEDSINCE 0 VANISHED)\nd COMPRESS DEFLATE\n")

put("imap_search", "UID SORT (REVERSE ARRIVAL FROM SIZE CC TO DISPLAYFROM) UTF-8 ALL\n" + PLAIN + "\0" + MULTI + "\0" + BARE_LF)
put("imap_search", "THREAD REFERENCES UTF-8 ALL\n" + PLAIN + "\0" + crlf("Subject: Re: Re: lunch\nMessage-ID: <3@x>\nReferences: <1@example.net> <2@example.com>\nDate: Wed, 3 Jun 2020 09:00:00 -0500\n\nok\n") + "\0" + MULTI)
put("imap_search", "SEARCH OR (FROM rene SENTSINCE 1-Jun-2020) NOT (HEADER Message-ID \"<1@example.net>\" LARGER 10) BODY caf TEXT inner\n")
put("imap_search", "THREAD ORDEREDSUBJECT UTF-8 SUBJECT lunch\n")
put("imap_search", "SEARCH 1:* UID 2,4:* SMALLER 100000 SENTBEFORE 3-Jun-2020 ON 2-Jun-2020 KEYWORD $Junk UNKEYWORD x NEW OLD RECENT\n" + MULTI)
put("imap_search", "ESEARCH RETURN (ALL COUNT) CC carol BCC x TO alice\n")

for line in [
    "a LIST (SUBSCRIBED) \"\" \"*\" RETURN (SPECIAL-USE CHILDREN)\r\n",
    "a LIST (SPECIAL-USE RECURSIVEMATCH) \"\" (\"INBOX\" \"Sent\")\r\n",
    "b LIST \"\" \"*\" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))\r\n",
    "c SEARCH RETURN (MIN MAX COUNT ALL SAVE) UNSEEN\r\n",
    "d CREATE \"Sent Items\" (USE (\\Sent))\r\n",
    "e APPEND Sent (\\Seen) {11+}\r\nSubject: a\r\n (\\Draft) \"1-Jun-2020 10:00:00 +0000\" {11+}\r\nSubject: b\r\n\r\n",
    "f LIST \"\" \"caf\xc3\xa9*\"\r\n",
    "g LIST \"~{3}\r\nabc\" {2+}\r\n%%\r\n",
]:
    put("imap_extended", line.encode("latin-1") if "\xc3" in line else line)

# framer: first byte = limits (line 2^(b&15)*16, literal 2^(b>>4)*16)
put("imap_framer", b"\x66" + crlf("a LOGIN {5}\nalice {6+}\nsecret\nb APPEND x ~{3}\nabc\n+ line mode\nDONE\nc NOOP\n").encode())
put("imap_framer", b"\x22" + b"a APPEND INBOX {4000}\r\n" + b"x" * 300 + b"\r\nb NOOP\r\n")
put("imap_framer", b"\x00" + b"a " + b"y" * 40 + b"\r\nb {999999999999999999999}\r\nc {1\r\n")

put("imap_mime", PLAIN)
put("imap_mime", MULTI)
put("imap_mime", BARE_LF)
put("imap_mime", crlf("Content-Type: multipart/signed; boundary=\"s\"; protocol=\"application/pgp-signature\"\nSubject: =?utf-8?B?w6k=?= =?utf-8?Q?_x?=\nFrom: \"Last, First\" <a@b.c>, group: d@e.f, <g@h>;\nReply-To: <>\nDate: 31 Dec 1999 23:59:60 -1200\n\n--s\nContent-Type: message/global\n\nSubject: g\n\nbody\n--s\nContent-Type: application/pgp-signature\nContent-Language: en, de\nContent-Location: http://x/\nContent-MD5: abc\n\nsig\n--s--\n"))

# POP3: first byte bit 0 TLS, 1 plaintext allowed, 2 in use; client input; NUL; messages
def pop3(mode, text, msgs=()):
    put("pop3_session", bytes([mode]) + crlf(text).encode() + b"".join(b"\0" + m.encode() for m in msgs))
pop3(1, "CAPA\nUSER alice@example.org\nPASS secret\nSTAT\nLIST\nUIDL\nLIST 2\nUIDL 3\nRETR 2\nTOP 3 2\nDELE 1\nRSET\nDELE 2\nNOOP\nQUIT\n")
pop3(0, "CAPA\nSTLS\nAUTH PLAIN " + base64.b64encode(b"\0alice@example.org\0secret").decode() + "\nRETR 1\nQUIT\n")
pop3(1, "AUTH LOGIN\n" + base64.b64encode(b"alice@example.org").decode() + "\n" + base64.b64encode(b"secret").decode() + "\nTOP 1 0\nRETR 99\nDELE 0\nLAST\nQUIT\n", [PLAIN, BARE_LF, MULTI])
pop3(2 | 4, "USER alice@example.org\nPASS secret\nUSER broken@example.org\nPASS x\nAPOP a b\nAUTH\nAUTH PLAIN\n*\n" + "x" * 300 + "\nQUIT\n")

# SASL: raw PLAIN, base64 PLAIN, LOGIN fields
for s in [b"\0alice@example.org\0secret", b"admin\0alice@example.org\0secret",
          base64.b64encode(b"\0alice@example.org\0secret"), base64.b64encode(b"alice@example.org"),
          b"=", b"*", b"YWxpY2U=\r\n", b"\0\0"]:
    put("sasl", s)

for s in ["INBOX", "Work/Project &AOk-", "&ZeVnLIqe-", "Entw&APw-rfe", "&-", "a&AGE-b", "Sent Items", "caf\u00e9/\u65e5\u672c", "../etc", "x&Jjo-y"]:
    put("mutf7", s)

for s in ["alice@example.org", "Alice+Sent@Example.ORG", "\"a b\"@example.org", "x@[192.0.2.1]", "x@[IPv6:2001:db8::1]", "postmaster", "a@b@c", "@example.org", "a@", "caf\u00e9@b\u00fccher.example", "alice+@x.org."]:
    put("address", s)

put("config", """myhostname = "mx.example.org"
mydomain = "example.org"
mydestination = ["example.org", "example.net"]
mynetworks = ["127.0.0.0/8", "192.168.0.0/16", "::1/128", "2001:db8::/32"]
inet_interfaces = ["0.0.0.0", "::"]
relayhost = "[smtp.example.com]:587"
message_size_limit = 52428800
data_dir = "/var/lib/hermod"
allow_plaintext_auth = false

[limits]
max_recipients = 100
max_line_length = 4096
max_errors = 10

[store]
format = "mbox"
mbox_path = "/var/spool/mail/{localpart}"
""")
put("config", "myhostname = \"mail.example.org\"\n[tls]\ncert = \"/etc/hermod/cert.pem\"\nkey = \"/etc/hermod/key.pem\"\n[acme]\ndomains = [\"mail.example.org\"]\ncontact = \"mailto:admin@example.org\"\n")
put("config", "[listen]\nsmtp = [\"127.0.0.1:2525\"]\nimap = []\n[dns]\nnameservers = [\"127.0.0.1:5353\"]\n[queue]\nmax_lifetime = \"5d\"\n")

MBOX = b"From bob@example.net Mon Jun  1 10:00:00 2020\n" + PLAIN.replace("\r\n", "\n").encode() + b"\nFrom MAILER-DAEMON Tue Jun  2 11:30:00 2020\nStatus: RO\nX-Status: F\nX-Keywords: $Junk\nContent-Length: 5\n\n>From quoted\n>>From twice\nFrom inside\n\nFrom x Thu Jan  1 00:00:00 1970\n\n"
put("store_mbox", MBOX)
put("store_mbox", b"From a Mon Jun  1 10:00:00 2020\r\nSubject: crlf\r\n\r\nbody\r\n\r\nFrom b Feb 30 25:61:61 99999\r\n\r\n")
put("store_mbox", b"not an mbox at all\n")

put("store_maildir", b"1591005600.M1P2.host,S=120:2,S\n" + PLAIN.encode() + b"\0cur/1591005601.M2P2.host:2,FRT\n" + MULTI.encode() + b"\0.Work/\0.Work.Sub/\0cur/junk-name-no-info\nSubject: x\n\nx\0new/1591005602.M3P3.host,S=99999\n" + BARE_LF.encode())
put("store_maildir", b".&AOk-/\0.a..b/\0cur/x:2,abcdefghijklmnopqrstuvwxyz\nSubject: kw\n\n\0cur/y:1,S\n\0cur/z:2,\n\n")

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "hermod.toml"), "rb") as f:
    put("config", f.read())
put("config", "mailbox_format = \"mbox\"\nmbox_path = \"mail/{domain}/{localpart}\"\n[limits]\nmax_line_length = 1000\nidle_timeout = 60\n[lmtp]\nlisten = [\"127.0.0.1:24\"]\nsocket = \"/run/hermod/lmtp\"\n[imap]\nlisten = [\"[::1]:143\", \"127.0.0.1:143\"]\n")
