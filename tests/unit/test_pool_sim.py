"""The warm pool end to end in virtual time: the executor's stop and resume handlers against the simulated
provider and database, resume failures, host keys, and a crash between the steps of a stop or a resume.
"""

from __future__ import annotations

from orchestrator.core.actions import ResumePod, StopPod
from orchestrator.core.config import defaults
from orchestrator.core.policy import plan
from orchestrator.core.states import Meta, PodStatus, Reason
from orchestrator.studies.fleet import ResumeModel
from orchestrator.studies.simulation import Simulation
from orchestrator.studies.traces import Trace, TraceTask


def waves(n: int = 3, size: int = 6, gap: float = 1500.0) -> Trace:
    """Bursts far enough apart for the fleet to go idle (into the pool) between them."""
    tasks = tuple(
        TraceTask(f"t{w}-{i}", 60.0 + w * gap + i * 2.0, 90.0) for w in range(n) for i in range(size)
    )
    return Trace("waves", tasks, 60.0 + n * gap)


def test_idle_workers_go_to_the_pool_and_come_back_with_a_new_host_key() -> None:
    sim = Simulation(waves(), plan, defaults(), seed=2, resume=ResumeModel(failure_share=0.0))
    result = sim.run()
    assert result.violations == [] and result.tasks_complete == result.tasks_total
    assert result.counters["stops"] > 0 and result.counters["resumes"] > 0
    # Every resumed pod answered with a new key, accepted once (the resume was ours), none refused.
    assert result.counters["host_key_repins"] >= result.counters["resumes"] > 0
    assert result.counters["host_key_refused"] == 0
    assert 0 < result.stopped_disk_cost_usd < result.cost_usd
    repinned = [w for w in sim.db.workers.values() if w.metadata.get(Meta.RESUMES)]
    assert repinned and all(w.metadata.get(Meta.PREVIOUS_HOST_KEY_FINGERPRINT) for w in repinned)


def test_resumes_that_find_no_gpu_are_replaced_without_tripping_the_breaker() -> None:
    sim = Simulation(waves(), plan, defaults(), seed=2, resume=ResumeModel(failure_share=1.0))
    result = sim.run()
    assert result.violations == [] and result.tasks_complete == result.tasks_total
    assert result.counters["resumes"] == 0 and result.counters["resume_failures"] > 0
    refused = [o for o in sim.db.snapshot().recent_boots if o.is_resume]
    assert refused and all(not o.ok and o.reason == Reason.RESUME_NO_GPU.value for o in refused)
    ended = [w for w in sim.db.workers.values() if w.status == "terminated" and w.metadata.get(Meta.RESUMES)]
    assert ended, "a refused resume terminates the pod"
    # Replaced by spawns, and never counted as failed boots: the breaker never stopped spawning.
    assert result.spawns > len({w.id for w in sim.db.workers.values() if w.metadata.get(Meta.RESUMES)})
    assert not any(o.counts_for_breaker for o in sim.db.snapshot().recent_boots)


def _settled(sim: Simulation, seconds: float) -> None:
    sim.clock.run_until(sim.clock.now + seconds)


def test_a_crash_between_the_steps_of_a_stop_or_a_resume_leaves_nothing_billing_untracked() -> None:
    # One task, then quiet: the worker drains and is stopped into the pool.
    trace = Trace("one", (TraceTask("t0", 10.0, 60.0),), 4000.0)
    sim = Simulation(trace, plan, defaults(), seed=1, resume=ResumeModel(failure_share=0.0))
    stops: list[StopPod] = []
    original = sim.executor.apply

    def crash_on_stop(actions, workers):  # type: ignore[no-untyped-def]
        original(actions, workers)
        if any(isinstance(a, StopPod) and a.transition_from is not None for a in actions) and not stops:
            stops.extend(a for a in actions if isinstance(a, StopPod))
            sim.restart()  # SIGKILL: the row is `stopping`, the provider was never asked

    sim.executor.apply = crash_on_stop  # type: ignore[method-assign]
    sim.start()
    for _ in range(400):
        _settled(sim, 10.0)
        if stops:
            break
    assert stops, "the idle worker was to be stopped"
    [stop] = stops
    row, pod = sim.db.workers[stop.worker_id], sim.provider.pods[stop.runpod_id]
    assert row.status == "stopping" and pod.holds_gpu  # tracked by its row, still billing its GPU
    sim.executor.apply = original  # type: ignore[method-assign]
    # The new process ticks once the old lease expired; within two ticks the stop is sent again.
    _settled(sim, sim._down_until - sim.clock.now + 2 * sim.poll_sec + 1.0)
    assert not pod.holds_gpu
    _settled(sim, 30.0)
    assert sim.db.workers[stop.worker_id].status == "stopped"

    # A resume killed after its transition: `resuming`, the pod still EXITED (its disk only bills).
    sim.db.insert_task("t1", "generate_video", 60.0)
    resumes: list[ResumePod] = []

    def crash_on_resume(actions, workers):  # type: ignore[no-untyped-def]
        original(actions, workers)
        if any(isinstance(a, ResumePod) for a in actions) and not resumes:
            resumes.extend(a for a in actions if isinstance(a, ResumePod))
            sim.restart()

    sim.executor.apply = crash_on_resume  # type: ignore[method-assign]
    for _ in range(100):
        _settled(sim, 1.0)
        if resumes:
            break
    assert resumes and sim.db.workers[resumes[0].worker_id].status == "resuming"
    assert pod.status(sim.clock.now) is PodStatus.EXITED
    sim.executor.apply = original  # type: ignore[method-assign]
    _settled(sim, sim._down_until - sim.clock.now + 2 * sim.poll_sec + 31.0)
    assert pod.holds_gpu  # started again by the next process
    _settled(sim, 600.0)
    assert sim.db.tasks["t1"].status == "Complete"
