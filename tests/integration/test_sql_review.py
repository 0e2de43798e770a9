"""Adversarial review of the SQL contract (docs/database.md) and its two transports.

Each test pins one defect found by reviewing migrations/*.sql, orchestrator/adapters/db/*.py and the PostgREST
stand-in against the contract workers and users of the original orchestrator rely on
(banodoco/reigh-worker-orchestrator: the ``tasks`` and ``workers`` tables, the claim, the heartbeat, the
attempt limit; ``docs/database.md``). Real Postgres,
real supabase-py against the stand-in; races are made deterministic by holding a row lock in a second
session, never by sleeping.
"""

from __future__ import annotations

import math
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.postgres import PostgresTransport
from orchestrator.core import errors
from orchestrator.standins.postgrest.server import PostgrestServer
from tests.plugins.supabase import RealWorkerSQL, make_supabase_transport


def _queue_task(raw: psycopg.Connection[Any], task_type: str = "generate") -> str:
    row = raw.execute(
        "insert into tasks (task_type) values (%s) returning id::text as id", (task_type,)
    ).fetchone()
    assert row is not None
    return str(row["id"])


def test_a_worker_row_with_a_null_status_cannot_claim(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    """A managed row with a NULL status is not in a claiming state (only `initializing` and `active` are),
    but `NULL not in (...)` is NULL, which plpgsql's IF treats as false: the tasks guard must test it.
    """
    # A production `workers` table keeps its own column definitions: its status may be nullable.
    raw.execute("alter table workers alter column status drop not null")
    raw.execute("insert into workers (id, status, orchestrator_managed) values ('legacy-null', null, true)")
    task_id = _queue_task(raw)

    with pytest.raises(psycopg.Error) as info:
        real_worker.claim("legacy-null")
    assert info.value.sqlstate == "OR004"
    status = raw.execute("select status::text, worker_id from tasks where id = %s", (task_id,)).fetchone()
    assert status == {"status": "Queued", "worker_id": None}


def test_a_lock_timeout_is_the_same_exception_over_both_transports(
    database_url: str, postgrest: PostgrestServer, raw: psycopg.Connection[Any]
) -> None:
    """The same server error must become the same project exception whichever transport carried it
    (docs/database.md). With a `lock_timeout` in force (an operator's setting, here on the function) a
    write that waits on a locked worker row fails with SQLSTATE 55P03: transient on both transports.
    """
    raw.execute("insert into workers (id, status) values ('w-locked', 'active')")
    raw.execute(
        "alter function public.orch_merge_worker_metadata(bigint, text, jsonb, text) set lock_timeout = '100ms'"
    )
    direct = Database(PostgresTransport(database_url, max_size=1, retry_attempts=1))
    rest = Database(make_supabase_transport(postgrest, retry_attempts=1))
    seen: dict[str, tuple[type[BaseException], str | None]] = {}
    try:
        token = int(direct.lease_acquire("leader-1", 60)["token"])
        with psycopg.connect(database_url) as holder:  # a transaction holding the worker row
            holder.execute("select 1 from workers where id = 'w-locked' for update")
            for name, database in (("postgres", direct), ("supabase", rest)):
                with pytest.raises(errors.DatabaseError) as caught:
                    database.merge_worker_metadata(token, "w-locked", {"note": 1})
                seen[name] = (type(caught.value), caught.value.code)
            holder.rollback()
    finally:
        direct.close()
        rest.close()
    assert seen["postgres"][1] == seen["supabase"][1] == "55P03"
    assert seen["postgres"][0] is seen["supabase"][0] is errors.TransientDatabaseError, seen


@pytest.mark.parametrize("transport", ["postgres", "supabase"])
def test_a_non_finite_number_is_an_invalid_argument_on_both_transports(
    transport: str, database_url: str, postgrest: PostgrestServer, raw: psycopg.Connection[Any]
) -> None:
    """A NaN cost (an estimate computed from a missing price, say) must be refused the same way on both
    transports, before anything is written. Today the psycopg transport sends it as the text 'nan', which
    PostgreSQL's numeric accepts, so orch_append_event stores cost_usd = NaN (every later sum of the
    cost column is NaN); the Supabase transport lets httpx raise a bare ValueError (allow_nan=False),
    which is none of the project's exception types and escapes the control loop's handlers.
    """
    if transport == "postgres":
        database = Database(PostgresTransport(database_url, max_size=1, retry_attempts=1))
    else:
        database = Database(make_supabase_transport(postgrest, retry_attempts=1))
    try:
        token = int(database.lease_acquire("leader-1", 60)["token"])
        with pytest.raises(errors.InvalidArgument):
            database.append_event(token, "worker_terminated", worker_id="w1", cost_usd=math.nan)
        with pytest.raises(errors.InvalidArgument):
            database.lease_renew("leader-1", token, math.inf)
    finally:
        database.close()
    row = raw.execute(
        "select count(*) as n from orchestrator_events where kind = 'worker_terminated'"
    ).fetchone()
    assert row == {"n": 0}


def test_a_claim_reads_a_constant_number_of_rows_behind_a_long_queue(
    raw: psycopg.Connection[Any], database_url: str
) -> None:
    """claim_next_task_service_role (ours, where the app's is absent) walks tasks_orch_queued_idx oldest
    first and probes the operator's view and the dependencies per candidate: every idle worker polls it,
    so its cost must not grow with the backlog.
    """
    raw.execute("insert into workers (id, status) values ('w-b', 'active')")
    raw.execute(
        "insert into tasks (task_type, created_at) "
        "select 'a', now() - interval '1 day' + g * interval '1 ms' from generate_series(1, 5000) g"
    )
    raw.execute("analyze tasks")
    with psycopg.connect(database_url) as conn:  # one transaction: its own statistics counters
        row = conn.execute(
            "select task_id, task_type from public.claim_next_task_service_role('w-b')"
        ).fetchone()
        assert row is not None and row[1] == "a"
        counters = conn.execute(
            "select coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) "
            "from pg_stat_xact_user_tables where relname = 'tasks'"
        ).fetchone()
        conn.rollback()
    assert counters is not None
    assert counters[0] < 100, f"one claim read {counters[0]} task rows"
