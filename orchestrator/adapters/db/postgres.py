"""Direct PostgreSQL transport for the Database port (psycopg 3 and a small connection pool).

One of the two adapters of ``orchestrator.adapters.db.base.Transport`` (the other goes through Supabase's REST
layer). It is a dumb pipe: ``call("orch_snapshot", {"p_prefix": None})`` becomes exactly one statement,
``select public.orch_snapshot(p_prefix => $1)``, in autocommit mode, so each call is one round trip and
one transaction (the function body is atomic).

Arguments travel the way PostgREST sends them: as text that the server converts to the parameter's
declared type (``unknown``-typed literals), so both adapters accept and refuse the same inputs: a
malformed JSON string for a ``jsonb`` parameter or ``"abc"`` for an ``integer`` is the server's 22P02,
mapped to ``InvalidArgument``. Lists of strings go as ``text[]``; dicts and other lists as JSON text.

Errors: server errors become the project's types by SQLSTATE (``base.error_for``). Transient faults
(connection lost, pool exhausted, 08xxx, 40001, 40P01, 57014, 57P0x) are retried with tenacity,
bounded in attempts and time, with jittered exponential waits; everything else fails at once. Note that
a retried write whose first attempt committed before the connection dropped is replayed; the SQL
functions are written so a replay is harmless (a transition to the current state is a no-op, a
second requeue finds nothing, a second merge writes the same keys).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import structlog
from psycopg import pq, sql
from psycopg_pool import ConnectionPool, PoolTimeout
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from orchestrator import telemetry
from orchestrator.adapters.db import base
from orchestrator.core import errors

log = structlog.get_logger(__name__)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# SQLSTATEs worth a retry: the same call may well succeed a moment later.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57014", "57P01", "57P02", "57P03", "53300", "55P03"})


def is_transient_sqlstate(code: str | None) -> bool:
    return bool(code) and (code in _TRANSIENT_SQLSTATES or str(code).startswith("08"))


def to_db_error(function: str, exc: BaseException) -> errors.DatabaseError:
    """Map a psycopg (or pool) exception to the project's exception, keeping the server's words."""
    if isinstance(exc, PoolTimeout):
        return errors.TransientDatabaseError(function, f"no database connection available: {exc}")
    if isinstance(exc, psycopg.Error):
        diag = exc.diag
        code = exc.sqlstate
        message = (diag.message_primary if diag else None) or str(exc).strip() or type(exc).__name__
        if code is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            # No SQLSTATE: the connection itself failed (reset, refused, closed under us).
            return errors.TransientDatabaseError(function, message, code=None)
        err = base.error_for(
            function,
            message,
            code,
            details=diag.message_detail if diag else None,
            hint=diag.message_hint if diag else None,
        )
        if is_transient_sqlstate(code) and not isinstance(err, errors.TransientDatabaseError):
            err = errors.TransientDatabaseError(function, message, code=code)
        return err
    return errors.DatabaseError(function, f"{type(exc).__name__}: {exc}")


def adapt_argument(value: Any) -> Any:
    """Turn a JSON-friendly Python value into what we send (see the module docstring)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, float | decimal.Decimal) and not math.isfinite(value):
        # JSON (and so the REST transport) cannot carry it, and numeric would store a NaN.
        raise ValueError(f"cannot send the non-finite number {value!r}")
    if isinstance(value, int | float | decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        items = list(value)
        if all(item is None or isinstance(item, str) for item in items):
            return items  # psycopg sends text[]
        return json.dumps(items, allow_nan=False)
    if isinstance(value, Mapping):
        return json.dumps(dict(value), allow_nan=False)
    raise TypeError(f"cannot send a {type(value).__name__} to a SQL function")


def _masked(url: str) -> str:
    """The URL or key=value DSN without its password, for messages and reprs."""
    url = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)


