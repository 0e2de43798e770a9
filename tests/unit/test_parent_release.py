"""A worker that holds nothing but parent tasks is let go like an idle one.

The real worker keeps a parent (``travel_orchestrator``) In Progress under its own id while the parent's
children run, and the app completes the parent with its last child whoever holds it (banodoco/Reigh-Worker
``worker.py``; banodoco/reigh-app ``complete_task/orchestratorCore.ts``). Held for the parent's life, a
worker whose children could not run (their user out of credits, a segment cancelled from the dashboard)
billed its GPU for as long as they waited. These are the policy's side (drained when idle, then the
parents let go, then ended) and the simulator's database doing what the SQL does
(``migrations/20261213000100_parents_need_no_worker.sql``, checked against PostgreSQL in
``tests/integration/test_parent_release_sql.py``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.actions import Drain, ReleaseParents, StopPod, TerminatePod
from orchestrator.core.config import defaults
from orchestrator.core.evidence import RunningTask
from orchestrator.core.observed import Worker
from orchestrator.core.states import Reason
from orchestrator.studies.clock import Clock
from orchestrator.studies.memdb import SimDB
from tests.unit.test_policy import ago, pods_for, run, settings, snap, worker

HOURS_4 = 4 * 3600


def holding(w: Worker, *tasks: tuple[str, str, float]) -> Worker:
    """``w`` holding (id, type, started seconds ago) In Progress."""
    return replace(
        w,
        running_task_ids=tuple(t[0] for t in tasks),
        running_count=len(tasks),
        running_tasks=tuple(RunningTask(i, kind, ago(since)) for i, kind, since in tasks),
    )


@pytest.mark.parametrize("cfg", [settings(), defaults()], ids=["threshold_rule", "defaults"])
def test_an_idle_worker_holding_only_a_parent_is_drained_then_lets_it_go_then_ends(cfg: object) -> None:
    # Ran its parent 4 hours ago; the chain's children cannot run; nothing claimable.
    held = holding(
        worker("gpu-a", created=HOURS_4 + 600, activated=HOURS_4 + 300, completed=HOURS_4 + 100),
        ("p1", "travel_orchestrator", HOURS_4),
    )
    first = run(snap([held]), pods_for([held]), cfg)  # type: ignore[arg-type]
    assert first.desired == 0
    [drain] = first.of_kind(Drain)
    assert drain.worker_id == "gpu-a" and drain.reason in (Reason.IDLE, Reason.OVERCAPACITY)

    drained = holding(
        worker(
            "gpu-a",
            "draining",
            created=HOURS_4 + 600,
            activated=HOURS_4 + 300,
            completed=HOURS_4 + 100,
            drain_reason="idle_timeout",
        ),
        ("p1", "travel_orchestrator", HOURS_4),
    )
    second = run(snap([drained]), pods_for([drained]), cfg)  # type: ignore[arg-type]
    assert second.of_kind(ReleaseParents) == [ReleaseParents(reason=Reason.PARENTS_ONLY, worker_id="gpu-a")]
    # The database would refuse its end while it holds the parent: nothing else is asked this tick.
    assert not second.of_kind(TerminatePod) and not second.of_kind(StopPod)

    # Let go, it holds nothing: it ends as any drained idle worker (into the pool under the defaults).
    empty = worker(
        "gpu-a", "draining", created=HOURS_4 + 600, activated=HOURS_4 + 300, completed=HOURS_4 + 100,
        drain_reason="idle_timeout",
    )  # fmt: skip
    third = run(snap([empty]), pods_for([empty]), cfg)  # type: ignore[arg-type]
    assert [a.worker_id for a in [*third.of_kind(TerminatePod), *third.of_kind(StopPod)]] == ["gpu-a"]
    assert not third.of_kind(ReleaseParents)


def test_a_holder_that_ran_its_parent_recently_is_not_drained() -> None:
    # Its parent was run 5 s ago (the children are just created): idle for less than even
    # GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC, as an ordinary worker that has just finished a task.
    cfg = settings()
    held = holding(worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", 5))
    assert cfg.gpu_overcapacity_idle_timeout_sec > 5
    result = run(snap([held]), pods_for([held]), cfg)
    assert not result.of_kind(Drain) and not result.of_kind(ReleaseParents)
    # Four hours on, with nothing else run, it is as idle as any worker would be.
    stale = holding(worker("gpu-a", completed=HOURS_4), ("p1", "travel_orchestrator", HOURS_4 - 60))
    assert [a.worker_id for a in run(snap([stale]), pods_for([stale]), cfg).of_kind(Drain)] == ["gpu-a"]


def test_a_drained_worker_running_an_ordinary_task_beside_a_parent_keeps_both() -> None:
    busy = holding(
        worker("gpu-a", "draining", completed=HOURS_4, drain_reason="overcapacity"),
        ("p1", "travel_orchestrator", HOURS_4),
        ("t1", "travel_segment", 30),
    )
    result = run(snap([busy]), pods_for([busy]), settings())
    assert not result.of_kind(ReleaseParents)
    assert not result.of_kind(TerminatePod) and not result.of_kind(StopPod)


def test_the_operators_termination_of_a_holder_is_honoured() -> None:
    # `orchestrator workers terminate` on an active worker that holds a parent: drained, then the
    # parent let go, then terminated (not pooled: the operator asked for an end).
    asked = {"terminate_requested_at": ago(120)}
    active = holding(worker("gpu-a", completed=30, **asked), ("p1", "travel_orchestrator", 200))
    first = run(snap([active]), pods_for([active]), settings())
    assert [(a.worker_id, a.reason) for a in first.of_kind(Drain)] == [("gpu-a", Reason.OPERATOR_REQUEST)]
    draining = holding(
        worker("gpu-a", "draining", completed=30, drain_reason="operator_request", **asked),
        ("p1", "travel_orchestrator", 200),
    )
    second = run(snap([draining]), pods_for([draining]), defaults())
    assert [a.worker_id for a in second.of_kind(ReleaseParents)] == ["gpu-a"]
    gone = worker("gpu-a", "draining", completed=30, drain_reason="operator_request", **asked)
    third = run(snap([gone]), pods_for([gone]), defaults())
    assert [a.worker_id for a in third.of_kind(TerminatePod)] == ["gpu-a"] and not third.of_kind(StopPod)


# --- the simulator's database: the migration's semantics ------------------------------------------


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


def test_the_simulators_release_keeps_the_parent_in_progress_with_no_worker() -> None:
    db, _ = _db_with_chain()
    assert db.release_parents("w") == {"released": ["p"]}
    parent = db.tasks["p"]
    assert (parent.status, parent.worker_id, parent.attempts) == ("In Progress", None, 0)
    snapshot = db.snapshot()
    [w] = snapshot.workers
    assert w.running_count == 0 and snapshot.queue.running == 0 and snapshot.queue.unowned_running == 1
    # The children still run; the app completes the parent with the last of them.
    for expected in ("s1", "s2"):
        row = db.claim("w")
        assert row is not None and row.id == expected
        assert db.complete("w", row.id)
    assert db.complete("w", "p")
    assert db.tasks["p"].status == "Complete" and db.snapshot().queue.unowned_running == 0


def test_the_simulators_requeue_lets_a_waiting_parent_go_and_requeues_the_rest() -> None:
    db, _ = _db_with_chain()
    db.insert_task("lonely", "join_clips_orchestrator", 10.0)  # a parent with no child yet
    assert db.claim("w") is not None and db.claim("w") is not None  # s1, then `lonely`
    answer = db.requeue_worker_tasks("w", "worker_crashed")
    assert answer == {"requeued": ["lonely", "s1"], "failed": [], "released": ["p"]}
    assert db.tasks["p"].status == "In Progress" and db.tasks["p"].attempts == 0
    # The app's crash heartbeat requeues every task alike (its own function, not ours).
    db2, _ = _db_with_chain()
    db2.heartbeat("w", "crashed")
    assert db2.tasks["p"].status == "Queued" and db2.tasks["p"].attempts == 1


def test_the_simulators_unowned_requeue_leaves_a_waiting_parent_alone() -> None:
    db, clock = _db_with_chain()
    db.release_parents("w")
    clock.run_until(clock.now + 10_000)
    assert db.requeue_unowned_tasks(60.0, "task_without_worker") == {"requeued": [], "failed": []}
    # Its chain over (the app failed to complete it, say), it is abandoned: requeued.
    for _ in range(2):
        row = db.claim("w")
        assert row is not None and db.complete("w", row.id)
    assert db.requeue_unowned_tasks(60.0, "task_without_worker") == {"requeued": ["p"], "failed": []}
