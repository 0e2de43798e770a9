"""Every action that ends billing ends it, whatever fails around it.

Two parts, both over real PostgreSQL (the migrated per-test database of ``tests/conftest.py``).

* End to end: the real ``Controller.tick`` over both database transports (psycopg, and supabase-py
  against the PostgREST stand-in), the real ``RunpodClient`` over REST against the Runpod emulator, and
  rows another system left behind: ids with shell characters, an id longer than the 128 characters a
  pod or log file name may have. Before the fix ``Controller._diagnostics`` called ``worker_log_path``
  outside its ``try``: the refused id raised before the transition to ``error``, the task requeue and
  the termination, on every tick, and the pod billed until someone noticed.
* The injection matrix: each action kind that ends billing, applied through ``Controller._run_action``
  with a provider that records what it was asked (the real provider path is the end-to-end part), and an
  exception injected at each preparatory and recording step (diagnostics, the log tail, a refused id,
  the details the transition records, the requeue, the metadata merge after the termination, the event,
  the metrics), both a typed one and a plain bug. Whatever was injected, the pod is terminated and the
  row ended. A lost lease is the one thing that stops an ending: a stale leader must not touch a pod.
"""

from __future__ import annotations

import errno
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.adapters.runpod.base import PodSpec
from orchestrator.core import config, errors
from orchestrator.core.actions import (
    Action,
    FailWorker,
    Initialize,
    MarkTerminated,
    StartProcess,
    StopPod,
    TerminatePod,
    WatchStart,
)
from orchestrator.core.observed import Snapshot, Worker
from orchestrator.core.states import Reason, WorkerState
from orchestrator.logs import configure_logging
from orchestrator.loop import effects
from orchestrator.loop.controller import Controller
from orchestrator.loop.daemon import Daemon
from orchestrator.ports import BootCheck, SpawnedPod, StartWatch
from orchestrator.runpod_client import RunpodClient
from tests.integration.test_runpod_contract import make_client, wait_for

SHELLY = "gpu-20250912_101500-$(touch /tmp/pwned);`id`"
LONG = "gpu-" + "legacy0123456789" * 9  # 148 characters: fine for the database, too long for a pod name
POD = "podabcdefghijk"

# ---------------------------------------------------------------------------------------------------
# End to end: the real tick, the real client, the emulator.


def _row(conn: psycopg.Connection[Any], worker_id: str) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute("select status, metadata from workers where id = %s", (worker_id,))
        found = cur.fetchone()
    assert found is not None
    return {"status": found[0], "metadata": found[1]}


def _task_status(conn: psycopg.Connection[Any], task_id: str) -> tuple[str, int]:
    with conn.cursor() as cur:
        cur.execute("select status::text, attempts from tasks where id = %s", (task_id,))
        found = cur.fetchone()
    assert found is not None
    return str(found[0]), int(found[1])


