"""The breaker counts what a worker proved, not what its first heartbeat claimed.

The real worker's heartbeat guardian is a process of its own that beats before the worker has loaded a
model or touched the GPU, so a worker that dies on its first real work reaches ``active`` first; and a
resumed pod was made from an earlier image. Neither is evidence that new pods work. Run with the daemon's
own ``plan()`` and executor in virtual time (the crash loop), and with the policy's snapshot builders.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.core.config import Settings, defaults
from orchestrator.core.limits import PROBATION_SEC, backoff_seconds
from orchestrator.core.observed import BootOutcome, Worker
from orchestrator.core.policy import plan
from orchestrator.core.states import BreakerState
from orchestrator.studies.fleet import ResumeModel, SimWorker
from orchestrator.studies.memdb import TaskRow
from orchestrator.studies.simulation import Result as SimResult
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask
from tests.unit.test_policy import GPU, ago, pods_for, run, snap, spawns, summary, worker


def _broken_run(cfg: Settings, *, tasks: int, duration: float, horizon: float) -> SimResult:
    """The daemon's plan() in virtual time on ``tasks`` queued at once, a worker process that never
    completes one (the caller patches how it dies)."""
    trace = Trace("broken", tuple(TraceTask(f"t{i}", 30.0 + i, duration) for i in range(tasks)), horizon)
    sim = Simulation(trace, plan, cfg, seed=1, resume=ResumeModel(failure_share=0.0), settle_sec=0)
    result = sim.run()
    assert result.tasks_complete == 0
    return result


def _open_intervals(cfg: Settings, horizon: float) -> int:
    """How many of the breaker's open intervals (doubling from twice the base to the cap) fit in
    ``horizon``: each is a lower bound on the time between two rounds of probes."""
    rounds, elapsed = 0, 0.0
    while elapsed < horizon:
        elapsed += backoff_seconds(cfg.spawn_backoff_base_sec, cfg.spawn_backoff_max_sec, rounds + 1)
        rounds += 1
    return rounds


def _in_first_task(worker_id: str, activated: float) -> Worker:
    """A worker activated ``activated`` seconds ago that took its first task 5 s later and runs it still."""
    return worker(
        worker_id, created=activated + 40, activated=activated, running=("t1",), stuck_since=activated - 5
    )


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
    cfg = defaults()
    result = _broken_run(cfg, tasks=3, duration=60.0, horizon=3600.0)
    # Before the breaker opens: the demand's first spawns and their replacements, at most twice
    # MAX_CONSECUTIVE_FAILURES; then one probe per open interval (doubling from twice the base to the
    # cap), each interval a lower bound on the time between two probes. Before the fix: 365 pods.
    probes = _open_intervals(cfg, result.horizon)
    assert result.spawns <= 2 * cfg.max_consecutive_failures + probes, (
        f"{result.spawns} pods spawned for {result.tasks_total} tasks, "
        f"{result.counters['worker_crashes']} crashed after activation; actions: {result.actions}"
    )


def test_workers_that_die_late_in_their_first_task_trip_the_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken image whose worker process dies 12 minutes into every task, past the 10-minute
    probation (a model loaded on first use that does not fit, a decode at the end of a long generation
    that runs out of memory): the guardian reports ``crashed`` and the task goes back to the queue.

    Expected: such deaths count for the breaker whatever the worker's age (it died holding a task and
    never completed one), and a probe that lives out its probation without completing widens half-open
    (two probes, then four) instead of closing it, so spawning stops after the first batch and goes on
    a few pods an interval. Before: the breaker never counted them, and a probe alive 10 minutes closed
    it: 40 queued tasks bought 120 pods (every task's three attempts) in five simulated hours; 100
    bought 300 (42.5 USD)."""

    def dies_before_it_finishes(self: SimWorker, task: TaskRow) -> None:
        if self.alive and not self.hung and self.task is task:
            self.crash()

    monkeypatch.setattr(SimWorker, "_finish", dies_before_it_finishes)
    cfg = defaults()
    result = _broken_run(cfg, tasks=40, duration=720.0, horizon=5 * 3600.0)
    # The first batch (the cap), then at most two probes for each open interval (the probe, and the
    # one its probation lets start before it dies), each interval a lower bound on the time between two
    # rounds of probes.
    rounds = _open_intervals(cfg, result.horizon)
    assert result.spawns <= cfg.max_active_gpus + 2 * rounds, (
        f"{result.spawns} pods spawned for {result.tasks_total} tasks; bound {cfg.max_active_gpus + 2 * rounds}; "
        f"actions: {result.actions}"
    )
    assert result.actions.get("fail_worker:worker_crashed", 0) > 0, result.actions


