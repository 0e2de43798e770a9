"""The Runpod emulator's HTTP server: auth, rate limits, API faults, routing, admin endpoints.

Part of ``orchestrator/standins/emulator``. A stdlib ``ThreadingHTTPServer`` in a background thread
serves three prefixes over one :class:`.state.EmulatorState`:

* ``/v2/...``   REST API v2 (:mod:`.rest`), Bearer auth, RFC 9457 errors, ``RateLimit`` headers;
* ``/graphql``  the SDK's GraphQL subset (:mod:`.gql`), key as Bearer or ``?api_key=``;
* ``/_emulator/...`` the admin endpoints (not part of Runpod's API, no auth): every pod including
  terminated ones with its billed cost, fault knobs, capacity, preemption, worker crash/hang, reset.

API fault knobs apply here, in this order: the ``rtt_ms`` round trip (half on the way in, half on
the way out, plus two for a new connection; never on the admin endpoints), auth (401 is never
faulted), latency, 429 burst, the rate-limit windows, 5xx before the request, then 5xx after a
mutating request has been applied.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from orchestrator.logs import log_http_error

from . import gql, rest
from .admin import EmulatorAdmin
from .catalog import load_catalog
from .faults import Faults
from .state import (
    EXITED,
    EmulatorRefusal,
    EmulatorState,
    SandboxFactory,
)

log = structlog.get_logger(__name__)

_WINDOWS = (("minute", 60), ("hour", 3600), ("day", 86400))
_JSON = "application/json"
_PROBLEM = "application/problem+json"


class RateLimiter:
    """Fixed windows per API key, reported the way openapi-v2.json's RateLimit headers describe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, dict[str, list[float]]] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def hit(self, key: str, faults: Faults) -> tuple[str | None, int, dict[str, str]]:
        """Count one request; returns (exceeded window or None, its reset seconds, headers)."""
        quotas = {
            "minute": faults.rate_limit_minute,
            "hour": faults.rate_limit_hour,
            "day": faults.rate_limit_day,
        }
        now = time.monotonic()
        exceeded: str | None = None
        exceeded_t = 0
        parts = []
        with self._lock:
            per_key = self._windows.setdefault(key, {})
            for name, length in _WINDOWS:
                start, count = per_key.get(name, [now, 0.0])
                if now - start >= length:
                    start, count = now, 0.0
                count += 1
                per_key[name] = [start, count]
                reset_in = max(1, round(start + length - now))
                remaining = max(0, quotas[name] - int(count))
                if count > quotas[name] and exceeded is None:
                    exceeded, exceeded_t = name, reset_in
                parts.append((name, remaining, reset_in))
        headers = {
            "RateLimit": ", ".join(f'"{n}";r={r};t={t}' for n, r, t in parts),
            "RateLimit-Policy": ", ".join(f'"{n}";q={quotas[n]};w={w}' for n, w in _WINDOWS),
        }
        return exceeded, exceeded_t, headers

    def burst_headers(self, key: str, faults: Faults, retry_after: int) -> dict[str, str]:
        """Headers of a burst 429: the minute window shows as spent until Retry-After."""
        _, _, headers = self.hit(key, faults)
        parts = headers["RateLimit"].split(", ")
        parts[0] = f'"minute";r=0;t={retry_after}'
        headers["RateLimit"] = ", ".join(parts)
        return headers


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log_http_error("runpod-emulator", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "runpod-emulator"
    sys_version = ""
    timeout = 60  # an idle keep-alive connection frees its thread after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes; without TCP_NODELAY, Nagle's algorithm holds the body
        # back until the client's delayed ACK (about 40 ms per request on keep-alive connections).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._fresh_connection = True
        self._reply_delay = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator_http", line=format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing ----------------------------------------------------------------------------------

    def _send(
        self, status: int, body: Any, content_type: str = _JSON, headers: dict[str, str] | None = None
    ) -> None:
        if body is None:
            data = b""
        elif isinstance(body, bytes | str):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body).encode()
        if self._reply_delay > 0:
            # The answer's way back to a far-away client (rtt_ms).
            time.sleep(self._reply_delay)
            self._reply_delay = 0.0
        self.send_response(status)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        url = urlsplit(self.path)
        body = self._body()
        if not url.path.startswith("/_emulator/"):
            self._travel(emu)
        try:
            if url.path.startswith("/_emulator/"):
                self._admin(emu, method, url.path, body)
            elif url.path.startswith("/v2/") or url.path == "/v2":
                self._rest(emu, method, url.path, url.query, body)
            elif url.path.rstrip("/") == "/graphql":
                self._graphql(emu, method, url.query, body)
            else:
                self._send(404, rest.problem(404, f"no route for {url.path}"), _PROBLEM)
        except BrokenPipeError:
            pass  # the client went away; nothing to answer
        except Exception as exc:  # a bug in the emulator must answer 500, not kill the connection silently
            log.exception("emulator_handler_error", path=url.path, error=repr(exc))
            self._send(500, rest.problem(500, "internal emulator error"), _PROBLEM)

    def _travel(self, emu: EmulatorServer) -> None:
        """The ``rtt_ms`` knob: the request's way here now, the answer's way back in ``_send``.

        A new connection first pays TCP's handshake and TLS 1.3's (the real API is HTTPS), one round
        trip each; the admin endpoints are not Runpod's and are never delayed.
        """
        rtt = emu.state.faults.rtt_ms / 1000.0
        fresh, self._fresh_connection = self._fresh_connection, False
        if rtt <= 0:
            return
        time.sleep(rtt / 2 + (2 * rtt if fresh else 0.0))
        self._reply_delay = rtt / 2

    def _key(self, query: str, allow_query_key: bool) -> str | None:
        """The presented API key if it is acceptable, else None."""
        auth = self.headers.get("Authorization") or ""
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key and allow_query_key:
            key = (parse_qs(query).get("api_key") or [""])[-1]
        expected = self.server.emulator.api_key
        if not key or (expected is not None and key != expected):
            return None
        return key

    def _api_faults(self, emu: EmulatorServer, key: str) -> tuple[tuple[int, str] | None, dict[str, str]]:
        """Latency, 429 bursts and rate-limit windows: ((Retry-After, window) or None, RateLimit headers)."""
        state = emu.state
        with state.lock:
            f = state.faults
            latency = f.api_latency_s
            burst = f.api_429_burst > 0
            if burst:
                f.api_429_burst -= 1
            retry_after = f.retry_after_s
            faults = Faults(**f.to_dict())
        if latency > 0:
            time.sleep(latency)
        if burst:
            return (retry_after, "minute"), emu.limiter.burst_headers(key, faults, retry_after)
        exceeded, reset_in, headers = emu.limiter.hit(key, faults)
        if exceeded is not None:
            return (reset_in, exceeded), headers
        return None, headers

    def _roll(self, emu: EmulatorServer, knob: str) -> bool:
        with emu.state.lock:
            rate = getattr(emu.state.faults, knob)
            return rate > 0 and emu.state.rng.random() < rate

    # --- REST v2 -----------------------------------------------------------------------------------

    def _rest(self, emu: EmulatorServer, method: str, path: str, query: str, body: bytes) -> None:
        key = self._key(query, allow_query_key=False)
        if key is None:
            has = (self.headers.get("Authorization") or "").lower().startswith("bearer ")
            detail = "invalid bearer token" if has else "missing bearer token"
            self._send(401, rest.problem(401, detail), _PROBLEM, {"WWW-Authenticate": "Bearer"})
            return
        limited, headers = self._api_faults(emu, key)
        if limited is not None:
            retry_after, window = limited
            self._send(
                429,
                rest.problem(429, f"rate limit exceeded for the {window} window"),
                _PROBLEM,
                {**headers, "Retry-After": str(retry_after)},
            )
            return
        if self._roll(emu, "api_error_rate"):
            log.info("emulator_fault_5xx", api="rest", path=path, when="before")
            self._send(503, rest.problem(503, "upstream temporarily unavailable"), _PROBLEM, headers)
            return
        status, out, extra = rest.handle(emu.state, method, path, query, body)
        if method in rest.MUTATING and status < 400 and self._roll(emu, "api_error_after_rate"):
            log.info("emulator_fault_5xx", api="rest", path=path, when="after")
            self._send(502, rest.problem(502, "upstream connection reset"), _PROBLEM, headers)
            return
        ctype = _PROBLEM if status >= 400 else _JSON
        self._send(status, out, ctype, {**headers, **extra})

    # --- GraphQL -----------------------------------------------------------------------------------

    def _graphql(self, emu: EmulatorServer, method: str, query: str, body: bytes) -> None:
        if method != "POST":
            self._send(
                405,
                {"errors": [{"message": "GraphQL only supports POST requests."}]},
                _JSON,
                {"Allow": "POST"},
            )
            return
        key = self._key(query, allow_query_key=True)
        if key is None:
            self._send(401, {"errors": [{"message": "Unauthorized"}]}, _JSON)
            return
        limited, _headers = self._api_faults(emu, key)
        if limited is not None:
            retry_after = limited[0]
            # The real body is unknown; a gateway's HTML page is the harsher case. The SDK
            # (runpod-python runpod/api/graphql.py, run_graphql_query) checks only for 401, then calls
            # response.json(): it fails decoding the page, with neither the status nor the header in sight.
            self._send(429, _TOO_MANY_HTML, "text/html", {"Retry-After": str(retry_after)})
            return
        if self._roll(emu, "api_error_rate"):
            log.info("emulator_fault_5xx", api="graphql", when="before")
            self._send(502, _BAD_GATEWAY_HTML, "text/html")
            return
        status, out = gql.execute(emu.state, body)
        mutating = b"mutation" in body[:200]
        if mutating and status == 200 and self._roll(emu, "api_error_after_rate"):
            log.info("emulator_fault_5xx", api="graphql", when="after")
            self._send(502, _BAD_GATEWAY_HTML, "text/html")
            return
        self._send(status, out, _JSON)

    # --- admin -------------------------------------------------------------------------------------

    def _admin(self, emu: EmulatorServer, method: str, path: str, body: bytes) -> None:
        state = emu.state
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            self._send(400, rest.problem(400, "body is not JSON"), _PROBLEM)
            return
        try:
            status, out = _admin_route(emu, state, method, path, data)
        except EmulatorRefusal as exc:
            self._send(exc.status, rest.problem(exc.status, exc.detail, exc.errors), _PROBLEM)
            return
        self._send(status, out, _JSON if status < 400 else _PROBLEM)


_BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)

_TOO_MANY_HTML = (
    "<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n"
    "<center><h1>429 Too Many Requests</h1></center>\r\n</body>\r\n</html>\r\n"
)

_POD_ADMIN = re.compile(r"^/_emulator/pods/(?P<id>[^/]+)(?P<rest>/preempt|/worker)?$")


def _admin_route(
    emu: EmulatorServer, state: EmulatorState, method: str, path: str, data: Any
) -> tuple[int, Any]:
    if not isinstance(data, dict):
        raise EmulatorRefusal("invalid", "body must be a JSON object")
    if path == "/_emulator/health" and method == "GET":
        with state.lock:
            return 200, {"ok": True, "pods": len(state.list_pods()), "speed": state.speed}
    if path == "/_emulator/pods" and method == "GET":
        return 200, {"pods": state.admin_pods()}
    if path == "/_emulator/faults":
        if method == "GET":
            with state.lock:
                return 200, state.faults.to_dict()
        if method in ("PATCH", "PUT"):
            with state.lock:
                problems = state.faults.update(data)
                if not problems and "seed" in data:
                    state.rng.seed(state.faults.seed)
                out = state.faults.to_dict()
            if problems:
                raise EmulatorRefusal("invalid", "invalid fault knobs", errors=problems)
            log.info("emulator_faults_set", **{k: data[k] for k in sorted(data)})
            return 200, out
    if path == "/_emulator/capacity":
        if method == "GET":
            return 200, {"capacity": emu.capacity_view()}
        if method in ("PATCH", "PUT"):
            entries = data.get("capacity", [data])
            for e in entries:
                try:
                    state.set_capacity(str(e["gpu"]), str(e["dataCenter"]), int(e["total"]))
                except (KeyError, TypeError, ValueError) as exc:
                    raise EmulatorRefusal(
                        "invalid", f"capacity entries need gpu, dataCenter, total: {exc!r}"
                    ) from exc
            return 200, {"capacity": emu.capacity_view()}
    if path == "/_emulator/reset" and method == "POST":
        state.reset()
        emu.limiter.reset()
        return 200, {"ok": True}
    m = _POD_ADMIN.match(path)
    if m is not None:
        pod_id, sub = m.group("id"), m.group("rest")
        if sub is None and method == "GET":
            with state.lock:
                pod = state.pods.get(pod_id)
                if pod is None:
                    raise EmulatorRefusal("not_found", f"pod {pod_id} not found")
                return 200, state.admin_pod(pod, time.monotonic())
        if sub == "/preempt" and method == "POST":
            pod = state.preempt(pod_id, str(data.get("to", EXITED)))
            return 200, {"id": pod.id, "status": pod.status}
        if sub == "/worker" and method == "POST":
            applied = state.worker_fault(pod_id, str(data.get("action", "")))
            return 200, {"applied": applied}
    raise EmulatorRefusal("not_found", f"no admin route {method} {path}")