@pytest.fixture(params=["postgres", "supabase"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """The Database facade over each transport the daemon can use."""
    name = "db" if request.param == "postgres" else "supabase_db"
    database: Database = request.getfixturevalue(name)
    return database


@pytest.fixture
def rest_client(emulator: Any, ssh_keypair: Any, tmp_path: Path) -> Iterator[RunpodClient]:
    client = make_client(emulator, ssh_keypair, tmp_path, "rest")
    try:
        yield client
    finally:
        client.close()


@pytest.mark.parametrize(
    ("worker_id", "status"),
    [(SHELLY, "spawning"), (LONG, "spawning"), (SHELLY, "active")],
    ids=["shell-characters-booting", "too-long-booting", "shell-characters-active"],
)
def test_a_row_with_a_refused_id_is_ended_and_its_pod_terminated(
    worker_id: str,
    status: str,
    any_db: Database,
    database_url: str,
    emulator: Any,
    rest_client: RunpodClient,
) -> None:
    # A pod named after the row, as the replaced system made them (its create does not check names).
    pod = rest_client.transport.create_pod(
        PodSpec(
            name=worker_id,
            image="runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
            gpu_type_id="NVIDIA GeForce RTX 4090",
        )
    )
    wait_for(lambda: (emulator.admin.pod(pod.id) or {}).get("status") == "RUNNING", 30)
    lease = any_db.lease_acquire("setup", 60)
    token = int(lease["token"])
    any_db.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", {"runpod_id": pod.id})
    with psycopg.connect(database_url, autocommit=True) as raw:
        if status == "active":
            any_db.transition_worker(token, worker_id, "initializing", "pod_ready")
            any_db.transition_worker(token, worker_id, "active", "first_heartbeat")
        # Old enough that its boot timed out, silent long enough that its heartbeat is stale.
        raw.execute(
            "update workers set created_at = now() - interval '3 hours', last_heartbeat = now() - interval '2 hours'"
            " where id = %s",
            (worker_id,),
        )
        with raw.cursor() as cur:
            cur.execute(
                "insert into tasks (task_type, params, status, worker_id, generation_started_at)"
                " values ('generate', '{}'::jsonb, 'In Progress', %s, now() - interval '5 minutes') returning id",
                (worker_id,),
            )
            task = cur.fetchone()
        assert task is not None
        task_id = str(task[0])
    any_db.lease_release("setup", token)

    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0, orchestrator_poll_sec=1.0)
    controller = Controller(settings, any_db, rest_client, holder="daemon", apply_budget_sec=30.0)
    try:
        result = controller.tick()
        assert result.role == "leader", result.summary
        assert controller.wait_idle(30)
        failed = [o for o in result.outcomes if o["kind"] == "fail_worker"]
        assert failed and failed[0]["outcome"] in ("ok", "partial"), result.outcomes
    finally:
        controller.shutdown(timeout=30)

    with psycopg.connect(database_url, autocommit=True) as raw:
        row = _row(raw, worker_id)
        assert row["status"] == "error", row
        assert row["metadata"]["pod_terminate_requested_at"]
        assert _task_status(raw, task_id) == ("Queued", 1)
        # The hostile text stayed inert: recorded as text, never run.
        assert not Path("/tmp/pwned").exists()
    gone = wait_for(lambda: (emulator.admin.pod(pod.id) or {}).get("status") == "TERMINATED", 30)
    assert gone


# ---------------------------------------------------------------------------------------------------
# The injection matrix.


@dataclass
class RecordingProvider:
    """Answers like the real client would, records terminations, raises where a test says."""

    fail: dict[str, BaseException] = field(default_factory=dict)
    terminated: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def _call(self, name: str) -> None:
        self.asked.append(name)
        if name in self.fail:
            raise self.fail[name]

    def list_pods(self) -> list[Any]:
        return []

    def list_gpu_types(self, *, with_availability: bool = False, fresh: bool = False) -> list[Any]:
        return []

    def spawn_volumes(self) -> list[Any]:
        return []

    def spawn(self, worker_id: str, worker_env: Any = None, **kw: Any) -> SpawnedPod:
        raise AssertionError("no spawn in these tests")

    def check_boot(
        self, worker_id: str, runpod_id: str, *, expected_fingerprint: str | None = None, pod: Any = None
    ) -> BootCheck:
        self._call("init_checks")
        # A check's output may hold anything, a NUL byte included (jsonb refuses \u0000).
        return BootCheck(
            "failed",
            worker_id,
            runpod_id,
            step="venv",
            error="initialization check venv failed (exit 1): \x00\x01binary",
        )

    def start_process(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> bool:
        self._call("start")
        return False

    def watch_start(
        self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None
    ) -> StartWatch:
        self._call("watch_start")
        # The log's end may hold anything, a NUL byte included.
        tail = "orchestrator: submodule Wan2GP is missing or empty; not starting the worker\n\x00"
        return StartWatch("exited", phase="setup", tail=tail)

    def terminate(self, runpod_id: str) -> bool:
        self._call("terminate")
        self.terminated.append(runpod_id)
        return True

    def stop(self, runpod_id: str) -> bool:
        self._call("stop")
        return True

    def pod_status(self, runpod_id: str) -> dict[str, Any] | None:
        self._call("pod_status")
        return {
            "runpod_id": runpod_id,
            "desired_status": "RUNNING",
            "actual_status": "RUNNING",
            "cost_per_hr": 0.69,
        }

    def log_tail(
        self,
        runpod_id: str,
        worker_id: str,
        *,
        lines: int,
        timeout: float,
        expected_fingerprint: str | None = None,
    ) -> str:
        self._call("log_tail")
        return "Traceback (most recent call last):\n  CUDA error: out of memory\n"


class FaultyDatabase(Database):
    """The real Database over psycopg, with a fault injected into one named call.

    ``fail[name] = (exception, predicate)``: the call raises when the predicate accepts its arguments.
    """

    def __init__(self, inner: Database) -> None:
        super().__init__(inner.transport, lease=inner.lease)
        self.fail: dict[str, tuple[BaseException, Callable[..., bool]]] = {}

    def _maybe(self, name: str, *args: Any, **kwargs: Any) -> None:
        entry = self.fail.get(name)
        if entry is not None and entry[1](*args, **kwargs):
            raise entry[0]

    def transition_worker(
        self, token: int, worker_id: str, to: str, reason: str, metadata: Any = None
    ) -> dict[str, Any]:
        self._maybe("transition_worker", token, worker_id, to, reason, metadata)
        return super().transition_worker(token, worker_id, to, reason, metadata)

    def requeue_worker_tasks(
        self, token: int, worker_id: str, reason: str, max_attempts: int = 3
    ) -> dict[str, Any]:
        self._maybe("requeue_worker_tasks", token, worker_id, reason, max_attempts)
        return super().requeue_worker_tasks(token, worker_id, reason, max_attempts)

    def merge_worker_metadata(self, token: int, worker_id: str, metadata: Any) -> dict[str, Any]:
        self._maybe("merge_worker_metadata", token, worker_id, metadata)
        return super().merge_worker_metadata(token, worker_id, metadata)

    def append_event(self, token: int, kind: str, **kw: Any) -> int:
        self._maybe("append_event", token, kind, **kw)
        return super().append_event(token, kind, **kw)


class BrokenCounter:
    """A metrics child whose ``labels`` raises (a registry fault, a bug in a label)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def labels(self, **kw: Any) -> Any:
        raise self.exc


def _always(*args: Any, **kwargs: Any) -> bool:
    return True


def _to_error_with_details(token: int, worker_id: str, to: str, reason: str, metadata: Any) -> bool:
    # The first transition to error carries the diagnostics; the fallback carries the reason alone.
    return to == "error" and "details not recorded" not in json.dumps(metadata or {})


def _to_error(token: int, worker_id: str, to: str, reason: str, metadata: Any) -> bool:
    return to == "error"


def _to_terminating(token: int, worker_id: str, to: str, reason: str, metadata: Any) -> bool:
    return to == "terminating"


def _db_error(step: str) -> BaseException:
    return errors.DatabaseError(f"injected:{step}", f"injected failure at {step}")


# Where a fault goes (on the provider | on the database | on the metrics), what, the predicate, and the
# step the outcome names as skipped (None: nothing is lost, the diagnostics record their own failure
# and a refused record of them is retried without them).
STEPS: dict[str, tuple[str, str, Callable[..., bool], str | None]] = {
    "pod_status": ("provider", "pod_status", _always, None),
    "log_tail": ("provider", "log_tail", _always, None),
    "transition_details": ("db", "transition_worker", _to_error_with_details, None),
    "transition": ("db", "transition_worker", _to_error, "transition"),
    "transition_terminating": ("db", "transition_worker", _to_terminating, "transition"),
    "requeue": ("db", "requeue_worker_tasks", _always, "requeue"),
    "record_terminate": ("db", "merge_worker_metadata", _always, "record_terminate"),
    "event": ("db", "append_event", _always, "event"),
    "metrics": ("metrics", "spawn_failures", _always, "metrics"),
}


@dataclass(frozen=True)
class Case:
    """One action that ends billing, the row it starts from, and what it must leave."""

    name: str
    worker_status: str | None  # None: no row (an orphan pod)
    action: Callable[[str], Action]
    ended: str | None  # the row's status afterwards (None: no row to look at)
    pod: bool  # whether a pod must be terminated
    steps: tuple[str, ...]
    worker_id: str = "gpu-20261206_010000-0badc0de"
    with_task: bool = True


CASES = [
    Case(
        "fail_worker from spawning (boot timeout)",
        "spawning",
        lambda w: FailWorker(
            reason=Reason.BOOT_TIMEOUT, worker_id=w, runpod_id=POD, from_status=WorkerState.SPAWNING
        ),
        "error",
        True,
        (
            "pod_status",
            "log_tail",
            "transition_details",
            "transition",
            "requeue",
            "record_terminate",
            "event",
            "metrics",
        ),
        with_task=False,
    ),
    Case(
        "fail_worker from active (stale heartbeat, a task running)",
        "active",
        lambda w: FailWorker(
            reason=Reason.HEARTBEAT_STALE, worker_id=w, runpod_id=POD, from_status=WorkerState.ACTIVE
        ),
        "error",
        True,
        (
            "pod_status",
            "log_tail",
            "transition_details",
            "transition",
            "requeue",
            "record_terminate",
            "event",
        ),
    ),
    Case(
        "fail_worker of a row whose id names no file",
        "active",
        lambda w: FailWorker(
            reason=Reason.HEARTBEAT_STALE, worker_id=w, runpod_id=POD, from_status=WorkerState.ACTIVE
        ),
        "error",
        True,
        ("pod_status", "transition", "requeue", "record_terminate", "event"),
        worker_id=SHELLY,
    ),
    Case(
        "initialize: the checks failed (init_failed)",
        "initializing",
        lambda w: Initialize(
            reason=Reason.POD_READY, worker_id=w, runpod_id=POD, from_status=WorkerState.INITIALIZING
        ),
        "error",
        True,
        ("transition_details", "transition", "requeue", "record_terminate", "event", "metrics"),
    ),
    Case(
        "start_process: the start command failed (start_failed)",
        "initializing",
        lambda w: StartProcess(reason=Reason.START_PROCESS, worker_id=w, runpod_id=POD),
        "error",
        True,
        ("transition", "requeue", "record_terminate", "event", "metrics"),
    ),
    Case(
        "watch_start: the start ended before the first heartbeat (start_exited)",
        "initializing",
        lambda w: WatchStart(reason=Reason.WATCH_START, worker_id=w, runpod_id=POD),
        "error",
        True,
        ("transition_details", "transition", "requeue", "record_terminate", "event", "metrics"),
    ),
    Case(
        "terminate_pod cancelling a boot",
        "spawning",
        lambda w: TerminatePod(
            reason=Reason.CANCEL_BOOT,
            runpod_id=POD,
            pod_name=w,
            worker_id=w,
            transition_from=WorkerState.SPAWNING,
        ),
        "terminating",
        True,
        ("transition_terminating", "record_terminate", "event"),
        with_task=False,
    ),
    Case(
        "terminate_pod retried for an error row",
        "error",
        lambda w: TerminatePod(reason=Reason.TERMINATE_RETRY, runpod_id=POD, pod_name=w, worker_id=w),
        "error",
        True,
        ("record_terminate", "event"),
        with_task=False,  # its tasks are RequeueTasks' business, a separate action
    ),
    Case(
        "terminate_pod of an orphan pod",
        None,
        lambda w: TerminatePod(reason=Reason.ORPHAN_POD, runpod_id=POD, pod_name=w),
        None,
        True,
        ("event",),
    ),
    Case(
        "mark_terminated once the provider confirms",
        "error",
        lambda w: MarkTerminated(
            reason=Reason.PROVIDER_CONFIRMED_GONE,
            worker_id=w,
            from_status=WorkerState.ERROR,
            requeue_tasks=True,
        ),
        "terminated",
        False,
        ("requeue", "event"),
    ),
]

MATRIX = [
    pytest.param(case, step, bug, id=f"{case.name} / {step} / {'bug' if bug else 'typed'}")
    for case in CASES
    for step in case.steps
    for bug in (False, True)
]


@pytest.fixture
def faulty(db: Database) -> FaultyDatabase:
    return FaultyDatabase(db)


# The states a row walks through, from its registration, to reach each state the tests start from.
PATHS: dict[str, tuple[str, ...]] = {
    "spawning": (),
    "initializing": ("initializing",),
    "active": ("initializing", "active"),
    "draining": ("initializing", "active", "draining"),
    "error": ("initializing", "active", "error"),
}


def _row_in(db: Database, token: int, worker_id: str, status: str) -> None:
    """A worker row of pod POD, registered and moved to ``status`` the way the daemon moves one."""
    db.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", {"runpod_id": POD})
    for state in PATHS[status]:
        db.transition_worker(token, worker_id, state, "setup")


def _prepare(db: Database, token: int, case: Case) -> None:
    """The row the case starts from (none for an orphan pod)."""
    if case.worker_status is None:
        return
    _row_in(db, token, case.worker_id, case.worker_status)
    if case.worker_status == "initializing":
        db.merge_worker_metadata(token, case.worker_id, {"initialized_at": datetime.now(UTC).isoformat()})


def _add_task(database_url: str, worker_id: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as raw, raw.cursor() as cur:
        cur.execute(
            "insert into tasks (task_type, params, status, worker_id, generation_started_at)"
            " values ('generate', '{}'::jsonb, 'In Progress', %s, now() - interval '1 minute') returning id",
            (worker_id,),
        )
        found = cur.fetchone()
    assert found is not None
    return str(found[0])


def _inject(
    step: str, bug: bool, provider: RecordingProvider, faulty: FaultyDatabase, controller: Controller
) -> None:
    where, what, when, _skipped = STEPS[step]
    if where == "provider":
        provider.fail[what] = (
            RuntimeError(f"bug at {step}")
            if bug
            else (
                errors.SSHTimeout(f"injected at {step}")
                if what == "log_tail"
                else errors.RunpodTransientError(f"injected at {step}")
            )
        )
    elif where == "db":
        faulty.fail[what] = (RuntimeError(f"bug at {step}") if bug else _db_error(step), when)
    else:
        controller.metrics.spawn_failures = BrokenCounter(
            RuntimeError(f"bug at {step}") if bug else ValueError(step)
        )  # type: ignore[assignment]


@pytest.mark.parametrize(("case", "step", "bug"), MATRIX)
def test_an_injected_failure_still_ends_the_pod_and_the_row(
    case: Case, step: str, bug: bool, db: Database, faulty: FaultyDatabase, database_url: str
) -> None:
    provider = RecordingProvider()
    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0)
    controller = Controller(settings, faulty, provider, holder="matrix", apply_budget_sec=30.0)
    try:
        token = controller._ensure_lease()
        assert token is not None
        _prepare(db, token, case)
        task_id = (
            _add_task(database_url, case.worker_id)
            if case.worker_status is not None and case.with_task
            else None
        )
        _inject(step, bug, provider, faulty, controller)

        outcome = controller._run_action(case.action(case.worker_id), {}, token)
    finally:
        controller.shutdown(timeout=10)

    assert outcome["outcome"] not in ("failed", "crashed", "lease_lost"), outcome
    if case.pod:
        assert provider.terminated == [POD], (outcome, provider.asked)
    if case.ended is not None:
        with psycopg.connect(database_url, autocommit=True) as raw:
            status = _row(raw, case.worker_id)["status"]
            if step in ("transition", "transition_terminating"):
                # The move itself was refused every time: the row stays where it was, its pod is gone,
                # and the next tick (the pod no longer listed) closes it.
                assert status == case.worker_status, status
            else:
                assert status == case.ended, status
            if task_id is not None and step != "requeue":
                assert _task_status(raw, task_id)[0] == "Queued"
    skipped = STEPS[step][3]
    assert outcome.get("skipped_steps", []) == ([skipped] if skipped else []), outcome


class TaskWatchingProvider(RecordingProvider):
    """Reads the task's status at the moment the pod is terminated."""

    def __init__(self, database_url: str, task_id: str) -> None:
        super().__init__()
        self.database_url, self.task_id = database_url, task_id
        self.task_at_terminate: str | None = None

    def terminate(self, runpod_id: str) -> bool:
        with psycopg.connect(self.database_url, autocommit=True) as raw:
            self.task_at_terminate = _task_status(raw, self.task_id)[0]
        return super().terminate(runpod_id)


@pytest.mark.parametrize("start", ["active", "initializing"])
def test_a_failed_workers_pod_goes_before_its_task_is_requeued(
    start: str, db: Database, database_url: str
) -> None:
    """The process on a failed worker may still be alive, and the app's update-task-status takes a
    status from anyone: requeued first, its task could be set back to In Progress with no worker, or to
    Failed, by the process being replaced. So the pod is terminated while the task is still the
    worker's, then the task is requeued."""
    worker_id = f"gpu-order-{start}"
    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0)
    controller = Controller(settings, db, RecordingProvider(), holder="order", apply_budget_sec=30.0)
    try:
        token = controller._ensure_lease()
        assert token is not None
        _row_in(db, token, worker_id, start)
        task_id = _add_task(database_url, worker_id)
        provider = TaskWatchingProvider(database_url, task_id)
        controller.provider = provider  # type: ignore[assignment]
        action: Action
        if start == "active":
            action = FailWorker(
                reason=Reason.TASK_STUCK,
                worker_id=worker_id,
                runpod_id=POD,
                from_status=WorkerState.ACTIVE,
                running_task_ids=(task_id,),
            )
        else:
            # The start ended: a boot step fails.
            action = WatchStart(reason=Reason.WATCH_START, worker_id=worker_id, runpod_id=POD)
        outcome = controller._run_action(action, {}, token)
    finally:
        controller.shutdown(timeout=10)
    assert outcome["outcome"] not in ("failed", "crashed", "lease_lost"), outcome
    assert provider.terminated == [POD], provider.asked
    assert provider.task_at_terminate == "In Progress"
    with psycopg.connect(database_url, autocommit=True) as raw:
        assert _task_status(raw, task_id)[0] == "Queued"


def _to_stopping(token: int, worker_id: str, to: str, reason: str, metadata: Any) -> bool:
    return to == "stopping"


@pytest.mark.parametrize("bug", [False, True], ids=["typed", "bug"])
def test_a_stop_whose_row_cannot_move_ends_the_pod_by_termination(
    bug: bool, db: Database, faulty: FaultyDatabase, database_url: str
) -> None:
    """An idle worker is stopped into the pool: ``draining -> stopping``, then the stop. When that move
    failed (a fault, a bug), the stop was never sent and the next tick planned the same stop again:
    the idle GPU billed for as long as the fault lasted. A pod stopped under a row that still says
    draining would be nobody's to resume, so it is terminated, as ``terminate_pod`` does."""
    provider = RecordingProvider()
    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0)
    controller = Controller(settings, faulty, provider, holder="matrix", apply_budget_sec=30.0)
    worker_id = "gpu-20261206_010000-5e0951ed"
    try:
        token = controller._ensure_lease()
        assert token is not None
        _row_in(db, token, worker_id, "draining")
        exc = RuntimeError("bug at the move") if bug else _db_error("transition_stopping")
        faulty.fail["transition_worker"] = (exc, _to_stopping)
        outcome = controller._run_action(
            StopPod(reason=Reason.POOLED, worker_id=worker_id, runpod_id=POD), {}, token
        )
    finally:
        controller.shutdown(timeout=10)
    assert provider.terminated == [POD] and "stop" not in provider.asked, (outcome, provider.asked)
    assert outcome.get("skipped_steps") == ["transition"], outcome
    with psycopg.connect(database_url, autocommit=True) as raw:
        assert _row(raw, worker_id)["status"] == "draining"  # the next tick closes it: its pod is gone


