"""The apply step against the real parts: a slow provider call, a lost lease, a blocked SQL call.

Real PostgreSQL (the per-test database of ``tests/conftest.py``), the real ``RunpodClient`` over REST
against the Runpod emulator. The client is subclassed only to *gate* and *record* calls (every call
still goes to the emulator): a test needs to hold a spawn open for as long as it likes, as a slow
create or SSH check does for minutes, and to see whether the controller tried to touch a pod at all.
Each test was written against a defect found in review and failed before its fix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.core import config
from orchestrator.core.actions import Initialize, StartProcess, TerminatePod
from orchestrator.core.states import Reason, WorkerState
from orchestrator.loop.controller import Controller
from orchestrator.runpod_client import RunpodClient
from orchestrator.wiring import make_database
from tests.e2e.conftest import wait_until
from tests.integration.test_runpod_contract import make_client


class GatedClient(RunpodClient):
    """The real client; spawns wait for ``release``, starts and terminations are recorded first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.starts_release = threading.Event()  # set: starts go through at once
        self.starts_release.set()
        self.spawns: list[str] = []
        self.started: list[str] = []
        self.terminated: list[str] = []

    def spawn(self, worker_id: str, *args: Any, **kwargs: Any) -> Any:
        self.spawns.append(worker_id)
        self.release.wait(60)
        return super().spawn(worker_id, *args, **kwargs)

    def start_process(self, runpod_id: str, *args: Any, **kwargs: Any) -> Any:
        self.started.append(runpod_id)
        self.starts_release.wait(60)
        return super().start_process(runpod_id, *args, **kwargs)

    def terminate(self, runpod_id: str, *args: Any, **kwargs: Any) -> Any:
        self.terminated.append(runpod_id)
        return super().terminate(runpod_id, *args, **kwargs)


@pytest.fixture
def client(emulator: Any, ssh_keypair: Any, tmp_path: Path) -> Iterator[GatedClient]:
    gated = make_client(emulator, ssh_keypair, tmp_path, "rest", cls=GatedClient)
    assert isinstance(gated, GatedClient)
    try:
        yield gated
    finally:
        gated.release.set()
        gated.starts_release.set()
        gated.close()


def test_slow_actions_in_flight_do_not_hold_the_next_tick(db: Database, client: GatedClient) -> None:
    """A tick must not wait for the previous tick's slow actions.

    Before the fix the pod listing of every tick queued on the same bounded pool as the actions, so once
    APPLY_CONCURRENCY actions were slow (pods booting at once, each create or SSH check taking minutes)
    the next tick blocked in ``gather`` until one finished: the lease went unrenewed (another daemon
    takes over), /healthz turned 503, new tasks waited, and SIGTERM waited for the slow calls.
    """
    settings = config.defaults().replace(
        min_active_gpus=1, apply_concurrency=1, orchestrator_poll_sec=1.0, lease_ttl_sec=30
    )
    controller = Controller(settings, db, client, apply_budget_sec=0.2)
    try:
        first = controller.tick()
        assert first.role == "leader"
        wait_until(lambda: client.spawns, 10, "the first tick's spawn to reach the provider")
        done = threading.Event()
        second: list[Any] = []

        def run_second() -> None:
            second.append(controller.tick())
            done.set()

        threading.Thread(target=run_second, name="second-tick", daemon=True).start()
        # The spawn is still held: only a tick that does not wait for it can finish.
        assert done.wait(30), "the second tick is stuck behind the first tick's spawn"
        assert not client.release.is_set()
        assert second[0].role == "leader"
    finally:
        client.release.set()
        controller.shutdown(timeout=30)


def _hand_over(db: Database, settings: config.Settings, client: GatedClient) -> tuple[Controller, int]:
    """A leader that held the lease, then lost it to another daemon (as after a long pause)."""
    stale = Controller(settings, db, client, holder="stale-leader")
    token = stale._ensure_lease()
    assert token is not None
    wait_until(
        lambda: db.lease_acquire("new-leader", 60).get("acquired"),
        10,
        "the new leader to take the expired lease",
    )
    return stale, token


def test_a_stale_leader_does_not_start_a_second_worker_process(db: Database, client: GatedClient) -> None:
    """After a handover, the old leader's queued start must not reach the pod.

    Before the fix ``start_process`` ran the start command over SSH first and only then wrote (fenced) to
    the database, so a leader that lost its lease while the action waited (a long tick, a GC pause, a
    network stall) still started Headless-Wan2GP on the pod, and the new leader started it too: two
    worker processes under one worker id on one GPU.
    """
    client.release.set()
    pod = client.spawn_worker("gpu-review-1")
    settings = config.defaults().replace(orchestrator_poll_sec=0.2, lease_ttl_sec=1)
    stale = Controller(settings, db, client, holder="stale-leader")
    token = stale._ensure_lease()
    assert token is not None
    db.register_worker(token, "gpu-review-1", "NVIDIA GeForce RTX 4090", {})
    db.transition_worker(
        token,
        "gpu-review-1",
        WorkerState.INITIALIZING.value,
        Reason.POD_READY.value,
        {"runpod_id": pod["runpod_id"]},
    )
    wait_until(
        lambda: db.lease_acquire("new-leader", 60).get("acquired"),
        10,
        "the new leader to take the expired lease",
    )
    try:
        outcome = stale._run_action(
            StartProcess(reason=Reason.START_PROCESS, worker_id="gpu-review-1", runpod_id=pod["runpod_id"]),
            {},
            token,
        )
        assert client.started == [], "the stale leader started the worker process"
        assert outcome["outcome"] == "lease_lost"
    finally:
        stale.shutdown(timeout=5)


