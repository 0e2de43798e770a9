"""A worker that holds nothing but parent tasks waiting on their children is let go like an idle one.

The real worker keeps a parent (``travel_orchestrator``) In Progress under its own id while the parent's
children run, and the app completes the parent with its last child whoever holds it (banodoco/Reigh-Worker
``worker.py``; banodoco/reigh-app ``complete_task/orchestratorCore.ts``). Held for the parent's life, a
worker whose children could not run (their user out of credits, a segment cancelled from the dashboard)
billed its GPU for as long as they waited. A parent still in its own run (which creates the children) or
one only its worker's re-run can complete is not let go. These are the policy's side (drained when idle,
then the parents let go, then ended), the simulator's database doing what the SQL does
(``migrations/20261213000100_parents_need_no_worker.sql``, checked against PostgreSQL in
``tests/integration/test_parent_release_sql.py``), and the simulator with long parent runs.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.actions import Drain, ReleaseParents, StopPod, TerminatePod
from orchestrator.core.config import Settings, defaults
from orchestrator.core.evidence import RunningTask
from orchestrator.core.observed import Worker
from orchestrator.core.policy import plan
from orchestrator.core.states import Reason, WorkerState
from orchestrator.studies.clock import Clock
from orchestrator.studies.fleet import ResumeModel, SimWorker
from orchestrator.studies.memdb import SimDB
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask
from tests.unit.test_policy import ago, pods_for, run, settings, snap, worker

HOURS_4 = 4 * 3600


def holding(
    w: Worker, *tasks: tuple[str, str, float], live: int | None = 1, child_ago: float | None = None
) -> Worker:
    """``w`` holding (id, type, started seconds ago) In Progress; each parent with ``live`` unfinished
    children, the newest created ``child_ago`` seconds ago (default: as the parent started)."""

    def task(task_id: str, kind: str, since: float) -> RunningTask:
        if "_orchestrator" not in kind:
            return RunningTask(task_id, kind, ago(since))
        newest = None if not live else ago(since if child_ago is None else child_ago)
        return RunningTask(task_id, kind, ago(since), children_live=live, last_child_at=newest)

    return replace(
        w,
        running_task_ids=tuple(t[0] for t in tasks),
        running_count=len(tasks),
        running_tasks=tuple(task(*t) for t in tasks),
    )


def stuck_holder(status: str = "active", **meta: object) -> Worker:
    """Ran its parent 4 hours ago; the chain's children cannot run; nothing else since."""
    return holding(
        worker(
            "gpu-a", status, created=HOURS_4 + 600, activated=HOURS_4 + 300, completed=HOURS_4 + 100, **meta
        ),
        ("p1", "travel_orchestrator", HOURS_4),
    )


@pytest.mark.parametrize("cfg", [settings(), defaults()], ids=["threshold_rule", "defaults"])
def test_an_idle_worker_holding_only_a_waiting_parent_is_drained_then_lets_it_go_then_ends(
    cfg: Settings,
) -> None:
    first = run(snap([stuck_holder()]), pods_for([stuck_holder()]), cfg)
    assert first.desired == 0
    [drain] = first.of_kind(Drain)
    assert drain.worker_id == "gpu-a" and drain.reason in (Reason.IDLE, Reason.OVERCAPACITY)

    drained = stuck_holder("draining", drain_reason="idle_timeout")
    second = run(snap([drained]), pods_for([drained]), cfg)
    assert second.of_kind(ReleaseParents) == [ReleaseParents(reason=Reason.PARENTS_ONLY, worker_id="gpu-a")]
    # The database would refuse its end while it holds the parent: nothing else is asked this tick.
    assert not second.of_kind(TerminatePod) and not second.of_kind(StopPod)

    # Let go, it holds nothing: it ends as any drained idle worker (into the pool under the defaults).
    empty = worker(
        "gpu-a", "draining", created=HOURS_4 + 600, activated=HOURS_4 + 300, completed=HOURS_4 + 100,
        drain_reason="idle_timeout",
    )  # fmt: skip
    third = run(snap([empty]), pods_for([empty]), cfg)
    assert [a.worker_id for a in [*third.of_kind(TerminatePod), *third.of_kind(StopPod)]] == ["gpu-a"]
    assert not third.of_kind(ReleaseParents)


@pytest.mark.parametrize(
    ("cfg", "into_run_sec"),
    [(settings(), 15), (settings(), 40), (settings(), 900), (defaults(), 150), (defaults(), 3 * 3600)],
)
def test_a_worker_in_its_parents_own_run_is_busy(cfg: Settings, into_run_sec: float) -> None:
    # The handler is still running (reading its inputs, maybe a vision model): no child yet. Ended now,
    # the parent would be left with no worker and no child, for the app to fail a day later.
    running_it = holding(
        worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", into_run_sec), live=0
    )
    assert not run(snap([running_it]), pods_for([running_it]), cfg).of_kind(Drain)
    # Drained all the same (the operator asked, say): it keeps the parent until its run is over.
    asked = holding(
        worker("gpu-a", "draining", completed=HOURS_4, drain_reason="operator_request"),
        ("p1", "travel_orchestrator", into_run_sec),
        live=0,
    )
    assert not run(snap([asked]), pods_for([asked]), cfg).of_kind(ReleaseParents)


