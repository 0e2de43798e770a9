"""Our migrations on a database shaped like the app's production one, and the app's writes afterwards.

The database is built in each test from ``test_production_schema_app.sql`` (written from
banodoco/reigh-app's public migrations: the 3-value workers CHECK, the task_status enum, the foreign key,
its heartbeat RPC with the unconditional status write and the crash requeue, its claim, the timing and
billing triggers). Then ``orchestrator migrate`` runs, and we check that the app's own writes still
succeed (heartbeat insert-if-missing, crash beat, claim, complete, update-task-status, cancel) and
that our guards hold on the rows the orchestrator manages. Real PostgreSQL; the app's SQL runs as the
service role the way PostgREST runs it (``RealWorkerSQL``); ours over the direct Postgres transport, which
carries no JWT, as a daemon with ``DATABASE_URL`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.db.migrate import apply_migrations, discover
from orchestrator.adapters.db.postgres import PostgresTransport
from orchestrator.core import errors
from orchestrator.standins.pg import TempPostgres
from tests.plugins.supabase import RealWorkerSQL

APP_SQL = Path(__file__).with_name("test_production_schema_app.sql")
USER = "aaaaaaaa-0000-0000-0000-000000000001"
PROJECT = "bbbbbbbb-0000-0000-0000-000000000001"


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, autocommit=True, row_factory=dict_row)


def app_functions(url: str) -> dict[str, str]:
    with connect(url) as conn:
        rows = conn.execute(
            "select p.oid::regprocedure::text as sig, md5(p.prosrc) as src from pg_proc p"
            " join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'public'"
            " and p.proname in ('func_worker_heartbeat_with_logs', 'claim_next_task_service_role',"
            " 'prevent_timing_manipulation', 'bill_cancelled_orchestrator', 'cascade_task_failure')"
        ).fetchall()
    return {r["sig"]: r["src"] for r in rows}


@pytest.fixture
def app_url(pg: TempPostgres) -> Iterator[str]:
    """The app's database with a user, a project and a queue; our migrations not applied yet."""
    name = f"p_{uuid.uuid4().hex[:16]}"
    url = pg.create_database(name)
    with connect(url) as conn:
        conn.execute(APP_SQL.read_bytes(), prepare=False)
        conn.execute("insert into users (id, credits) values (%s, 100)", (USER,))
        conn.execute("insert into projects (id, user_id) values (%s, %s)", (PROJECT, USER))
        conn.execute("insert into task_types (name, run_type) values ('wan_2_2_i2v', 'gpu')")
        conn.execute(
            "insert into workers (id, instance_type, status) values ('app-worker', 'external', 'active')"
        )
    try:
        yield url
    finally:
        pg.drop_database(name)


@pytest.fixture
def migrated(app_url: str) -> str:
    before = app_functions(app_url)
    assert apply_migrations(app_url) == [m.filename for m in discover()]
    assert apply_migrations(app_url) == []
    assert app_functions(app_url) == before, "the app's functions must never be replaced"
    return app_url


@pytest.fixture
def orch(migrated: str) -> Iterator[Database]:
    database = Database(PostgresTransport(migrated, max_size=2))
    try:
        yield database
    finally:
        database.close()


def queue(url: str, n: int = 1, **columns: Any) -> list[str]:
    with connect(url) as conn:
        return [
            str(
                conn.execute(
                    "insert into tasks (task_type, project_id, params, created_at) values (%s, %s, %s, now() - %s * interval '1 second')"
                    " returning id",
                    (
                        columns.get("task_type", "wan_2_2_i2v"),
                        PROJECT,
                        psycopg.types.json.Jsonb(columns.get("params", {})),
                        100 - i,
                    ),
                ).fetchone()["id"]  # type: ignore[index]
            )
            for i in range(n)
        ]


def task(url: str, task_id: str) -> dict[str, Any]:
    with connect(url) as conn:
        row = conn.execute("select *, status::text as status from tasks where id = %s", (task_id,)).fetchone()
    assert row is not None
    return dict(row)


def worker(url: str, worker_id: str) -> dict[str, Any]:
    with connect(url) as conn:
        row = conn.execute("select * from workers where id = %s", (worker_id,)).fetchone()
    assert row is not None
    return dict(row)


def managed(orch: Database, token: int, worker_id: str, *path: str) -> None:
    """Register a worker as the daemon does and walk it along ``path``."""
    orch.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", {"runpod_id": f"pod-{worker_id}"})
    for status in path:
        orch.transition_worker(token, worker_id, status, "test")


# -- the migration ----------------------------------------------------------------------------------


