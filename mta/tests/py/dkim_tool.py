"""dkimpy (Debian's python3-dkim) as the independent DKIM signer and verifier of the mail
authentication tests.

  dkim_tool.py sign KEY DOMAIN SELECTOR rsa|ed25519 [expired] < message > signed message
      KEY: a PKCS#1 PEM file (rsa) or a file with the base64 Ed25519 seed (ed25519).
  dkim_tool.py verify ZONE < message
      ZONE: a zone as `hermod dns` prints it; the TXT records of *._domainkey are the keys.
      Verifies every DKIM-Signature; prints "verified N" and exits 0 only if all pass.
  dkim_tool.py arcverify ZONE < message
      Verifies the ARC chain; prints "arc pass" and exits 0 only if it passes.
"""
import re
import sys
import time

import dkim


def sign(key_path, domain, selector, algorithm, expired):
    message = sys.stdin.buffer.read()
    key = open(key_path, 'rb').read().strip()
    algo = b'rsa-sha256' if algorithm == 'rsa' else b'ed25519-sha256'
    if expired:
        # A signature made ten days ago that expired five days ago (x= in the past).
        now = time.time()
        time.time = lambda: now - 10 * 86400
        original = dkim.DKIM.gen_header

        def with_expiry(self, fields, *rest):
            fields = fields[:-1] + [(b'x', str(int(now - 5 * 86400)).encode())] + fields[-1:]
            return original(self, fields, *rest)

        dkim.DKIM.gen_header = with_expiry
    signature = dkim.DKIM(message).sign(
        selector.encode(), domain.encode(), key, signature_algorithm=algo,
        canonicalize=(b'relaxed', b'relaxed'),
        include_headers=[b'from', b'to', b'subject'])
    sys.stdout.buffer.write(signature + message)


def zone_txt(path):
    """name -> TXT text, from `name. TTL IN TXT "a" "b"` lines."""
    records = {}
    for line in open(path, encoding='utf-8'):
        parts = line.split(None, 4)
        if len(parts) == 5 and parts[3] == 'TXT':
            text = ''.join(re.findall(r'"((?:[^"\\]|\\.)*)"', parts[4]))
            records[parts[0].rstrip('.').lower()] = text.encode()
    return records


def verify(zone_path):
    message = sys.stdin.buffer.read()
    records = zone_txt(zone_path)

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip('.').lower())

    d = dkim.DKIM(message)
    count = len([1 for name, _ in d.headers if name.lower() == b'dkim-signature'])
    if count == 0:
        print('no signature')
        sys.exit(1)
    for idx in range(count):
        if not d.verify(idx=idx, dnsfunc=dnsfunc):
            print('signature %d does not verify' % idx)
            sys.exit(1)
    print('verified %d' % count)


def arcverify(zone_path):
    message = sys.stdin.buffer.read()
    records = zone_txt(zone_path)

    def dnsfunc(name, timeout=5):
        return records.get(name.decode().rstrip('.').lower())

    cv, _results, reason = dkim.ARC(message).verify(dnsfunc=dnsfunc)
    print('arc %s %s' % (cv.decode(), reason))
    sys.exit(0 if cv == b'pass' else 1)


if __name__ == '__main__':
    if sys.argv[1] == 'sign':
        sign(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], len(sys.argv) > 6)
    elif sys.argv[1] == 'verify':
        verify(sys.argv[2])
    elif sys.argv[1] == 'arcverify':
        arcverify(sys.argv[2])
    else:
        sys.exit('unknown command')
