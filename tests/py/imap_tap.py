"""A man-in-the-middle IMAP proxy that records both sides of the conversation in clear text.

The client (Thunderbird) connects to the tap; the tap connects to hermod. STARTTLS is
terminated on both legs (towards the client with hermod's own certificate and key, towards
hermod without verification), and after `COMPRESS DEFLATE` both legs are inflated and deflated
again, so the trace holds the protocol lines exactly as hermod sent and received them.
Literals are skipped in the trace (only their size is noted), so message text can never be
taken for a protocol line. Standard library only.
"""

import re
import socket
import ssl
import threading
import zlib

COMMAND_RE = re.compile(rb"^(\S+) (STARTTLS|COMPRESS DEFLATE)\r\n$", re.IGNORECASE)
LITERAL_RE = re.compile(rb"~?\{(\d+)\+?\}\r\n$")


class LineSplitter:
    """Cuts one direction of the stream into protocol lines, stepping over literals."""

    def __init__(self):
        self.buf = b""
        self.literal = 0
        # Stream offset of the first byte of `buf`.
        self.offset = 0

    def feed(self, data):
        """Returns the complete items as (line, end offset in the stream); a literal is
        returned as one `<literal>` item when its last byte has arrived."""
        self.buf += data
        out = []
        while self.buf:
            if self.literal:
                take = min(self.literal, len(self.buf))
                self.literal -= take
                self.buf = self.buf[take:]
                self.offset += take
                if not self.literal:
                    out.append((b"<literal>", self.offset))
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                break
            line, self.buf = self.buf[: end + 2], self.buf[end + 2 :]
            self.offset += len(line)
            m = LITERAL_RE.search(line)
            if m:
                self.literal = int(m.group(1))
            out.append((line, self.offset))
        return out

    def fed(self):
        """How many bytes were fed so far."""
        return self.offset + len(self.buf)


class Leg:
    """One socket with its optional deflate state (COMPRESS=DEFLATE, RFC 4978)."""

    def __init__(self, sock):
        self.sock = sock
        self.inflate = None
        self.deflate = None

    def recv(self):
        data = self.sock.recv(65536)
        if not data:
            return None
        if self.inflate:
            data = self.inflate.decompress(data)
        return data

    def send(self, data):
        if self.deflate:
            data = self.deflate.compress(data) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def start_compress(self):
        self.inflate = zlib.decompressobj(-15)
        self.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)


class Connection:
    def __init__(self, tap, number, client):
        self.tap = tap
        self.number = number
        client.settimeout(300)
        self.client = Leg(client)
        self.server = Leg(socket.create_connection(tap.target, timeout=300))
        # A STARTTLS or COMPRESS command sent and not yet answered: (tag, kind).
        self.pending = None
        self.switched = threading.Event()
        # The next client line answers an AUTHENTICATE challenge.
        self.in_authenticate = False

    def log(self, side, line):
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if side == "C":
            text = self.mask_credentials(text)
        self.tap.record(f"{self.number} {side}: {text}")

    def mask_credentials(self, text):
        """The trace keeps the commands, not the password: LOGIN's arguments, SASL-IR and
        the client's answer to an AUTHENTICATE challenge are replaced."""
        if self.in_authenticate:
            self.in_authenticate = False
            return "<credentials>"
        words = text.split(" ")
        if len(words) >= 3 and words[1].upper() == "LOGIN":
            return " ".join(words[:2]) + " <credentials>"
        if len(words) >= 3 and words[1].upper() == "AUTHENTICATE":
            if len(words) >= 4:
                return " ".join(words[:3]) + " <credentials>"
            self.in_authenticate = True
        return text

    def client_to_server(self):
        lines = LineSplitter()
        while True:
            data = self.client.recv()
            if data is None:
                break
            switch = None
            for line, _ in lines.feed(data):
                self.log("C", line)
                m = COMMAND_RE.match(line)
                if m:
                    switch = (m.group(1), m.group(2).split()[0].upper())
            if switch:
                # Armed before hermod can answer, so the other thread sees the answer.
                self.switched.clear()
                self.pending = switch
            self.server.send(data)
            # The client sends nothing more until it has the answer; wait until the other
            # thread has switched both legs.
            if switch and not self.switched.wait(60):
                raise RuntimeError("no answer to STARTTLS/COMPRESS")

    def server_to_client(self):
        lines = LineSplitter()
        while True:
            data = self.server.recv()
            if data is None:
                break
            if not self.pending:
                self.client.send(data)
                for line, _ in lines.feed(data):
                    self.log("S", line)
                continue
            # Find the tagged answer to the pending command; what follows it belongs to the
            # new mode.
            tag, kind = self.pending
            chunk_start = lines.fed()
            switch_at = None
            for line, end in lines.feed(data):
                self.log("S", line)
                if line.startswith(tag + b" "):
                    switch_at = end - chunk_start
                    ok = line[len(tag) + 1 :].upper().startswith(b"OK")
                    break
            if switch_at is None:
                self.client.send(data)
                continue
            self.client.send(data[:switch_at])
            if ok and kind == b"STARTTLS":
                self.start_tls()
            elif ok:
                self.client.start_compress()
                self.server.start_compress()
                self.tap.record(f"{self.number} -- compression on")
            self.pending = None
            lines = LineSplitter()
            self.switched.set()
            rest = data[switch_at:]
            if rest and ok and kind == b"COMPRESS":
                # Already deflated by hermod: it belongs to the new mode.
                rest = self.server.inflate.decompress(rest)
            if rest:
                self.client.send(rest)
                for line, _ in lines.feed(rest):
                    self.log("S", line)

    def start_tls(self):
        to_server = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        to_server.check_hostname = False
        to_server.verify_mode = ssl.CERT_NONE
        self.server.sock = to_server.wrap_socket(self.server.sock)
        self.client.sock = self.tap.server_context.wrap_socket(
            self.client.sock, server_side=True
        )
        self.tap.record(f"{self.number} -- TLS {self.client.sock.version()}")

    def run(self):
        def pump(direction):
            try:
                direction()
            except (OSError, ssl.SSLError, zlib.error, RuntimeError) as e:
                self.tap.record(f"{self.number} -- {direction.__name__}: {e}")
            finally:
                for leg in (self.client, self.server):
                    try:
                        leg.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                self.switched.set()

        a = threading.Thread(target=pump, args=(self.client_to_server,), daemon=True)
        b = threading.Thread(target=pump, args=(self.server_to_client,), daemon=True)
        a.start()
        b.start()


class ImapTap:
    """Listens on `listen` and relays every connection to `target`, recording the lines."""

    def __init__(self, listen, target, cert_file, key_file, trace_path):
        self.target = target
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(cert_file, key_file)
        self.trace = open(trace_path, "w", encoding="utf-8")
        self.lock = threading.Lock()
        self.listener = socket.create_server(listen)
        self.connections = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def record(self, text):
        with self.lock:
            self.trace.write(text + "\n")
            self.trace.flush()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            try:
                Connection(self, self.connections, client).run()
            except OSError as e:
                self.record(f"{self.connections} -- connect to hermod failed: {e}")
                client.close()

    def close(self):
        self.listener.close()
        with self.lock:
            self.trace.close()
