"""The Supabase stand-in: PostgREST's RPC and table endpoints, the app's Edge Functions and Storage, over a real Postgres.

Where it sits: ``orchestrator/standins/`` holds the stand-ins for the services we cannot run here. The
daemon's default database transport is Supabase's REST API (``orchestrator.adapters.db.supabase``, supabase-py
``rpc``), and the real worker talks to the same project: the heartbeat RPC, two table endpoints, the
app's Edge Functions and a Storage upload. A real PostgREST binary (or the app's Deno functions)
cannot run on this machine, so this module answers, on one port and on the same real Postgres the
psycopg transport talks to:

- ``POST {base}/rest/v1/rpc/<fn>`` (and ``GET`` for read-only calls) the way Supabase's gateway plus
  PostgREST do (below);
- ``GET``/``PATCH {base}/rest/v1/<table>`` (``orchestrator.standins.postgrest.tables``);
- ``POST {base}/functions/v1/<name>``: the app's claim-next-task, task-counts, complete_task,
  update-task-status, update-worker-model and generate-upload-url, rebuilt over SQL from
  banodoco/reigh-app ``supabase/functions`` (``orchestrator.standins.postgrest.edge``; the Edge base URL
  is the same base as REST, ``{SUPABASE_URL}/functions/v1``);
- ``PUT {base}/storage/v1/object/upload/sign/...`` and ``GET .../object/public/...``
  (``orchestrator.standins.postgrest.storage``).
The tests, the demo and the simulated workers all use it, so both the Supabase transport and the real
worker's protocol are exercised end to end.

What the RPC path does, following PostgREST's documentation (references/api/functions, references/errors):

- Named arguments: the JSON object's keys are the function's parameter names. A function matches
  when every key is one of its input parameters and every parameter without a default is given;
  otherwise ``PGRST202`` (404) "Could not find the function ..." with PostgREST's message, details
  and a "Perhaps you meant" hint. Arguments are converted with ``json_to_record`` using the
  parameters' declared types, as PostgREST does, so a wrong type fails in Postgres (``22P02``, 400).
- Results: a scalar (or json/jsonb, or single composite) function gives that JSON value; ``void``
  gives ``null``; a set-returning function gives a JSON array.
- Access mode: ``GET``/``HEAD`` and ``STABLE``/``IMMUTABLE`` functions run in a read-only
  transaction (a write then fails with ``25006``, 405); ``POST`` on a ``VOLATILE`` function runs
  read-write.
- Keys (``/rest/v1`` only; the Edge Functions check ``Authorization`` themselves and need no
  ``apikey``, as the app deploys them with ``verify_jwt = false``): like Supabase's API gateway, the ``apikey`` header (or ``apikey`` query parameter) must be
  one of the two configured keys (401 "No API key found in request" / "Invalid API key" otherwise,
  with the gateway's body, which has no ``code``). ``Authorization: Bearer <token>``, when sent,
  must also be one of them (401 ``PGRST301`` otherwise) and decides the role; without it the
  apikey's role is used. The call runs as ``anon`` or ``service_role`` through
  ``set_config('role', ..., true)`` (what PostgREST does), so grants and row level security are
  enforced; those roles must exist (the migrations create them). ``request.jwt.claims``,
  ``request.jwt.claim.role``, ``request.method`` and ``request.path`` are set for the transaction.
- Errors: the body is ``{code, message, details, hint}`` and the status follows PostgREST's table
  (``mapSQLtoHTTP``): ``P0001`` 400, ``23505``/``23503`` 409, ``42501`` 401 for anon and 403
  otherwise, ``42883``/``42P01`` 404, ``08*`` 503, ``40*``/``57*``/``XX*`` 500 (``57P01`` 503),
  ``PTxyz`` status xyz, ``RAISE SQLSTATE 'PGRST'`` with JSON message/detail, and every other
  SQLSTATE 400 - so our own ``OR001``/``OR002``/``OR003`` come back as 400 with the code in the
  body. Errors also carry PostgREST's ``Proxy-Status: PostgREST; error=<code>`` header.
- Invalid JSON body: ``PGRST102`` 400. Other verbs on ``/rpc``: ``PGRST101`` 405.

Known differences from real PostgREST/Supabase (on purpose, to stay small):

- The schema cache (``SchemaCache``) holds what this stand-in uses: the exposed schema's functions
  (parameter names, types and defaults, return shape, volatility) and its tables' and views' columns;
  PostgREST's also holds keys, relationships and more. It is filled, as PostgREST's is, when the server
  starts, when its listener connection (``LISTEN pgrst``) is re-established, and on ``NOTIFY pgrst``
  with the payload ``'reload schema'`` or an empty one; requests wait while it is refilled. So a
  function or table created since the last reload answers 404 (``PGRST202``/``PGRST205``) until the
  next ``NOTIFY pgrst, 'reload schema'`` (``orchestrator migrate`` sends it). Not modelled:
  ``'reload config'`` (there is no configuration to reload), the debouncing of a burst of
  notifications into one reload, SIGUSR1, and the delay of a large schema's reload.
- The Edge Functions rebuilt here run their SQL directly, so they do not go through the cache (the
  app's run supabase-js, whose ``.rpc()`` and table calls do go through PostgREST's).
- No JWT verification: a token is accepted if it equals one of the two configured keys, and its
  role is the role that key was configured for; claims (``exp``, custom roles, user JWTs signed by
  the project secret) are not read. ``generate_keys`` makes JWT-shaped keys so they look real.
- RPC: only ``/rpc/<function>`` in the exposed schema (``public`` by default), no
  ``Accept-Profile``/``Content-Profile`` schema switching, no filters, ``select``, ``order``,
  ``limit``/``offset`` or ``Range`` on set-returning functions (those answer ``PGRST127`` "Feature
  not implemented"), no ``Prefer`` handling (``count``, ``tx``, ``params=single-object``, ``return``),
  no singular ``application/vnd.pgrst.object+json``, no ``Content-Range`` header, no OpenAPI root, no
  CORS. Tables: the subset ``orchestrator.standins.postgrest.tables`` lists. Edge Functions and
  Storage: the differences their modules list (the app's users, projects, credits, task types and
  generations do not exist here).
- Request bodies must be JSON (``application/json`` or no ``Content-Type``); other types answer
  415 ``PGRST107`` instead of PostgREST's single-unnamed ``text``/``xml``/``bytea`` parameter
  calls. A single unnamed ``json``/``jsonb`` parameter does receive the whole body, as documented.
- A body that is valid JSON but not an object answers 400 ``PGRST102``.
- Overloads: when several functions match, the one with exactly the given parameters wins,
  else 300 ``PGRST203``; PostgREST's own tie-breaking is more elaborate.
- No statement timeouts per role (Supabase sets ``statement_timeout`` on ``anon`` and
  ``authenticated``); connection-pool exhaustion answers 504 ``PGRST003`` as PostgREST does.
- ``fail_next`` injects faults that real services produce only by accident: a 503 with
  PostgREST's "Database connection error" body (``PGRST000``), a 503 from the gateway with a
  non-JSON body, or a dropped connection with no response at all.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestrator.standins.postgrest import tables
from orchestrator.standins.postgrest.common import (
    ANON_ROLE,
    SERVICE_ROLE,
    ApiKeys,
    HttpError,
    Reply,
    error_from_pg,
    generate_keys,
    make_api_key,
    pgrst_error,
    status_for_sqlstate,
)
from orchestrator.standins.postgrest.edge import EdgeFunctions
from orchestrator.standins.postgrest.storage import ObjectStore

__all__ = [
    "ANON_ROLE",
    "SERVICE_ROLE",
    "ApiKeys",
    "PostgrestServer",
    "RequestRecord",
    "generate_keys",
    "make_api_key",
    "serve",
    "status_for_sqlstate",
]

log = structlog.get_logger(__name__)

FaultKind = Literal["unavailable", "gateway", "disconnect"]

# GET query parameters PostgREST reserves for reading table-valued results; we do not implement them.
_RESERVED_QUERY_PARAMS = frozenset(
    {"select", "order", "limit", "offset", "columns", "on_conflict", "and", "or"}
)


# --- the schema cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Routine:
    schema: str
    name: str
    params: tuple[tuple[str, str], ...]  # (name, type) of the input parameters, "" when unnamed
    required: int  # the first `required` input parameters have no default
    variadic: bool
    returns_set: bool
    returns_void: bool
    volatile: bool

    @property
    def param_names(self) -> list[str]:
        return [n for n, _ in self.params]

    def single_unnamed_json(self) -> bool:
        return len(self.params) == 1 and self.params[0][0] == "" and self.params[0][1] in ("json", "jsonb")

    def matches(self, keys: frozenset[str]) -> bool:
        names = self.param_names
        if "" in names[: self.required]:
            return False  # an unnamed required parameter cannot be passed by name
        return keys <= set(names) - {""} and set(names[: self.required]) <= keys


_CATALOG_SQL = """
SELECT p.proname,
       p.pronargs,
       p.pronargdefaults,
       p.proargnames,
       p.proargmodes::text[],
       array(SELECT format_type(t.oid_, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t(oid_, i) ORDER BY t.i),
       p.provariadic <> 0,
       p.proretset,
       p.prorettype = 'void'::regtype,
       p.provolatile = 'v'
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.prokind = 'f'
ORDER BY p.proname, p.oid
"""

_RELATIONS_SQL = """
SELECT c.relname, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
GROUP BY c.relname
"""


@dataclass(frozen=True)
class SchemaCache:
    """What PostgREST knows of the exposed schema between reloads: its functions and its tables' columns.

    PostgREST reads this metadata once and serves every request from it ("Schema Cache",
    docs.postgrest.org/en/stable/references/schema_cache.html); it is refilled only when the server
    starts, when its listener connection is re-established, and on ``NOTIFY pgrst`` with the payload
    ``'reload schema'`` or an empty one ("Listener", docs.postgrest.org/en/stable/references/listener.html;
    ``PostgREST.Workers.listener`` of the postgrest package: "When a NOTIFY db-channel - with an empty
    payload - is done, it refills the schema cache"). So a function created after the last reload is
    unknown (404 ``PGRST202``) until then, whatever ``pg_proc`` says, and one dropped since is still
    "known" (its call then fails in Postgres, ``42883``, 404).
    """

    schema: str
    routines: Mapping[str, tuple[_Routine, ...]]
    columns: Mapping[str, tuple[str, ...]]
    loaded_at: float

    @classmethod
    def load(cls, conn: psycopg.Connection[Any], schema: str) -> SchemaCache:
        routines: dict[str, list[_Routine]] = {}
        for (
            proname, nargs, ndefaults, argnames, argmodes, argtypes, variadic, retset, retvoid, volatile,
        ) in conn.execute(_CATALOG_SQL, (schema,)).fetchall():  # fmt: skip
            names: list[str] = list(argnames or [])
            if argmodes:
                # proargnames covers every argument (OUT ones too) when modes are present; keep the inputs.
                names = [
                    n
                    for n, m in zip(names or [""] * len(argmodes), argmodes, strict=False)
                    if m in ("i", "b", "v")
                ]
            names = (names + [""] * nargs)[:nargs]
            routines.setdefault(str(proname), []).append(
                _Routine(
                    schema=schema,
                    name=str(proname),
                    params=tuple(zip(names, argtypes, strict=True)),
                    required=nargs - (ndefaults or 0),
                    variadic=bool(variadic),
                    returns_set=bool(retset),
                    returns_void=bool(retvoid),
                    volatile=bool(volatile),
                )
            )
        columns = {
            str(name): tuple(str(c) for c in cols)
            for name, cols in conn.execute(_RELATIONS_SQL, (schema,)).fetchall()
        }
        return cls(
            schema=schema,
            routines={k: tuple(v) for k, v in routines.items()},
            columns=columns,
            loaded_at=time.time(),
        )

    def functions(self, name: str) -> list[_Routine]:
        return list(self.routines.get(name, ()))

    def table_columns(self, table: str) -> list[str] | None:
        found = self.columns.get(table)
        return list(found) if found is not None else None


def _no_function_error(
    cache: SchemaCache, name: str, keys: frozenset[str], overloads: list[_Routine]
) -> HttpError:
    schema = cache.schema
    qualified = f"{schema}.{name}"
    given = ", ".join(sorted(keys))
    if keys:
        message = f"Could not find the function {qualified}({given}) in the schema cache"
        searched = f" with parameter{'s' if len(keys) > 1 else ''} {given}"
    else:
        message = f"Could not find the function {qualified} without parameters in the schema cache"
        searched = " without parameters"
    details = (
        f"Searched for the function {qualified}{searched} or with a single unnamed json/jsonb parameter,"
        " but no matches were found in the schema cache."
    )
    hint: str | None = None
    if overloads:
        # Same name, other parameters: suggest the closest parameter list, as PostgREST does.
        lists = {"(" + ", ".join(sorted(r.param_names)) + ")": r for r in overloads}
        close = difflib.get_close_matches("(" + given + ")", list(lists), n=1, cutoff=0.0)
        if close:
            hint = f"Perhaps you meant to call the function {qualified}{close[0]}"
    else:
        close = difflib.get_close_matches(name, sorted(cache.routines), n=1, cutoff=0.75)
        if close:
            hint = f"Perhaps you meant to call the function {schema}.{close[0]}"
    return pgrst_error(404, "PGRST202", message, details, hint)


def _choose(routines: list[_Routine], keys: frozenset[str], body_is_json_object: bool) -> _Routine | None:
    candidates = [r for r in routines if r.matches(keys)]
    if not candidates and body_is_json_object:
        candidates = [r for r in routines if r.single_unnamed_json()]
    if len(candidates) > 1:
        exact = [r for r in candidates if set(r.param_names) == keys]
        if len(exact) == 1:
            return exact[0]
        described = ", ".join(
            f"{r.schema}.{r.name}(" + ", ".join(f"{n} => {t}" for n, t in r.params) + ")" for r in candidates
        )
        raise pgrst_error(
            300,
            "PGRST203",
            f"Could not choose the best candidate function between: {described}",
            None,
            "Try renaming the parameters or the function itself in the database so function overloading can be resolved",
        )
    return candidates[0] if candidates else None


def _call_sql(routine: _Routine, keys: list[str], whole_body: bool) -> sql.Composed:
    """The statement calling ``routine``: one row whose last column is the response body (JSON text).

    Arguments arrive as one JSON object (the only query parameter) and are typed by
    ``json_to_record`` with the parameters' declared types, the way PostgREST converts them.
    """
    fn = sql.SQL("{}.{}").format(sql.Identifier(routine.schema), sql.Identifier(routine.name))
    types = dict(routine.params)
    last = routine.params[-1][0] if routine.params else None
    source: sql.Composable = sql.SQL("")
    if whole_body:
        call: sql.Composable = sql.SQL("{}(%s::json)").format(fn)
    elif keys:
        call = sql.SQL("{}({})").format(
            fn,
            sql.SQL(", ").join(
                sql.SQL("{variadic}{name} := _args.{name}").format(
                    variadic=sql.SQL("VARIADIC " if routine.variadic and k == last else ""),
                    name=sql.Identifier(k),
                )
                for k in keys
            ),
        )
        # The types are format_type() output read from pg_catalog, not client input.
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(types[k])) for k in keys
        )
        source = sql.SQL(" FROM json_to_record(%s::json) AS _args({})").format(columns)
    else:
        call = sql.SQL("{}()").format(fn)
    if routine.returns_set:
        # A scalar set-returning function's alias names its column; a composite one's names the row.
        has_source = bool(keys) and not whole_body
        lateral = sql.SQL(", LATERAL {} AS _r" if has_source else " FROM {} AS _r").format(call)
        return sql.SQL("SELECT coalesce(json_agg(_r), '[]'::json)::text{}{}").format(source, lateral)
    if routine.returns_void:
        return sql.SQL("SELECT {}, 'null'{}").format(call, source)
    return sql.SQL("SELECT coalesce(to_json({})::text, 'null'){}").format(call, source)


# --- the server ------------------------------------------------------------------------------------


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it: for tests that assert retries happened."""

    method: str
    path: str
    status: int | None  # None when the connection was dropped without a response
    role: str | None


@dataclass(frozen=True)
class _Routed:
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


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its open keep-alive connections when it stops."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

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


class PostgrestServer:
    """The stand-in, served from a background thread. Use ``with PostgrestServer(...) as base_url:``."""

    def __init__(
        self,
        database_url: str,
        service_role_key: str,
        anon_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        schema: str = "public",
        pool_size: int = 8,
        pool_timeout_sec: float = 10.0,
    ) -> None:
        if not service_role_key or not anon_key or service_role_key == anon_key:
            raise ValueError("the service-role and anon keys must be two different non-empty strings")
        self.database_url = database_url
        self.schema = schema
        self._roles = {service_role_key: SERVICE_ROLE, anon_key: ANON_ROLE}
        self._host = host
        self._port = port
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout_sec
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._log: list[RequestRecord] = []
        # The schema cache; requests wait while it is being refilled (_cache_lock is held throughout).
        self._cache: SchemaCache | None = None
        self._cache_lock = threading.Lock()
        self._reloaded = threading.Condition()
        self._reloads = 0
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._stopping = threading.Event()
        self.base_url: str | None = None
        self.storage = ObjectStore()
        self.edge = EdgeFunctions(self, self.storage)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> str:
        if self._httpd is not None:
            raise RuntimeError("already started")
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.database_url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="postgrest-sim",
            timeout=self._pool_timeout,
        )
        pool.open(wait=True, timeout=self._pool_timeout)
        self._pool = pool
        # LISTEN before the first load, so that a reload asked for while it runs is not lost.
        self._stopping.clear()
        self._listening.clear()
        self._listener = threading.Thread(target=self._listen, name="postgrest-sim-listener", daemon=True)
        self._listener.start()
        if not self._listening.wait(self._pool_timeout):
            self.stop()
            raise RuntimeError("the schema cache listener could not LISTEN on channel pgrst")
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        httpd = _HTTPServer((self._host, self._port), handler)
        self._httpd = httpd
        host, port = httpd.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else host
        self.base_url = f"http://{host_text}:{port}"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="postgrest-sim", daemon=True
        )
        self._thread.start()
        log.info("postgrest_sim_started", url=self.base_url, schema=self.schema)
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.join(timeout=5)
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.close_open_connections()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if httpd is not None:
            log.info("postgrest_sim_stopped", url=self.base_url)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the schema cache ---------------------------------------------------------------------------

    CHANNEL = "pgrst"  # PostgREST's default db-channel

    def _listen(self) -> None:
        """The listener: a connection of its own that LISTENs on ``pgrst``; the cache is refilled on
        each (re)connection and on each reload notification, as PostgREST's listener does."""
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.CHANNEL)))
                    self._reload("connected")
                    self._listening.set()
                    backoff = 0.1
                    while not self._stopping.is_set():
                        if self._cache is None:
                            # Never loaded (the first load failed): keep trying, answering 503
                            # PGRST002 meanwhile, as PostgREST does.
                            self._reload("retry")
                        for note in conn.notifies(timeout=0.2):
                            payload = note.payload.strip().lower()
                            if payload in ("", "reload schema"):
                                self._reload(f"notify {note.payload!r}")
                            # 'reload config' reloads PostgREST's own settings; the stand-in has none.
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    return
                log.warning("postgrest_sim_listener_lost", error=str(exc)[:200], retry_in_sec=backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _reload(self, why: str) -> None:
        pool = self._pool
        if pool is None:
            return
        with self._cache_lock:  # requests wait for the refill, as PostgREST's do
            try:
                with pool.connection() as conn:
                    cache = SchemaCache.load(conn, self.schema)
            except (psycopg.Error, PoolTimeout) as exc:
                # The old cache stays; the next notification or reconnection tries again.
                log.warning("postgrest_sim_schema_cache_not_loaded", why=why, error=str(exc)[:200])
                return
            self._cache = cache
        with self._reloaded:
            self._reloads += 1
            self._reloaded.notify_all()
        log.info(
            "postgrest_sim_schema_cache_loaded",
            why=why,
            functions=sum(len(v) for v in cache.routines.values()),
            relations=len(cache.columns),
        )

    @property
    def schema_reloads(self) -> int:
        """How many times the schema cache was (re)filled since the server started."""
        with self._reloaded:
            return self._reloads

    def wait_for_reload(self, after: int, timeout: float = 10.0) -> bool:
        """Wait until the cache has been refilled more than ``after`` times (tests: a NOTIFY was seen)."""
        deadline = time.monotonic() + timeout
        with self._reloaded:
            while self._reloads <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._reloaded.wait(left)
            return True

    def schema_cache(self) -> SchemaCache:
        with self._cache_lock:
            cache = self._cache
        if cache is None:
            raise pgrst_error(503, "PGRST002", "Could not query the database for the schema cache. Retrying.")
        return cache

    # -- knobs for tests ----------------------------------------------------------------------------

    def fail_next(self, count: int, kind: FaultKind = "unavailable") -> None:
        """Answer the next ``count`` requests with a fault instead of calling the database.

        ``unavailable``: 503 with PostgREST's ``PGRST000`` "Database connection error" body;
        ``gateway``: 503 from the gateway with a plain-text body (no PostgREST JSON);
        ``disconnect``: read the request, then close the connection without any response.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._faults.append(_Fault(kind, count))

    @property
    def service_role_key(self) -> str:
        return next(k for k, r in self._roles.items() if r == SERVICE_ROLE)

    @property
    def anon_key(self) -> str:
        return next(k for k, r in self._roles.items() if r == ANON_ROLE)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def _take_fault(self) -> FaultKind | None:
        with self._lock:
            while self._faults and self._faults[0].remaining <= 0:
                self._faults.pop(0)
            if not self._faults:
                return None
            self._faults[0].remaining -= 1
            return self._faults[0].kind

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    # -- SQL as a role -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, role: str, *, read_only: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """One transaction as ``role``, with the request settings PostgREST sets (the table endpoints and
        the Edge Functions' supabase-js calls). psycopg errors propagate; a full pool is ``PGRST003``."""
        pool = self._pool
        if pool is None:
            raise pgrst_error(503, "PGRST000", "Database connection error. Retrying the connection.")
        try:
            with pool.connection() as conn:
                conn.execute("BEGIN")
                try:
                    if read_only:
                        conn.execute("SET TRANSACTION READ ONLY")
                    claims = json.dumps({"role": role, "iss": "supabase-sim"})
                    conn.execute(
                        "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
                        " set_config('request.jwt.claim.role', %s, true)",
                        (role, claims, role),
                    )
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if not conn.broken:
                        with contextlib.suppress(psycopg.Error):
                            conn.execute("ROLLBACK")
                    raise
        except PoolTimeout as exc:
            raise pgrst_error(504, "PGRST003", "Timed out acquiring connection from connection pool.") from exc

    def table(self, request: tables.TableRequest, *, role: str) -> Reply:
        """One table request (``GET``/``PATCH /rest/v1/<table>``) as ``role``. Raises ``HttpError``."""
        try:
            columns = self.schema_cache().table_columns(request.table)
            with self.transaction(role, read_only=request.method in ("GET", "HEAD")) as conn:
                return tables.handle(conn, self.schema, request, columns)
        except psycopg.Error as exc:
            raise error_from_pg(exc, authenticated=role != ANON_ROLE) from exc

    # -- one RPC ------------------------------------------------------------------------------------

    def call(self, function: str, body: Any, *, role: str, method: str, path: str) -> str:
        """Run one RPC and return the response body (JSON text). Raises ``HttpError``."""
        pool = self._pool
        if pool is None:
            raise pgrst_error(503, "PGRST000", "Database connection error. Retrying the connection.")
        authenticated = role != ANON_ROLE
        body_is_object = isinstance(body, dict)
        keys = frozenset(body) if body_is_object else frozenset()
        cache = self.schema_cache()
        routines = cache.functions(function)
        routine = _choose(routines, keys, body_is_object and method == "POST")
        if routine is None:
            raise _no_function_error(cache, function, keys, routines)
        try:
            with pool.connection() as conn:
                return self._call_in(conn, routine, body, keys, role, method, path)
        except PoolTimeout as exc:
            raise pgrst_error(
                504, "PGRST003", "Timed out acquiring connection from connection pool."
            ) from exc
        except psycopg.Error as exc:
            raise error_from_pg(exc, authenticated=authenticated) from exc

    def _call_in(
        self,
        conn: psycopg.Connection[Any],
        routine: _Routine,
        body: Any,
        keys: frozenset[str],
        role: str,
        method: str,
        path: str,
    ) -> str:
        conn.execute("BEGIN")
        try:
            whole_body = not routine.matches(keys)  # chosen only as the single-unnamed-json fallback
            if method != "POST" or not routine.volatile:
                # PostgREST's access mode: GET, and STABLE/IMMUTABLE functions, run read-only.
                conn.execute("SET TRANSACTION READ ONLY")
            claims = json.dumps({"role": role, "iss": "supabase-sim"})
            conn.execute(
                "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
                " set_config('request.jwt.claim.role', %s, true), set_config('request.method', %s, true),"
                " set_config('request.path', %s, true)",
                (role, claims, role, method, path),
            )
            ordered = [n for n in routine.param_names if n in keys]
            statement = _call_sql(routine, ordered, whole_body)
            params: tuple[Any, ...] = ()
            if whole_body:
                params = (json.dumps(body),)
            elif ordered:
                params = (json.dumps({k: body[k] for k in ordered}),)
            row = conn.execute(statement, params).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if not conn.broken:
                with contextlib.suppress(psycopg.Error):  # the original error is the one to report
                    conn.execute("ROLLBACK")
            raise
        result = row[-1] if row else "null"
        return str(result)


class _Handler(BaseHTTPRequestHandler):
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
        fault = state._take_fault()
        if fault == "disconnect":
            state._record(RequestRecord(method, split.path, None, None))
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
            state._record(RequestRecord(method, split.path, status, None))
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
        state._record(RequestRecord(method, split.path, status, role))
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
    ) -> _Routed:
        """Route one request: Edge Functions, Storage, RPC or a table. Raises ``HttpError``."""
        state = self.server_state
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/functions/v1/"):
            name = unquote(path[len("/functions/v1/") :]).strip("/")
            return _Routed(state.edge.handle(name, method, headers, raw), None, name)
        if path.startswith("/storage/v1/"):
            return _Routed(state.storage.handle(method, path, query_text, headers, raw), None, None)
        role = self._role = self._authorize(query)
        if path.startswith(("/rest/v1/rpc/", "/rpc/")):
            function = self._route(path, method)
            args = self._arguments(method, raw, query)
            result = state.call(function, args, role=role, method=method, path=path)
            reply = Reply(200, result.encode(), {"Content-Type": "application/json; charset=utf-8"})
            return _Routed(reply, role, function)
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
        return _Routed(state.table(request, role=role), role, None)

    def _authorize(self, query: list[tuple[str, str]]) -> str:
        """Supabase's gateway checks ``apikey``; PostgREST then takes the role from the bearer token."""
        roles = self.server_state._roles
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


# --- command line ----------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.standins.postgrest",
        description="Serve a PostgREST-compatible RPC endpoint (Supabase's /rest/v1/rpc) over a Postgres database.",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL"), help="default: $DATABASE_URL"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=54321)
    parser.add_argument("--schema", default="public")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--keys-file",
        help="write generated keys here (mode 0600) as SUPABASE_URL/SUPABASE_SERVICE_ROLE_KEY/SUPABASE_ANON_KEY lines;"
        " without it and without SUPABASE_SERVICE_ROLE_KEY/SUPABASE_ANON_KEY in the environment, they are printed",
    )
    return parser.parse_args(argv)


