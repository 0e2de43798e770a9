"""Unit tests of the virtual-time simulator's pieces (``orchestrator/studies/simulation.py``).

Billing, the seeded boot distribution, the in-memory database against the real SQL functions (one
scripted sequence run on both, outcomes compared step by step), the executor's restart semantics, the
traces' files, and the competing policies' scaling rules.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from orchestrator.adapters.db.base import Database
from orchestrator.core import errors
from orchestrator.core.actions import Spawn
from orchestrator.core.config import defaults
from orchestrator.core.observed import Snapshot
from orchestrator.core.policy import plan
from orchestrator.core.states import Meta, Reason, WorkerState
from orchestrator.studies import traces
from orchestrator.studies.clock import EPOCH, Clock
from orchestrator.studies.fleet import GPU, GPU_PRICE, BootModel, Faults, SimProvider
from orchestrator.studies.memdb import SimDB
from orchestrator.studies.policies import busy_workers_count_themselves, specs
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask

# --- the provider: billing and boots ---------------------------------------------------------------


def provider(clock: Clock, **faults: Any) -> SimProvider:
    return SimProvider(clock, random.Random(1), BootModel(), Faults(**faults), capacity=3)


def test_billing_is_per_second_from_creation_to_termination() -> None:
    clock = Clock()
    p = provider(clock)
    pod = p.create("gpu-a", [GPU])
    clock.schedule(90.5, lambda: p.terminate(pod.id))
    clock.run_until(4000)
    assert p.billed_seconds(4000) == pytest.approx(90.5)
    assert p.cost(4000) == pytest.approx(90.5 * GPU_PRICE / 3600)
    # A pod still alive bills up to the horizon asked for.
    other = p.create("gpu-b", [GPU])
    assert p.billed_seconds(4000 + 3600) - 90.5 == pytest.approx(3600)
    assert p.cost(4000 + 3600) == pytest.approx((90.5 + 3600) * GPU_PRICE / 3600)
    assert other.alive and not pod.alive


def test_pods_become_ready_after_their_boot_time_and_terminated_ones_leave_the_listing() -> None:
    clock = Clock()
    p = provider(clock)
    pod = p.create("gpu-a", [GPU])
    assert pod.ready_at is not None
    assert [v.status.value for v in p.list_pods()] == ["PROVISIONING"]
    clock.run_until(pod.ready_at + 0.1)
    (view,) = p.list_pods()
    assert view.status.value == "RUNNING" and view.ssh_ready and view.cost_per_hr == GPU_PRICE
    assert p.terminate(pod.id) is True
    assert p.list_pods() == []
    assert p.terminate("no-such-pod") is True  # an unknown pod is gone


def test_capacity_and_outages_fail_creation_and_listing() -> None:
    clock = Clock()
    p = provider(clock, outages=((100.0, 200.0, 429), (300.0, 400.0, 503)))
    for name in ("a", "b", "c"):
        p.create(name, [GPU])
    with pytest.raises(errors.RunpodCapacityError):
        p.create("d", [GPU])
    clock.run_until(150)
    with pytest.raises(errors.RunpodRateLimited):
        p.list_pods()
    assert p.terminate(next(iter(p.pods))) is False  # RunpodClient returns False on an API error
    clock.run_until(350)
    with pytest.raises(errors.RunpodTransientError):
        p.create("e", [GPU])
    clock.run_until(450)
    assert len(p.list_pods()) == 3


def test_boot_distribution_is_seeded_and_matches_the_facts() -> None:
    boot = BootModel()
    rng = random.Random(7)
    draws = [boot.draw(rng) for _ in range(4000)]
    again = random.Random(7)
    assert [boot.draw(again) for _ in range(4000)] == draws
    cached = sorted(d for d in draws if d < 80)
    cold = sorted(d for d in draws if d >= 80)
    assert 0.55 < len(cached) / len(draws) < 0.65  # 60% of hosts have the image cached
    # Create -> SSH ready as users measure Runpod (Runpod promises no figure): about 30 s with the image
    # cached, 165-170 s for a 16 GB image that must be pulled.
    assert 27 < cached[len(cached) // 2] < 33
    assert 150 < cold[len(cold) // 2] < 180


def test_never_booting_pods_stay_provisioning() -> None:
    clock = Clock()
    p = provider(clock, never_boot=1.0)
    p.create("gpu-a", [GPU])
    clock.run_until(10_000)
    assert [v.status.value for v in p.list_pods()] == ["PROVISIONING"]


# --- the database: the same script on SimDB and on the real SQL -------------------------------------


class RealSide:
    """The real SQL: our functions through the Database facade; the worker's side as the real worker
    reaches it (the app's heartbeat function and claim function, the ``complete_task`` Edge Function's
    UPDATE); tasks inserted with raw SQL (as producers do)."""

    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.conn = psycopg.connect(url, autocommit=True)
        self.token = int(db.lease_acquire("sim-test", 60)["token"])
        self.ids: list[str] = []

    def add_task(self, task_type: str, parent: int | None = None) -> None:
        n = len(self.ids)
        params = {} if parent is None else {"orchestrator_task_id_ref": self.ids[parent]}
        row = self.conn.execute(
            "insert into tasks (task_type, params, status, created_at) values "
            "(%s, %s::jsonb, 'Queued', now() - make_interval(secs => 100 - %s)) returning id",
            (task_type, json.dumps(params), n),
        ).fetchone()
        assert row is not None
        self.ids.append(str(row[0]))

    def index(self, task_id: str | None) -> int | None:
        return None if task_id is None else self.ids.index(str(task_id))

    def register(self, wid: str) -> None:
        self.db.register_worker(self.token, wid, GPU, {Meta.GPU_TYPE: GPU})

    def transition(self, wid: str, to: str, reason: str) -> str:
        return str(self.db.transition_worker(self.token, wid, to, reason)["status"])

    def merge(self, wid: str, meta: dict[str, Any]) -> None:
        self.db.merge_worker_metadata(self.token, wid, meta)

    def age(self, wid: str, seconds: float) -> None:
        """Moves the activation back (the guard keeps our columns from any other writer)."""
        self.conn.execute("alter table workers disable trigger user")
        self.conn.execute(
            "update workers set activated_at = activated_at - make_interval(secs => %s) where id = %s",
            (seconds, wid),
        )
        self.conn.execute("alter table workers enable trigger user")

    def _row(self, wid: str) -> tuple[Any, ...]:
        row = self.conn.execute(
            "select status, reported_status, last_heartbeat from workers where id = %s", (wid,)
        ).fetchone()
        assert row is not None
        return tuple(row)

    def heartbeat(self, wid: str, status: str = "active") -> tuple[str, str | None, bool]:
        """The guardian's call: (status after, reported_status after, last_heartbeat moved)."""
        before = self._row(wid)[2]
        self.conn.execute(
            "select func_worker_heartbeat_with_logs(worker_id_param => %s, vram_total_mb_param => 0, "
            "vram_used_mb_param => 0, logs_param => '[]'::jsonb, status_param => %s)",
            (wid, status),
        )
        after = self._row(wid)
        return str(after[0]), after[1], after[2] != before

    def claim(self, wid: str) -> int | None:
        """``claim-next-task`` runs the app's claim function; a refusal (the guard) answers no task."""
        try:
            row = self.conn.execute(
                "select task_id from claim_next_task_service_role(p_worker_id => %s)", (wid,)
            ).fetchone()
        except psycopg.errors.UndefinedFunction:
            raise
        except psycopg.Error:
            return None
        return None if row is None or row[0] is None else self.index(str(row[0]))

    def complete(self, wid: str, i: int) -> bool:
        """``complete_task``'s write: Complete, processed now, only while In Progress (any worker)."""
        row = self.conn.execute(
            "update tasks set status = 'Complete', generation_processed_at = now(), updated_at = now() "
            "where id = %s and status = 'In Progress' returning id",
            (self.ids[i],),
        ).fetchone()
        return row is not None

    def requeue(self, wid: str) -> tuple[list[int], list[int]]:
        r = self.db.requeue_worker_tasks(self.token, wid, "test", 3)
        return sorted(self.ids.index(str(x)) for x in r["requeued"]), sorted(
            self.ids.index(str(x)) for x in r["failed"]
        )

    def release(self, wid: str) -> tuple[list[int], ...]:
        r = self.db.release_parents(self.token, wid, "test")
        return tuple(sorted(self.ids.index(str(x)) for x in r[k]) for k in ("released", "kept"))

    def tasks(self) -> list[tuple[str, int]]:
        rows = self.conn.execute("select id, status, attempts from tasks").fetchall()
        by_id = {str(r[0]): (r[1], r[2]) for r in rows}
        return [by_id[i] for i in self.ids]

    def snapshot(self) -> Snapshot:
        return Snapshot.from_json(self.db.snapshot("gpu-"))


