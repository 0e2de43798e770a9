"""The Supabase transport: the Database port over Supabase's REST API (supabase-py ``rpc``, PostgREST).

Where it sits: ``orchestrator.adapters.db.base.Database`` calls a ``Transport``; this one is the default
(``SUPABASE_URL`` + ``SUPABASE_SERVICE_ROLE_KEY``), the alternative being direct Postgres
(``orchestrator.adapters.db.postgres``). It is a dumb pipe: ``POST /rest/v1/rpc/<fn>`` with named JSON
arguments, the function's JSON result back. Tested end to end against
``orchestrator.standins.postgrest`` on a real Postgres.

Errors. PostgREST answers ``{code, message, details, hint}``; ``code`` is the SQLSTATE our SQL
functions raised (``OR001`` lease lost, ``OR002`` illegal transition, ...) and goes through
``orchestrator.adapters.db.base.error_for``, so the same server error becomes the same exception as over
psycopg. PostgREST's own codes: ``PGRST202`` (no function takes these arguments) and ``PGRST102``
(unreadable body) are ``InvalidArgument``; ``PGRST000``-``PGRST003`` (database unreachable, pool
timeout) are transient. postgrest-py's ``APIError`` does not keep the HTTP status, and a gateway's
error body need not carry a code, so each thread's HTTP client records the status of its last
response; a 502/503/504, or any 5xx without a database code, is transient, as are network faults
(connection refused or reset, timeouts).

Retries. Transient faults are retried with tenacity, bounded in attempts and total time, with full
jitter; everything else fails at once. A retried call may run twice when the first response was lost
after the server had committed (a timeout or a reset after sending): the SQL functions are written
to make that harmless (fenced writes, guarded transitions, idempotent merges; a replayed requeue finds
nothing left In Progress). A 503 from PostgREST itself means the call never ran.

Threads. supabase-py does not document its ``Client`` as thread-safe, and it mutates its own state
(lazily built sub-clients, headers rewritten on auth events), so each thread gets its own ``Client``
(a few plain objects, no sockets). They all share one ``httpx.Client`` ("It can be shared between
threads", says its docstring), which holds the connection pool; ``close`` closes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
import tenacity
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from orchestrator import telemetry
from orchestrator.adapters.db.base import error_for, retry_reason
from orchestrator.core import errors

log = structlog.get_logger(__name__)

# PostgREST's connection group: the database was not reached, so the call did not run.
_PGRST_TRANSIENT = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
# PostgREST's request and schema-cache errors that mean "these arguments fit no function".
_PGRST_INVALID_ARGUMENT = frozenset({"PGRST100", "PGRST102", "PGRST202", "PGRST203"})
_TRANSIENT_STATUSES = frozenset({502, 503, 504})


def _looks_like_sqlstate(code: str) -> bool:
    # Five characters (HTTP statuses, which postgrest-py puts in ``code`` for bodies it cannot read,
    # have three); PGRST codes are longer and handled before this.
    return len(code) == 5 and code.isalnum() and code.upper() == code


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _json_default(value: Any) -> Any:
    """Values psycopg adapts natively, encoded for JSON so both transports accept the same arguments."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot send a {type(value).__name__} as a JSON argument")


class _ThreadState(threading.local):
    client: Client | None = None
    last_status: int | None = None


