"""Malformed provider answers, legacy rows and failures before the provider: the real parts.

Real PostgreSQL (the migrated per-test database of ``tests/conftest.py``), the real ``RunpodClient``
with its REST transport and httpx, and a tiny HTTP server standing in for Runpod that answers fixed
bodies (the one of ``test_runpod_failures.py``). Each test drives the real ``Controller.tick``; each
was written against a defect found in review and failed before its fix; its docstring says what a
user would see.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.core.actions import TerminatePod
from orchestrator.core.config import defaults
from orchestrator.loop.controller import Controller
from tests.integration.test_runpod_contract import make_client
from tests.integration.test_runpod_failures import Stub, _rest_pod

EMPTY_CATALOG = json.dumps({"gpus": []})


@pytest.fixture
def make_controller(
    db: Database, stub: Stub, ssh_keypair: Any, tmp_path: Path
) -> Iterator[Callable[..., Controller]]:
    """``make(client_overrides, **settings)``: the daemon's controller over the real database and a
    RunpodClient pointed at the stub (an empty pod listing and GPU catalog unless a test changes them)."""
    stub.routes[("GET", "/v2/pods")] = (200, "application/json", json.dumps({"pods": []}))
    stub.routes[("GET", "/v2/catalog/gpus")] = (200, "application/json", EMPTY_CATALOG)
    made: list[tuple[Controller, Any]] = []

    def make(client_overrides: dict[str, Any] | None = None, **changes: Any) -> Controller:
        client = make_client(stub, ssh_keypair, tmp_path, "rest", **(client_overrides or {}))
        # RunpodClient.spawn_worker's keyword-only gpu_types does not match Provider's **kw (as in wiring).
        provider: Any = client
        ctl = Controller(defaults().replace(**changes), db, provider, holder="review", apply_budget_sec=10.0)
        made.append((ctl, client))
        return ctl

    yield make
    for ctl, client in made:
        ctl.shutdown(timeout=10)
        client.close()


@pytest.fixture
def controller(make_controller: Callable[..., Controller]) -> Controller:
    # Nothing to spawn: these tests are about what happens to rows and tasks already there.
    return make_controller(min_active_gpus=0, max_active_gpus=0)


def _ticks(ctl: Controller, n: int) -> None:
    for _ in range(n):
        result = ctl.tick()
        assert result.role == "leader", result.summary
        assert ctl.wait_idle(timeout=20)


def _task(raw: psycopg.Connection[Any], worker_id: str, attempts: int) -> str:
    row = raw.execute(
        """insert into tasks (task_type, params, status, worker_id, attempts, created_at, generation_started_at)
           values ('generate', '{}'::jsonb, 'In Progress', %s, %s, now() - interval '4 hours',
                   now() - interval '3 hours')
           returning id""",
        (worker_id, attempts),
    ).fetchone()
    assert row is not None
    return str(row["id"])


def _status(raw: psycopg.Connection[Any], task_id: str) -> dict[str, Any]:
    row = raw.execute("select status, attempts, worker_id from tasks where id = %s", (task_id,)).fetchone()
    assert row is not None
    return dict(row)


def test_tasks_in_progress_on_a_terminated_or_vanished_worker_are_requeued(
    controller: Controller, raw: psycopg.Connection[Any]
) -> None:
    """Tasks left In Progress on a dead worker wait for ever: the snapshot reports them, nobody acts.

    The replaced system left tasks at the attempt limit ``In Progress`` on workers it had terminated
    (lessons file, "Tasks looping forever"); rows also vanish (deleted by hand). ``orch_snapshot``
    counts exactly these as ``queue.orphaned_running`` / ``orphaned_worker_ids`` and its SQL comment
    says "the controller must requeue them or they would wait for ever"; ``orch_requeue_worker_tasks``
    even accepts a worker id whose row is gone for this purpose. But ``Queue.from_json`` drops those
    fields and the policy never plans a requeue: after several ticks both tasks are still In Progress
    (the user's job never runs, never fails).
    """
    raw.execute(
        "insert into workers (id, instance_type, status, metadata, created_at, status_changed_at) "
        "values ('gpu-20250912_101500-1a2b3c4d', 'RTX 4090', 'terminated', '{}'::jsonb, "
        "now() - interval '1 day', now() - interval '20 hours')"
    )
    on_terminated = _task(raw, "gpu-20250912_101500-1a2b3c4d", attempts=3)
    # A row deleted before the foreign key existed (it is then added NOT VALID and old rows stay):
    raw.execute("alter table tasks drop constraint tasks_worker_id_fkey")
    on_vanished = _task(raw, "gpu-20250913_080000-deadbeef", attempts=0)
    raw.execute(
        "alter table tasks add constraint tasks_worker_id_fkey foreign key (worker_id) references workers (id)"
        " on delete set null not valid"
    )
    snapshot = controller.db.snapshot("gpu-")
    assert snapshot["queue"]["orphaned_running"] == 2  # the database knows

    _ticks(controller, 3)

    for task_id in (on_terminated, on_vanished):
        after = _status(raw, task_id)
        assert after["status"] != "In Progress", f"task {task_id} still stuck after 3 ticks: {after}"


def test_a_legacy_row_in_an_unknown_state_is_retired_and_its_task_requeued(
    controller: Controller, raw: psycopg.Connection[Any]
) -> None:
    """A worker row the replaced system left in a state this contract does not know holds its task for ever.

    docs/database.md: rows in an unknown state (e.g. ``inactive``) "may only move to ``error`` or
    ``terminated``" - the orchestrator is expected to retire them. ``orch_snapshot`` lists the row
    (it is live), but ``Worker.from_json`` rejects the status and the snapshot skips the whole row,
    so the policy never sees it: its pod is gone at Runpod, yet the row is never retired and its
    In Progress task (3 hours old, far past TASK_STUCK_TIMEOUT_SEC) is never requeued. Because the row
    stays live, the task is not even counted as orphaned.
    """
    worker_id = "gpu-20250912_101500-0badc0de"
    raw.execute(
        "insert into workers (id, instance_type, status, metadata, created_at, status_changed_at, last_heartbeat) "
        "values (%s, 'RTX 4090', 'inactive', %s, now() - interval '1 day', now() - interval '5 hours', "
        "now() - interval '5 hours')",
        (worker_id, json.dumps({"runpod_id": "legacypod00001"})),
    )
    task_id = _task(raw, worker_id, attempts=0)

    _ticks(controller, 3)

    after = _status(raw, task_id)
    row = raw.execute("select status from workers where id = %s", (worker_id,)).fetchone()
    assert row is not None
    assert after["status"] != "In Progress" and row["status"] in ("error", "terminated"), (
        f"legacy row left as {row['status']!r}, its task {after} after 3 ticks"
    )


def test_one_malformed_pod_entry_does_not_blind_the_tick_to_the_others(
    controller: Controller, stub: Stub
) -> None:
    """One odd entry in the pod listing (even a pod that is not ours) stops every orphan sweep: leaked pods bill on.

    The listing holds our orphan (a pod with the worker prefix that no row claims, two hours old:
    a crash between creating it and recording it) and somebody else's pod whose ``status`` is not in
    the v2 enum (a value Runpod may add later; the adapter calls it malformed). The REST
    adapter turns the whole listing into ``RunpodMalformedResponse``, the controller reads that as
    "listing failed" (``pods=None``), and the policy then decides nothing that depends on pods: no
    orphan termination, no missing-pod check, no boot, no confirmation of a termination. The
    controller's own per-pod guard ("one malformed pod must not blind the tick to the others") is
    never reached. As long as that foreign pod exists, every tick is blind and our orphan bills.
    """
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    orphan = _rest_pod(id="orphanpod00001", name="gpu-20261129_010000-0rphan00", createdAt=two_hours_ago)
    foreign = _rest_pod(id="notebookpod001", name="alice-notebook", status="HIBERNATING")
    stub.routes[("GET", "/v2/pods")] = (200, "application/json", json.dumps({"pods": [orphan, foreign]}))

    gathered = controller.gather()
    assert gathered.pods is not None, "the whole listing was discarded because of one foreign pod"
    decided = controller.decide(gathered)
    assert any(isinstance(a, TerminatePod) and a.runpod_id == "orphanpod00001" for a in decided.actions)


def test_a_spawn_that_fails_before_reaching_runpod_trips_the_breaker(
    make_controller: Callable[..., Controller], raw: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A spawn that fails for a non-Runpod reason is retried for ever, with no ``spawning_stopped`` alert.

    Here the public key file the pods need (``RUNPOD_SSH_PUBLIC_KEY_PATH``) cannot be read, so every
    ``spawn_worker`` raises ``ConfigError`` before any request. ``_do_spawn`` only handles
    ``RunpodError``: the intent row stays ``spawning`` with no ``error_reason``, and after the grace the
    policy closes it as ``no_pod_created`` - an outcome the breaker deliberately ignores (it means "we
    crashed mid-spawn"). So the breaker (MAX_CONSECUTIVE_FAILURES=3) never opens: a new worker is
    registered and fails every tick or two, indefinitely, and operators are never told spawning is
    broken (the old system's "990 workers" failure mode, minus the pods).
    """
    ctl = make_controller(
        {"ssh_public_key_path": tmp_path / "no-such-key.pub"},
        min_active_gpus=1,
        max_active_gpus=1,
        orphan_grace_sec=0,
        max_consecutive_failures=3,
    )
    _ticks(ctl, 10)
    registered = raw.execute("select count(*) as n from workers").fetchone()
    assert registered is not None
    # 3 failures open the breaker; at most one half-open probe may follow within these seconds.
    assert registered["n"] <= 4, f"{registered['n']} workers registered and failed; breaker never opened"