class SimSide:
    def __init__(self) -> None:
        self.clock = Clock()
        self.db = SimDB(self.clock, 3)
        self.ids: list[str] = []

    def _tick(self) -> None:
        self.clock.run_until(self.clock.now + 1.0)

    def add_task(self, task_type: str, parent: int | None = None) -> None:
        self._tick()
        task_id = f"t{len(self.ids)}"
        self.db.insert_task(task_id, task_type, 60.0, parent=None if parent is None else self.ids[parent])
        self.ids.append(task_id)

    def register(self, wid: str) -> None:
        self._tick()
        self.db.register_worker(wid, GPU, {Meta.GPU_TYPE: GPU})

    def transition(self, wid: str, to: str, reason: str) -> str:
        self._tick()
        return self.db.transition_worker(wid, to, reason).status

    def merge(self, wid: str, meta: dict[str, Any]) -> None:
        self.db.merge_worker_metadata(wid, meta)

    def age(self, wid: str, seconds: float) -> None:
        activated = self.db.workers[wid].activated_at
        assert activated is not None
        self.db.workers[wid].activated_at = activated - seconds

    def heartbeat(self, wid: str, status: str = "active") -> tuple[str, str | None, bool]:
        self._tick()
        before = self.db.workers[wid].last_heartbeat
        self.db.heartbeat(wid, status)
        w = self.db.workers[wid]
        return w.status, w.reported_status, w.last_heartbeat != before

    def claim(self, wid: str) -> int | None:
        self._tick()
        row = self.db.claim(wid)
        return None if row is None else self.ids.index(row.id)

    def complete(self, wid: str, i: int) -> bool:
        self._tick()
        return self.db.complete(wid, self.ids[i])

    def requeue(self, wid: str) -> tuple[list[int], list[int]]:
        r = self.db.requeue_worker_tasks(wid, "test", 3)
        return sorted(self.ids.index(x) for x in r["requeued"]), sorted(
            self.ids.index(x) for x in r["failed"]
        )

    def release(self, wid: str) -> tuple[list[int], ...]:
        r = self.db.release_parents(wid)
        return tuple(sorted(self.ids.index(x) for x in r[k]) for k in ("released", "kept"))

    def tasks(self) -> list[tuple[str, int]]:
        return [(self.db.tasks[i].status, self.db.tasks[i].attempts) for i in self.ids]

    def snapshot(self) -> Snapshot:
        return self.db.snapshot("gpu-")