def test_the_migrations_extend_the_check_keep_the_enum_and_the_key(migrated: str) -> None:
    with connect(migrated) as conn:
        checks = conn.execute(
            "select pg_get_constraintdef(oid) as d from pg_constraint where conrelid = 'workers'::regclass and contype = 'c'"
        ).fetchall()
        keys = conn.execute(
            "select conname from pg_constraint where conrelid = 'tasks'::regclass and contype = 'f'"
            " and confrelid = 'workers'::regclass"
        ).fetchall()
        status_type = conn.execute(
            "select format_type(atttypid, atttypmod) as t from pg_attribute where attrelid = 'tasks'::regclass and attname = 'status'"
        ).fetchone()
    assert len(checks) == 1
    for value in (
        "active",
        "inactive",
        "terminated",
        "crashed",
        "error",
        "spawning",
        "initializing",
        "draining",
        "terminating",
    ):
        assert f"'{value}'::text" in checks[0]["d"], value
    assert [k["conname"] for k in keys] == ["tasks_worker_id_fkey"]
    assert status_type == {"t": "task_status"}


# -- the app's writes still succeed ---------------------------------------------------------------


def test_the_apps_writes_succeed_after_the_migrations(migrated: str, real_worker_app: RealWorkerSQL) -> None:
    app = real_worker_app
    # The heartbeat inserts a row for an id it does not know, as 'active' and 'external'.
    beat = app.heartbeat("new-worker", 24000, 512, logs=[{"level": "INFO", "message": "hello"}])
    assert beat["success"] is True and beat["logs_inserted"] == 1
    row = worker(migrated, "new-worker")
    # (The app's RPC merges the VRAM figures into the metadata it read: none for a new row, so NULL.)
    assert (row["status"], row["instance_type"], row["metadata"]) == ("active", "external", None)

    # Claim, complete, fail through update-task-status, cancel (the billing trigger runs): all succeed.
    first, second, third = queue(migrated, 3, params={"orchestrator_details": {}})
    claimed = app.claim("new-worker")
    assert claimed is not None and claimed["task_id"] == first and claimed["user_id"] == uuid.UUID(USER)
    assert app.complete(first) == 1
    assert task(migrated, first)["status"] == "Complete"
    assert app.claim("new-worker")["task_id"] == second  # type: ignore[index]
    failed = app.set_status(second, "Failed", output_location="CUDA error")
    assert (failed["attempts"], str(failed["status"])) == (1, "Failed")
    cancelled = app.set_status(third, "Cancelled")
    assert str(cancelled["status"]) == "Cancelled"
    assert task(migrated, third)["generation_processed_at"] is not None  # the app's billing trigger ran

    # The crash beat of an unmanaged worker: the app writes 'crashed' (refused by its own 3-value CHECK
    # before the migration) and requeues what the worker held, attempt counted once.
    (fourth,) = queue(migrated)
    assert app.claim("new-worker")["task_id"] == fourth  # type: ignore[index]
    beat = app.heartbeat("new-worker", 0, 0, status="crashed")
    assert beat["crash_requeued_tasks"] == 1
    assert worker(migrated, "new-worker")["status"] == "crashed"
    row = task(migrated, fourth)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("Queued", 1, None)

    # A claim by an id with no row fails on the app's foreign key (the claim-next-task 500).
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        app.claim("never-heartbeated")


# -- our guards hold on the rows we manage ---------------------------------------------------------


@pytest.mark.parametrize("state", ["draining", "terminating", "error", "terminated"])
def test_a_heartbeat_never_resurrects_a_worker_being_ended(
    migrated: str, orch: Database, real_worker_app: RealWorkerSQL, state: str
) -> None:
    token = int(orch.lease_acquire("leader", 60)["token"])
    path = {"draining": ["initializing", "active", "draining"], "terminating": ["initializing", "active", "terminating"],
            "error": ["initializing", "error"], "terminated": ["initializing", "active", "terminated"]}[state]  # fmt: skip
    managed(orch, token, "gpu-1", *path)
    before = worker(migrated, "gpu-1")
    for _ in range(3):
        assert real_worker_app.heartbeat("gpu-1", 24000, 100)["success"] is True
    after = worker(migrated, "gpu-1")
    assert after["status"] == state and after["reported_status"] is None
    assert after["metadata"]["runpod_id"] == "pod-gpu-1"
    if state == "terminated":
        assert after["last_heartbeat"] == before["last_heartbeat"]
    else:
        assert after["last_heartbeat"] is not None and after["metadata"]["vram_total_mb"] == 24000


