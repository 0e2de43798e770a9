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
worker's protocol are exercised end to end. This module holds the server (its lifecycle, the schema
cache's listener, the test knobs, SQL run as a role) and its command line; the HTTP side (routing, keys,
faults, error bodies) is ``orchestrator.standins.postgrest.handler`` and the RPC resolution over the
schema cache is ``orchestrator.standins.postgrest.rpc``.

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
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestrator.loop.daemon import stop_signals, wait_for_stop
from orchestrator.standins.postgrest import tables
from orchestrator.standins.postgrest.common import (
    ANON_ROLE,
    SERVICE_ROLE,
    ApiKeys,
    Reply,
    error_from_pg,
    generate_keys,
    make_api_key,
    pgrst_error,
    status_for_sqlstate,
)
from orchestrator.standins.postgrest.edge import EdgeFunctions
from orchestrator.standins.postgrest.handler import (
    FaultKind,
    KeepAliveServer,
    PostgrestHandler,
    RequestRecord,
)
from orchestrator.standins.postgrest.rpc import Routine, SchemaCache, call_sql, choose, no_function_error
from orchestrator.standins.postgrest.storage import ObjectStore

__all__ = [
    "ANON_ROLE",
    "SERVICE_ROLE",
    "ApiKeys",
    "FaultKind",
    "PostgrestServer",
    "RequestRecord",
    "SchemaCache",
    "generate_keys",
    "make_api_key",
    "serve",
    "status_for_sqlstate",
]

log = structlog.get_logger(__name__)


# --- the server ------------------------------------------------------------------------------------


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int


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
        self._httpd: KeepAliveServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._lost_claims = 0
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
        handler = type("_BoundHandler", (PostgrestHandler,), {"server_state": self})
        httpd = KeepAliveServer((self._host, self._port), handler)
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

    def lose_claim_answers(self, count: int) -> None:
        """The next ``count`` claim-next-task calls that claim a task commit the claim, then answer 504
        from the gateway instead of the task: the worker never learns what it holds (a response lost to
        a timeout or a dropped connection after the database committed; nothing documents how often)."""
        if count < 0:
            raise ValueError("count must be >= 0")
        with self._lock:
            self._lost_claims += count

    def take_lost_claim(self) -> bool:
        with self._lock:
            if self._lost_claims <= 0:
                return False
            self._lost_claims -= 1
            return True

    @property
    def roles(self) -> Mapping[str, str]:
        """The two configured keys and the role each one stands for."""
        return self._roles

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

    def take_fault(self) -> FaultKind | None:
        with self._lock:
            while self._faults and self._faults[0].remaining <= 0:
                self._faults.pop(0)
            if not self._faults:
                return None
            self._faults[0].remaining -= 1
            return self._faults[0].kind

    def record(self, record: RequestRecord) -> None:
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
            raise pgrst_error(
                504, "PGRST003", "Timed out acquiring connection from connection pool."
            ) from exc

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
        routine = choose(routines, keys, body_is_object and method == "POST")
        if routine is None:
            raise no_function_error(cache, function, keys, routines)
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
        routine: Routine,
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
            statement = call_sql(routine, ordered, whole_body)
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
    with stop_signals() as received, server as base_url:
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
        wait_for_stop(received)
    return 0