def serve(argv: list[str] | None = None) -> int:
    """Run the stand-in in the foreground until SIGINT/SIGTERM."""
    args = _parse_args(argv)
    if not args.database_url:
        print("--database-url (or DATABASE_URL) is required", file=sys.stderr)
        return 2
    service_key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
    anon_key = os.environ.get("SUPABASE_ANON_KEY")
    generated = not (service_key and anon_key)
    if generated:
        keys = generate_keys()
        service_key, anon_key = keys.service_role, keys.anon
    assert service_key and anon_key
    from orchestrator.logs import configure_logging  # only the command line configures logging

    try:
        password = str(psycopg.conninfo.conninfo_to_dict(args.database_url).get("password") or "")
    except psycopg.ProgrammingError:
        password = ""
    configure_logging(level=args.log_level, extra_secrets=[v for v in (service_key, anon_key, password) if v])
    server = PostgrestServer(
        args.database_url, service_key, anon_key, args.host, args.port, schema=args.schema
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    with server as base_url:
        if generated:
            lines = f"SUPABASE_URL={base_url}\nSUPABASE_SERVICE_ROLE_KEY={service_key}\nSUPABASE_ANON_KEY={anon_key}\n"
            if args.keys_file:
                fd = os.open(args.keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(lines)
                print(
                    f"serving {base_url}/rest/v1/rpc/<function>; keys written to {args.keys_file}", flush=True
                )
            else:
                # Throwaway keys of a simulated project, generated just now: the caller needs them.
                print(f"serving {base_url}/rest/v1/rpc/<function>\n{lines}", end="", flush=True)
        else:
            print(f"serving {base_url}/rest/v1/rpc/<function>", flush=True)
        stop.wait()
    return 0