def test_a_stale_leader_does_not_terminate_pods(db: Database, client: GatedClient) -> None:
    """After a handover, the old leader's queued termination must not reach the provider.

    Before the fix terminating an orphan pod wrote nothing fenced before the provider call, so a leader
    that lost its lease still terminated pods the new leader now owns (a pod adopted by name after a
    crash between create and record is exactly such a pod).
    """
    client.release.set()
    pod = client.spawn_worker("gpu-review-2")
    settings = config.defaults().replace(orchestrator_poll_sec=0.2, lease_ttl_sec=1)
    stale, token = _hand_over(db, settings, client)
    try:
        outcome = stale._run_action(
            TerminatePod(reason=Reason.ORPHAN_POD, runpod_id=pod["runpod_id"], pod_name="gpu-review-2"),
            {},
            token,
        )
        assert client.terminated == [], "the stale leader terminated a pod"
        assert outcome["outcome"] == "lease_lost"
        still = client.get_pod(pod["runpod_id"])
        assert still is not None and still.actual_status != "TERMINATED"
    finally:
        stale.shutdown(timeout=5)


def test_a_blocked_database_call_fails_within_the_lease_instead_of_hanging(database_url: str) -> None:
    """A database call the server cannot answer must fail in bounded time.

    Before the fix the direct Postgres transport set no ``statement_timeout``, so a tick whose SQL waited
    on a lock (a migration or an operator's open transaction holding the lease or workers table) hung
    for as long as that lock was held: the leader stopped healing and scaling, its /healthz failed, and
    SIGTERM (which waits for the running tick) could not stop it.
    """
    settings = config.load_settings(
        {"DATABASE_URL": database_url, "ORCHESTRATOR_POLL_SEC": "1", "LEASE_TTL_SEC": "6"}, env_file=None
    )
    db = make_database(settings)
    outcome: list[BaseException | dict[str, Any]] = []
    done = threading.Event()
    with psycopg.connect(database_url) as blocker:
        blocker.execute("lock table public.orchestrator_lease in access exclusive mode")

        def acquire() -> None:
            try:
                outcome.append(db.lease_acquire("blocked", 10))
            except BaseException as exc:  # the test inspects whatever came back
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=acquire, name="blocked-lease", daemon=True).start()
        try:
            # Each attempt is bounded by a third of the lease; the transport's retries stop after 10 s.
            assert done.wait(15), "the lease call is still waiting on the lock"
        finally:
            blocker.rollback()
    done.wait(30)
    db.close()
    assert outcome and isinstance(outcome[0], Exception), outcome


def test_a_decision_on_a_row_an_action_changed_meanwhile_is_dropped(
    db: Database, client: GatedClient
) -> None:
    """A tick whose snapshot was read while an earlier action on the same worker ran must not act on it.

    Found in an end-to-end run's daemon log: an initialization was still starting the worker process when
    the next tick read its snapshot (``initialized_at`` written, ``process_started_at`` not yet); the
    start finished before that tick applied its plan, so nothing was in flight any more, and the plan's
    ``StartProcess`` (decided on the old row) started a second worker process on the pod.
    """
    client.release.set()
    pod = client.spawn_worker("gpu-review-3")
    settings = config.defaults().replace(orchestrator_poll_sec=0.2, lease_ttl_sec=30)
    controller = Controller(settings, db, client, apply_budget_sec=0.2)
    try:
        token = controller._ensure_lease()
        assert token is not None
        db.register_worker(token, "gpu-review-3", "NVIDIA GeForce RTX 4090", {"runpod_id": pod["runpod_id"]})
        client.starts_release.clear()

        def initializing() -> bool:  # ticks until the pod is ready and the worker initialized
            result = controller.tick()
            return result.plan is not None and bool(result.plan.of_kind(Initialize))

        wait_until(initializing, 60, "a tick that initializes the worker")  # its process start is held
        wait_until(lambda: client.started, 30, "the initialization to reach the process start")
        stale = controller.gather()  # read while the start is under way
        client.starts_release.set()
        wait_until(
            lambda: not controller._in_flight or all(f.done() for f in controller._in_flight.values()),
            30,
            "the initialization to finish",
        )
        plan = controller.decide(stale)
        assert plan.of_kind(StartProcess), "the old row asks for a start: the race this test is about"
        outcomes = controller.apply(plan.actions, stale.snapshot, token, read_at=stale.read_at)
        assert [o["outcome"] for o in outcomes if o["kind"] == "start_process"] == ["stale"], outcomes
        assert client.started == [pod["runpod_id"]], "a second worker process was started"
        # The next tick reads the row as the start left it and has nothing to start.
        after = controller.tick()
        assert after.plan is not None and not after.plan.of_kind(StartProcess), after.plan
        assert client.started == [pod["runpod_id"]]
    finally:
        client.starts_release.set()
        controller.shutdown(timeout=30)
