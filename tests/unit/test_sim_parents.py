"""Parent tasks in the simulator run as the real worker runs them (docs/policy.md, "Method").

banodoco/Reigh-Worker ``worker.py``: a worker that ran a parent (``*_orchestrator``) keeps it In
Progress and claims on (the parent is run again "only when nothing is claimable and no child is
unfinished"); the app completes the parent with its last child. The simulator models the children as
a chain of ``travel_segment`` tasks carrying the rest of the parent's duration, created at once, each
``dependant_on`` the one before.
"""

from __future__ import annotations

import itertools

from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.studies.fleet import ResumeModel, SimWorker
from orchestrator.studies.simulation import CHILD_TYPE, SEGMENT_SEC, Simulation
from orchestrator.studies.traces import Trace, TraceTask


def test_a_parent_is_held_while_its_segments_run_one_after_the_other_then_completes_with_the_last() -> None:
    parent = TraceTask("p0", 30.0, SimWorker.PARENT_RUN_SEC + 3 * SEGMENT_SEC, "travel_orchestrator")
    shorts = tuple(TraceTask(f"s{i}", 200.0 + 30.0 * i, 60.0, "generate_video") for i in range(4))
    sim = Simulation(
        Trace("parents", (parent, *shorts), 3600.0), plan, defaults(), seed=3, resume=ResumeModel()
    )
    held_while_working: list[str] = []
    original = sim.on_claim

    def watch(worker, task):  # type: ignore[no-untyped-def]
        # A worker claiming while the parent is In Progress under it: it serves the queue meanwhile.
        p = sim.db.tasks["p0"]
        if p.status == "In Progress" and p.worker_id == worker.worker_id and task.id != "p0":
            held_while_working.append(task.id)
        original(worker, task)

    sim.on_claim = watch  # type: ignore[method-assign]
    result = sim.run()

    assert result.violations == [] and result.tasks_complete == result.tasks_total
    segments = sorted(t for t in sim.db.tasks if t.startswith("p0-"))
    assert segments == ["p0-s1", "p0-s2", "p0-s3"]
    rows = [sim.db.tasks[t] for t in segments]
    assert all(r.task_type == CHILD_TYPE and abs(r.duration - SEGMENT_SEC) < 1e-6 for r in rows)
    # All created at once, as Reigh's travel orchestrator creates them; run one after the other, each
    # claimable (and counted as an arrival) only when the one before it completed.
    assert len({r.created_at for r in rows}) == 1 and rows[0].ready_at == rows[0].created_at
    for before, after in itertools.pairwise(rows):
        assert before.processed_at is not None and after.ready_at == before.processed_at
        assert after.first_started_at is not None and after.first_started_at >= before.processed_at
    # Completed with its last segment, not before; and its worker took other work while holding it.
    p = sim.db.tasks["p0"]
    assert p.status == "Complete" and p.processed_at == rows[-1].processed_at
    assert held_while_working


def test_a_parent_run_again_after_a_requeue_creates_no_second_chain() -> None:
    parent = TraceTask("p0", 30.0, SimWorker.PARENT_RUN_SEC + 2 * SEGMENT_SEC, "travel_orchestrator")
    sim = Simulation(Trace("requeue", (parent,), 3000.0), plan, defaults(), seed=3, resume=ResumeModel())
    sim.start()
    sim.clock.run_until(400.0)
    holder = [w for w in sim.provider.alive_pods() if w.process is not None]
    assert sim.db.tasks["p0"].status == "In Progress" and holder
    # Its holder's process dies: the daemon requeues the parent and another worker runs it again.
    for pod in holder:
        assert pod.process is not None
        pod.process.crash()
    sim.clock.run_until(3000.0)
    result = sim.result()
    assert [t for t in sim.db.tasks if t.startswith("p0-")] == ["p0-s1", "p0-s2"]
    assert sim.db.tasks["p0"].status == "Complete" and result.tasks_complete == result.tasks_total


def test_a_chain_still_running_at_the_horizon_is_finished_and_billed_not_counted_lost() -> None:
    parent = TraceTask("p0", 30.0, SimWorker.PARENT_RUN_SEC + 4 * SEGMENT_SEC, "travel_orchestrator")
    trace = Trace("late", (parent,), 60.0)
    result = Simulation(trace, plan, defaults(), seed=3, resume=ResumeModel(), settle_sec=60.0).run()
    assert result.violations == [] and result.tasks_complete == result.tasks_total == 5
    assert result.horizon > 60.0 + 60.0 + 4 * SEGMENT_SEC


def test_a_chain_created_at_once_arrives_one_segment_at_a_time() -> None:
    # Ten segments created together: the snapshot's arrival counts see one claimable task, then one
    # more as each completes, so the wait target's rate estimate does not jump by ten.
    parent = TraceTask("p0", 30.0, SimWorker.PARENT_RUN_SEC + 10 * SEGMENT_SEC, "travel_orchestrator")
    sim = Simulation(Trace("chain", (parent,), 60.0), plan, defaults(), seed=3, resume=ResumeModel())
    sim.start()
    while sim.db.tasks.get("p0-s1") is None:
        assert sim.clock.now < 1200.0, "the parent never ran"
        sim.clock.run_until(sim.clock.now + 1.0)
    snap = sim.db.snapshot()
    assert dict(snap.arrivals)[600.0] == 2  # the parent and its first segment
    assert snap.queue.claimable <= 1 and snap.queue.queued_total >= 9  # nine wait on a predecessor
    sim.clock.run_until(sim.clock.now + SEGMENT_SEC + 30.0)
    done = sum(1 for k in range(1, 11) if sim.db.tasks[f"p0-s{k}"].status == "Complete")
    assert done >= 1 and dict(sim.db.snapshot().arrivals)[600.0] == 2 + done


def test_a_dead_lettered_segment_fails_its_chain_and_nothing_is_left_billing() -> None:
    # The daemon dead-letters a segment (its worker died on its last attempt): the app's cascade fails
    # the parent and the later segments, which would otherwise wait for ever, and the parent with them.
    parent = TraceTask("p0", 30.0, SimWorker.PARENT_RUN_SEC + 3 * SEGMENT_SEC, "travel_orchestrator")
    settings = defaults().replace(MAX_TASK_ATTEMPTS=1)
    sim = Simulation(Trace("dead", (parent,), 1800.0), plan, settings, seed=3, resume=ResumeModel())
    sim.start()
    while (first := sim.db.tasks.get("p0-s1")) is None or first.status != "In Progress":
        assert sim.clock.now < 1200.0, "the first segment never ran"
        sim.clock.run_until(sim.clock.now + 1.0)
    [runner] = [p for p in sim.provider.alive_pods() if p.process is not None and p.process.task is first]
    assert runner.process is not None
    runner.process.crash()
    sim.clock.run_until(sim.clock.now + 3000.0)
    result = sim.result()

    assert sim.db.tasks["p0-s1"].status == "Failed" and "dead-lettered" in (first.error_message or "")
    # The parent fails by the cascade, or dead-lettered itself when its holder ran the segment (then
    # the cascade runs from it).
    for task_id in ("p0", "p0-s2", "p0-s3"):
        row = sim.db.tasks[task_id]
        assert row.status == "Failed", task_id
        if row.attempts == 0:
            assert row.error_message in {f"Cascaded failed from related task {t}" for t in ("p0", "p0-s1")}
    assert result.violations == []
    assert [p for p in sim.provider.alive_pods() if p.gpu_spans[-1][1] is None] == []  # nothing bills a GPU
    assert sim.db.running_total == 0 and sim.db.waiting_total == 0 and sim.db.claimable == 0
