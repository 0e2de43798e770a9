"""The breaker counts what a worker proved, not what its first heartbeat claimed.

The real worker's heartbeat guardian is a process of its own that beats before the worker has loaded a
model or touched the GPU, so a worker that dies on its first real work reaches ``active`` first; and a
resumed pod was made from an earlier image. Neither is evidence that new pods work. Run with the daemon's
own ``plan()`` and executor in virtual time (the crash loop), and with the policy's snapshot builders.
"""

from __future__ import annotations

import pytest

from orchestrator.core.config import defaults
from orchestrator.core.limits import PROBATION_SEC, backoff_seconds
from orchestrator.core.observed import BootOutcome
from orchestrator.core.policy import plan
from orchestrator.core.states import BreakerState
from orchestrator.studies.fleet import ResumeModel, SimWorker
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask
from tests.unit.test_policy import GPU, ago, pods_for, run, snap, spawns, worker


def test_workers_that_die_after_their_first_heartbeat_trip_the_breaker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken worker whose process dies as soon as it starts work, after its heartbeat guardian's
    first beat (a model that does not load, a CUDA error: the real guardian is a separate process and
    beats before the worker has loaded anything), is promoted on that beat (boot outcome ``activated``,
    which resets the breaker), then failed as ``worker_crashed``. It claimed nothing, so no task's attempt
    limit bounds the loop either: every tick a replacement is spawned that dies the same way.

    Expected: after MAX_CONSECUTIVE_FAILURES workers in a row die without completing anything, spawning
    stops as for failed boots (then one probe at a time). Before the fix: 365 pods in five simulated
    hours for 3 queued tasks, none completed."""

    def dies_when_it_starts_work(self: SimWorker) -> None:
        self.crash()  # the guardian beats on, then reports `crashed`

    monkeypatch.setattr(SimWorker, "_claim", dies_when_it_starts_work)
    trace = Trace("broken-worker", tuple(TraceTask(f"t{i}", 30.0 + i, 60.0) for i in range(3)), 3600.0)
    cfg = defaults()
    sim = Simulation(trace, plan, cfg, seed=1, resume=ResumeModel(failure_share=0.0), settle_sec=0)
    result = sim.run()
    assert result.tasks_complete == 0
    # Before the breaker opens: the demand's first spawns and their replacements, at most twice
    # MAX_CONSECUTIVE_FAILURES; then one probe per open interval (doubling from twice the base to the
    # cap), each interval a lower bound on the time between two probes. Before the fix: 365 pods.
    probes, elapsed = 0, 0.0
    while elapsed < result.horizon:
        elapsed += backoff_seconds(cfg.spawn_backoff_base_sec, cfg.spawn_backoff_max_sec, probes + 1)
        probes += 1
    assert result.spawns <= 2 * cfg.max_consecutive_failures + probes, (
        f"{result.spawns} pods spawned for {result.tasks_total} tasks, "
        f"{result.counters['worker_crashes']} crashed after activation; actions: {result.actions}"
    )


def test_a_successful_resume_does_not_reset_the_breaker_on_failing_spawns() -> None:
    """Three new pods in a row failed their boot (say a broken image tag: the pool's stopped pods were
    made from the previous image and resume fine). A resume is not held back by the breaker, and its
    success is an ``ok`` outcome in ``recent_boots``, which ``limits.breaker`` counts back to: the
    breaker closes and the next tick spawns a full batch of new pods, each billing until it fails too
    (``SPAWNING_TIMEOUT_SEC``, 20 minutes, when the image never starts). Each resume of the pool buys
    another batch.

    Expected: a resume says nothing about whether new pods boot; the breaker still holds spawns back
    (open, or half-open with a single probe)."""
    boots = [
        BootOutcome("gpu-f1", GPU, "EU-RO-1", False, "init_failed", ago(120)),
        BootOutcome("gpu-f2", GPU, "EU-RO-1", False, "init_failed", ago(110)),
        BootOutcome("gpu-f3", GPU, "EU-RO-1", False, "init_failed", ago(100)),
        BootOutcome("gpu-p1", GPU, "EU-RO-1", True, "activated", ago(10), kind="resume", seconds=40.0),
    ]
    result = run(snap(claimable=12, boots=boots), [])
    assert result.breaker is not BreakerState.CLOSED, "a resume closed the breaker on failing spawns"
    assert len(spawns(result)) <= 1, [a.worker_id for a in spawns(result)]


def test_an_activation_counts_as_a_success_once_the_worker_completes_a_task_or_lives_out_probation() -> None:
    """Three failed boots, then a worker activated: while it has completed nothing and is on probation
    (activated less than PROBATION_SEC ago) its activation is no proof (it may die on its first work, as
    the three before may have), and it is the half-open breaker's one probe: no second beside it. Once it
    completes a task, or lives out its probation, the breaker closes. A worker let go healthy leaves the
    live list, and its activation counts again."""
    boots = [
        BootOutcome("gpu-f1", GPU, "EU-RO-1", False, "init_failed", ago(400)),
        BootOutcome("gpu-f2", GPU, "EU-RO-1", False, "init_failed", ago(390)),
        BootOutcome("gpu-f3", GPU, "EU-RO-1", False, "init_failed", ago(380)),
        BootOutcome("gpu-a", GPU, "EU-RO-1", True, "activated", ago(60), seconds=40.0),
    ]
    fresh = worker("gpu-a", created=100, activated=60)
    held = run(snap([fresh], claimable=12, boots=boots), pods_for([fresh]))
    assert held.breaker is BreakerState.HALF_OPEN, "an unproven activation closed the breaker"
    assert spawns(held) == [], "half-open: the activated probe is the one probe"
    proven = worker("gpu-a", created=100, activated=60, completed=10)
    assert run(snap([proven], claimable=12, boots=boots), pods_for([proven])).breaker is BreakerState.CLOSED
    # The same story, the activation PROBATION_SEC and a minute ago, the failures before it.
    earlier = PROBATION_SEC + 400
    boots_then = [
        *(
            BootOutcome(f"gpu-f{i}", GPU, "EU-RO-1", False, "init_failed", ago(earlier - i))
            for i in (1, 2, 3)
        ),
        BootOutcome("gpu-a", GPU, "EU-RO-1", True, "activated", ago(PROBATION_SEC + 60)),
    ]
    lived = worker("gpu-a", created=PROBATION_SEC + 100, activated=PROBATION_SEC + 60)
    assert (
        run(snap([lived], claimable=12, boots=boots_then), pods_for([lived])).breaker is BreakerState.CLOSED
    )
    assert run(snap([], claimable=12, boots=boots), []).breaker is BreakerState.CLOSED


def test_a_requeue_waits_for_the_ending_of_its_worker_in_flight() -> None:
    """One action per key is in flight at a time. A worker's requeue shares its key with the worker's
    ending: FailWorker ends the pod before it requeues, because the process may still write its tasks'
    status; a requeue run beside a termination still in flight could leave a task In Progress with no
    worker."""
    from orchestrator.core.actions import RequeueTasks, TerminatePod
    from orchestrator.core.states import Reason
    from orchestrator.loop.executor import action_key

    terminate = TerminatePod(
        reason=Reason.TERMINATE_RETRY, runpod_id="pod-a", pod_name="gpu-a", worker_id="gpu-a"
    )
    requeue = RequeueTasks(reason=Reason.REQUEUE_RETRY, worker_id="gpu-a")
    assert action_key(terminate) == action_key(requeue)
