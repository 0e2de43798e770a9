"""The wake probe (``orch_queue_probe``) sees tasks moved back to Queued, not only new ones.

Migration 20261129000500 adds ``requeues`` to the probe's answer: a counter bumped once per committed
transaction that moved a task back to ``Queued``. Over Supabase's REST API the daemon cannot LISTEN and
ticks at once only when the probe's answer changes, so this is what gets a requeued task a pod within
seconds instead of a whole poll. Real PostgreSQL (the session's TempPostgres, a fresh database per test),
the PostgREST stand-in with supabase-py, and the real daemon as a process against the emulator stack.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from tests.integration.test_sql_contract import add_tasks, add_worker, task_row
from tests.plugins.supabase import RealWorkerSQL

WORKER = "gpu-probe-1"


def probe_requeues(db: Database) -> int:
    return int(db.queue_probe()["requeues"])


@pytest.fixture
def busy_worker(raw: psycopg.Connection[Any], real_worker: RealWorkerSQL) -> tuple[list[str], str]:
    """An active worker holding three claimed tasks, and a newer task left Queued.

    The newer queued task pins ``newest_queued_at``, so only ``requeues`` can tell a requeue apart.
    Returns (the claimed ids, oldest first; the still-queued id).
    """
    add_worker(raw, WORKER, "active")
    claimed = add_tasks(raw, 3, age_sec=60)
    [newest] = add_tasks(raw, 1)
    for expected in claimed:
        task = real_worker.claim(WORKER)
        assert task is not None and task["task_id"] == expected
    return claimed, newest


# -- over direct Postgres ---------------------------------------------------------------------------


def test_a_fresh_database_answers_nothing_queued_and_no_requeues(db: Database) -> None:
    assert db.queue_probe() == {"newest_queued_at": None, "requeues": 0, "enqueued": 0}


def test_every_way_back_to_queued_changes_the_answer_and_nothing_else_does(
    db: Database,
    raw: psycopg.Connection[Any],
    real_worker: RealWorkerSQL,
    token: int,
    busy_worker: tuple[list[str], str],
) -> None:
    (first, second, third), _newest = busy_worker
    baseline = db.queue_probe()
    assert baseline["newest_queued_at"] is not None and baseline["requeues"] == 0

    # A completion (the app's complete_task) is not new work.
    assert real_worker.complete(first) == 1
    assert db.queue_probe() == baseline

    # The worker sends its task back through update-task-status below the attempt limit: requeued.
    assert (
        real_worker.set_status(second, "Queued", error_details="cuda oom", clear_worker=True)["status"]
        == "Queued"
    )
    after_fail = db.queue_probe()
    assert after_fail == {**baseline, "requeues": 1}  # newest_queued_at did not move: created_at is old

    # Claiming it again is not new work either.
    again = real_worker.claim(WORKER)
    assert again is not None and again["task_id"] == second
    assert db.queue_probe() == after_fail

    # The orchestrator requeues a dead worker's two running tasks: one transaction, one bump.
    result = db.requeue_worker_tasks(token, WORKER, "heartbeat lost")
    assert sorted(result["requeued"]) == sorted([second, third]) and result["failed"] == []
    after_requeue = db.queue_probe()
    assert after_requeue == {**baseline, "requeues": 2}

    # Anyone's plain UPDATE moving a task back to Queued (an operator retrying a failed task).
    raw.execute("update tasks set status = 'Failed' where id = %s", (first,))
    assert db.queue_probe() == after_requeue  # Complete -> Failed is no work
    raw.execute("update tasks set status = 'Queued' where id = %s", (first,))
    after_update = db.queue_probe()
    assert after_update == {**baseline, "requeues": 3}

    # Writes that leave a queued task queued do not count.
    raw.execute("update tasks set status = 'Queued', params = '{\"x\": 1}' where status = 'Queued'")
    assert db.queue_probe() == after_update

    # The crash heartbeat of the app's RPC requeues what the dead worker held: one more.
    task = real_worker.claim(WORKER)
    assert task is not None
    assert real_worker.heartbeat(WORKER, 0, 0, status="crashed")["crash_requeued_tasks"] == 1
    assert db.queue_probe() == {**baseline, "requeues": 4}


def test_a_dead_lettered_failure_does_not_change_the_answer(
    db: Database, real_worker: RealWorkerSQL, token: int, busy_worker: tuple[list[str], str]
) -> None:
    (first, _, _), _newest = busy_worker
    baseline = db.queue_probe()
    db.set_task_attempt_limit(token, 1)
    assert (
        real_worker.set_status(first, "Queued", error_details="bad input", clear_worker=True)["status"]
        == "Failed"
    )
    assert db.queue_probe() == baseline


def test_the_count_moves_at_commit_only_and_an_open_requeue_blocks_no_one(
    db: Database, raw: psycopg.Connection[Any], database_url: str, busy_worker: tuple[list[str], str]
) -> None:
    (first, second, third), _newest = busy_worker
    with (
        psycopg.connect(database_url, row_factory=dict_row) as operator,
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as worker,
    ):
        # An operator's open transaction requeues a task and has not committed yet.
        operator.execute("update tasks set status = 'Queued', worker_id = null where id = %s", (first,))
        # The probe must not announce it before the task is visible: a tick woken now would find
        # nothing new and the task would wait for the next poll after all.
        assert probe_requeues(db) == 0

        # A worker's failure report meanwhile is not held up by the operator's open transaction
        # (the counter row is locked only while committing). lock_timeout turns a wait into an error.
        worker.execute("set lock_timeout = '2s'")
        row = worker.execute(
            "update tasks set status = 'Queued', worker_id = null, error_message = 'segfault'"
            " where id = %s and worker_id = %s returning status::text", (second, WORKER),
        ).fetchone()  # fmt: skip
        assert row is not None and row["status"] == "Queued"
        assert probe_requeues(db) == 1

        operator.commit()
    assert probe_requeues(db) == 2
    assert task_row(raw, first)["status"] == "Queued"

    # A requeue that rolls back leaves no trace.
    with psycopg.connect(database_url) as rolled_back:
        rolled_back.execute("update tasks set status = 'Queued' where id = %s", (third,))
        rolled_back.rollback()
    assert probe_requeues(db) == 2


def test_a_requeue_of_many_tasks_writes_the_counter_once(db: Database, raw: psycopg.Connection[Any]) -> None:
    add_worker(raw, WORKER, "active")
    ids = add_tasks(raw, 50, status="In Progress", worker_id=WORKER, age_sec=30)
    raw.execute("update tasks set status = 'Queued', worker_id = null where id = any(%s::uuid[])", (ids,))
    assert probe_requeues(db) == 1
    assert db.queue_probe()["newest_queued_at"] is not None


def test_the_counter_is_private(raw: psycopg.Connection[Any]) -> None:
    for role in ("anon", "authenticated", "service_role"):
        privileges = raw.execute(
            "select has_table_privilege(%s, 'orchestrator_private.queue_requeues', 'SELECT, UPDATE') as t,"
            " has_schema_privilege(%s, 'orchestrator_private', 'USAGE') as s,"
            " has_function_privilege(%s, 'orch_queue_probe()', 'EXECUTE') as f",
            (role, role, role),
        ).fetchone()
        assert privileges is not None
        assert privileges["t"] is False and privileges["s"] is False, role
        assert privileges["f"] is (role == "service_role"), role


# -- over Supabase's REST layer (supabase-py against the PostgREST stand-in) ------------------------


def test_over_supabase_the_probe_answers_the_requeue_count(
    supabase_db: Database, raw: psycopg.Connection[Any], real_worker: RealWorkerSQL
) -> None:
    assert supabase_db.queue_probe() == {"newest_queued_at": None, "requeues": 0, "enqueued": 0}
    add_worker(raw, WORKER, "active")
    [task_id] = add_tasks(raw, 1, age_sec=60)
    add_tasks(raw, 1)  # a newer queued task: newest_queued_at stays put through the requeue
    claimed = real_worker.claim(WORKER)
    assert claimed is not None and claimed["task_id"] == task_id
    before = supabase_db.queue_probe()
    assert before["requeues"] == 0 and before["newest_queued_at"] is not None

    lease = supabase_db.lease_acquire("probe-test", 60)
    result = supabase_db.requeue_worker_tasks(int(lease["token"]), WORKER, "heartbeat lost")
    assert result == {"requeued": [task_id], "failed": []}
    assert supabase_db.queue_probe() == {**before, "requeues": 1}


# -- new tasks, in commit order ---------------------------------------------------------------------


def test_a_task_committed_late_with_an_old_created_at_changes_the_answer(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    """A long transaction's task appears carrying the created_at of the transaction's start.

    Before 20261206010100 the probe answered only the newest created_at among Queued tasks (and the
    requeue count): a task committed after a newer one was already queued left that answer as it was,
    so over Supabase (no LISTEN) the daemon was not woken and the task waited a whole poll interval.
    """
    with psycopg.connect(database_url, row_factory=dict_row) as slow:
        # The app's transaction starts (and so fixes its now()) before another task is queued...
        started = slow.execute("select now() as t").fetchone()
        assert started is not None
        [newer] = add_tasks(raw, 1)
        baseline = db.queue_probe()
        # ...inserts its task, which carries that older start time, and commits last.
        late = slow.execute(
            "insert into tasks (task_type, params, status) values ('generate', '{}'::jsonb, 'Queued') "
            "returning id, created_at"
        ).fetchone()
        assert late is not None and late["created_at"] == started["t"]
        assert (
            db.queue_probe() == baseline
        )  # not visible yet: announcing it now would wake a tick for nothing
        slow.commit()
    assert task_row(raw, str(late["id"]))["created_at"] < task_row(raw, newer)["created_at"]
    after = db.queue_probe()
    assert after["newest_queued_at"] == baseline["newest_queued_at"]  # the old answer could not tell
    assert after != baseline and after["enqueued"] == baseline["enqueued"] + 1


def test_inserts_bump_once_per_transaction_and_only_for_queued_tasks(
    db: Database, raw: psycopg.Connection[Any], database_url: str
) -> None:
    before = db.queue_probe()["enqueued"]
    add_tasks(raw, 50)  # one statement, one transaction
    assert db.queue_probe()["enqueued"] == before + 1
    add_tasks(raw, 3, status="Complete")
    add_tasks(raw, 2, status="In Progress", worker_id=None)
    assert db.queue_probe()["enqueued"] == before + 1
    with psycopg.connect(database_url) as rolled_back:
        rolled_back.execute(
            "insert into tasks (task_type, params, status) values ('t', '{}'::jsonb, 'Queued')"
        )
        rolled_back.rollback()
    assert db.queue_probe()["enqueued"] == before + 1