def test_the_times_an_ending_stamps_are_the_databases_not_a_fast_host_clock(
    db: Database, faulty: FaultyDatabase, database_url: str
) -> None:
    """The policy spaces retries of a termination Runpod did not take by ``pod_terminate_requested_at``
    against the snapshot's ``now`` (the database's clock). Stamped by a host clock an hour fast, the
    retry waited an hour while the pod billed."""
    provider = RecordingProvider()
    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0)
    fast = Controller(
        settings, faulty, provider, holder="matrix", apply_budget_sec=30.0, clock=lambda: time.time() + 3600
    )
    worker_id = "gpu-20261206_010000-c10c4fa5"
    try:
        assert fast.tick().role == "leader"  # reads the database's now
        token = fast._ensure_lease()
        assert token is not None
        _row_in(db, token, worker_id, "error")
        action = TerminatePod(
            reason=Reason.TERMINATE_RETRY, runpod_id=POD, pod_name=worker_id, worker_id=worker_id
        )
        fast._run_action(action, {}, token)
    finally:
        fast.shutdown(timeout=10)
    assert provider.terminated == [POD]
    with psycopg.connect(database_url, autocommit=True) as raw:
        stamped = datetime.fromisoformat(_row(raw, worker_id)["metadata"]["pod_terminate_requested_at"])
        db_now = raw.execute("select now()").fetchone()[0]  # type: ignore[index]
    assert abs((stamped - db_now).total_seconds()) < 60, (stamped, db_now)


