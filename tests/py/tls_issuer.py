"""Check which certificate hermod's TLS listeners serve, as a mail client would.

usage: tls_issuer.py ROOT_URL ROOT_URL_CA HOST NAME KIND=PORT...

Downloads the root CA from ROOT_URL (an https URL whose server certificate ROOT_URL_CA
signed), then connects to HOST on each PORT, with TLS from the first byte (KIND "tls") or
after IMAP STARTTLS (KIND "imap-starttls"), asking for NAME by SNI. The certificate must
verify against that root for NAME, or the script fails. Prints one line per port:
`PORT issuer=<issuer CN> san=<names> sha256=<fingerprint>`.
"""

import hashlib
import imaplib
import socket
import ssl
import sys
import urllib.request


class Imap(imaplib.IMAP4):
    """IMAP to a fixed address while self.host (and so the STARTTLS SNI) is NAME."""

    def __init__(self, address, name, port):
        self.address = address
        super().__init__(name, port, timeout=10)

    def _create_socket(self, timeout):
        return socket.create_connection((self.address, self.port), timeout)


def describe(port, tls):
    cert = tls.getpeercert()
    issuer = dict(x[0] for x in cert["issuer"]).get("commonName", "")
    san = ",".join(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")
    sha = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
    print(f"{port} issuer={issuer} san={san} sha256={sha}", flush=True)


def main():
    root_url, root_url_ca, host, name = sys.argv[1:5]
    fetch = ssl.create_default_context(cafile=root_url_ca)
    root = urllib.request.urlopen(root_url, context=fetch, timeout=10).read().decode()
    verify = ssl.create_default_context(cadata=root)
    for spec in sys.argv[5:]:
        kind, port = spec.split("=")
        port = int(port)
        if kind == "tls":
            with socket.create_connection((host, port), timeout=10) as raw:
                with verify.wrap_socket(raw, server_hostname=name) as tls:
                    describe(port, tls)
        elif kind == "imap-starttls":
            imap = Imap(host, name, port)
            imap.starttls(ssl_context=verify)
            describe(port, imap.sock)
            imap.logout()
        else:
            sys.exit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    main()