class EmulatorServer:
    """A local Runpod (REST v2 + GraphQL) whose pods are real SSH sandboxes; see the package docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        speed: float = 1.0,
        state_dir: Path | str | None = None,
        catalog_path: Path | str | None = None,
        *,
        faults: Faults | dict[str, Any] | None = None,
        sandbox_factory: SandboxFactory | None = None,
        lay_out_volume: Any = None,
        rtt_ms: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key or None
        self.speed = speed
        self._own_state_dir = state_dir is None
        self.state_dir = (
            Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="runpod-emulator-"))
        )
        self.catalog = load_catalog(catalog_path)
        if isinstance(faults, dict):
            f = Faults()
            problems = f.update(faults)
            if problems:
                raise ValueError("; ".join(problems))
            faults = f
        if rtt_ms is not None:
            faults = Faults(**(faults or Faults()).to_dict())
            problems = faults.update({"rtt_ms": rtt_ms})
            if problems:
                raise ValueError("; ".join(problems))
        self.state = EmulatorState(
            self.catalog,
            state_dir=self.state_dir,
            speed=speed,
            faults=faults,
            sandbox_factory=sandbox_factory,
            lay_out_volume=lay_out_volume,
        )
        self.limiter = RateLimiter()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    def start(self) -> str:
        self._httpd = _Server((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}"
        self.state.start()
        # A short poll interval makes stop() quick; the cost is one select() wakeup per 0.1 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="emulator-http", daemon=True
        )
        self._thread.start()
        log.info("emulator_started", base_url=self.base_url, speed=self.speed, state_dir=str(self.state_dir))
        return self.base_url

    def stop(self) -> None:
        """Stop serving and end every pod's sandbox. Idempotent."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.state.shutdown()
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("emulator_stopped", base_url=self.base_url)

    @property
    def admin(self) -> EmulatorAdmin:
        return EmulatorAdmin(self.base_url)

    def capacity_view(self) -> list[dict[str, Any]]:
        st = self.state
        with st.lock:
            return [
                {"gpu": g, "dataCenter": d, "total": total, "used": st.used(g, d), "free": st.free(g, d)}
                for (g, d), total in sorted(st.capacity.items())
            ]

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