class HangingProvider(RecordingProvider):
    """Runpod's read calls hang (the pod status, and so the log tail that reads the pod first)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.hanging = 0
        self.hanging_at_termination: list[int] = []

    def pod_status(self, runpod_id: str) -> dict[str, Any] | None:
        self._call("pod_status")
        self.hanging += 1
        self.release.wait(30)
        self.hanging -= 1
        return None

    def terminate(self, runpod_id: str) -> bool:
        self.hanging_at_termination.append(self.hanging)
        return super().terminate(runpod_id)


def test_diagnostics_that_hang_do_not_hold_the_ending_back(
    db: Database, faulty: FaultyDatabase, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing worker's diagnostics (pod status, log tail) come before its ending, since a terminated
    pod has no log left. Each retries on its own (up to 4 attempts of a 30 s timeout): while Runpod's
    reads hung, the failed worker's GPU billed and its task waited minutes before the termination."""
    monkeypatch.setattr(effects, "DIAGNOSTICS_DEADLINE_SEC", 0.2)
    provider = HangingProvider()
    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0)
    controller = Controller(settings, faulty, provider, holder="matrix", apply_budget_sec=30.0)
    worker_id = "gpu-20261206_010000-4a9b1e55"
    try:
        token = controller._ensure_lease()
        assert token is not None
        _row_in(db, token, worker_id, "active")
        task_id = _add_task(database_url, worker_id)
        action = FailWorker(
            reason=Reason.HEARTBEAT_STALE, worker_id=worker_id, runpod_id=POD, from_status=WorkerState.ACTIVE
        )
        outcome = controller._run_action(action, {}, token)
        # Ended while the status call still hangs.
        assert provider.terminated == [POD] and provider.hanging_at_termination == [1], outcome
    finally:
        provider.release.set()
        controller.shutdown(timeout=10)
    with psycopg.connect(database_url, autocommit=True) as raw:
        row = _row(raw, worker_id)
        assert row["status"] == "error"
        assert "TimeoutError" in json.dumps(row["metadata"])
        assert _task_status(raw, task_id)[0] == "Queued"