def test_workers_that_die_idle_hours_in_do_not_hold_back_the_next_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A healthy image: the floor's three workers, never given a task, die idle two hours in (a slow
    leak; the guardian reports ``crashed``), and a burst of 40 tasks arrives 200 s later. A worker that
    dies idle past its probation says nothing of the image (no task of its own killed it): the burst
    staffs up as with no deaths. While such deaths counted, the breaker opened on them and held the
    burst to a probe at a time until a task completed: 10 workers serving after 1,720 s, not 260 s."""
    leak_at = 2 * 3600.0
    init = SimWorker.__init__

    def leaks(self: SimWorker, sim: Simulation, pod: object, worker_id: str) -> None:
        init(self, sim, pod, worker_id)  # type: ignore[arg-type]
        if sim.clock.now < 600:

            def die() -> None:
                if self.alive and self.task is None:
                    self.crash()

            sim.clock.schedule(leak_at - sim.clock.now, die)

    monkeypatch.setattr(SimWorker, "__init__", leaks)
    cfg = defaults().replace(min_active_gpus=3, warm_pool_max=0)
    burst = leak_at + 200
    trace = Trace(
        "leak", tuple(TraceTask(f"t{i}", burst + i * 0.5, 1500.0) for i in range(40)), burst + 3 * 3600
    )
    result = Simulation(trace, plan, cfg, seed=1, resume=ResumeModel(failure_share=0.0), settle_sec=0).run()
    assert result.counters["worker_crashes"] == 3 and result.tasks_complete == 40
    staffed = next(
        (s.t - burst for s in result.samples if s.t >= burst and s.serving >= cfg.max_active_gpus), None
    )
    # A boot and its checks take up to ~4 minutes in the simulator; a probe's probation alone is 600 s.
    assert staffed is not None and staffed < PROBATION_SEC, (
        f"{cfg.max_active_gpus} serving {staffed} s after the burst"
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


def test_an_activation_counts_as_a_success_once_the_worker_completes_a_task() -> None:
    """Three failed boots, then a worker activated: while it has completed nothing and is on probation
    (activated less than PROBATION_SEC ago) its activation is no proof (it may die on its first work, as
    the three before may have), and it is the half-open breaker's one probe: no second beside it. Once it
    completes a task the breaker closes. Alive past its probation with nothing completed, it has proved
    its boot, which answers failed boots as before; but where the newest failure is a worker whose
    process died (an image that fails late in its first task) it has proved nothing yet: the breaker
    stays half-open and lets one more probe start (two in all). A worker let go healthy leaves the live
    list, and its activation counts again."""
    boots = [
        BootOutcome("gpu-f1", GPU, "EU-RO-1", False, "init_failed", ago(400)),
        BootOutcome("gpu-f2", GPU, "EU-RO-1", False, "init_failed", ago(390)),
        BootOutcome("gpu-f3", GPU, "EU-RO-1", False, "init_failed", ago(380)),
        BootOutcome("gpu-a", GPU, "EU-RO-1", True, "activated", ago(60), seconds=40.0),
    ]
    fresh = worker("gpu-a", created=100, activated=60, running=("t1",))
    held = run(snap([fresh], claimable=12, boots=boots), pods_for([fresh]))
    assert held.breaker is BreakerState.HALF_OPEN, "an unproven activation closed the breaker"
    assert spawns(held) == [], "half-open: the activated probe is the one probe"
    # Failed this tick, it holds its place until the next snapshot shows its failure: no second probe.
    failing = replace(fresh, reported_status="crashed", reported_at=ago(2))
    dropped = run(snap([failing], claimable=12, boots=boots), pods_for([failing]))
    assert ("fail_worker", "gpu-a", "worker_crashed") in summary(dropped) and spawns(dropped) == []
    proven = worker("gpu-a", created=100, activated=60, completed=10)
    assert run(snap([proven], claimable=12, boots=boots), pods_for([proven])).breaker is BreakerState.CLOSED
    # The same story, the activation PROBATION_SEC and a minute ago, the failures before it (workers
    # that died in their first task), the probe still in its first task since its activation.
    earlier = PROBATION_SEC + 400
    boots_then = [
        *(
            BootOutcome(f"gpu-f{i}", GPU, "EU-RO-1", False, "worker_crashed", ago(earlier - i))
            for i in (1, 2, 3)
        ),
        BootOutcome("gpu-a", GPU, "EU-RO-1", True, "activated", ago(PROBATION_SEC + 60)),
    ]
    lived = _in_first_task("gpu-a", PROBATION_SEC + 60)
    boots_failed = [replace(b, reason="init_failed") if not b.ok else b for b in boots_then]
    booted = run(snap([lived], claimable=12, boots=boots_failed), pods_for([lived]))
    assert booted.breaker is BreakerState.CLOSED, "a worker past probation did not answer failed boots"
    widened = run(snap([lived], claimable=12, boots=boots_then), pods_for([lived]))
    assert widened.breaker is BreakerState.HALF_OPEN, "a probe that completed nothing closed the breaker"
    assert len(spawns(widened)) == 1, [a.worker_id for a in spawns(widened)]
    # Two such probes: four in all, two more may start; one of them booting, one more.
    lived_b = _in_first_task("gpu-b", PROBATION_SEC + 50)
    two = run(snap([lived, lived_b], claimable=12, boots=boots_then), pods_for([lived, lived_b]))
    assert two.breaker is BreakerState.HALF_OPEN and len(spawns(two)) == 2, [a.worker_id for a in spawns(two)]
    booting = worker("gpu-c", "spawning", created=30, activated=None)
    three = run(
        snap([lived, lived_b, booting], claimable=12, boots=boots_then), pods_for([lived, lived_b, booting])
    )
    assert len(spawns(three)) == 1, [a.worker_id for a in spawns(three)]
    lived_done = worker("gpu-a", created=PROBATION_SEC + 100, activated=PROBATION_SEC + 60, completed=30)
    assert (
        run(snap([lived_done], claimable=12, boots=boots_then), pods_for([lived_done])).breaker
        is BreakerState.CLOSED
    )
    assert run(snap([], claimable=12, boots=boots), []).breaker is BreakerState.CLOSED
    # Its process died: the app's heartbeat put its task back, and it is failed this tick. Neither a
    # proof that closes the breaker nor a probe that widens it.
    for word in ("crashed", "Crashed ", "ERROR"):  # read as the health check reads it
        crashed = replace(
            lived,
            running_task_ids=(),
            running_count=0,
            oldest_running_started_at=None,
            reported_status=word,
            reported_at=ago(2),
        )
        dying = run(snap([crashed], claimable=12, boots=boots_then), pods_for([crashed]))
        assert dying.breaker is BreakerState.HALF_OPEN and len(spawns(dying)) <= 1, (
            word,
            [a.worker_id for a in spawns(dying)],
        )
    # A probe failed this tick (its process reported dead) is no probe that lived: beside one that did,
    # one more probe, not two.
    dead_b = replace(lived_b, reported_status="crashed", reported_at=ago(2))
    gone = run(snap([lived, dead_b], claimable=12, boots=boots_then), pods_for([lived, dead_b]))
    assert ("fail_worker", "gpu-b", "worker_crashed") in summary(gone)
    assert gone.breaker is BreakerState.HALF_OPEN and len(spawns(gone)) == 1, [
        a.worker_id for a in spawns(gone)
    ]


def test_a_late_crashing_image_is_not_let_through_by_other_evidence() -> None:
    """Workers died in their first task; a probe is still in its first task, past its probation. Neither
    a failed boot newer than the deaths (some pods of a broken image fail their checks, the rest die
    late), nor a completion by a worker made before the deaths (a floor worker, or a pod resumed from
    the pool, running the image from before a change that broke new pods) shows the image works: the
    breaker stays half-open, and the probe's GPU type stays backed off. A completion by a worker made
    since does."""
    t0 = PROBATION_SEC + 400
    deaths = [
        BootOutcome(f"gpu-f{i}", GPU, "EU-RO-1", False, "worker_crashed", ago(t0 - i)) for i in (1, 2, 3)
    ]
    probe = _in_first_task("gpu-a", PROBATION_SEC + 60)
    boots = [*deaths, BootOutcome("gpu-a", GPU, "EU-RO-1", True, "activated", ago(PROBATION_SEC + 60))]
    init_failed = BootOutcome("gpu-b", GPU, "EU-RO-1", False, "init_failed", ago(90))
    mixed = run(snap([probe], claimable=12, boots=[*boots, init_failed]), pods_for([probe]))
    assert mixed.breaker is not BreakerState.CLOSED, "a failed boot among the deaths closed the breaker"
    assert [b.gpu_type for b in mixed.backoffs] == [GPU], "the probe ended its GPU type's back-off"
    old = worker("gpu-old", created=86400, activated=86000, completed=60)
    kept = run(snap([probe, old], claimable=12, boots=boots), pods_for([probe, old]))
    assert kept.breaker is BreakerState.HALF_OPEN, "an old worker's completion closed the breaker"
    new = worker("gpu-new", created=PROBATION_SEC + 120, activated=PROBATION_SEC + 90, completed=60)
    proven = run(snap([probe, new], claimable=12, boots=boots), pods_for([probe, new]))
    assert proven.breaker is BreakerState.CLOSED


@pytest.mark.parametrize("loss", ["heartbeat_stale", "pod_failed"])
def test_hosts_lost_on_probation_are_answered_by_a_probe_that_outlives_it(loss: str) -> None:
    """Three workers lost with their pods within their probation (a bad machine as likely as a bad
    image). A probe alive in its first task past its probation proves the boot, as before: waiting for
    its completion would slow a healthy fleet's ramp by a whole first task wherever hosts fail now and
    then."""
    losses = [
        BootOutcome(f"gpu-f{i}", GPU, "EU-RO-1", False, loss, ago(PROBATION_SEC + 400 - i)) for i in (1, 2, 3)
    ]
    probe = _in_first_task("gpu-a", PROBATION_SEC + 60)
    boots = [*losses, BootOutcome("gpu-a", GPU, "EU-RO-1", True, "activated", ago(PROBATION_SEC + 60))]
    result = run(snap([probe], claimable=12, boots=boots), pods_for([probe]))
    assert result.breaker is BreakerState.CLOSED and len(spawns(result)) > 2


def test_old_failures_do_not_hold_back_a_healthy_fleet() -> None:
    """Three workers died in their first task two days ago. A floor worker that idled past its probation before its first
    claim proved its boot as before, whatever it now runs; and once any worker has completed a task after
    the newest failure, the image is known to work: workers still in a long first task are no probes."""
    days = 2 * 86400
    boots = [
        *(
            BootOutcome(f"gpu-f{i}", GPU, "EU-RO-1", False, "worker_crashed", ago(days + i))
            for i in (1, 2, 3)
        ),
        BootOutcome("gpu-floor", GPU, "EU-RO-1", True, "activated", ago(days - 3600)),
        BootOutcome("gpu-new", GPU, "EU-RO-1", True, "activated", ago(PROBATION_SEC + 60)),
    ]
    floor = worker("gpu-floor", created=days, activated=days - 3600, running=("t1",), stuck_since=120)
    result = run(snap([floor], claimable=30, boots=boots[:4]), pods_for([floor]))
    assert result.breaker is BreakerState.CLOSED and len(spawns(result)) > 2, [
        a.worker_id for a in spawns(result)
    ]
    # A worker in its first long task since activation, beside one that has completed since the failures.
    busy = _in_first_task("gpu-new", PROBATION_SEC + 60)
    done = replace(floor, last_completion_at=ago(300))
    without_floor = [*boots[:3], boots[4]]  # the floor's own activation would end the row
    assert (
        run(snap([busy], claimable=30, boots=without_floor), pods_for([busy])).breaker
        is BreakerState.HALF_OPEN
    )
    proven = run(snap([busy, done], claimable=30, boots=without_floor), pods_for([busy, done]))
    assert proven.breaker is BreakerState.CLOSED and len(spawns(proven)) > 2


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
