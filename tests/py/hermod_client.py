"""Helpers shared by the end-to-end client scripts: TLS contexts for hermod's self-signed
certificate, bounded waits, and Maildir reading."""
import os
import ssl
import time


def tls_context():
    """Accept hermod's self-signed test certificate (tests only)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def maildir_messages(data_dir, address, folder=""):
    """Bytes of every message in a user's Maildir folder (new and cur), oldest first."""
    local, domain = address.split("@")
    base = os.path.join(data_dir, "mail", domain, local, "Maildir")
    if folder:
        base = os.path.join(base, "." + folder)
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(base, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            p = os.path.join(d, name)
            out.append((os.stat(p).st_mtime, name, open(p, "rb").read()))
    out.sort()
    return [m for _, _, m in out]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
