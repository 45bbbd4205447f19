"""fetchmail downloads a whole mailbox of 200 messages over POP3S, first in keep mode (twice:
the second run finds nothing new, by UIDL), then in no-keep mode, with checksums matching
what was delivered over LMTP.

usage: fetchmail_flow.py LMTP_PORT POP3S_PORT USER PASSWORD WORKDIR"""
import hashlib
import os
import poplib
import smtplib
import subprocess
import sys

from hermod_client import check, tls_context

lmtp_port, pop3s_port, user, password, work = (
    int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
N = 200

bodies = {}
lmtp = smtplib.LMTP("127.0.0.1", lmtp_port, timeout=30)
for i in range(N):
    body = f"message {i}\r\n" + ("x" * (i % 70) + "\r\n") * (i % 13) + (".dot\r\n" if i % 7 == 0 else "")
    msg = f"From: sender@example.org\r\nTo: {user}\r\nSubject: number {i}\r\n\r\n{body}".encode()
    lmtp.sendmail("sender@example.org", [user], msg)
    bodies[hashlib.sha256(body.encode()).hexdigest()] = i
lmtp.quit()


def run(mode, outdir):
    os.makedirs(outdir, exist_ok=True)
    rc = os.path.join(work, f"fetchmailrc-{mode}")
    with open(rc, "w") as f:
        f.write(
            f'poll 127.0.0.1 service {pop3s_port} protocol pop3 uidl auth password\n'
            f'  user "{user}" there with password "{password}" is root here\n'
            f'  ssl no sslcertck {mode}\n'
            # A shell per message is cheap; its pid names the file.
            f'  mda "sh -c \'cat > {outdir}/$$\'"\n')
    os.chmod(rc, 0o600)
    p = subprocess.run(["fetchmail", "-f", rc, "--idfile", os.path.join(work, "fetchids"),
                        "--nosyslog", "-N"],
                       capture_output=True, timeout=120, env={**os.environ, "HOME": work})
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def checksums(outdir):
    sums = []
    for name in os.listdir(outdir):
        data = open(os.path.join(outdir, name), "rb").read().replace(b"\r\n", b"\n")
        body = data.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n")
        sums.append(hashlib.sha256(body).hexdigest())
    return sums


rc, out = run("keep", os.path.join(work, "keep1"))
check(rc == 0, f"fetchmail keep: rc={rc}\n{out}")
sums = checksums(os.path.join(work, "keep1"))
check(len(sums) == N and set(sums) == set(bodies), f"keep: {len(sums)} messages, mismatched checksums\n{out}")
rc, out = run("keep", os.path.join(work, "keep2"))
check(rc == 1 and not os.listdir(os.path.join(work, "keep2")), f"second keep run fetched again: rc={rc}\n{out}")
rc, out = run("nokeep fetchall", os.path.join(work, "nokeep"))
check(rc == 0, f"fetchmail nokeep: rc={rc}\n{out}")
sums = checksums(os.path.join(work, "nokeep"))
check(len(sums) == N and set(sums) == set(bodies), f"nokeep: {len(sums)} messages\n{out}")
p = poplib.POP3_SSL("127.0.0.1", pop3s_port, context=tls_context(), timeout=10)
p.user(user)
p.pass_(password)
check(p.stat()[0] == 0, f"messages left after nokeep: {p.stat()}")
p.quit()
print("fetchmail ok", N)
