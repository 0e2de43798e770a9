"""Parents let go: ``orch_release_parents``, the snapshot's view of a held parent's children, and the
unowned requeue that leaves a waiting parent alone (migration 20261213000100), on real PostgreSQL over
both transports.

A parent (a ``*_orchestrator`` task) stays In Progress under the worker that ran it while its children
run; the app completes it with its last child whoever holds it (banodoco/reigh-app
``complete_task/orchestratorCore.ts``). What an operator checks: a worker leaving lets go the parents
that wait on a child without changing them otherwise (still In Progress, no attempt spent), keeps a
parent still in its own run, the tasks guard does not send a released parent back to the queue, each
release is in the events, and a dying holder's parent is requeued as before (its next run makes the
children its holder did not).
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
def test_a_release_keeps_the_waiting_parents_in_progress_with_no_worker(
    transport: str, request: pytest.FixtureRequest, raw: psycopg.Connection[Any]
) -> None:
    database: Database = request.getfixturevalue("db" if transport == "postgres" else "supabase_db")
    token = int(database.lease_acquire("leader", 60)["token"])
    add_worker(raw, "w1", "active")
    travel = _parent(raw, "w1")
    join = _parent(raw, "w1", "join_clips_orchestrator")
    _child(raw, travel)
    _child(raw, join, "In Progress")
    running = _parent(raw, "w1", "edit_video_orchestrator")  # in its own run: no child yet
    add_worker(raw, "w2", "active")
    [other] = add_tasks(raw, 1, status="In Progress", worker_id="w2", task_type="travel_orchestrator")

    # The snapshot says which parents wait, and since when their newest child exists.
    [w1] = [w for w in database.snapshot()["workers"] if w["id"] == "w1"]
    seen = {t["id"]: (t["children_live"], t["last_child_at"] is not None) for t in w1["running_tasks"]}
    assert seen == {travel: (1, True), join: (1, True), running: (0, False)}
    # A worker still serving keeps its parents.
    assert database.release_parents(token, "w1", "holds_only_parents") == {
        "released": [],
        "kept": sorted([travel, join, running]),
    }
    database.transition_worker(token, "w1", "draining", "idle_timeout")
    answer = database.release_parents(token, "w1", "holds_only_parents")
    assert answer == {"released": sorted([travel, join]), "kept": [running]}
    for task in (travel, join):
        assert _task(raw, task) == {
            "status": "In Progress",
            "worker_id": None,
            "attempts": 0,
            "error_message": None,
        }
    assert _task(raw, running)["worker_id"] == "w1"
    assert _task(raw, other)["worker_id"] == "w2"  # another worker's parent is not touched
    # Still holding the parent in its own run, the worker cannot end.
    with pytest.raises(errors.IllegalTransition):
        database.transition_worker(token, "w1", "terminating", "drained")
    event = raw.execute(
        "select worker_id, reason, details from orchestrator_events where kind = 'parents_released'"
    ).fetchone()
    assert event is not None and event["worker_id"] == "w1" and event["reason"] == "holds_only_parents"
    assert event["details"] == {"released": sorted([travel, join]), "kept": [running]}
    # Its run over (the worker completed it), the worker holds nothing and ends.
    raw.execute("update tasks set status = 'Complete' where id = %s", (running,))
    assert database.release_parents(token, "w1", "holds_only_parents") == {"released": [], "kept": []}
    database.transition_worker(token, "w1", "terminating", "drained")
    assert raw.execute(
        "select count(*) as n from orchestrator_events where kind = 'parents_released'"
    ).fetchone() == {"n": 1}


def test_a_release_is_fenced_and_checks_its_worker(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    add_worker(raw, "w1", "draining")
    parent = _parent(raw, "w1")
    _child(raw, parent)
    with pytest.raises(errors.LeaseLost):
        db.release_parents(token + 1, "w1", "x")
    with pytest.raises(errors.NotFound):
        db.release_parents(token, "nobody", "x")
    with pytest.raises(errors.InvalidArgument):
        db.release_parents(token, "", "x")
    assert _task(raw, parent)["worker_id"] == "w1"


def test_only_the_release_keeps_a_task_in_progress_with_no_worker(raw: psycopg.Connection[Any]) -> None:
    # Anyone else's write that clears worker_id (a worker row deleted, a hand edit) sends the task back
    # to the queue as before, a parent too; and the release's mark covers parents only.
    add_worker(raw, "w1", "active")
    parent = _parent(raw, "w1")
    raw.execute("update tasks set worker_id = null where id = %s", (parent,))
    assert _task(raw, parent)["status"] == "Queued"
    [ordinary] = add_tasks(raw, 1, status="In Progress", worker_id="w1")
    with raw.transaction():
        raw.execute("select set_config('orchestrator.writer', 'release_parents', true)")
        raw.execute("update tasks set worker_id = null where id = %s", (ordinary,))
    assert _task(raw, ordinary)["status"] == "Queued"


def test_a_dying_holders_parent_is_requeued_so_its_next_run_makes_the_missing_children(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    # It died while making its chain: one child of two exists. Requeued, the parent's next run finds
    # that child and makes the other (the handler is idempotent); released, the chain would stay short.
    add_worker(raw, "w1", "error")
    parent = _parent(raw, "w1")
    _child(raw, parent)
    assert db.requeue_worker_tasks(token, "w1", "worker_crashed", 3) == {"requeued": [parent], "failed": []}
    assert _task(raw, parent)["status"] == "Queued" and _task(raw, parent)["attempts"] == 1


def test_the_unowned_requeue_leaves_a_parent_whose_children_run(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    waiting = _parent(raw, None)
    child = _child(raw, waiting, "In Progress")
    done = _parent(raw, None)
    _child(raw, done, "Complete")
    queued_child_of = _parent(raw, None)
    _child(raw, queued_child_of, "Queued")
    # The snapshot counts as tasks without a worker the abandoned parent and the running child (which
    # names none here), not the two parents that wait: the daemon plans no requeue for a parent that
    # waits, nor does an operator take it for a user's local run.
    queue = db.snapshot()["queue"]
    assert queue["unowned_running"] == 2 and queue["oldest_unowned_age_sec"] >= 3600
    assert db.requeue_unowned_tasks(token, 60, "task_without_worker", 3) == {"requeued": [done], "failed": []}
    assert _task(raw, waiting)["status"] == "In Progress"
    # Its last child over, nothing completed it (an app that does not count these children): abandoned.
    raw.execute("update tasks set status = 'Complete' where id = %s", (child,))
    assert db.requeue_unowned_tasks(token, 60, "task_without_worker", 3) == {
        "requeued": [waiting],
        "failed": [],
    }


def _children_seen(db: Database, worker_id: str) -> dict[str, tuple[Any, bool]]:
    [w] = [w for w in db.snapshot()["workers"] if w["id"] == worker_id]
    return {t["id"]: (t["children_live"], t["last_child_at"] is not None) for t in w["running_tasks"]}


def test_a_parent_that_names_itself_is_not_its_own_child(db: Database, raw: psycopg.Connection[Any]) -> None:
    # Orchestrators store their own id in params.orchestrator_details.orchestrator_task_id for their
    # children to copy (reigh-app). Counted as its own live child, a parent in its own run read as
    # waiting, and its worker was drained before it made any child.
    add_worker(raw, "w1", "active")
    parent = _parent(raw, "w1")
    raw.execute(
        "update tasks set params = jsonb_build_object('orchestrator_details',"
        " jsonb_build_object('orchestrator_task_id', id::text)) where id = %s",
        (parent,),
    )
    assert _children_seen(db, "w1") == {parent: (0, False)}


def test_the_snapshot_resolves_a_childs_parent_as_complete_task_does(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    # complete_task reads the orchestration contract, orchestrator_task_id_ref, orchestrator_details,
    # originalParams, then the top-level orchestrator_task_id (reigh-app extractOrchestratorRef). A child
    # whose top-level id is a readable name and whose orchestrator_details names the parent is that
    # parent's child: missed, its holder was never let go.
    add_worker(raw, "w1", "active")
    parent = _parent(raw, "w1", "join_clips_orchestrator")
    raw.execute(
        "insert into tasks (task_type, params, status) values ('join_clips_segment', %s, 'Queued')",
        (
            json.dumps(
                {
                    "orchestrator_task_id": "join_clips_orch_1",
                    "orchestrator_details": {"orchestrator_task_id": parent},
                }
            ),
        ),
    )
    assert _children_seen(db, "w1") == {parent: (1, True)}
    db.transition_worker(token, "w1", "draining", "idle_timeout")
    assert db.release_parents(token, "w1", "holds_only_parents") == {"released": [parent], "kept": []}


def test_a_role_with_only_table_rights_writes_tasks_through_the_new_index(
    raw: psycopg.Connection[Any],
) -> None:
    # tasks_orch_queued_child_idx is built from built-in operators: the app's roles, which may not
    # execute our functions, insert and update tasks of any params shape.
    raw.execute(
        "do $$ begin if not exists (select 1 from pg_roles where rolname = 'app_writer') then"
        " create role app_writer nologin bypassrls; end if; end $$"
    )
    raw.execute("grant usage on schema public to app_writer")
    raw.execute("grant select, insert, update on public.tasks to app_writer")
    add_worker(raw, "w1", "active")
    parent = _parent(raw, "w1")
    with raw.transaction():
        raw.execute("set local role app_writer")
        for params in (
            {"orchestrator_task_id_ref": parent},
            [1, 2],
            "text",
            7,
            {"orchestrator_details": "x"},
        ):
            raw.execute(
                "insert into tasks (task_type, params, status) values ('travel_segment', %s, 'Queued')",
                (json.dumps(params),),
            )
        raw.execute("update tasks set params = params || '{\"k\": 1}' where jsonb_typeof(params) = 'object'")
    assert raw.execute("select count(*) as n from tasks where status = 'Queued'").fetchone() == {"n": 5}


def test_a_held_parents_children_are_found_without_reading_the_queue(raw: psycopg.Connection[Any]) -> None:
    # 20 held parents with 2 queued children each, in a queue of 40,000: the children come from the
    # partial index, a probe per parent. Read from the queue (the snapshot's expression drifting from
    # the index's would do it), every queued row's params were read on every tick.
    raw.execute(
        "insert into tasks (task_type, params, status, created_at) select 'wan_2_2_t2v',"
        " jsonb_build_object('prompt', 'p' || g), 'Queued', now() - make_interval(secs => g) from generate_series(1, 40000) g"
    )
    parents = []
    for i in range(20):
        add_worker(raw, f"w{i}", "active")
        parents.append(_parent(raw, f"w{i}"))
        for _ in range(2):
            _child(raw, parents[-1])
    raw.execute("vacuum analyze tasks")
    raw.execute("select orch_snapshot()")
    before = _heap_reads(raw)
    snap = raw.execute("select orch_snapshot() as s").fetchone()["s"]  # type: ignore[index]
    read = _heap_reads(raw) - before
    held = {t["id"]: t["children_live"] for w in snap["workers"] for t in w["running_tasks"]}
    assert held == dict.fromkeys(parents, 2)
    pages = raw.execute(
        "select pg_relation_size('tasks') / current_setting('block_size')::int as n"
    ).fetchone()
    # Heap pages read for one snapshot: the running tasks' and the children's rows, a few dozen; the
    # queue alone spans hundreds.
    assert pages is not None and pages["n"] > 500, pages
    assert read < 150, read


def _heap_reads(raw: psycopg.Connection[Any]) -> int:
    raw.execute("select pg_stat_force_next_flush()")
    row = raw.execute(
        "select heap_blks_hit + heap_blks_read as n from pg_statio_user_tables where relname = 'tasks'"
    ).fetchone()
    assert row is not None
    return int(row["n"])