def script(side: Any) -> list[Any]:
    """Every database semantic the simulator relies on, as one sequence; returns what each step answered."""
    out: list[Any] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except errors.IllegalTransition:
            return "OR002"
        except errors.NotFound:
            return "OR003"
        except errors.Conflict:
            return "23505"

    for kind in ("gen", "travel_orchestrator", "gen", "gen"):
        side.add_task(kind)
    for wid in ("gpu-a", "gpu-b", "gpu-c"):
        side.register(wid)
    out.append(attempt(side.register, "gpu-a"))  # duplicate id
    out.append(side.claim("gpu-a"))  # spawning: the guard refuses, no task
    out.append(side.heartbeat("gpu-a"))  # spawning: heard, stays spawning
    out.append(attempt(side.transition, "gpu-a", "active", "x"))  # not in the table
    out.append(side.transition("gpu-a", "initializing", "pod_ready"))
    out.append(side.transition("gpu-a", "initializing", "pod_ready"))  # same state: no-op
    out.append(side.heartbeat("gpu-a"))  # stays initializing
    out.append(side.claim("gpu-a"))  # initializing claims (oldest first: task 0)
    side.merge("gpu-a", {Meta.PROCESS_STARTED_AT: "2026-11-02T00:00:00+00:00"})
    out.append(side.heartbeat("gpu-a"))  # a heartbeat never promotes: still initializing
    out.append(side.transition("gpu-a", "active", "first_heartbeat"))  # the policy's Promote
    out.append(side.claim("gpu-a"))  # task 1
    out.append(side.complete("gpu-a", 1))
    out.append(side.complete("gpu-a", 1))  # already complete
    out.append(side.requeue("gpu-a"))  # task 0 back, attempts 1
    out.append(side.claim("gpu-a"))  # task 0 again (oldest)
    out.append(side.requeue("gpu-a"))  # attempts 2
    out.append(side.claim("gpu-a"))
    out.append(side.requeue("gpu-a"))  # attempts 3: dead-lettered
    out.append(side.claim("gpu-a"))  # task 2
    out.append(side.transition("gpu-b", "error", "spawn_failed"))  # boot outcome: spawn_failed
    out.append(side.heartbeat("gpu-b"))  # error: heard, stays error
    out.append(side.heartbeat("gpu-b", "error"))  # a word equal to our state: not recorded
    out.append(side.transition("gpu-a", "draining", "idle_timeout"))
    out.append(side.heartbeat("gpu-a"))  # draining: heard, stays draining
    out.append(side.claim("gpu-a"))  # draining: the guard refuses
    out.append(attempt(side.transition, "gpu-a", "terminating", "drained"))  # holds task 2: refused
    out.append(side.complete("gpu-a", 2))
    out.append(side.transition("gpu-a", "active", "work_came_back"))
    out.append(side.claim("gpu-a"))  # task 3
    out.append(side.heartbeat("gpu-a", "crashed"))  # reported; its task 3 requeued, attempt counted
    out.append(attempt(side.transition, "gpu-b", "active", "x"))  # error -> active: refused
    out.append(side.transition("gpu-b", "terminated", "provider_confirmed_gone"))
    out.append(side.heartbeat("gpu-b"))  # terminated: nothing recorded
    out.append(side.transition("gpu-c", "terminating", "scale_down_before_boot"))
    # Parents: a leaving worker lets go those that wait on a child (20261213000100).
    side.add_task("travel_orchestrator")  # 4: two children, 5 and 7
    side.add_task("gen", 4)
    side.add_task("join_clips_orchestrator")  # 6: no child
    side.add_task("gen", 4)
    side.register("gpu-d")
    side.transition("gpu-d", "initializing", "pod_ready")
    side.transition("gpu-d", "active", "first_heartbeat")
    out.append([side.claim("gpu-d") for _ in range(4)])  # 3, 4, 5, 6
    out.append(side.complete("gpu-d", 3))
    out.append(side.release("gpu-d"))  # active: keeps 4 and 6
    out.append(side.requeue("gpu-d"))  # 4, 5 and 6 requeued, the parents too
    out.append([side.claim("gpu-d") for _ in range(3)])  # 4, 5, 6
    out.append(side.transition("gpu-d", "draining", "idle_timeout"))
    # 4's live children: 5 (In Progress) and 7 (Queued, made after 4 was); 6 has none.
    out.append(children(side.snapshot()))
    out.append(side.release("gpu-d"))  # 4 waits on 5 and 7: released; 6 has no child: kept
    out.append(attempt(side.release, "gpu-z"))  # unknown worker
    out.append(attempt(side.transition, "gpu-z", "error", "x"))  # unknown worker
    # Deaths past the probation, nothing completed (20261215000100): a process dead holding a task, a
    # failed boot; dead idle, lost with its host or stuck, still the activation.
    side.add_task("gen")  # 8
    side.add_task("gen")  # 9
    side.add_task("gen")  # 10
    for wid in ("gpu-e", "gpu-f", "gpu-g", "gpu-h"):
        side.register(wid)
        side.transition(wid, "initializing", "pod_ready")
        side.transition(wid, "active", "first_heartbeat")
        side.age(wid, 7200)
    out.append([side.claim("gpu-e"), side.claim("gpu-g"), side.claim("gpu-h")])
    out.append(side.heartbeat("gpu-e", "crashed"))  # the guard sees its task before the app requeues it
    out.append(side.heartbeat("gpu-e", "crashed"))  # a repeated report keeps that
    out.append(side.heartbeat("gpu-f", "crashed"))  # idle
    out.append(side.transition("gpu-e", "error", "worker_crashed"))
    out.append(side.transition("gpu-f", "error", "worker_crashed"))
    out.append(side.transition("gpu-g", "error", "heartbeat_stale"))  # still holds its task
    out.append(side.transition("gpu-h", "error", "task_stuck"))
    out.append(side.requeue("gpu-g"))
    out.append(side.requeue("gpu-h"))
    out.append(side.tasks())
    snap = side.snapshot()
    out.append((snap.queue.claimable, snap.queue.running, snap.queue.unowned_running))
    out.append(
        [
            (
                w.id,
                w.status.value,
                w.running_count,
                w.activated_at is not None,
                w.last_heartbeat is not None,
                w.oldest_stuckable_started_at is not None,
                w.last_completion_at is not None,
                w.reported_status,
                w.reported_at is not None,
            )
            for w in snap.workers
        ]
    )
    out.append([(b.worker_id, b.ok, b.reason) for b in snap.recent_boots])
    out.append(children(snap))
    return out


