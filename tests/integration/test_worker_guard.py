"""The guards of docs/database.md against the writes of the real worker and the app.

``orchestrator_workers_guard`` (only our functions change the state and our keys of a row we manage; what
a worker says of itself is recorded) and ``orchestrator_tasks_guard`` with ``orch_transition_worker``'s
drain check (a claim racing a drain or a termination is refused or seen). Races are made deterministic
by holding a transaction open in a second session and waiting, with a deadline, until the other call is
seen waiting on its lock in ``pg_stat_activity``; never by sleeping and hoping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from orchestrator.core import errors
from tests.integration.test_sql_contract import add_tasks, add_worker, task_row, worker_row
from tests.plugins.supabase import RealWorkerSQL


def service_session(url: str) -> psycopg.Connection[dict[str, Any]]:
    conn = psycopg.connect(url, row_factory=dict_row)
    conn.execute("select set_config('role', 'service_role', true)")
    return conn


def wait_until_blocked(raw: psycopg.Connection[Any], call: str, deadline_sec: float = 10.0) -> None:
    """Until a backend running ``call`` waits on a lock (or the deadline passes: an error)."""
    deadline = time.monotonic() + deadline_sec
    while time.monotonic() < deadline:
        row = raw.execute(
            "select pid from pg_stat_activity where wait_event_type = 'Lock' and query like %s",
            (f"%{call}%",),
        ).fetchone()
        if row is not None:
            return
        time.sleep(0.01)  # polling a condition, bounded by the deadline
    raise AssertionError(f"no backend running {call} waited on a lock")


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # reported by the test
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_rows_the_orchestrator_does_not_manage_are_left_alone(
    raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    raw.execute("insert into workers (id, instance_type, status) values ('app-1', 'external', 'active')")
    real_worker.heartbeat("app-1", 1, 1, status="crashed")
    row = worker_row(raw, "app-1")
    assert (row["status"], row["reported_status"]) == ("crashed", None)
    real_worker.patch_worker("app-1", status="error", metadata={"runpod_id": "theirs"})
    assert worker_row(raw, "app-1")["metadata"] == {"runpod_id": "theirs"}


def test_only_our_functions_write_our_columns(
    db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, token: int
) -> None:
    db.register_worker(token, "gpu-1", "RTX 4090", {"runpod_id": "pod-1"})
    db.transition_worker(token, "gpu-1", "initializing", "pod_ready")
    before = worker_row(raw, "gpu-1")
    real_worker.patch_worker(
        "gpu-1", status="active", status_reason="me", activated_at=None, boot_outcome="activated",
        orchestrator_managed=False, reported_status="fine", metadata={"vram_total_mb": 1},
    )  # fmt: skip
    after = worker_row(raw, "gpu-1")
    for column in ("status", "status_reason", "status_changed_at", "activated_at", "boot_outcome",
                   "orchestrator_managed", "reported_status"):  # fmt: skip
        assert after[column] == before[column], column
    assert after["metadata"] == {"runpod_id": "pod-1", "vram_total_mb": 1}
    # The guard does not stand in our own way.
    assert db.transition_worker(token, "gpu-1", "active", "first_heartbeat")["status"] == "active"


def test_a_stale_whole_metadata_write_keeps_the_keys_we_wrote_meanwhile(
    db: Database, raw: psycopg.Connection[Any], database_url: str, token: int
) -> None:
    """The heartbeat RPC reads the metadata, then writes it back whole: our write in between survives."""
    db.register_worker(token, "gpu-1", "RTX 4090", {"runpod_id": "pod-1"})
    with service_session(database_url) as worker_side:
        stale = worker_side.execute("select metadata from workers where id = 'gpu-1'").fetchone()["metadata"]  # type: ignore[index]
        db.merge_worker_metadata(token, "gpu-1", {"process_started_at": "2026-12-06T00:00:00Z"})
        worker_side.execute(
            "update workers set metadata = %s, last_heartbeat = now() where id = 'gpu-1'",
            (psycopg.types.json.Jsonb({**stale, "vram_used_mb": 7}),),
        )
        worker_side.commit()
    meta = worker_row(raw, "gpu-1")["metadata"]
    assert meta == {"runpod_id": "pod-1", "process_started_at": "2026-12-06T00:00:00Z", "vram_used_mb": 7}


@pytest.mark.parametrize("adapter", ["db", "supabase_db"])
def test_draining_to_terminating_waits_for_the_held_task_on_both_transports(
    request: pytest.FixtureRequest, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL, adapter: str
) -> None:
    database: Database = request.getfixturevalue(adapter)
    token = int(database.lease_acquire("leader", 60)["token"])
    add_worker(raw, "gpu-1", "active")
    (task_id,) = add_tasks(raw, 1)
    real_worker.claim("gpu-1")
    database.transition_worker(token, "gpu-1", "draining", "idle_timeout")
    with pytest.raises(errors.IllegalTransition) as info:
        database.transition_worker(token, "gpu-1", "terminating", "drained")
    assert info.value.code == "OR005" and "holds 1 In Progress task" in info.value.message
    assert worker_row(raw, "gpu-1")["status"] == "draining"
    assert (
        database.transition_worker(token, "gpu-1", "error", "heartbeat_stale")["status"] == "error"
    )  # not blocked
    real_worker.complete(task_id)


def test_a_claim_in_flight_when_the_drain_starts_is_seen_by_the_termination(
    db: Database, raw: psycopg.Connection[Any], database_url: str, token: int
) -> None:
    add_worker(raw, "gpu-1", "active")
    (task_id,) = add_tasks(raw, 1)
    with service_session(database_url) as claimer:
        claimed = claimer.execute("select task_id from claim_next_task_service_role('gpu-1')").fetchone()
        assert claimed is not None  # not committed yet: the claim holds the worker row (KEY SHARE)
        thread, out = in_thread(lambda: db.transition_worker(token, "gpu-1", "draining", "idle_timeout"))
        wait_until_blocked(raw, "orch_transition_worker")
        claimer.commit()
    thread.join(timeout=30)
    assert out and out[0]["status"] == "draining"
    with pytest.raises(errors.IllegalTransition):
        db.transition_worker(token, "gpu-1", "terminating", "drained")
    assert task_row(raw, task_id)["worker_id"] == "gpu-1"


def test_a_claim_that_waits_for_the_termination_is_refused(
    raw: psycopg.Connection[Any], database_url: str, real_worker: RealWorkerSQL, token: int
) -> None:
    add_worker(raw, "gpu-1", "active")
    (task_id,) = add_tasks(raw, 1)
    with psycopg.connect(database_url, row_factory=dict_row) as orchestrator:
        row = orchestrator.execute(
            "select orch_transition_worker(%s, 'gpu-1', 'terminating', 'operator_request') as r", (token,)
        ).fetchone()
        assert row is not None and row["r"]["status"] == "terminating"  # not committed: holds the row
        thread, out = in_thread(lambda: real_worker.claim("gpu-1"))
        wait_until_blocked(raw, "claim_next_task_service_role")
        orchestrator.commit()
    thread.join(timeout=30)
    assert out and isinstance(out[0], psycopg.Error) and out[0].sqlstate == "OR004"
    assert task_row(raw, task_id)["status"] == "Queued"
