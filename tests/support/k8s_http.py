"""The HTTP side of the Kubernetes API emulator: routing, fault injection, the request log, Status answers."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.support.k8s_query import Reply

if TYPE_CHECKING:
    from tests.support.k8s_emulator import K8sEmulator

JOBS_RE = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?(/status)?$")
QUOTAS_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/resourcequotas$")


@dataclasses.dataclass
class Fault:
    kind: str  # "status" | "slow" | "drop" | "drop_after"
    remaining: int
    verbs: frozenset[str] | None
    status: int = 500
    retry_after: float | None = None
    delay_s: float = 0.0

    def matches(self, verb: str) -> bool:
        return self.remaining > 0 and (self.verbs is None or verb in self.verbs)


@dataclasses.dataclass
class RequestEntry:
    """One request as the server saw it. `code`: the status sent; 0 dropped before acting; `-code` acted, then
    dropped (the client never saw the answer). `fault`: the injected fault's kind, if any."""

    at: float
    verb: str
    namespace: str
    name: str
    code: int | None = None
    fault: str | None = None
    done: float | None = None
    #: When the answer started to be written: no client can have read it earlier (`done` comes after the write, and
    #: on a loaded machine the thread may be preempted between the two — a client already waiting on a
    #: Retry-After then looks early by that much).
    sent: float | None = None


class Handler(BaseHTTPRequestHandler):
    emu: K8sEmulator
    protocol_version = "HTTP/1.1"
    #: Headers and body go out as two writes; with Nagle on, the body waits for the client's delayed ACK (~40 ms
    #: per request on Linux), which a real API server does not add.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        self._entry: RequestEntry | None = None  # a kept-alive connection serves several requests
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        route = _route(method, split.path)
        if route is None:
            return self._status(Reply(404, "NotFound", f"the server could not find {split.path}"))
        verb, namespace, name = route
        if verb == "create" and "dryRun" in query:
            verb = "dry_run"
        entry = RequestEntry(time.time(), verb, namespace, name or _body_name(raw))
        with self.emu.lock:
            self.emu.counts[(verb, namespace)] += 1
            self.emu.requests.append(entry)
            generation = self.emu.generation
        fault = self.emu.take_fault(verb)
        entry.fault = fault.kind if fault else None
        self._entry = entry
        entry.code = self._answer(fault, generation, verb, namespace, name, query, raw)
        entry.done = time.time()

    def _answer(self, fault: Fault | None, generation: int, verb: str, namespace: str, name: str,
                query: dict[str, str], raw: bytes) -> int:
        """Serve one request (with its fault, if any); the status code sent, 0 when the connection was dropped."""
        if fault and fault.kind == "slow":
            time.sleep(fault.delay_s)
            if generation != self.emu.generation:
                self._drop()
                return 0
        if fault and fault.kind == "drop":
            self._drop()
            return 0
        if fault and fault.kind == "status":
            self._status(Reply(fault.status, _reason(fault.status), "injected fault"), fault.retry_after)
            return fault.status
        try:
            body = json.loads(raw) if raw else None
            with self.emu.lock:
                code, answer = self._act(verb, namespace, name, query, body)
        except Reply as reply:
            self._status(reply)
            return reply.code
        except ValueError:
            self._status(Reply(400, "BadRequest", "the body is not JSON"))
            return 400
        if fault and fault.kind == "drop_after":
            self._drop()
            return -code  # acted, but the answer never left
        self._send(code, answer)
        return code

    def _act(self, verb: str, ns: str, name: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        emu = self.emu
        if verb == "create":
            return emu.create_code, emu.create(ns, body)
        if verb == "dry_run":
            if query.get("dryRun") != "All":
                raise Reply(400, "BadRequest", f"unsupported dryRun value {query.get('dryRun')!r}: only All")
            return 201, emu.create(ns, body, dry_run=True)
        if verb == "get":
            return 200, emu.read(ns, name)
        if verb == "list":
            return 200, emu.list(ns, query)
        if verb == "delete":
            policy = query.get("propagationPolicy") or (body or {}).get("propagationPolicy")
            uid = ((body or {}).get("preconditions") or {}).get("uid")
            return 200, emu.delete(ns, name, policy, uid)
        if verb == "patch":
            return 200, emu.patch_status(ns, name, body)
        return 200, emu.quota_list(ns)

    def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        if self._entry is not None:
            self._entry.sent = time.time()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to answer
            self.close_connection = True

    def _status(self, reply: Reply, retry_after: float | None = None) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": reply.message, "reason": reply.reason, "code": reply.code}
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        self._send(reply.code, body, headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _route(method: str, path: str) -> tuple[str, str, str] | None:
    """`(verb, namespace, name)` for a path this server knows."""
    match = JOBS_RE.match(path)
    if match:
        namespace, name, status = match.group(1), match.group(2) or "", bool(match.group(3))
        verbs = {("POST", False, False): "create", ("GET", False, False): "list", ("GET", True, False): "get",
                 ("DELETE", True, False): "delete", ("PATCH", True, True): "patch", ("GET", True, True): "get"}
        verb = verbs.get((method, bool(name), status))
        return (verb, namespace, name) if verb else None
    match = QUOTAS_RE.match(path)
    if match and method == "GET":
        return "quota", match.group(1), ""
    return None


def _body_name(raw: bytes) -> str:
    """The object's name in a create's body ('' when there is none to read)."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return ""
    meta = body.get("metadata") if isinstance(body, dict) else None
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""


def verbs_of(verbs: tuple[str, ...] | None) -> frozenset[str] | None:
    return frozenset(verbs) if verbs else None


def _reason(code: int) -> str:
    return {403: "Forbidden", 429: "TooManyRequests", 500: "InternalError", 502: "BadGateway",
            503: "ServiceUnavailable", 504: "Timeout"}.get(code, "InternalError")
