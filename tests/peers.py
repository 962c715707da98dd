"""Real local peers the tests start: servers on loopback addresses only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class LoopbackHttpServer:
    """A threaded HTTP server on 127.0.0.1 answering with `handler`: the peers' common part."""

    def __init__(self, handler: type) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        # A client that went away mid-answer (a worker killed by a chaos test) is normal.
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpPeer(LoopbackHttpServer):
    """A loopback HTTP server that answers from a script and records every request.

    `reply(503, times=2)` queues answers; past the script it answers `default`. A path
    listed in `hold` blocks until `release()` (a slow service, for cancel tests).
    """

    def __init__(self) -> None:
        import collections
        import threading

        self.requests: list[dict[str, object]] = []
        self.script: collections.deque[tuple[int, object, dict[str, str]]] = collections.deque()
        self.default: tuple[int, object, dict[str, str]] = (200, {"ok": True}, {})
        self.hold: set[str] = set()
        self.delay_s = 0.0  # a slow service: every answer waits this long
        # (method, path prefix) -> a fixed answer, after the script and before `default`.
        self.routes: dict[tuple[str, str], tuple[int, object]] = {}
        # Stripe's idempotency (API v1): the first answer to a POST under a key is saved
        # and every later POST with that key gets it back, 500s included; `prune_keys()`
        # forgets them, as Stripe does after 24 hours. A POST without a key is refused.
        self.idempotent = False
        self.saved: dict[str, tuple[int, object, dict[str, str]]] = {}
        self.released = threading.Event()
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def reply(
        self,
        status: int,
        body: object = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        for _ in range(times):
            self.script.append((status, body if body is not None else {}, headers or {}))

    def paths(self) -> list[object]:
        return [request["path"] for request in self.requests]

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        super().stop()

    def prune_keys(self) -> None:
        with self._lock:
            self.saved.clear()

    def executed(self, path: str) -> list[dict[str, object]]:
        """Requests to `path` the service acted on: with `idempotent`, one per key."""
        return [r for r in self.requests if r["path"] == path and not r.get("replayed")]

    def route(self, method: str, path: str, status: int, body: object) -> None:
        self.routes[(method, path)] = (status, body)

    def _routed(self, method: str, path: str) -> tuple[int, object, dict[str, str]]:
        for (route_method, prefix), (status, body) in self.routes.items():
            if method == route_method and path.startswith(prefix):
                return status, body, {}
        return self.default

    def _handler(self) -> type:
        import json
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import parse_qsl

        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if len(raw) < length:
                    # The sender died mid-body (a killed worker): like any real server,
                    # act on nothing that did not fully arrive.
                    self.close_connection = True
                    return
                kind = self.headers.get("content-type") or "application/json"
                key = self.headers.get("idempotency-key")
                with peer._lock:
                    replayed = peer.idempotent and key is not None and key in peer.saved
                    peer.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "json": json.loads(raw) if raw and "json" in kind else None,
                            "form": dict(parse_qsl(raw.decode())) if "form" in kind else None,
                            "replayed": replayed,
                        }
                    )
                    if replayed:
                        assert key is not None
                        status, body, headers = peer.saved[key]
                    elif peer.idempotent and self.command == "POST" and key is None:
                        status, body, headers = 400, {"error": {"message": "no key"}}, {}
                    else:
                        status, body, headers = (
                            peer.script.popleft()
                            if peer.script
                            else peer._routed(self.command, self.path)
                        )
                        if peer.idempotent and self.command == "POST" and key is not None:
                            peer.saved[key] = (status, body, headers)
                if self.path in peer.hold:
                    peer.arrived.set()
                    peer.released.wait(timeout=30)
                if peer.delay_s:
                    time.sleep(peer.delay_s)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        return Handler


class SmtpPeer:
    """A real SMTP server on loopback (aiosmtpd) that keeps every message it accepts.

    Logins succeed for `username`/`password` only; `refuse_with` makes the next DATA
    answer that code (e.g. 451 to test a temporary failure)."""

    username = "mailer"
    password = "smtp-pass"

    def __init__(self, *, starttls: bool = False) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[dict[str, Any]] = []
        self.refuse_with: str | None = None
        peer = self

        class Handler:
            async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:
                if peer.refuse_with:
                    answer, peer.refuse_with = peer.refuse_with, None
                    return answer
                from email import message_from_bytes

                peer.messages.append(
                    {
                        "from": envelope.mail_from,
                        "to": list(envelope.rcpt_tos),
                        "message": message_from_bytes(envelope.content),
                    }
                )
                return "250 OK"

        def authenticate(
            _server: object, _session: object, _envelope: object, _mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (
                data.login.decode(),
                data.password.decode(),
            ) == (SmtpPeer.username, SmtpPeer.password)
            return AuthResult(success=ok, handled=False)

        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=_free_port(),
            authenticator=authenticate,
            auth_require_tls=starttls,
            require_starttls=starttls,
            tls_context=_self_signed_context("127.0.0.1") if starttls else None,
        )

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _self_signed_context(host: str) -> Any:
    """A server TLS context with a fresh self-signed certificate for `host`."""
    return self_signed(host)[0]


