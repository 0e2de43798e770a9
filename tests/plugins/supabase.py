"""Pytest fixtures for Supabase's REST layer: the PostgREST stand-in and the Database over it.

``postgrest`` is a running ``orchestrator.standins.postgrest.PostgrestServer`` over the test's own database
(``database_url`` from tests/conftest.py, migrations applied), with freshly generated keys
(``postgrest.service_role_key`` / ``postgrest.anon_key``). ``supabase_db`` is the ``Database`` facade
over ``SupabaseTransport`` (supabase-py) against it, with short retry waits so fault tests stay fast.
``real_worker`` makes the real worker's writes as SQL (``RealWorkerSQL``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.supabase import SupabaseTransport
from orchestrator.standins.postgrest.server import PostgrestServer, generate_keys


@pytest.fixture
def postgrest(database_url: str) -> Iterator[PostgrestServer]:
    keys = generate_keys()
    server = PostgrestServer(database_url, keys.service_role, keys.anon, pool_size=8)
    server.start()
    try:
        yield server
    finally:
        # Before the database is dropped: the server's pool holds connections to it.
        server.stop()


def make_supabase_transport(
    server: PostgrestServer, *, retry_attempts: int = 5, retry_deadline_sec: float = 10.0
) -> SupabaseTransport:
    """A transport against ``server`` with test-sized retry waits (milliseconds, not seconds)."""
    assert server.base_url is not None, "start the server first"
    return SupabaseTransport(
        server.base_url,
        server.service_role_key,
        timeout_sec=10.0,
        retry_attempts=retry_attempts,
        retry_initial_sec=0.01,
        retry_max_sec=0.05,
        retry_deadline_sec=retry_deadline_sec,
    )


@pytest.fixture
def supabase_db(postgrest: PostgrestServer) -> Iterator[Database]:
    database = Database(make_supabase_transport(postgrest))
    try:
        yield database
    finally:
        database.close()


class RealWorkerSQL:
    """The real worker's writes, as the SQL they become, run as the service role the way PostgREST runs
    them (``role`` and ``request.jwt.claims`` set for the transaction, so the app's triggers that read
    ``auth.role()`` see the service role).

    - ``heartbeat``: ``POST /rest/v1/rpc/func_worker_heartbeat_with_logs`` (the guardian, every 20 s);
    - ``claim``: ``claim_next_task_service_role``, which the app's ``claim-next-task`` calls;
    - ``complete``: the UPDATE of the app's ``complete_task`` (guarded by ``In Progress``);
    - ``set_status``: the UPDATE of the app's ``update-task-status`` (``error_details`` -> ``error_message``,
      ``clear_worker`` -> ``worker_id`` and ``generation_started_at`` NULL);
    - ``patch_worker``: a PostgREST ``PATCH /rest/v1/workers?id=eq.<id>`` (the fatal-error handler, the launcher).
    The Edge routes themselves are tested over HTTP (tests/integration/test_edge_functions.py).
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def _run(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, autocommit=True, row_factory=dict_row) as conn, conn.transaction():
            conn.execute(
                "select set_config('role', 'service_role', true),"
                " set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true),"
                " set_config('request.jwt.claim.role', 'service_role', true)"
            )
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def heartbeat(
        self,
        worker_id: str,
        vram_total_mb: int | None = None,
        vram_used_mb: int | None = None,
        status: str = "active",
        logs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        rows = self._run(
            "select public.func_worker_heartbeat_with_logs(worker_id_param => %s, vram_total_mb_param => %s,"
            " vram_used_mb_param => %s, logs_param => %s::jsonb, status_param => %s) as r",
            (worker_id, vram_total_mb, vram_used_mb, json.dumps(logs or []), status),
        )
        return dict(rows[0]["r"])

    def claim(self, worker_id: str) -> dict[str, Any] | None:
        rows = self._run("select * from public.claim_next_task_service_role(p_worker_id => %s)", (worker_id,))
        return (
            {
                k: (str(v) if k in ("task_id", "project_id") and v is not None else v)
                for k, v in rows[0].items()
            }
            if rows
            else None
        )

    def complete(self, task_id: str, output_location: str = "https://example.invalid/out.mp4") -> int:
        rows = self._run(
            "update public.tasks set status = 'Complete', output_location = %s, generation_processed_at = now()"
            " where id = %s and status = 'In Progress' returning id",
            (output_location, task_id),
        )
        return len(rows)

    def set_status(
        self,
        task_id: str,
        status: str,
        *,
        error_details: str | None = None,
        output_location: str | None = None,
        attempts: int | None = None,
        clear_worker: bool = False,
    ) -> dict[str, Any]:
        sets = ["status = %s", "updated_at = now()"]
        params: list[Any] = [status]
        if status == "In Progress":
            sets.append("generation_started_at = now()")
        if error_details is not None:
            sets.append("error_message = %s")
            params.append(error_details)
        if output_location is not None:
            sets.append("output_location = %s")
            params.append(output_location)
        if attempts is not None:
            sets.append("attempts = %s")
            params.append(attempts)
        if clear_worker:
            sets.append("worker_id = null, generation_started_at = null")
        rows = self._run(
            f"update public.tasks set {', '.join(sets)} where id = %s returning *", (*params, task_id)
        )
        return rows[0]

    def patch_worker(self, worker_id: str, **columns: Any) -> list[dict[str, Any]]:
        sets = ", ".join(f"{name} = %s" for name in columns)
        values = [json.dumps(v) if isinstance(v, dict) else v for v in columns.values()]
        return self._run(f"update public.workers set {sets} where id = %s returning *", (*values, worker_id))


@pytest.fixture
def real_worker(database_url: str) -> RealWorkerSQL:
    return RealWorkerSQL(database_url)