def children(snap: Snapshot) -> list[tuple[Any, ...]]:
    """Each running task's live children as the snapshot says (None: not a parent)."""
    return sorted(
        (w.id, t.task_type, t.children_live, t.last_child_at is not None)
        for w in snap.workers
        for t in w.running_tasks
    )


def test_the_in_memory_database_answers_like_the_sql(db: Database, database_url: str) -> None:
    real = RealSide(db, database_url)
    try:
        expected = script(real)
    finally:
        real.conn.close()
    got = script(SimSide())
    # The script ran as designed on the real side: no claim while spawning, a claim once initializing,
    # the heartbeat that did not promote, the refused termination of a busy draining worker.
    assert expected[1] is None and expected[7] == 0
    assert expected[8] == ("initializing", None, True)
    assert expected[25] == "OR002"
    reasons = {b[0]: b[2] for b in expected[-2]}
    assert [reasons[w] for w in ("gpu-e", "gpu-f", "gpu-g", "gpu-h")] == [
        "worker_crashed",
        "activated",
        "activated",
        "activated",
    ]
    for step, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert json.dumps(have, default=str) == json.dumps(want, default=str), f"step {step}"


def test_snapshot_reports_stuckable_tasks_without_orchestrator_parents() -> None:
    side = SimSide()
    side.add_task("travel_orchestrator")
    side.register("gpu-a")
    side.transition("gpu-a", "initializing", "pod_ready")
    assert side.claim("gpu-a") == 0
    (w,) = side.snapshot().workers
    assert w.running_count == 1 and w.oldest_running_started_at is not None
    assert w.oldest_stuckable_started_at is None