def self_signed(host: str) -> tuple[Any, bytes]:
    """A server TLS context with a fresh self-signed certificate for `host`, and that
    certificate in PEM (for a client that should trust it)."""
    import datetime
    import ipaddress
    import ssl
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as folder:
        cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
        with open(cert_path, "wb") as handle:
            handle.write(certificate.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        context.load_cert_chain(cert_path, key_path)
    return context, certificate.public_bytes(serialization.Encoding.PEM)


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb + pg_ctl) on a free loopback port, which a
    test may kill and restart without touching the machine's shared server.

    As root (CI), the cluster belongs to the `postgres` user: initdb refuses root."""

    def __init__(self) -> None:
        import os
        import tempfile

        self.bin = _postgres_bin()
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="levqor-pg-"))
        self.data = self.directory / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import shutil

            shutil.chown(self.directory, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/levqor"

    def _run(self, *command: str, check: bool = True) -> None:
        argv = [str(self.bin / command[0]), *command[1:]]
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=check, capture_output=True, timeout=60)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "levqor")

    def start(self) -> None:
        # fsync off survives a killed server (the kernel keeps what was written), not a
        # crashed machine; commits stay synchronous, so an acknowledged commit is kept.
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def kill(self) -> None:
        """Stop at once, as a crash would (clients see their connections drop)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def remove(self) -> None:
        import shutil

        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    import shutil

    initdb = shutil.which("initdb")
    if initdb is None:
        raise FileNotFoundError("initdb is not installed (Debian: postgresql)")
    return Path(initdb).parent


class UpProcess:
    def __init__(self, data_dir: Path, **settings: str) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(data_dir.parent / f"up-{self.port}.log", "w+")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
        env["LEVQOR_LOG_JSON"] = "true"
        env.update({f"LEVQOR_{name.upper()}": value for name, value in settings.items()})
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "levqor",
                "up",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            # A file, not a pipe: a busy server's log would fill a pipe nobody reads
            # and block the server on its next write.
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
        self.output = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"levqor up exited: {self.read_log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError("levqor up did not answer")

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(timeout=15)
        self.output = self.read_log()
        self.log.close()
        return self.output

    def read_log(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


class HostileHttpPeer(LoopbackHttpServer):
    """A loopback HTTP server whose answers would hurt a careless client, by path:

    /declared   200 with a Content-Length of 50 MiB, then bytes until the client leaves
    /chunked    200, chunked, 64 KiB chunks up to 50 MiB, no length announced
    /bomb       200, a 50 KiB gzip body that unpacks into 50 MiB of zeros
    /gzipped    200, a small JSON body, gzip-compressed
    /silent     reads the request and never answers
    Anything else: 200 with a small JSON body. `answered` counts the answers begun.
    """

    BIG = 50 * 1024 * 1024

    def __init__(self) -> None:
        import gzip
        import threading

        self.bomb = gzip.compress(b"\0" * self.BIG, compresslevel=9)
        self.answered = 0
        self.stopped = threading.Event()
        super().__init__(self._handler())

    def stop(self) -> None:
        self.stopped.set()
        super().stop()

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                return

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self._answer()

            def _answer(self) -> None:
                if self.path == "/silent":
                    peer.stopped.wait(30)
                    return
                peer.answered += 1
                try:
                    self._hostile()
                except OSError:  # the client hung up, as it should
                    self.close_connection = True

            def _hostile(self) -> None:
                import gzip

                chunk = b"x" * 65536
                self.send_response(200)
                if self.path == "/declared":
                    self.send_header("content-length", str(peer.BIG))
                    self.end_headers()
                    for _ in range(peer.BIG // len(chunk)):
                        self.wfile.write(chunk)
                elif self.path == "/chunked":
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for _ in range(peer.BIG // len(chunk)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                elif self.path == "/gzipped":
                    body = gzip.compress(b'{"ok":true}')
                    self.send_header("content-type", "application/json")
                    self.send_header("content-encoding", "gzip")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/bomb":
                    self.send_header("content-encoding", "gzip")
                    self.send_header("content-length", str(len(peer.bomb)))
                    self.end_headers()
                    self.wfile.write(peer.bomb)
                else:
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", "11")
                    self.end_headers()
                    self.wfile.write(b'{"ok":true}')

        return Handler
