"""Parents let go: ``orch_release_parents``, and the requeues that no longer run a waiting parent again
(migration 20261213000100), on real PostgreSQL over both transports.

A parent (a ``*_orchestrator`` task) stays In Progress under the worker that ran it while its children
run; the app completes it with its last child whoever holds it (banodoco/reigh-app
``complete_task/orchestratorCore.ts``). What an operator checks: a worker leaving lets its parents go
without changing them otherwise (still In Progress, no attempt spent), the tasks guard does not send them
back to the queue, each release is in the events, and a dying holder's parent is not requeued (which
cost a claim and, at the third death, the whole chain).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.core import errors
from tests.integration.test_sql_contract import add_tasks, add_worker
from tests.integration.test_tasks_without_worker import _task


def _parent(
    raw: psycopg.Connection[Any], worker_id: str | None, task_type: str = "travel_orchestrator"
) -> str:
    [task] = add_tasks(raw, 1, status="In Progress", worker_id=worker_id, task_type=task_type, age_sec=3600)
    return task


def _child(raw: psycopg.Connection[Any], parent: str, status: str = "Queued") -> str:
    row = raw.execute(
        "insert into tasks (task_type, params, status) values ('travel_segment', %s, %s) returning id",
        (json.dumps({"orchestrator_task_id_ref": parent}), status),
    ).fetchone()
    assert row is not None
    return str(row["id"])


@pytest.mark.parametrize("transport", ["postgres", "supabase"])
def test_a_release_keeps_the_parents_in_progress_with_no_worker(
    transport: str, request: pytest.FixtureRequest, raw: psycopg.Connection[Any]
) -> None:
    database: Database = request.getfixturevalue("db" if transport == "postgres" else "supabase_db")
    token = int(database.lease_acquire("leader", 60)["token"])
    add_worker(raw, "w1", "draining")
    travel = _parent(raw, "w1")
    join = _parent(raw, "w1", "join_clips_orchestrator")
    _child(raw, travel)
    add_worker(raw, "w2", "active")
    [other] = add_tasks(raw, 1, status="In Progress", worker_id="w2", task_type="travel_orchestrator")

    answer = database.release_parents(token, "w1", "holds_only_parents")
    assert sorted(answer["released"]) == sorted([travel, join])
    for task in (travel, join):
        assert _task(raw, task) == {
            "status": "In Progress",
            "worker_id": None,
            "attempts": 0,
            "error_message": None,
        }
    assert _task(raw, other)["worker_id"] == "w2"  # another worker's parent is not touched
    # The worker holds nothing now: the database lets it end.
    database.transition_worker(token, "w1", "terminating", "drained")
    event = raw.execute(
        "select worker_id, reason, details from orchestrator_events where kind = 'parents_released'"
    ).fetchone()
    assert event is not None and event["worker_id"] == "w1" and event["reason"] == "holds_only_parents"
    assert sorted(event["details"]["released"]) == sorted([travel, join])
    # Again: nothing left to release, nothing recorded.
    assert database.release_parents(token, "w1", "holds_only_parents") == {"released": []}
    assert raw.execute(
        "select count(*) as n from orchestrator_events where kind = 'parents_released'"
    ).fetchone() == {"n": 1}


def test_an_ordinary_task_is_not_released_and_keeps_its_worker_from_ending(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "draining")
    parent = _parent(raw, "w1")
    [segment] = add_tasks(raw, 1, status="In Progress", worker_id="w1", task_type="travel_segment")
    assert db.release_parents(token, "w1", "holds_only_parents") == {"released": [parent]}
    assert _task(raw, segment)["worker_id"] == "w1"
    with pytest.raises(errors.IllegalTransition):
        db.transition_worker(token, "w1", "terminating", "drained")


def test_a_release_is_fenced_and_checks_its_worker(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "draining")
    parent = _parent(raw, "w1")
    with pytest.raises(errors.LeaseLost):
        db.release_parents(token + 1, "w1", "x")
    with pytest.raises(errors.NotFound):
        db.release_parents(token, "nobody", "x")
    with pytest.raises(errors.InvalidArgument):
        db.release_parents(token, "", "x")
    assert _task(raw, parent)["worker_id"] == "w1"


def test_a_plain_write_clearing_a_parents_worker_is_still_requeued_by_the_guard(
    raw: psycopg.Connection[Any],
) -> None:
    # Only the release keeps a parent In Progress without a worker; anyone else's write that clears
    # worker_id (a worker row deleted, a hand edit) is sent back to the queue as before.
    add_worker(raw, "w1", "active")
    parent = _parent(raw, "w1")
    raw.execute("update tasks set worker_id = null where id = %s", (parent,))
    assert _task(raw, parent)["status"] == "Queued"


def test_a_dying_holders_waiting_parent_is_let_go_and_the_rest_requeued(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "error")
    waiting = _parent(raw, "w1")
    _child(raw, waiting, "Queued")
    finished = _parent(raw, "w1", "join_clips_orchestrator")
    _child(raw, finished, "Complete")  # its children done: only a worker's run can end it
    [segment] = add_tasks(raw, 1, status="In Progress", worker_id="w1", task_type="travel_segment")

    answer = db.requeue_worker_tasks(token, "w1", "worker_crashed", 3)
    assert answer["released"] == [waiting]
    assert sorted(answer["requeued"]) == sorted([finished, segment]) and answer["failed"] == []
    assert _task(raw, waiting) == {
        "status": "In Progress",
        "worker_id": None,
        "attempts": 0,
        "error_message": None,
    }
    assert _task(raw, finished)["status"] == "Queued" and _task(raw, finished)["attempts"] == 1
    event = raw.execute(
        "select details from orchestrator_events where kind = 'tasks_requeued' order by id desc limit 1"
    ).fetchone()
    assert event is not None and event["details"]["released"] == [waiting]


def test_the_unowned_requeue_leaves_a_parent_whose_children_run(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    waiting = _parent(raw, None)
    child = _child(raw, waiting, "In Progress")
    done = _parent(raw, None)
    _child(raw, done, "Complete")
    assert db.requeue_unowned_tasks(token, 60, "task_without_worker", 3) == {"requeued": [done], "failed": []}
    assert _task(raw, waiting)["status"] == "In Progress"
    # Its last child over, nothing completed it (an app that does not count these children): abandoned.
    raw.execute("update tasks set status = 'Complete' where id = %s", (child,))
    assert db.requeue_unowned_tasks(token, 60, "task_without_worker", 3) == {
        "requeued": [waiting],
        "failed": [],
    }
