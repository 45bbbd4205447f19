"""A minimal Marionette client (Gecko's remote protocol: JSON messages, each prefixed by its
length and a colon, over TCP). Standard library only; enough to run chrome-context scripts."""

import json
import socket
import time


class MarionetteError(RuntimeError):
    pass


class Marionette:
    def __init__(self, port, connect_timeout=90, reply_timeout=180):
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        self.sock.settimeout(reply_timeout)
        self.buf = b""
        self.last_id = 0
        hello = self._read()
        if hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected greeting {hello}")

    def _fill(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                raise MarionetteError("Marionette closed the connection")
            self.buf += data

    def _read(self):
        while b":" not in self.buf:
            self._fill(len(self.buf) + 1)
            if len(self.buf) > 20 and b":" not in self.buf:
                raise MarionetteError("bad length prefix")
        size, _ = self.buf.split(b":", 1)
        start = len(size) + 1
        self._fill(start + int(size))
        body = self.buf[start : start + int(size)]
        self.buf = self.buf[start + int(size) :]
        return json.loads(body)

    def call(self, name, params=None):
        self.last_id += 1
        data = json.dumps([0, self.last_id, name, params or {}]).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data)
        while True:
            kind, msg_id, error, result = self._read()
            if kind == 1 and msg_id == self.last_id:
                if error:
                    raise MarionetteError(
                        f"{name}: {error.get('error')}: {error.get('message')}\n"
                        f"{error.get('stacktrace', '')}"
                    )
                return result

    def start_chrome_session(self, script_timeout_ms):
        self.call("WebDriver:NewSession", {"capabilities": {}})
        self.call("Marionette:SetContext", {"value": "chrome"})
        self.call("WebDriver:SetTimeouts", {"script": script_timeout_ms})

    def script(self, body, *args):
        """Runs `body` as the body of an async function in the chrome context; returns what
        it returns (JSON values)."""
        wrapped = f"return (async (...args) => {{ {body} }})(...arguments);"
        return self.call(
            "WebDriver:ExecuteScript", {"script": wrapped, "args": list(args)}
        ).get("value")
