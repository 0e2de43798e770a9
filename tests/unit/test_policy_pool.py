"""The warm pool in the pure policy: idle workers stopped instead of terminated, resumed before spawning.

Each scenario builds a snapshot and a listing relative to one instant and asserts the plan
(``orchestrator/core/pool.py`` states the rules). The wait target is off here (WAIT_TARGET_SEC=0) so the
number of workers wanted is the threshold rule's and the pool's own decisions stand out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from orchestrator.core.actions import (
    FailWorker,
    Initialize,
    MarkStopped,
    MarkTerminated,
    ResumePod,
    Spawn,
    StopPod,
    TerminatePod,
)
from orchestrator.core.config import Settings
from orchestrator.core.draft import stopped_disk_usd_per_hr
from orchestrator.core.states import Reason, WorkerState
from tests.unit.test_policy import NOW, ago, pod, pods_for, run, settings, snap, worker


def pool_settings(**changes: Any) -> Settings:
    return settings(**{"warm_pool_max": 2, **changes})


def stopped(worker_id: str, since: float = 600, **meta: Any) -> Any:
    return worker(worker_id, "stopped", changed=since, stopped_at=ago(since), **meta)


def test_a_drained_idle_worker_is_stopped_while_the_pool_has_room_else_terminated() -> None:
    drained = worker("gpu-a", "draining", drain_reason="overcapacity", completed=100)
    [stop] = run(snap([drained]), pods_for([drained]), pool_settings()).of_kind(StopPod)
    assert (stop.reason, stop.transition_from, stop.runpod_id) == (
        Reason.POOLED,
        WorkerState.DRAINING,
        "pod-gpu-a",
    )
    full = [stopped("gpu-p1"), stopped("gpu-p2")]
    result = run(snap([drained, *full]), pods_for([drained]) + pods_for(full, "EXITED"), pool_settings())
    assert result.of_kind(StopPod) == []
    [term] = [a for a in result.of_kind(TerminatePod) if a.worker_id == "gpu-a"]
    assert term.reason is Reason.DRAINED
    # WARM_POOL_MAX=0: terminated as before.
    assert run(snap([drained]), pods_for([drained]), settings()).of_kind(StopPod) == []


def test_a_stop_is_confirmed_by_the_listing_retried_then_given_up() -> None:
    w = worker("gpu-a", "stopping", changed=20, pod_stop_requested_at=ago(20))
    [done] = run(snap([w]), pods_for([w], "EXITED"), pool_settings()).of_kind(MarkStopped)
    assert done.reason is Reason.POD_STOPPED
    # Still running 20 s after the request: wait; 40 s: send the stop again.
    assert run(snap([w]), pods_for([w]), pool_settings()).actions == ()
    late = replace(w, metadata={**w.metadata, "pod_stop_requested_at": ago(40).isoformat()})
    [again] = run(snap([late]), pods_for([late]), pool_settings()).of_kind(StopPod)
    assert again.reason is Reason.STOP_RETRY and again.transition_from is None
    # Not stopped three minutes on: it bills a GPU all the while, so it is terminated.
    stuck = worker("gpu-a", "stopping", changed=200, pod_stop_requested_at=ago(40))
    [term] = run(snap([stuck]), pods_for([stuck]), pool_settings()).of_kind(TerminatePod)
    assert term.reason is Reason.STOP_FAILED and term.transition_from is WorkerState.STOPPING
    # A pod in ERROR cannot be stopped (answered 409) and bills until it ends: terminated at once.
    [ended] = run(snap([w]), pods_for([w], "ERROR"), pool_settings()).of_kind(TerminatePod)
    assert ended.reason is Reason.STOP_FAILED


def test_work_resumes_pooled_pods_first_then_spawns() -> None:
    pool = [stopped("gpu-old", since=900), stopped("gpu-new", since=100)]
    result = run(snap(pool, claimable=9), pods_for(pool, "EXITED"), pool_settings())
    resumed = result.of_kind(ResumePod)
    # The most recently stopped first (likeliest to find its GPU free), then new pods for the rest.
    assert [r.worker_id for r in resumed] == ["gpu-new", "gpu-old"]
    assert all(r.reason is Reason.RESUME for r in resumed)
    assert len(result.of_kind(Spawn)) == 1  # ceil(9 / 3) = 3 workers wanted
    # Paused: no resume, as no spawn.
    assert (
        run(snap(pool, claimable=9, paused=True), pods_for(pool, "EXITED"), pool_settings()).of_kind(
            ResumePod
        )
        == []
    )


def test_a_stopped_pod_holds_no_gpu_under_max_and_bills_its_disk() -> None:
    busy = worker("gpu-a", running=["t1"])
    pool = [stopped("gpu-p")]
    cfg = pool_settings(max_active_gpus=2)
    result = run(snap([busy, *pool], claimable=6), pods_for([busy]) + pods_for(pool, "EXITED"), cfg)
    assert result.live == 1  # the stopped pod does not count toward MAX_ACTIVE_GPUS
    assert [r.worker_id for r in result.of_kind(ResumePod)] == ["gpu-p"]
    quiet = run(snap(pool), pods_for(pool, "EXITED"), cfg)
    assert quiet.spend_per_hr == stopped_disk_usd_per_hr(cfg)
    # Ours: neither an orphan nor a failed pod.
    assert not quiet.of_kind(TerminatePod) and not quiet.of_kind(FailWorker)


def test_the_pool_is_trimmed_by_age_size_and_pause() -> None:
    pool = [stopped("gpu-a", since=100), stopped("gpu-b", since=200), stopped("gpu-c", since=30000)]
    listing = pods_for(pool, "EXITED")
    result = run(snap(pool), listing, pool_settings())
    by_worker = {a.worker_id: a.reason for a in result.of_kind(TerminatePod)}
    assert by_worker == {"gpu-c": Reason.POOL_TTL}
    shrunk = run(snap(pool), listing, pool_settings(warm_pool_max=1, warm_pool_ttl_sec=0))
    assert {a.worker_id: a.reason for a in shrunk.of_kind(TerminatePod)} == {
        "gpu-b": Reason.POOL_SHRINK,
        "gpu-c": Reason.POOL_SHRINK,
    }
    paused = run(snap(pool, paused=True), listing, pool_settings(warm_pool_terminate_on_pause=True))
    assert {a.reason for a in paused.of_kind(TerminatePod)} == {Reason.POOL_PAUSED}
    kept = run(snap(pool[:2], paused=True), listing[:2], pool_settings())
    assert kept.of_kind(TerminatePod) == []


def test_a_resuming_pod_is_started_again_then_initialized_and_times_out() -> None:
    w = worker("gpu-a", "resuming", created=7200, changed=40, resume_requested_at=ago(40))
    exited = pods_for([w], "EXITED")
    result = run(snap([w]), exited, pool_settings())
    assert not result.of_kind(FailWorker)  # EXITED while resuming is not a failed pod
    [again] = result.of_kind(ResumePod)
    assert again.worker_id == "gpu-a"
    [init] = run(snap([w]), pods_for([w]), pool_settings()).of_kind(Initialize)
    assert init.from_status is WorkerState.RESUMING
    slow = replace(w, metadata={**w.metadata, "resume_requested_at": ago(700).isoformat()})
    [fail] = run(snap([slow]), exited, pool_settings()).of_kind(FailWorker)
    assert fail.reason is Reason.BOOT_TIMEOUT


def test_a_stopped_row_whose_pod_runs_or_is_gone() -> None:
    w = stopped("gpu-a")
    [term] = run(snap([w]), pods_for([w]), pool_settings()).of_kind(TerminatePod)
    assert term.reason is Reason.POD_FAILED  # running with no process of ours: it bills a GPU
    gone = replace(w, created_at=ago(7200))
    [closed] = run(snap([gone]), [pod("other", pod_id="x")], pool_settings()).of_kind(MarkTerminated)
    assert closed.worker_id == "gpu-a" and closed.reason is Reason.PROVIDER_CONFIRMED_GONE


def test_a_resumed_worker_is_judged_from_its_resume() -> None:
    # Its last heartbeat and completion are from before the stop: neither stale nor idle for that.
    w = worker(
        "gpu-a",
        "initializing",
        created=7200,
        heartbeat=3000,
        changed=30,
        resume_requested_at=ago(60),
        reported_status=None,
    )
    w = replace(w, reported_status="crashed", reported_at=ago(2000))
    assert run(snap([w], claimable=1), pods_for([w]), pool_settings()).of_kind(FailWorker) == []
    assert ago(60) < NOW


# --- an operator's termination request (orchestrator workers terminate) ----------------------------


def test_a_stopped_worker_an_operator_asked_to_end_is_terminated_at_the_next_plan() -> None:
    w = stopped("gpu-a", terminate_requested_at=ago(5))
    listing = pods_for([w], "EXITED")
    for claimable in (0, 3):
        result = run(snap([w], claimable=claimable), listing, pool_settings())
        [term] = result.of_kind(TerminatePod)
        assert (term.worker_id, term.runpod_id, term.reason, term.transition_from) == (
            "gpu-a",
            "pod-gpu-a",
            Reason.OPERATOR_REQUEST,
            WorkerState.STOPPED,
        )
        assert result.of_kind(ResumePod) == []


def test_work_resumes_another_pooled_worker_or_spawns_never_the_one_asked_to_end() -> None:
    # The asked one was stopped last: without the request it would be the first resumed.
    asked = stopped("gpu-asked", since=100, terminate_requested_at=ago(5))
    other = stopped("gpu-other", since=900)
    result = run(snap([asked, other], claimable=3), pods_for([asked, other], "EXITED"), pool_settings())
    assert [r.worker_id for r in result.of_kind(ResumePod)] == ["gpu-other"]
    assert {a.worker_id: a.reason for a in result.of_kind(TerminatePod)} == {
        "gpu-asked": Reason.OPERATOR_REQUEST
    }
    assert result.of_kind(Spawn) == []
    # Alone in the pool: a new pod is spawned instead.
    alone = run(snap([asked], claimable=3), pods_for([asked], "EXITED"), pool_settings())
    assert alone.of_kind(ResumePod) == []
    assert len(alone.of_kind(Spawn)) == 1
    assert [a.worker_id for a in alone.of_kind(TerminatePod)] == ["gpu-asked"]


def test_a_stopping_worker_an_operator_asked_to_end_is_terminated_once_stopped() -> None:
    asked = {"terminate_requested_at": ago(30)}
    w = worker("gpu-a", "stopping", changed=20, pod_stop_requested_at=ago(20), **asked)
    # Work waits throughout: the row is never resumed on its way out.
    [done] = run(snap([w], claimable=3), pods_for([w], "EXITED"), pool_settings()).of_kind(MarkStopped)
    assert done.worker_id == "gpu-a"
    # The tick after the stop was confirmed (what MarkStopped leaves: stopped, stopped_at now).
    confirmed = worker("gpu-a", "stopped", changed=0, stopped_at=NOW, pod_stop_requested_at=ago(20), **asked)
    result = run(snap([confirmed], claimable=3), pods_for([confirmed], "EXITED"), pool_settings())
    assert result.of_kind(ResumePod) == []
    [term] = result.of_kind(TerminatePod)
    assert (term.worker_id, term.reason, term.transition_from) == (
        "gpu-a",
        Reason.OPERATOR_REQUEST,
        WorkerState.STOPPED,
    )