@pytest.mark.parametrize("cfg", [settings(), defaults()], ids=["threshold_rule", "defaults"])
def test_a_worker_whose_parent_made_a_child_lately_is_not_let_go(cfg: Settings) -> None:
    # Its run made a child a minute ago and may pause between children (a vision model per segment):
    # let go in that pause, the chain would stay short and the app fail the parent.
    making = holding(
        worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", 300), live=2, child_ago=60
    )
    assert cfg.gpu_idle_timeout_sec > 60
    assert not run(snap([making]), pods_for([making]), cfg).of_kind(Drain)
    drained = holding(
        worker("gpu-a", "draining", completed=HOURS_4, drain_reason="operator_request"),
        ("p1", "travel_orchestrator", 300),
        live=2,
        child_ago=60,
    )
    assert not run(snap([drained]), pods_for([drained]), cfg).of_kind(ReleaseParents)


@pytest.mark.parametrize("idle_timeout", [0, 60])
@pytest.mark.parametrize("plain", [True, False], ids=["threshold_rule", "defaults"])
def test_a_low_idle_timeout_still_waits_out_a_parents_run(idle_timeout: int, plain: bool) -> None:
    """GPU_IDLE_TIMEOUT_SEC may be set to 0 by a user who would rather not pay for idle GPUs. A parent
    claimed again after its holder died has its dead holder's children still queued, so it counts as
    waiting from its first tick while its re-run has yet to make the missing ones; and a first run may
    pause between children. Let go within seconds, the pod took the run with it and the chain stayed
    short. Such a holder is let go only after PARENT_RELEASE_MIN_SEC (600 s by default) from its
    parents' start and newest child."""
    cfg = (settings if plain else defaults().replace)(gpu_idle_timeout_sec=idle_timeout)
    for started, child in ((120, HOURS_4), (HOURS_4, 90)):
        rerun = holding(worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", started), live=3,
                        child_ago=child)  # fmt: skip
        assert not run(snap([rerun]), pods_for([rerun]), cfg).of_kind(Drain), (started, child)
        drained = replace(rerun, status=WorkerState.DRAINING)
        assert not run(snap([drained]), pods_for([drained]), cfg).of_kind(ReleaseParents), (started, child)
    settled = holding(worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", 700), live=3,
                      child_ago=650)  # fmt: skip
    assert [a.worker_id for a in run(snap([settled]), pods_for([settled]), cfg).of_kind(Drain)] == ["gpu-a"]
    drained = replace(settled, status=WorkerState.DRAINING)
    assert [a.worker_id for a in run(snap([drained]), pods_for([drained]), cfg).of_kind(ReleaseParents)] == [
        "gpu-a"
    ]


def test_a_child_made_a_minute_ago_keeps_a_long_held_parents_worker() -> None:
    # Held four hours (a re-run making the rest of a chain a dead holder left short, say): its newest
    # child, a minute old, is what says the run may still be making children.
    busy = holding(
        worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", HOURS_4), live=3, child_ago=60
    )
    for cfg in (settings(), defaults()):
        assert not run(snap([busy]), pods_for([busy]), cfg).of_kind(Drain)