# --- the simulation as a whole ---------------------------------------------------------------------


def small_trace(n: int = 30, spacing: float = 20.0) -> Trace:
    tasks = tuple(TraceTask(f"t{i:03d}", 60.0 + i * spacing, 90.0) for i in range(n))
    return Trace("small", tasks, 60.0 + n * spacing + 60.0)


def test_a_run_completes_every_task_and_is_reproducible() -> None:
    settings = defaults()
    first = Simulation(small_trace(), plan, settings, seed=3).run()
    again = Simulation(small_trace(), plan, settings, seed=3).run()
    assert first.tasks_complete == first.tasks_total == 30
    assert first.violations == []
    assert first.metrics() == again.metrics()
    assert first.spawns >= 1 and first.cost_usd > 0
    # Scaled back to zero once the queue emptied (MIN_ACTIVE_GPUS=0 by default).
    assert first.samples[-1].pods == 0
    other = Simulation(small_trace(), plan, settings, seed=4).run()
    assert other.metrics() != first.metrics()


def test_a_restart_loses_in_flight_steps_and_the_next_process_repairs_them() -> None:
    settings = defaults()
    trace = Trace("one", (TraceTask("t0", 10.0, 60.0),), 100.0)
    sim = Simulation(trace, plan, settings, seed=1)
    # The wake-up tick at ~10.1 s spawns; the create call lands at ~11.1 s. Kill the process before.
    sim.restarts = [10.5]
    result = sim.run()
    assert result.counters["restarts"] == 1
    rows = list(sim.db.workers.values())
    # The first intent row never got a pod: marked terminated after the grace (NO_POD_CREATED).
    first = rows[0]
    assert first.status == "terminated" and first.status_reason == Reason.NO_POD_CREATED.value
    assert Meta.RUNPOD_ID not in first.metadata
    assert result.tasks_complete == 1 and result.violations == []
    # The new process waited for the dead one's lease to expire before its first tick.
    # (Its last renewal was the tick at 10 s, the poll that coincides with the task's arrival.)
    assert sim._down_until >= 10.0 + float(settings.lease_ttl_sec)