def test_a_lost_lease_at_the_transition_stops_the_ending(db: Database, faulty: FaultyDatabase) -> None:
    """Fencing outranks everything: a stale leader's failure must not reach the pod."""
    provider = RecordingProvider()
    controller = Controller(config.defaults(), faulty, provider, holder="matrix")
    try:
        token = controller._ensure_lease()
        assert token is not None
        db.register_worker(token, "gpu-lease", "NVIDIA GeForce RTX 4090", {"runpod_id": POD})
        faulty.fail["transition_worker"] = (
            errors.LeaseLost("orch_transition_worker", "stale token"),
            _always,
        )
        outcome = controller._run_action(
            FailWorker(
                reason=Reason.BOOT_TIMEOUT,
                worker_id="gpu-lease",
                runpod_id=POD,
                from_status=WorkerState.SPAWNING,
            ),
            {},
            token,
        )
    finally:
        controller.shutdown(timeout=10)
    assert outcome["outcome"] == "lease_lost"
    assert provider.terminated == []
    assert controller.token is None


def test_a_lease_taken_over_before_the_termination_leaves_the_pod(db: Database) -> None:
    """Every step before the termination failed and was skipped; the fence still refuses it."""
    provider = RecordingProvider(fail={"pod_status": RuntimeError("bug")})
    settings = config.defaults().replace(orchestrator_poll_sec=0.2, lease_ttl_sec=1)
    controller = Controller(settings, db, provider, holder="stale")
    try:
        token = controller._ensure_lease()
        assert token is not None
        db.register_worker(token, "gpu-stale", "NVIDIA GeForce RTX 4090", {"runpod_id": POD})
        wait_for(lambda: db.lease_acquire("new-leader", 60).get("acquired"), 10)
        outcome = controller._run_action(
            TerminatePod(reason=Reason.ORPHAN_POD, runpod_id=POD, pod_name="gpu-stale"), {}, token
        )
    finally:
        controller.shutdown(timeout=10)
    assert outcome["outcome"] == "lease_lost"
    assert provider.terminated == []