def test_the_crash_beat_is_recorded_and_its_tasks_counted_once(
    migrated: str, orch: Database, real_worker_app: RealWorkerSQL
) -> None:
    token = int(orch.lease_acquire("leader", 60)["token"])
    managed(orch, token, "gpu-1", "initializing", "active")
    orch.merge_worker_metadata(token, "gpu-1", {"process_started_at": "2026-12-06T00:00:00Z"})
    held, poison = queue(migrated, 2)
    assert real_worker_app.claim("gpu-1")["task_id"] == held  # type: ignore[index]
    assert real_worker_app.claim("gpu-1")["task_id"] == poison  # type: ignore[index]
    with connect(migrated) as conn:
        conn.execute("update tasks set attempts = 2 where id = %s", (poison,))

    beat = real_worker_app.heartbeat("gpu-1", 0, 0, status="crashed")
    assert beat["success"] is True
    row = worker(migrated, "gpu-1")
    assert (
        row["status"] == "active" and row["reported_status"] == "crashed" and row["reported_at"] is not None
    )
    assert row["metadata"]["process_started_at"] == "2026-12-06T00:00:00Z"
    assert (task(migrated, held)["status"], task(migrated, held)["attempts"]) == ("Queued", 1)
    # The app requeued it at its third attempt; at the orchestrator's limit (3) it is dead-lettered.
    dead = task(migrated, poison)
    assert (dead["status"], dead["attempts"]) == ("Failed", 3) and "dead-lettered" in dead["error_message"]

    snap = {w["id"]: w for w in orch.snapshot()["workers"]}
    assert snap["gpu-1"]["reported_status"] == "crashed" and snap["gpu-1"]["reported_at"] is not None


def test_the_fatal_handlers_patch_is_recorded_and_cannot_touch_our_keys(
    migrated: str, orch: Database, real_worker_app: RealWorkerSQL
) -> None:
    token = int(orch.lease_acquire("leader", 60)["token"])
    managed(orch, token, "gpu-1", "initializing", "active")
    stale = worker(migrated, "gpu-1")["metadata"]  # what the worker read earlier
    orch.merge_worker_metadata(token, "gpu-1", {"process_started_at": "2026-12-06T00:00:00Z"})
    real_worker_app.patch_worker(
        "gpu-1",
        status="error",
        metadata={**stale, "error_reason": "CUDA error: device-side assert", "error_time": "2026-12-06T01:00:00Z",
                  "self_terminated": True, "runpod_id": "forged"},
    )  # fmt: skip
    row = worker(migrated, "gpu-1")
    assert row["status"] == "active" and row["reported_status"] == "error"
    assert row["reported_details"] == {
        "error_reason": "CUDA error: device-side assert", "error_time": "2026-12-06T01:00:00Z", "self_terminated": True,
    }  # fmt: skip
    meta = row["metadata"]
    assert meta["runpod_id"] == "pod-gpu-1" and meta["process_started_at"] == "2026-12-06T00:00:00Z"
    assert "error_reason" not in meta and meta["self_terminated"] is True  # the worker's own key is kept
    # The launcher's PATCH of startup_phase (a key the worker owns) goes through.
    real_worker_app.patch_worker("gpu-1", metadata={**meta, "startup_phase": "ready"})
    assert worker(migrated, "gpu-1")["metadata"]["startup_phase"] == "ready"


def test_a_draining_worker_cannot_claim_and_is_not_terminated_while_it_holds_a_task(
    migrated: str, orch: Database, real_worker_app: RealWorkerSQL
) -> None:
    token = int(orch.lease_acquire("leader", 60)["token"])
    managed(orch, token, "gpu-1", "initializing", "active")
    held, waiting = queue(migrated, 2)
    assert real_worker_app.claim("gpu-1")["task_id"] == held  # type: ignore[index]
    orch.transition_worker(token, "gpu-1", "draining", "idle_timeout")
    with pytest.raises(psycopg.Error) as info:
        real_worker_app.claim("gpu-1")
    assert info.value.sqlstate == "OR004"
    assert task(migrated, waiting)["status"] == "Queued"
    with pytest.raises(errors.IllegalTransition) as refused:
        orch.transition_worker(token, "gpu-1", "terminating", "drained")
    assert refused.value.code == "OR005"
    # The worker finishes its task through the app; then the pod may go.
    real_worker_app.set_status(held, "In Progress")  # update-task-status's reset of the start time: allowed
    assert real_worker_app.complete(held) == 1
    assert orch.transition_worker(token, "gpu-1", "terminating", "drained")["status"] == "terminating"


def test_our_requeue_works_over_a_connection_without_a_jwt(
    migrated: str, orch: Database, real_worker_app: RealWorkerSQL
) -> None:
    """The app's timing trigger refuses generation_* changes to anyone but the service role; the daemon
    over DATABASE_URL has no JWT, so orch_requeue_worker_tasks must not write them."""
    token = int(orch.lease_acquire("leader", 60)["token"])
    managed(orch, token, "gpu-1", "initializing", "active")
    (held,) = queue(migrated)
    real_worker_app.claim("gpu-1")
    orch.transition_worker(token, "gpu-1", "error", "heartbeat_stale")
    assert orch.requeue_worker_tasks(token, "gpu-1", "heartbeat_stale") == {"requeued": [held], "failed": []}
    row = task(migrated, held)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("Queued", 1, None)


@pytest.fixture
def real_worker_app(migrated: str) -> RealWorkerSQL:
    return RealWorkerSQL(migrated)