def test_a_parent_waiting_for_its_workers_rerun_keeps_the_worker() -> None:
    # Every child done, the app did not complete the parent (children of a type it does not count):
    # the real worker runs it again when nothing is claimable, and completes it. Let go, nobody would.
    rerun = holding(worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", HOURS_4), live=0)
    assert not run(snap([rerun]), pods_for([rerun]), settings()).of_kind(Drain)


def test_a_drained_worker_running_an_ordinary_task_beside_a_parent_keeps_both() -> None:
    busy = holding(
        worker("gpu-a", "draining", completed=HOURS_4, drain_reason="overcapacity"),
        ("p1", "travel_orchestrator", HOURS_4),
        ("t1", "travel_segment", 30),
        child_ago=HOURS_4,
    )
    result = run(snap([busy]), pods_for([busy]), settings())
    assert not result.of_kind(ReleaseParents)
    assert not result.of_kind(TerminatePod) and not result.of_kind(StopPod)


def test_the_operators_termination_of_a_holder_is_honoured() -> None:
    # `orchestrator workers terminate` on an active worker holding a stuck chain's parent: drained, then
    # the parent let go, then terminated (not pooled: the operator asked for an end).
    asked = {"terminate_requested_at": ago(120)}
    first = run(snap([stuck_holder(**asked)]), pods_for([stuck_holder()]), settings())
    assert [(a.worker_id, a.reason) for a in first.of_kind(Drain)] == [("gpu-a", Reason.OPERATOR_REQUEST)]
    draining = stuck_holder("draining", drain_reason="operator_request", **asked)
    second = run(snap([draining]), pods_for([draining]), defaults())
    assert [a.worker_id for a in second.of_kind(ReleaseParents)] == ["gpu-a"]
    gone = worker("gpu-a", "draining", completed=30, drain_reason="operator_request", **asked)
    third = run(snap([gone]), pods_for([gone]), defaults())
    assert [a.worker_id for a in third.of_kind(TerminatePod)] == ["gpu-a"] and not third.of_kind(StopPod)


def test_a_malformed_child_count_is_skipped_and_leaves_the_worker_busy() -> None:
    with pytest.raises(ValueError, match="children_live"):
        RunningTask.from_json({"id": "p1", "task_type": "travel_orchestrator", "children_live": "many"})
    parsed = RunningTask.from_json({"id": "p1", "task_type": "travel_orchestrator", "children_live": 2})
    assert (
        parsed.waiting
        and not RunningTask.from_json({"id": "t", "task_type": "x", "children_live": 2}).waiting
    )


# --- the simulator: its database as the migration, and parents whose own run is long ---------------


def _db_with_chain() -> tuple[SimDB, Clock]:
    """Worker w holds parent p (a travel orchestrator) whose two segments wait, the second on the first."""
    clock = Clock()
    db = SimDB(clock)
    db.register_worker("w", "gpu", {})
    for to in ("initializing", "active"):
        db.transition_worker("w", to, "test", None)
    db.insert_task("p", "travel_orchestrator", 60.0)
    assert db.claim("w") is not None
    db.insert_task("s1", "travel_segment", 30.0, parent="p")
    db.insert_task("s2", "travel_segment", 30.0, after="s1", parent="p")
    return db, clock


def test_the_simulators_release_keeps_a_waiting_parent_in_progress_with_no_worker() -> None:
    db, clock = _db_with_chain()
    [held] = db.snapshot().workers[0].running_tasks
    assert (held.children_live, held.last_child_at is not None) == (2, True)
    assert db.release_parents("w") == {"released": [], "kept": ["p"]}  # active: it keeps its parents
    db.transition_worker("w", "draining", "idle_timeout", None)
    assert db.release_parents("w") == {"released": ["p"], "kept": []}
    parent = db.tasks["p"]
    assert (parent.status, parent.worker_id, parent.attempts) == ("In Progress", None, 0)
    snapshot = db.snapshot()
    [w] = snapshot.workers
    # Not counted as a task without a worker either: it waits on its children (no requeue is planned).
    assert w.running_count == 0 and snapshot.queue.running == 0 and snapshot.queue.unowned_running == 0
    # The children still run (on another worker); the app completes the parent with the last of them.
    db.register_worker("x", "gpu", {})
    for to in ("initializing", "active"):
        db.transition_worker("x", to, "test", None)
    for expected in ("s1", "s2"):
        row = db.claim("x")
        assert row is not None and row.id == expected
        assert db.complete("x", row.id)
    assert db.complete("x", "p")
    assert db.tasks["p"].status == "Complete" and db.snapshot().queue.unowned_running == 0
    # A parent with no live child is kept, however its worker moves.
    db.insert_task("q", "join_clips_orchestrator", 10.0)
    assert db.claim("x") is not None
    db.transition_worker("x", "draining", "idle_timeout", None)
    clock.run_until(clock.now + 10)
    assert db.release_parents("x") == {"released": [], "kept": ["q"]}


def test_the_simulators_unowned_requeue_leaves_a_waiting_parent_alone() -> None:
    db, clock = _db_with_chain()
    db.transition_worker("w", "draining", "idle_timeout", None)
    db.release_parents("w")
    clock.run_until(clock.now + 10_000)
    assert db.requeue_unowned_tasks(60.0, "task_without_worker") == {"requeued": [], "failed": []}
    assert db.snapshot().queue.unowned_running == 0
    # Its chain over and nothing completed it (an app that does not count these children): abandoned.
    db.register_worker("x", "gpu", {})
    for to in ("initializing", "active"):
        db.transition_worker("x", to, "test", None)
    for _ in range(2):
        row = db.claim("x")
        assert row is not None and db.complete("x", row.id)
    assert db.snapshot().queue.unowned_running == 1
    assert db.requeue_unowned_tasks(60.0, "task_without_worker") == {"requeued": ["p"], "failed": []}


@pytest.mark.parametrize(
    ("cfg", "run_sec"), [(settings(), 60.0), (defaults(), 600.0)], ids=["threshold_rule", "defaults"]
)
def test_a_parent_whose_own_run_is_long_completes_in_the_simulator(
    monkeypatch: pytest.MonkeyPatch, cfg: Settings, run_sec: float
) -> None:
    """One travel job on an empty queue whose own run (before it creates its children) takes ``run_sec``:
    longer than GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC, or than the wait target's release time. Taken for a
    waiting parent, its worker was drained and ended mid-run and the parent stranded with no child."""
    monkeypatch.setattr(SimWorker, "PARENT_RUN_SEC", run_sec)
    trace = Trace("one-parent", (TraceTask("p1", 30.0, run_sec + 240.0, "travel_orchestrator"),), 1800.0)
    sim = Simulation(trace, plan, cfg, seed=1, resume=ResumeModel(failure_share=0.0), settle_sec=1800)
    sim.run()
    assert sim.db.tasks["p1"].status == "Complete"
    assert [v.name for v in sim.invariants.violations] == []
