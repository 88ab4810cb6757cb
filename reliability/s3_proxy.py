"""An HTTP proxy in front of moto's S3 server that sees every request the trainer sends, and can fault uploads.

The trainer's boto3 is pointed at the proxy (`AWS_ENDPOINT_URL`); the proxy forwards each request to moto unchanged
and records each one (method, key, status, when it was sent on and when S3 answered) in `log`, so a scenario checks
the order in which S3 itself stored objects. A `Faults` policy answers a share of upload requests (PUT, and POST of
multipart uploads) with an S3 `500 InternalError` or `503 SlowDown` without forwarding them, and delays others.
`on_upload(key)` is called before an upload is forwarded and answers whether to forward it (the trainer-killed
scenario kills the trainer from there, then lets the request reach S3 or drops it).
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from devstack import free_port

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}
_ERRORS = {500: ("InternalError", "We encountered an internal error. Please try again."),
           503: ("SlowDown", "Please reduce your request rate.")}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A sender killed mid-request resets its connection: expected here, not worth a traceback."""


@dataclasses.dataclass
class Faults:
    """What uploads meet: `error_rate` of them a 500 or 503, `slow_rate` of the others a delay up to `slow_s`."""

    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


@dataclasses.dataclass(frozen=True)
class Request:
    at: float  # monotonic time the answer was sent
    method: str
    key: str  # bucket/key, unquoted
    query: str
    status: int
    injected: bool = False  # answered by the proxy (a fault), never reached S3
    sent: float = 0.0  # monotonic time it was sent on to S3 (0: never)
    delayed_s: float = 0.0  # how long the proxy held it first (a slow S3)

    @property
    def upload(self) -> bool:
        return self.method == "PUT" or (self.method == "POST" and "uploadId" in self.query)


class S3Proxy:
    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.faults = faults or Faults()
        self.on_upload: Callable[[str], bool] | None = None
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = _Server(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def requests(self) -> list[Request]:
        with self._lock:
            return list(self.log)

    def _decide(self, upload: bool) -> tuple[int | None, float]:
        f = self.faults
        if not upload:
            return None, 0.0
        with self._lock:
            if f.rng.random() < f.error_rate:
                return f.rng.choice([500, 503]), 0.0
            return None, (f.rng.uniform(0, f.slow_s) if f.rng.random() < f.slow_rate else 0.0)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self) -> None:
                body = self._body()
                parts = urlsplit(self.path)
                key, method = unquote(parts.path.lstrip("/")), self.command
                upload = method == "PUT" or (method == "POST" and "uploadId" in parts.query)
                status, delay = proxy._decide(upload)
                if status is not None:
                    code, message = _ERRORS[status]
                    self._answer(status, {"Content-Type": "application/xml"},
                                 f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>"
                                 f"{message}</Message></Error>".encode())
                    proxy.record(Request(time.monotonic(), method, key, parts.query, status, injected=True))
                    return
                if delay:
                    time.sleep(delay)
                if upload and proxy.on_upload is not None and not proxy.on_upload(key):
                    proxy.record(Request(time.monotonic(), method, key, parts.query, 0, injected=True))
                    self.close_connection = True  # dropped: the sender was killed before this reached S3
                    return
                upstream = proxy.upstream
                conn = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP and k.lower() != "content-length"}
                headers["Content-Length"] = str(len(body))
                sent = time.monotonic()
                conn.request(method, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                keep = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP}
                if method != "HEAD":
                    keep = {k: v for k, v in keep.items() if k.lower() != "content-length"}
                self._answer(answer.status, keep, data)
                proxy.record(Request(time.monotonic(), method, key, parts.query, answer.status, sent=sent,
                                     delayed_s=delay))

            def _answer(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not any(k.lower() == "content-length" for k in headers):
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve  # noqa: N815 - http.server's names

        return Handler
