"""Tasks In Progress that name no worker: counted by the snapshot, requeued only past
``UNOWNED_TASK_TIMEOUT_SEC`` when the operator sets it (never by default).

Such a task comes from legacy data, a hand edit, or a claim through a user's personal access token (the
app's ``claim_next_task_user_pat`` sets ``status`` and ``generation_started_at`` but no ``worker_id``;
banodoco/reigh-app, supabase/migrations). Before 20261206010000 the snapshot counted running tasks per
worker only and nothing could requeue them: they stayed In Progress for ever. Real PostgreSQL (the
per-test database), both transports for the SQL function, and the real ``Controller.tick`` for the
whole path. On Reigh's database such a task is usually a run on a user's own machine, which the app
fails itself after 24 hours without an update (``auto_fail_stale_tasks``): by default the daemon reports
them and leaves them alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from orchestrator.adapters.db.base import Database
from orchestrator.core import errors
from orchestrator.core.config import defaults
from orchestrator.loop.controller import Controller
from tests.integration.test_runpod_contract import make_client
from tests.integration.test_runpod_failures import Stub

STUCK = 1200.0  # the limit these tests ask for


def _unowned(
    raw: psycopg.Connection[Any], *, minutes: float | None, attempts: int = 0, task_type: str = "generate"
) -> str:
    """An In Progress task with no worker, In Progress for ``minutes`` (None: no start recorded, only its
    last update three hours ago, as a hand-edited row may have)."""
    if minutes is None:
        row = raw.execute(
            "insert into tasks (task_type, params, status, attempts, created_at, updated_at, generation_started_at)"
            " values (%s, '{}'::jsonb, 'In Progress', %s, now() - interval '4 hours', now() - interval '3 hours', null)"
            " returning id",
            (task_type, attempts),
        ).fetchone()
    else:
        row = raw.execute(
            "insert into tasks (task_type, params, status, attempts, created_at, generation_started_at)"
            " values (%s, '{}'::jsonb, 'In Progress', %s, now() - make_interval(mins => %s) - interval '1 minute',"
            " now() - make_interval(mins => %s)) returning id",
            (task_type, attempts, minutes, minutes),
        ).fetchone()
    assert row is not None
    return str(row["id"])


def _task(raw: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    row = raw.execute(
        "select status::text as status, attempts, worker_id, error_message from tasks where id = %s",
        (task_id,),
    ).fetchone()
    assert row is not None
    return dict(row)


def test_the_snapshot_counts_them_apart_from_running(db: Database, raw: psycopg.Connection[Any]) -> None:
    _unowned(raw, minutes=30)
    _unowned(raw, minutes=2)
    queue = db.snapshot()["queue"]
    assert queue["unowned_running"] == 2
    assert 30 * 60 <= queue["oldest_unowned_age_sec"] < 31 * 60
    assert queue["running"] == 0  # no worker of ours runs them


def test_a_task_with_no_start_recorded_is_aged_from_its_last_update(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    task = _unowned(raw, minutes=None)
    assert 3 * 3600 <= db.snapshot()["queue"]["oldest_unowned_age_sec"] < 3 * 3600 + 60
    assert db.requeue_unowned_tasks(token, STUCK, "task_without_worker") == {"requeued": [task], "failed": []}


@pytest.mark.parametrize("transport", ["postgres", "supabase"])
def test_requeue_counts_an_attempt_and_dead_letters_at_the_limit(
    transport: str, request: pytest.FixtureRequest, raw: psycopg.Connection[Any]
) -> None:
    database: Database = request.getfixturevalue("db" if transport == "postgres" else "supabase_db")
    token = int(database.lease_acquire("leader", 60)["token"])
    old = _unowned(raw, minutes=30)
    parent = _unowned(raw, minutes=45, task_type="travel_orchestrator")
    last_try = _unowned(raw, minutes=25, attempts=2)
    young = _unowned(raw, minutes=5)
    result = database.requeue_unowned_tasks(token, STUCK, "task_without_worker", 3)
    assert sorted(result["requeued"]) == sorted([old, parent]) and result["failed"] == [last_try]
    assert _task(raw, old)["status"] == "Queued" and _task(raw, old)["attempts"] == 1
    assert "no worker for over 1200" in _task(raw, old)["error_message"]
    assert _task(raw, last_try)["status"] == "Failed" and _task(raw, last_try)["attempts"] == 3
    assert "dead-lettered" in _task(raw, last_try)["error_message"]
    assert _task(raw, young)["status"] == "In Progress"
    # Again: nothing left past the limit.
    assert database.requeue_unowned_tasks(token, STUCK, "task_without_worker", 3) == {
        "requeued": [],
        "failed": [],
    }
    event = raw.execute(
        "select worker_id, reason, details from orchestrator_events where kind = 'tasks_requeued' order by id desc limit 1"
    ).fetchone()
    assert event is not None and event["worker_id"] is None and event["reason"] == "task_without_worker"
    assert event["details"]["without_worker"] is True


def test_requeue_is_fenced_and_checks_its_arguments(
    db: Database, raw: psycopg.Connection[Any], token: int
) -> None:
    task = _unowned(raw, minutes=30)
    with pytest.raises(errors.LeaseLost):
        db.requeue_unowned_tasks(token + 1, STUCK, "x")
    with pytest.raises(errors.InvalidArgument):
        db.requeue_unowned_tasks(token, -1, "x")
    with pytest.raises(errors.InvalidArgument):
        db.requeue_unowned_tasks(token, STUCK, "x", 0)
    assert _task(raw, task)["status"] == "In Progress"


def test_a_task_another_transaction_holds_is_skipped_not_waited_for(
    db: Database, raw: psycopg.Connection[Any], database_url: str, token: int
) -> None:
    held = _unowned(raw, minutes=30)
    free = _unowned(raw, minutes=30)
    with psycopg.connect(database_url) as other:
        other.execute("select 1 from tasks where id = %s for update", (held,))
        assert db.requeue_unowned_tasks(token, STUCK, "x") == {"requeued": [free], "failed": []}
    assert db.requeue_unowned_tasks(token, STUCK, "x") == {"requeued": [held], "failed": []}


@pytest.fixture
def make_controller(db: Database, stub: Stub, ssh_keypair: Any, tmp_path: Path) -> Iterator[Any]:
    """The daemon's controller over the real database and a RunpodClient pointed at a Runpod stand-in
    with no pods (this is about the queue only), with the given settings changes."""
    stub.routes[("GET", "/v2/pods")] = (200, "application/json", json.dumps({"pods": []}))
    stub.routes[("GET", "/v2/catalog/gpus")] = (200, "application/json", json.dumps({"gpus": []}))
    client = make_client(stub, ssh_keypair, tmp_path, "rest")
    provider: Any = client
    made: list[Controller] = []

    def make(**changes: Any) -> Controller:
        ctl = Controller(
            defaults().replace(min_active_gpus=0, max_active_gpus=0, **changes),
            db,
            provider,
            holder="t",
            apply_budget_sec=10.0,
        )
        made.append(ctl)
        return ctl

    try:
        yield make
    finally:
        for ctl in made:
            ctl.shutdown(timeout=10)
        client.close()


def test_by_default_the_tick_reports_them_and_leaves_them_alone(
    make_controller: Any, database_url: str
) -> None:
    """A user's local run (claimed with a personal access token: no worker_id) of more than 20 minutes,
    and a local travel orchestrator waiting on its children, must not be pulled back into the queue."""
    controller = make_controller()
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as raw:
        local = _unowned(raw, minutes=180)
        parent = _unowned(raw, minutes=300, task_type="travel_orchestrator")
        first = controller.tick()
        assert controller.wait_idle(20)
        assert first.summary["status"]["running_without_worker"] == 2
        for task in (local, parent):
            assert _task(raw, task) == {
                "status": "In Progress",
                "attempts": 0,
                "worker_id": None,
                "error_message": None,
            }
        assert not first.summary["actions"].get("tasks_reset")


def test_the_tick_requeues_them_past_the_operators_limit_and_says_how_many_it_saw(
    make_controller: Any, database_url: str
) -> None:
    controller = make_controller(unowned_task_timeout_sec=int(STUCK))
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as raw:
        stuck = _unowned(raw, minutes=30)
        fresh = _unowned(raw, minutes=1)
        first = controller.tick()
        assert controller.wait_idle(20)
        assert first.summary["status"]["running_without_worker"] == 2
        assert _task(raw, stuck)["status"] == "Queued" and _task(raw, stuck)["attempts"] == 1
        assert _task(raw, fresh)["status"] == "In Progress"
        assert first.summary["actions"]["tasks_reset"] == 1