def _spend_row(database_url: str, worker_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url, autocommit=True) as raw, raw.cursor() as cur, raw.transaction():
        cur.execute("set local role service_role")
        cur.execute(
            "select cost_per_hr, spend_usd from orchestrator_worker_spend where id = %s", (worker_id,)
        )
        found = cur.fetchone()
    assert found is not None
    return {"cost_per_hr": float(found[0]), "spend_usd": float(found[1])}


def _as_read(db: Database, worker_id: str) -> dict[str, Worker]:
    """The row as the next tick's snapshot reads it (what the executor is handed)."""
    snap = Snapshot.from_json(db.snapshot())
    return {w.id: w for w in snap.workers if w.id == worker_id}


def test_a_termination_runpod_did_not_take_still_bills_until_one_it_does(
    db: Database, database_url: str
) -> None:
    """The spend figures end a pod's billing at the first termination Runpod confirmed, not at a call
    that failed (between it and the retry the pod may still bill, and the dashboard must say so), and a
    retry that fails later does not undo it."""
    provider = RecordingProvider(fail={"terminate": errors.RunpodTransientError("injected: API down")})
    controller = Controller(config.defaults(), db, provider, holder="billing")
    worker = "gpu-unanswered"
    retry = TerminatePod(reason=Reason.TERMINATE_RETRY, runpod_id=POD, pod_name=worker, worker_id=worker)
    try:
        token = controller._ensure_lease()
        assert token is not None
        db.register_worker(token, worker, "NVIDIA GeForce RTX 4090", {"runpod_id": POD, "cost_per_hr": 0.69})
        for state in ("initializing", "active", "error"):
            db.transition_worker(token, worker, state, "setup")
        with psycopg.connect(database_url, autocommit=True) as raw:
            raw.execute("update workers set created_at = now() - interval '1 hour' where id = %s", (worker,))
        failed = controller._run_action(retry, _as_read(db, worker), token)
        assert failed["terminate_confirmed"] is False, failed
        with psycopg.connect(database_url, autocommit=True) as raw:
            meta = _row(raw, worker)["metadata"]
        # Asked (the retry is paced from it), not taken: still billing at its GPU price, an hour so far.
        assert meta["pod_terminate_requested_at"] and meta["pod_terminate_confirmed"] is False, meta
        assert "pod_terminate_taken_at" not in meta
        assert _spend_row(database_url, worker) == pytest.approx(
            {"cost_per_hr": 0.69, "spend_usd": 0.69}, abs=0.01
        )

        del provider.fail["terminate"]
        taken = controller._run_action(retry, _as_read(db, worker), token)
        assert taken["terminate_confirmed"] is True, taken
        with psycopg.connect(database_url, autocommit=True) as raw:
            taken_at = _row(raw, worker)["metadata"]["pod_terminate_taken_at"]
        ended = _spend_row(database_url, worker)
        assert ended["cost_per_hr"] == 0.0

        # The pod still listed a while, a retry during an outage: billing stays ended where it ended.
        provider.fail["terminate"] = errors.RunpodTransientError("injected: API down again")
        controller._run_action(retry, _as_read(db, worker), token)
        with psycopg.connect(database_url, autocommit=True) as raw:
            meta = _row(raw, worker)["metadata"]
        assert meta["pod_terminate_confirmed"] is False and meta["pod_terminate_taken_at"] == taken_at
        assert _spend_row(database_url, worker) == ended
        # ... nor a retry Runpod confirms again: the first one it took ended the bill.
        del provider.fail["terminate"]
        controller._run_action(retry, _as_read(db, worker), token)
    finally:
        controller.shutdown(timeout=10)
    assert provider.terminated == [POD, POD]
    with psycopg.connect(database_url, autocommit=True) as raw:
        assert _row(raw, worker)["metadata"]["pod_terminate_taken_at"] == taken_at
    assert _spend_row(database_url, worker) == ended


