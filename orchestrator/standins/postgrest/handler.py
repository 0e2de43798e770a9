"""The HTTP side of the Supabase stand-in: one request in, routed, answered and logged.

Part of ``orchestrator.standins.postgrest``: :class:`.server.PostgrestServer` serves
:class:`PostgrestHandler` on a :class:`KeepAliveServer`. The handler reads the request, injects the
server's pending faults (``fail_next``), routes ``/functions/v1/`` to the Edge Functions, ``/storage/v1/``
to Storage, and everything else through the gateway's key check (``apikey``, then the bearer token's
role) to an RPC (:meth:`.server.PostgrestServer.call`) or a table (:meth:`.server.PostgrestServer.table`);
it turns ``HttpError`` into PostgREST's error body and ``Proxy-Status`` header, and records every
request for the tests (:class:`RequestRecord`). The database side is the server's.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from orchestrator.logs import log_http_error
from orchestrator.standins.postgrest import tables
from orchestrator.standins.postgrest.common import HttpError, Reply, pgrst_error

if TYPE_CHECKING:
    from orchestrator.standins.postgrest.server import PostgrestServer

log = structlog.get_logger(__name__)

#: What ``PostgrestServer.fail_next`` can make the next requests meet (see its docstring).
FaultKind = Literal["unavailable", "gateway", "disconnect"]

# GET query parameters PostgREST reserves for reading table-valued results; we do not implement them.
_RESERVED_QUERY_PARAMS = frozenset(
    {"select", "order", "limit", "offset", "columns", "on_conflict", "and", "or"}
)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it: for tests that assert retries happened."""

    method: str
    path: str
    status: int | None  # None when the connection was dropped without a response
    role: str | None


@dataclass(frozen=True)
class Routed:
    """A reply and what the request log records about it."""

    reply: Reply
    role: str | None
    function: str | None

    @property
    def status(self) -> int:
        return self.reply.status

    @property
    def body(self) -> bytes | None:
        return self.reply.body

    @property
    def headers(self) -> Mapping[str, str]:
        return self.reply.headers


class KeepAliveServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its open keep-alive connections when it stops."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log_http_error("postgrest-standin", client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        # Clients pool connections; without this their handler threads would wait for a next request.
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class PostgrestHandler(BaseHTTPRequestHandler):
    """HTTP side: auth, parsing, fault injection, response shaping. The database side is the server's."""

    server_state: PostgrestServer
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    timeout = 30  # seconds an idle keep-alive connection may hold a handler thread
    server_version = "postgrest-sim"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # structlog records requests; BaseHTTPRequestHandler would write to stderr

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_OPTIONS(self) -> None:
        self._handle("OPTIONS")

    # -- plumbing -----------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes | None, headers: Mapping[str, str], method: str) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self.send_response(status, phrase)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if body and method != "HEAD":
            self.wfile.write(body)

    def _handle(self, method: str) -> None:
        state = self.server_state
        started = time.monotonic()
        split = urlsplit(self.path)
        query = parse_qsl(split.query, keep_blank_values=True)
        raw = self._read_body()
        role: str | None = None
        function: str | None = None
        self._role: str | None = None
        fault = state.take_fault()
        if fault == "disconnect":
            state.record(RequestRecord(method, split.path, None, None))
            self.close_connection = True
            log.info("postgrest_sim_fault", kind=fault, method=method, path=split.path)
            return
        if fault is not None:
            if fault == "unavailable":
                down = pgrst_error(503, "PGRST000", "Database connection error. Retrying the connection.")
                status, headers = down.status, {"Proxy-Status": "PostgREST; error=PGRST000"}
                payload = json.dumps(down.body).encode()
                headers["Content-Type"] = "application/json; charset=utf-8"
            else:
                status, payload = 503, b"upstream connect error or disconnect/reset before headers"
                headers = {"Content-Type": "text/plain"}
            # Recorded before answering: a client that has its answer always finds its request logged.
            state.record(RequestRecord(method, split.path, status, None))
            self._send(status, payload, headers, method)
            log.info("postgrest_sim_fault", kind=fault, method=method, path=split.path, status=status)
            return
        try:
            reply = self._dispatch(method, split.path, split.query, query, raw)
            status, payload, headers = reply.status, reply.body or b"", dict(reply.headers)
            role = reply.role
            function = reply.function
        except HttpError as err:
            status, payload = err.status, json.dumps(err.body).encode()
            headers = {"Content-Type": "application/json; charset=utf-8", **err.headers}
            if "code" in err.body:
                headers.setdefault("Proxy-Status", f"PostgREST; error={err.body['code']}")
        except Exception as exc:  # a bug here must still answer, like PostgREST's internal errors
            log.exception("postgrest_sim_internal_error", method=method, path=split.path)
            internal = pgrst_error(
                500, "PGRSTX00", f"Internal error in the PostgREST stand-in: {type(exc).__name__}"
            )
            status, payload = 500, json.dumps(internal.body).encode()
            headers = {"Content-Type": "application/json; charset=utf-8"}
        role = role or self._role
        state.record(RequestRecord(method, split.path, status, role))
        self._send(status, payload, headers, method)
        if status >= 500:
            # PostgREST's default log level ("error") reports only server errors; so do we.
            log.warning(
                "postgrest_sim_server_error",
                method=method,
                function=function,
                status=status,
                role=role,
                duration_ms=round((time.monotonic() - started) * 1000, 2),
            )

    def _dispatch(
        self, method: str, path: str, query_text: str, query: list[tuple[str, str]], raw: bytes
    ) -> Routed:
        """Route one request: Edge Functions, Storage, RPC or a table. Raises ``HttpError``."""
        state = self.server_state
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/functions/v1/"):
            name = unquote(path[len("/functions/v1/") :]).strip("/")
            return Routed(state.edge.handle(name, method, headers, raw), None, name)
        if path.startswith("/storage/v1/"):
            return Routed(state.storage.handle(method, path, query_text, headers, raw), None, None)
        role = self._role = self._authorize(query)
        if path.startswith(("/rest/v1/rpc/", "/rpc/")):
            function = self._route(path, method)
            args = self._arguments(method, raw, query)
            result = state.call(function, args, role=role, method=method, path=path)
            reply = Reply(200, result.encode(), {"Content-Type": "application/json; charset=utf-8"})
            return Routed(reply, role, function)
        table = path[len("/rest/v1/") :] if path.startswith("/rest/v1/") else ""
        if not table or "/" in table:
            raise pgrst_error(
                404, "PGRST125", "Invalid path specified in request URL",
                "This PostgREST stand-in serves /rest/v1/rpc/<function> and /rest/v1/<table>.",
            )  # fmt: skip
        request = tables.TableRequest(
            method=method,
            table=unquote(table),
            query=query,
            body=raw,
            prefer=headers.get("prefer", ""),
            accept=headers.get("accept", ""),
        )
        return Routed(state.table(request, role=role), role, None)

    def _authorize(self, query: list[tuple[str, str]]) -> str:
        """Supabase's gateway checks ``apikey``; PostgREST then takes the role from the bearer token."""
        roles = self.server_state.roles
        apikey = self.headers.get("apikey") or next((v for k, v in query if k == "apikey"), None)
        if not apikey:
            raise HttpError(
                401,
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
            )
        if apikey not in roles:
            raise HttpError(
                401,
                {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
            )
        authorization = self.headers.get("Authorization")
        if authorization is None:
            return roles[apikey]
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise pgrst_error(
                401, "PGRST301", "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )  # fmt: skip
        if token not in roles:
            parts = token.count(".") + 1
            message = (
                "JWSError JWSInvalidSignature"
                if parts == 3
                else f"JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got {parts})"
            )
            raise pgrst_error(
                401, "PGRST301", message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return roles[token]

    def _route(self, path: str, method: str) -> str:
        for prefix in ("/rest/v1/rpc/", "/rpc/"):
            if path.startswith(prefix):
                function = path[len(prefix) :]
                if not function or "/" in function:
                    break
                if method not in ("GET", "HEAD", "POST"):
                    raise pgrst_error(405, "PGRST101", f"Cannot use the {method} method on RPC")
                return unquote(function)
        raise pgrst_error(
            404,
            "PGRST125",
            "Invalid path specified in request URL",
            "This PostgREST stand-in serves /rest/v1/rpc/<function> and /rest/v1/<table>.",
        )

    def _arguments(self, method: str, raw: bytes, query: list[tuple[str, str]]) -> Any:
        if method in ("GET", "HEAD"):
            reserved = sorted({k for k, _ in query if k in _RESERVED_QUERY_PARAMS})
            if reserved:
                raise pgrst_error(
                    400, "PGRST127", "Feature not implemented",
                    f"This PostgREST stand-in does not implement the query parameter(s): {', '.join(reserved)}",
                )  # fmt: skip
            args: dict[str, Any] = {}
            for key, value in query:
                if key == "apikey":
                    continue
                # A repeated parameter is a variadic call: PostgREST collects the values into an array.
                if key in args:
                    previous = args[key]
                    args[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
                else:
                    args[key] = value
            return args
        content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise pgrst_error(
                415,
                "PGRST107",
                f"The Content-Type sent in the request is invalid: {content_type}",
                "This PostgREST stand-in accepts only application/json request bodies.",
            )
        if not raw.strip():
            return {}  # an RPC with an empty body is a call without arguments
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise pgrst_error(400, "PGRST102", f"Empty or invalid json: {exc}") from exc
        if not isinstance(body, dict):
            raise pgrst_error(
                400, "PGRST102", "The request body must be a JSON object of named arguments for an RPC call"
            )
        return body