def test_promotion_comes_at_the_first_tick_after_a_heartbeat_that_follows_the_start() -> None:
    """The heartbeat only records ``last_heartbeat``; the policy's Promote, applied by a tick, promotes."""
    sim = Simulation(small_trace(6), plan, defaults(), seed=2)
    beats: dict[str, list[float]] = {}
    ticks: list[float] = []
    heartbeat, tick = sim.db.heartbeat, sim.tick

    def recording_heartbeat(worker_id: str, status: str = "active") -> dict[str, Any]:
        beats.setdefault(worker_id, []).append(sim.clock.now)
        return heartbeat(worker_id, status)

    def recording_tick() -> Any:
        ticks.append(sim.clock.now)
        return tick()

    sim.db.heartbeat = recording_heartbeat  # type: ignore[method-assign]
    sim.tick = recording_tick  # type: ignore[method-assign]
    result = sim.run()
    assert result.tasks_complete == 6 and result.violations == []
    promoted = [w for w in sim.db.workers.values() if w.activated_at is not None]
    assert promoted and result.actions.get("promote:first_heartbeat") == len(promoted)
    for w in promoted:
        assert w.boot_outcome == "activated"
        started = datetime.fromisoformat(w.metadata[Meta.PROCESS_STARTED_AT])
        started_at = (started - EPOCH).total_seconds()
        first = min(t for t in beats[w.id] if t >= started_at)
        # Not at the heartbeat itself: at the first tick after it (the Promote step takes no time).
        activated = w.activated_at
        assert activated is not None and activated > first
        assert activated in ticks
        assert not any(first <= t < activated for t in ticks)


def test_a_crashed_process_is_reported_by_its_guardian_and_failed_for_it() -> None:
    """A crash leaves the guardian beating once more with ``crashed``: the task is requeued with its
    attempt counted by the app's heartbeat function, and the worker failed for ``worker_crashed``."""
    tasks = tuple(TraceTask(f"t{i}", 10.0, 600.0) for i in range(2))
    sim = Simulation(Trace("crash", tasks, 1200.0), plan, defaults(), seed=5)
    crashed: list[str] = []

    def crash_first_runner() -> None:
        for pod in sim.provider.alive_pods():
            proc = pod.process
            if proc is not None and proc.task is not None and not crashed:
                crashed.append(proc.worker_id)
                proc.crash()
        if not crashed:
            sim.clock.schedule(5.0, crash_first_runner)

    sim.clock.schedule(5.0, crash_first_runner)
    result = sim.run()
    assert crashed and result.counters["worker_crashes"] == 1
    row = sim.db.workers[crashed[0]]
    assert row.reported_status == "crashed" and row.status == "terminated"
    assert result.actions.get("fail_worker:worker_crashed") == 1
    assert "fail_worker:heartbeat_stale" not in result.actions
    assert result.tasks_complete == 2 and result.violations == []
    assert sorted(t.attempts for t in sim.db.tasks.values()) == [0, 1]


def test_a_draining_worker_holding_a_task_cannot_be_moved_to_terminating() -> None:
    clock = Clock()
    db = SimDB(clock, 3)
    db.insert_task("t0", "gen", 60.0)
    db.register_worker("gpu-a", GPU, {})
    db.transition_worker("gpu-a", "initializing", "pod_ready")
    assert db.claim("gpu-a") is not None
    db.transition_worker("gpu-a", "active", "first_heartbeat")
    db.transition_worker("gpu-a", "draining", "idle_timeout")
    with pytest.raises(errors.IllegalTransition):
        db.transition_worker("gpu-a", "terminating", "drained")
    assert db.claim("gpu-a") is None  # and it gets nothing new meanwhile
    assert db.complete("gpu-a", "t0")
    assert db.transition_worker("gpu-a", "terminating", "drained").status == "terminating"