class SupabaseTransport:
    """``Transport`` over supabase-py. Safe to share between threads."""

    name = "supabase"

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        schema: str = "public",
        timeout_sec: float = 15.0,
        retry_attempts: int = 5,
        retry_initial_sec: float = 0.1,
        retry_max_sec: float = 2.0,
        retry_deadline_sec: float = 20.0,
    ) -> None:
        if not url or not service_role_key:
            raise errors.ConfigError(["SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both required"])
        self._url = url
        self._key = service_role_key
        self._schema = schema
        self._timeout = httpx.Timeout(timeout_sec, connect=min(timeout_sec, 5.0))
        self._attempts = max(1, retry_attempts)
        self._wait = tenacity.wait_random_exponential(multiplier=retry_initial_sec, max=retry_max_sec)
        self._deadline = retry_deadline_sec
        self._local = _ThreadState()
        self._closed = False
        # One connection pool for every thread (httpx.Client is safe to share); its response hook runs
        # in the calling thread, so the status lands in that thread's state.
        self._http = httpx.Client(timeout=self._timeout, event_hooks={"response": [self._remember_status]})

    def __repr__(self) -> str:  # never show the key
        return f"SupabaseTransport(url={self._url!r}, schema={self._schema!r})"

    # -- Transport ----------------------------------------------------------------------------------

    def call(self, function: str, args: Mapping[str, Any]) -> Any:
        try:
            payload = json.loads(json.dumps(dict(args), default=_json_default, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise errors.InvalidArgument(function, f"arguments cannot be sent as JSON: {exc}") from exc
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._attempts) | tenacity.stop_after_delay(self._deadline),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(errors.TransientDatabaseError),
            reraise=True,
            before_sleep=self._log_retry,
        )
        for attempt in retrying:
            with attempt:
                return self._call_once(function, payload)
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    def close(self) -> None:
        self._closed = True
        self._http.close()

    # -- internals ----------------------------------------------------------------------------------

    def _remember_status(self, response: httpx.Response) -> None:
        self._local.last_status = response.status_code

    def _client(self) -> Client:
        if self._closed:
            raise errors.DatabaseError("supabase", "the transport is closed")
        client = self._local.client
        if client is None:
            options = ClientOptions(
                schema=self._schema, httpx_client=self._http, auto_refresh_token=False, persist_session=False
            )
            client = self._local.client = create_client(self._url, self._key, options)
        return client

    def _call_once(self, function: str, payload: dict[str, Any]) -> Any:
        client = self._client()
        self._local.last_status = None
        try:
            response = client.rpc(function, payload).execute()
        except APIError as exc:
            raise self._map_api_error(function, exc, self._local.last_status) from exc
        except httpx.TransportError as exc:
            # Connection refused/reset, timeouts, a dropped connection: the network, not the request.
            raise errors.TransientDatabaseError(
                function, f"network error talking to the REST API: {type(exc).__name__}: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise errors.DatabaseError(function, f"HTTP error: {type(exc).__name__}: {exc}") from exc
        return response.data

    @staticmethod
    def _map_api_error(function: str, exc: APIError, status: int | None) -> errors.DatabaseError:
        code = exc.code or None
        message = exc.message or f"HTTP {status} from the REST API"
        details, hint = _text(exc.details), _text(exc.hint)
        if code in _PGRST_TRANSIENT:
            return errors.TransientDatabaseError(function, message, code=code, details=details, hint=hint)
        if status in _TRANSIENT_STATUSES:
            return errors.TransientDatabaseError(
                function, f"HTTP {status}: {message}", code=code, details=details, hint=hint
            )
        if code in _PGRST_INVALID_ARGUMENT:
            if code == "PGRST202":
                message = f"no SQL function {function} accepts these argument names: {message}"
            return errors.InvalidArgument(function, message, code=code, details=details, hint=hint)
        if code and _looks_like_sqlstate(code):
            return error_for(function, message, code, details=details, hint=hint)
        if status is not None and status >= 500:
            # A 5xx with no database code comes from a proxy or the gateway: worth another try.
            return errors.TransientDatabaseError(
                function, f"HTTP {status}: {message}", code=code, details=details, hint=hint
            )
        if status in (401, 403) or (code or "").startswith("PGRST3"):
            return errors.DatabaseError(
                function,
                f"the REST API refused our credentials (HTTP {status}): {message}",
                code=code,
                details=details,
                hint=hint,
            )
        return errors.DatabaseError(function, message, code=code, details=details, hint=hint)

    def _log_retry(self, retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        telemetry.retried(telemetry.SUPABASE, retry_reason(exc))
        log.warning(
            "supabase_rpc_retry",
            function=getattr(exc, "function", None),
            attempt=retry_state.attempt_number,
            code=getattr(exc, "code", None),
            error=str(exc),
            sleep_sec=round(retry_state.next_action.sleep, 3) if retry_state.next_action else None,
        )