class PostgresTransport:
    """Calls the SQL functions over psycopg 3 with a thread-safe connection pool."""

    name = "postgres"

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        pool_timeout: float = 10.0,
        retry_attempts: int = 4,
        retry_max_seconds: float = 10.0,
        retry_max_wait: float = 2.0,
        configure: Callable[[psycopg.Connection], None] | None = None,
    ) -> None:
        if not _IDENTIFIER.match(schema):
            raise errors.InvalidArgument("<transport>", f"invalid schema name {schema!r}")
        self._url = url
        self._schema = schema
        self._retry_attempts = max(1, retry_attempts)
        self._retry_max_seconds = retry_max_seconds
        self._retry_max_wait = retry_max_wait
        self._queries: dict[tuple[str, tuple[str, ...]], sql.Composed] = {}
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max(min_size, max_size),
            # No server-side prepared statements: Supabase's pooler (and PgBouncer) in transaction mode
            # does not keep them between transactions; parsing `select fn(...)` costs microseconds.
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(connect_timeout)),
                "prepare_threshold": None,
            },
            configure=configure,
            timeout=pool_timeout,
            name="orchestrator-db",
            # Do not block construction on the server: the first call waits (and retries) instead.
            open=False,
        )
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresTransport({_masked(self._url)!r})"

    # -- the Transport protocol ---------------------------------------------------------------------

    def call(self, function: str, args: Mapping[str, Any]) -> Any:
        query = self._query(function, tuple(args))
        try:
            params = [adapt_argument(v) for v in args.values()]
        except (TypeError, ValueError) as exc:
            raise errors.InvalidArgument(function, str(exc)) from exc

        retrying = Retrying(
            stop=stop_after_attempt(self._retry_attempts) | stop_after_delay(self._retry_max_seconds),
            wait=wait_random_exponential(multiplier=0.05, max=self._retry_max_wait),
            retry=retry_if_exception_type(errors.TransientDatabaseError),
            reraise=True,
            before_sleep=self._log_retry(function),
        )
        for attempt in retrying:
            with attempt:
                return self._call_once(function, query, params)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def close(self) -> None:
        self._pool.close()

    # -- extras ---------------------------------------------------------------------------------------

    @contextmanager
    def listen(self, channel: str) -> Iterator[Listener]:
        """LISTEN on ``channel`` over a dedicated connection (outside the pool) while the block runs."""
        if not _IDENTIFIER.match(channel):
            raise errors.InvalidArgument("LISTEN", f"invalid channel name {channel!r}")
        try:
            conn = psycopg.connect(self._url, autocommit=True)
        except psycopg.Error as exc:
            raise to_db_error("LISTEN", exc) from exc
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            yield Listener(conn, channel)
        finally:
            conn.close()

    @contextmanager
    def count_round_trips(self) -> Iterator[RoundTrips]:
        """Count the client-server round trips of the calls made inside the block.

        Uses libpq's protocol trace: every wait for the server ends with one ReadyForQuery message.
        Needs a pool of exactly one connection so that every call of the block is traced.
        """
        if self._pool.max_size != 1:
            raise ValueError("count_round_trips needs a transport built with max_size=1")
        counter = RoundTrips()
        with tempfile.TemporaryFile(mode="w+") as trace:
            with self._pool.connection() as conn:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            try:
                yield counter
            finally:
                with self._pool.connection() as conn:
                    conn.pgconn.untrace()
                trace.seek(0)
                counter.count = sum(1 for line in trace if "\tReadyForQuery" in line)

    # -- internals ----------------------------------------------------------------------------------

    def _query(self, function: str, names: tuple[str, ...]) -> sql.Composed:
        key = (function, names)
        cached = self._queries.get(key)
        if cached is not None:
            return cached
        if not _IDENTIFIER.match(function):
            raise errors.InvalidArgument(function, f"invalid function name {function!r}")
        for name in names:
            if not _IDENTIFIER.match(name):
                raise errors.InvalidArgument(function, f"invalid argument name {name!r}")
        query = sql.SQL("select {}.{}({})").format(
            sql.Identifier(self._schema),
            sql.Identifier(function),
            sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(n)) for n in names),
        )
        self._queries[key] = query
        return query

    def _call_once(self, function: str, query: sql.Composed, params: list[Any]) -> Any:
        try:
            with self._pool.connection() as conn:
                row = conn.execute(query, params).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise to_db_error(function, exc) from exc
        return None if row is None else row[0]

    @staticmethod
    def _log_retry(function: str) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            telemetry.retried(telemetry.POSTGRES, base.retry_reason(exc))
            log.warning(
                "db_call_retry",
                function=function,
                attempt=state.attempt_number,
                sleep_sec=round(state.next_action.sleep, 3) if state.next_action else None,
                error=str(exc),
            )

        return before_sleep


class RoundTrips:
    """Filled in when a ``count_round_trips`` block ends."""

    count: int = 0


class Listener:
    """Notifications received on one LISTEN channel."""

    def __init__(self, conn: psycopg.Connection, channel: str) -> None:
        self._conn = conn
        self.channel = channel

    def wait(self, timeout: float, max_count: int | None = None) -> list[str]:
        """Payloads that arrive within ``timeout`` seconds (returns as soon as ``max_count`` arrived)."""
        try:
            return [n.payload for n in self._conn.notifies(timeout=timeout, stop_after=max_count)]
        except psycopg.Error as exc:
            raise to_db_error("LISTEN", exc) from exc