def test_ticks_wake_on_new_tasks_only_when_the_transport_listens() -> None:
    settings = defaults()
    trace = Trace("one", (TraceTask("t0", 7.0, 60.0),), 400.0)
    listening = Simulation(trace, plan, settings, seed=1)
    listening.run()
    polling = Simulation(trace, plan, settings, wake_on_tasks=False, seed=1)
    polling.run()
    first_spawn = [min(w.created_at for w in s.db.workers.values()) for s in (listening, polling)]
    assert first_spawn[0] == pytest.approx(7.1)  # NOTIFY -> tick
    assert settings.orchestrator_poll_sec > 7.1
    assert first_spawn[1] == pytest.approx(float(settings.orchestrator_poll_sec))  # the next poll


# --- traces --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(traces.GENERATORS))
def test_traces_are_seeded_and_round_trip_through_their_files(name: str, tmp_path: Path) -> None:
    trace = traces.generate(name)
    assert traces.generate(name).tasks == trace.tasks
    assert traces.generate(name, seed=99).tasks != trace.tasks
    path = tmp_path / f"{name}.csv"
    traces.save(trace, path)
    assert path.stat().st_size < 1_000_000
    loaded = traces.load(path)
    assert loaded.tasks == trace.tasks and loaded.name == name and loaded.duration == trace.duration
    assert 6 * 3600 <= trace.duration <= 24 * 3600
    assert all(0 <= t.at < trace.duration for t in trace.tasks)


def test_heavy_tail_mixes_short_tasks_and_long_orchestrator_parents() -> None:
    trace = traces.generate("heavy_tail")
    parents = [t for t in trace.tasks if "_orchestrator" in t.task_type]
    short = [t for t in trace.tasks if "_orchestrator" not in t.task_type]
    assert 0.05 < len(parents) / len(trace.tasks) < 0.2
    assert all(1000 <= t.duration <= 1400 for t in parents)
    assert all(60 <= t.duration <= 180 for t in short)


# --- the competing policies ------------------------------------------------------------------------


def test_original_spawns_one_pod_per_tick_and_serverless_waits_for_queue_delay() -> None:
    by_name = {s.name: s for s in specs()}
    side = SimSide()
    for _ in range(6):
        side.add_task("gen")
    snap = side.snapshot()
    now = snap.now
    assert now is not None
    # The threshold rule alone (the wait target off), which the old system's rule is compared with.
    ours = plan(snap, [], by_name["ours"].settings.replace(WAIT_TARGET_SEC=0), now)
    old = by_name["original"].plan(snap, [], by_name["original"].settings, now)
    assert len(ours.of_kind(Spawn)) == 2  # ceil(6 / TASKS_PER_GPU_THRESHOLD=3)
    assert len(old.of_kind(Spawn)) == 1  # sequential, though it wants 6
    serverless = by_name["serverless"]
    # The oldest task has waited 6 s (> 4 s): one spawn per waiting task.
    assert len(serverless.plan(snap, [], serverless.settings, now).of_kind(Spawn)) == 6
    fresh = SimSide()
    fresh.add_task("gen")
    fresh_snap = fresh.snapshot()
    assert fresh_snap.now is not None
    fresh.clock.run_until(fresh.clock.now)  # waited 0 s: no spawn yet
    assert serverless.plan(fresh_snap, [], serverless.settings, fresh_snap.now).of_kind(Spawn) == []
    assert by_name["static"].settings.min_active_gpus == by_name["static"].settings.max_active_gpus


def test_worker_states_of_the_sim_are_the_models() -> None:
    # The in-memory rows use the same vocabulary the snapshot parser accepts.
    side = SimSide()
    side.register("gpu-" + uuid.uuid4().hex[:6])
    (w,) = side.snapshot().workers
    assert w.status is WorkerState.SPAWNING


def test_the_busy_rule_candidate_counts_each_running_task_as_a_gpu() -> None:
    side = SimSide()
    for _ in range(5):
        side.add_task("gen")
    side.register("gpu-a")
    side.transition("gpu-a", "initializing", "pod_ready")
    side.claim("gpu-a")
    snap = side.snapshot()  # 1 running, 4 claimable
    assert snap.now is not None
    settings = defaults().replace(WAIT_TARGET_SEC=0)  # the threshold rule, which the candidate transforms
    assert plan(snap, [], settings, snap.now).desired == 2  # ceil((4 + 1) / 3)
    assert busy_workers_count_themselves(snap, [], settings, snap.now).desired == 3  # 1 + ceil(4 / 3)