# ---------------------------------------------------------------------------------------------------
# The loop itself: what fails around every action at once.


class FullDisk(io.TextIOBase):
    """stdout as a daemon sees it when its log file's disk fills up (or its pipe's reader dies)."""

    def __init__(self, full: bool) -> None:
        self.full = full
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")


@dataclass
class OddListingProvider(RecordingProvider):
    """A listing the client's parser did not foresee raises what Python raises, not a typed error."""

    def list_pods(self) -> list[Any]:
        raise TypeError("'int' object is not iterable")


@pytest.mark.parametrize("fault", ["log_sink", "listing"])
def test_the_loop_survives_a_failing_log_sink_or_an_unforeseen_listing_and_ends_the_pod(
    fault: str, db: Database, database_url: str
) -> None:
    sink = FullDisk(full=fault == "log_sink")
    provider = RecordingProvider() if fault == "log_sink" else OddListingProvider()
    settings = config.defaults().replace(min_active_gpus=0, max_active_gpus=0)
    controller = Controller(settings, db, provider, holder="loop", apply_budget_sec=5.0)
    token = controller._ensure_lease()
    assert token is not None
    worker = "gpu-20261206_010000-0badc0de"
    # As our spawn registers it: its spawn's record is what lets the pod be ended without a listing.
    db.register_worker(token, worker, "NVIDIA GeForce RTX 4090", {"runpod_id": POD, "spawn_reason": "demand"})
    for state in ("initializing", "active"):
        db.transition_worker(token, worker, state, "setup")
    task_id = _add_task(database_url, worker)
    with psycopg.connect(database_url, autocommit=True) as raw:  # its worker went silent an hour ago
        raw.execute("update workers set last_heartbeat = now() - interval '1 hour' where id = %s", (worker,))
    configure_logging(stream=sink, level="INFO", fmt="json")
    daemon = Daemon(controller, interval=0.2)
    try:
        daemon.start()
        wait_for(lambda: provider.terminated == [POD], 30)
        seen = controller.tick_no
        wait_for(lambda: controller.tick_no >= seen + 2, 30)  # and the ticks go on
        assert daemon._ticker is not None and daemon._ticker.is_alive() and not daemon.died
        with psycopg.connect(database_url, autocommit=True) as raw:
            # Failed; closed too once a listing (the empty one) no longer shows its terminated pod.
            assert _row(raw, worker)["status"] == ("terminated" if fault == "log_sink" else "error")
            assert _task_status(raw, task_id) == ("Queued", 1)
        if fault == "log_sink":
            sink.full = False  # space freed: the log says how much it lost
            wait_for(lambda: any('"log_lines_dropped"' in line for line in sink.lines), 30)
    finally:
        daemon.shutdown()
        configure_logging(stream=io.StringIO(), fmt="json")
