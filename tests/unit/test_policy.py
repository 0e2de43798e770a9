"""Scenario tests of the pure policy: one or more per rule (the sections of ``orchestrator/core/policy.py``),
each readable on its own.

Each builds a snapshot and a pod listing relative to one fixed instant, calls ``plan()`` and asserts
the actions and their reason codes. The builders at the top are shared with
``test_policy_properties.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.core.actions import (
    DESTRUCTIVE,
    Drain,
    FailWorker,
    Initialize,
    MarkTerminated,
    Plan,
    Reactivate,
    RequeueTasks,
    Spawn,
    StartProcess,
    TerminatePod,
)
from orchestrator.core.config import Settings, defaults
from orchestrator.core.errors import DatabaseError
from orchestrator.core.observed import BootOutcome, PodView, Queue, Snapshot, Worker
from orchestrator.core.policy import plan
from orchestrator.core.states import Blocked, BreakerState, Meta, PodStatus, Reason, WorkerState

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
GPU = "NVIDIA GeForce RTX 4090"
PRICES = {GPU: 0.69, "NVIDIA RTX A4000": 0.17, "NVIDIA H100 80GB HBM3": 2.99}


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


# The scenarios here specify the threshold rule and termination on scale-down, the behaviour with the
# wait target and the warm pool off (WAIT_TARGET_SEC=0, WARM_POOL_MAX=0); those two are specified in
# test_policy_wait_target.py and test_policy_pool.py.
PLAIN = {"wait_target_sec": 0, "warm_pool_max": 0}


def settings(**changes: Any) -> Settings:
    return defaults().replace(**{**PLAIN, **changes})


def worker(
    worker_id: str,
    status: str = "active",
    *,
    created: float = 3600,
    activated: float | None = 3000,
    heartbeat: float | None = -1,
    runpod_id: str | None = "auto",
    running: Sequence[str] = (),
    completed: float | None = None,
    stuck_since: float | None = None,
    changed: float | None = None,
    **meta: Any,
) -> Worker:
    """A worker row; times are seconds before NOW. ``runpod_id="auto"`` gives ``pod-<id>``.

    ``heartbeat=-1`` (the default): 5 s ago for a serving worker, never for a booting one.
    """
    state = WorkerState(status)
    metadata: dict[str, Any] = {"gpu_type": GPU}
    if runpod_id == "auto":
        runpod_id = f"pod-{worker_id}"
    if runpod_id is not None:
        metadata["runpod_id"] = runpod_id
    for key, value in meta.items():
        metadata[key] = value.isoformat() if isinstance(value, datetime) else value
    booting = state in (WorkerState.SPAWNING, WorkerState.INITIALIZING)
    if heartbeat == -1:
        heartbeat = None if booting else 5
    return Worker(
        id=worker_id,
        status=state,
        instance_type=GPU,
        created_at=ago(created),
        status_changed_at=ago(changed if changed is not None else (activated or created)),
        activated_at=None if booting or activated is None else ago(activated),
        last_heartbeat=None if heartbeat is None else ago(heartbeat),
        metadata=metadata,
        running_task_ids=tuple(running),
        running_count=len(running),
        oldest_running_started_at=ago(stuck_since)
        if stuck_since is not None
        else (ago(60) if running else None),
        oldest_stuckable_started_at=ago(stuck_since)
        if stuck_since is not None
        else (ago(60) if running else None),
        last_completion_at=None if completed is None else ago(completed),
    )


def pod(
    name: str,
    status: str = "RUNNING",
    *,
    pod_id: str | None = None,
    ssh: bool | None = None,
    cost: float | None = 0.69,
    age: float | None = 3600,
    gpu: str | None = GPU,
) -> PodView:
    """A pod named ``name`` with id ``pod-<name>`` unless given; SSH published when RUNNING."""
    return PodView(
        id=pod_id or f"pod-{name}",
        name=name,
        status=PodStatus(status),
        ssh_ready=(status == "RUNNING") if ssh is None else ssh,
        cost_per_hr=cost,
        created_at=None if age is None else ago(age),
        gpu_type=gpu,
        data_center="EU-RO-1",
    )


def pods_for(workers: Iterable[Worker], status: str = "RUNNING") -> list[PodView]:
    """One listed pod per worker, named after it, with the id its row recorded."""
    return [pod(w.id, status, pod_id=w.runpod_id) for w in workers if w.runpod_id]


def boot(
    ok: bool,
    seconds_ago: float,
    reason: str | None = None,
    gpu: str = GPU,
    dc: str | None = "EU-RO-1",
    wid: str = "w",
) -> BootOutcome:
    return BootOutcome(
        worker_id=wid,
        gpu_type=gpu,
        data_center=dc,
        ok=ok,
        reason=reason or ("activated" if ok else "init_failed"),
        at=ago(seconds_ago),
    )


def snap(
    workers: Sequence[Worker] = (),
    *,
    claimable: int = 0,
    running: int | None = None,
    paused: bool = False,
    boots: Sequence[BootOutcome] = (),
) -> Snapshot:
    if running is None:
        running = sum(w.running_count for w in workers)
    return Snapshot(
        now=NOW,
        paused=paused,
        queue=Queue(claimable=claimable, queued_total=claimable, running=running),
        workers=tuple(workers),
        recent_boots=tuple(sorted(boots, key=lambda b: b.at, reverse=True)),
    )


# --- helpers to read a plan ------------------------------------------------------------------------


def run(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None = (),
    cfg: Settings | None = None,
    prices: dict[str, float] | None = None,
) -> Plan:
    return plan(snapshot, pods, cfg or settings(), NOW, prices=PRICES if prices is None else prices)


def summary(result: Plan) -> list[tuple[str, str | None, str]]:
    """(kind, worker or pod, reason) per action, for assertions that read like the rule."""
    out = []
    for action in result.actions:
        target = getattr(action, "worker_id", None) or getattr(action, "runpod_id", None)
        out.append((action.kind, target, action.reason.value))
    return out


def spawns(result: Plan) -> list[Spawn]:
    return result.of_kind(Spawn)


def destructive_ids(result: Plan) -> set[str]:
    return {a.worker_id for a in result.actions if isinstance(a, (*DESTRUCTIVE, Drain)) and a.worker_id}


# --- demand and scale up ---------------------------------------------------------------------------


def test_demand_spawns_one_worker_per_threshold_of_claimable_and_running_tasks() -> None:
    result = run(snap(claimable=7))  # ceil(7 / 3) = 3
    assert result.desired == 3
    assert [(a.kind, a.reason) for a in result.actions] == [("spawn", Reason.DEMAND)] * 3
    ids = [a.worker_id for a in spawns(result)]
    assert len(set(ids)) == 3
    assert all(
        i.startswith("gpu-20261129_120000-") and len(i) == len("gpu-20261129_120000-") + 8 for i in ids
    )
    assert all(a.gpu_types == (GPU,) for a in spawns(result))
    assert spawns(result)[0].metadata["gpu_types"] == [GPU]


def test_floor_and_spare_workers_are_spawned_with_their_own_reasons() -> None:
    assert [a.reason for a in spawns(run(snap(), cfg=settings(min_active_gpus=2)))] == [Reason.FLOOR] * 2
    result = run(snap(claimable=3), cfg=settings(machines_to_keep_idle=1))
    assert [a.reason for a in spawns(result)] == [Reason.DEMAND, Reason.SPARE]


def test_scale_to_zero_by_default_spawns_nothing_for_an_empty_queue() -> None:
    result = run(snap())
    assert result.actions == () and result.desired == 0


def test_booting_workers_count_as_capacity() -> None:
    booting = [
        worker("gpu-a", "spawning", created=20, runpod_id="pod-gpu-a"),
        worker("gpu-b", "initializing", created=90, initialized_at=ago(10)),
    ]
    result = run(snap(booting, claimable=6), pods_for(booting, "STARTING"))
    assert result.capacity == 2 and result.desired == 2
    assert spawns(result) == []


def test_never_more_than_max_active_gpus_non_terminal_workers_orphans_included() -> None:
    cfg = settings(max_active_gpus=5)
    assert len(spawns(run(snap(claimable=40), cfg=cfg))) == 5
    fleet = [
        worker("gpu-a", running=["t1"]),
        worker("gpu-b", running=["t2"]),
        worker("gpu-c", "error", running=[]),
    ]
    young_orphan = pod("gpu-stray", age=10)  # not yet reaped, but it bills
    result = run(snap(fleet, claimable=40), [*pods_for(fleet), young_orphan], cfg)
    assert result.live == 4
    assert len(spawns(result)) == 1
    assert Blocked.MAX_REACHED in result.spawn_blocked


def test_spend_cap_at_current_prices_limits_spawns() -> None:
    fleet = [worker("gpu-a", running=["t1"])]
    cfg = settings(max_hourly_spend=1.5)
    result = run(snap(fleet, claimable=12), pods_for(fleet), cfg)
    assert result.spend_per_hr == pytest.approx(0.69)
    assert len(spawns(result)) == 1  # 0.69 + 0.69 <= 1.5 < 0.69 * 3
    assert Blocked.SPEND_CAP in result.spawn_blocked
    unknown = run(snap(fleet, claimable=12), pods_for(fleet), cfg, prices={})
    fleet_priced = run(snap(claimable=12), (), cfg, prices={})
    assert spawns(fleet_priced) == [] and Blocked.PRICE_UNKNOWN in fleet_priced.spawn_blocked
    assert spawns(unknown) == []


def test_spend_cap_drops_gpu_types_dearer_than_the_headroom() -> None:
    cfg = settings(max_hourly_spend=1.0, runpod_gpu_type=("NVIDIA H100 80GB HBM3", GPU))
    [spawn] = spawns(run(snap(claimable=1), (), cfg))
    assert spawn.gpu_types == (GPU,)


# --- boot ------------------------------------------------------------------------------------------


def test_pod_ready_initializes_a_spawning_worker_and_starts_its_process() -> None:
    w = worker("gpu-a", "spawning", created=40)
    result = run(snap([w], claimable=1), [pod("gpu-a", age=40)])
    [init] = result.of_kind(Initialize)
    assert (init.worker_id, init.runpod_id, init.from_status, init.start_process) == (
        "gpu-a",
        "pod-gpu-a",
        WorkerState.SPAWNING,
        True,
    )
    assert init.reason is Reason.POD_READY and spawns(result) == []


def test_pod_not_ready_yet_is_left_alone() -> None:
    w = worker("gpu-a", "spawning", created=40)
    for status, ssh in (("PROVISIONING", False), ("STARTING", False), ("RUNNING", False)):
        assert run(snap([w], claimable=1), [pod("gpu-a", status, ssh=ssh, age=40)]).actions == ()


def test_a_pod_found_by_name_is_adopted_when_its_id_was_never_recorded() -> None:
    w = worker("gpu-a", "spawning", created=40, runpod_id=None)
    [init] = run(snap([w], claimable=1), [pod("gpu-a", pod_id="xyz", age=30)]).of_kind(Initialize)
    assert init.runpod_id == "xyz"


def test_an_initialized_worker_whose_process_never_started_gets_it_started() -> None:
    w = worker("gpu-a", "initializing", created=100, initialized_at=ago(50))
    [start] = run(snap([w], claimable=1), pods_for([w])).of_kind(StartProcess)
    assert start.worker_id == "gpu-a" and not start.already_running
    heard = worker("gpu-b", "initializing", created=100, heartbeat=5, initialized_at=ago(50))
    [start] = run(snap([heard], claimable=1), pods_for([heard])).of_kind(StartProcess)
    assert start.already_running  # a process runs: record it, do not start a second


def test_without_auto_start_the_checks_run_and_the_worker_waits_for_its_operator() -> None:
    cfg = settings(auto_start_worker_process=False)
    w = worker("gpu-a", "spawning", created=40)
    [init] = run(snap([w], claimable=1), [pod("gpu-a", age=40)], cfg).of_kind(Initialize)
    assert init.start_process is False
    # Past the boot timeout from its creation, within it from the end of its checks: still waiting (past
    # that too, it is failed: tests/unit/test_policy_health_gaps.py).
    waiting = worker("gpu-b", "initializing", created=5000, heartbeat=None, initialized_at=ago(1000))
    assert run(snap([waiting], claimable=1), pods_for([waiting]), cfg).of_kind(FailWorker) == []


def test_boot_timeout_from_creation_fails_the_worker() -> None:
    w = worker("gpu-a", "spawning", created=1300, heartbeat=None)
    result = run(snap([w], claimable=1), [pod("gpu-a", "STARTING", age=1290)])
    [fail] = result.of_kind(FailWorker)
    assert fail.reason is Reason.BOOT_TIMEOUT and fail.runpod_id == "pod-gpu-a"
    assert fail.metadata["error_reason"] == "boot_timeout"
    # Not yet at 1,200 s: a cold start of 20 minutes is possible, so wait.
    young = worker("gpu-b", "spawning", created=1100, heartbeat=None)
    assert run(snap([young], claimable=1), [pod("gpu-b", "STARTING", age=1090)]).of_kind(FailWorker) == []


# --- health ----------------------------------------------------------------------------------------


def test_stale_heartbeat_while_running_a_task_fails_the_worker_and_names_its_tasks() -> None:
    w = worker("gpu-a", heartbeat=200, running=["t1"])
    [fail] = run(snap([w]), pods_for([w])).of_kind(FailWorker)
    assert fail.reason is Reason.HEARTBEAT_STALE and fail.running_task_ids == ("t1",)
    assert fail.collect_logs and fail.runpod_id == "pod-gpu-a"


def test_stale_heartbeat_matters_only_while_it_runs_a_task_or_tasks_wait() -> None:
    idle = worker("gpu-a", heartbeat=200, completed=10)
    assert run(snap([idle]), pods_for([idle])).of_kind(FailWorker) == []
    [fail] = run(snap([idle], claimable=2), pods_for([idle])).of_kind(FailWorker)
    assert fail.reason is Reason.HEARTBEAT_STALE


def test_a_stuck_task_fails_its_worker_but_orchestrator_parents_are_exempt() -> None:
    # The explicit limit (TASK_STUCK_TIMEOUT_SEC, formerly the fixed default; the evidence-based default
    # is tested in test_policy_long_tasks.py). A snapshot without per-task rows: the oldest stuckable task.
    fixed = settings(task_stuck_timeout_sec=1200)
    stuck = worker("gpu-a", running=["t1"], stuck_since=1300)
    [fail] = run(snap([stuck]), pods_for([stuck]), fixed).of_kind(FailWorker)
    assert fail.reason is Reason.TASK_STUCK and fail.running_task_ids == ("t1",)
    # SQL leaves oldest_stuckable_started_at empty when only `_orchestrator` tasks run.
    parent = replace(stuck, id="gpu-b", oldest_stuckable_started_at=None, metadata={"runpod_id": "pod-gpu-b"})
    assert run(snap([parent]), pods_for([parent]), fixed).of_kind(FailWorker) == []


def test_a_pod_exited_or_errored_at_the_provider_fails_the_worker() -> None:
    for status in ("EXITED", "ERROR"):
        w = worker("gpu-a", running=["t1"])
        [fail] = run(snap([w]), pods_for([w], status)).of_kind(FailWorker)
        assert fail.reason is Reason.POD_FAILED and fail.metadata["error_details"] == {"pod_status": status}


def test_a_failed_ssh_probe_never_kills_a_heartbeating_worker() -> None:
    w = worker("gpu-a", running=["t1"], last_ssh_error="EAGAIN", ssh_probe_failures=1)
    no_ssh = pod("gpu-a", "RUNNING", pod_id="pod-gpu-a", ssh=False)
    result = run(snap([w], claimable=3), [no_ssh])
    assert destructive_ids(result) == set()


# --- scale down ------------------------------------------------------------------------------------


def test_idle_is_measured_from_the_last_completion_never_from_the_heartbeat() -> None:
    # Heartbeats every few seconds, last task done 700 s ago: idle, above desired (0) -> drained.
    idle = worker("gpu-a", heartbeat=3, completed=700)
    [drain] = run(snap([idle]), pods_for([idle])).of_kind(Drain)
    assert drain.reason is Reason.OVERCAPACITY and drain.metadata["drain_reason"] == "overcapacity"
    # Finished a task 5 s ago (the over-capacity timeout is 10 s): not idle long enough, even though
    # active for an hour.
    busy_lately = worker("gpu-b", heartbeat=3, completed=5)
    assert run(snap([busy_lately]), pods_for([busy_lately])).actions == ()
    # Never completed anything: measured from activation.
    fresh = worker("gpu-c", activated=5, heartbeat=3)
    assert run(snap([fresh]), pods_for([fresh])).actions == ()


def test_workers_running_tasks_are_never_drained_for_capacity() -> None:
    fleet = [worker(f"gpu-{i}", running=[f"t{i}"]) for i in range(4)]
    result = run(snap(fleet, running=4), pods_for(fleet))  # desired ceil(4/3) = 2 < 4
    assert result.actions == ()


def test_scale_down_takes_the_dearest_then_the_newest_idle_workers() -> None:
    fleet = [
        worker("gpu-old", activated=9000, completed=100),
        worker("gpu-new", activated=500, completed=100),
        worker("gpu-h100", activated=9000, completed=100, cost_per_hr=2.99),
        worker("gpu-busy", running=["t1"]),
    ]
    listing = [pod(w.id, pod_id=w.runpod_id, cost=None) for w in fleet]
    result = run(snap(fleet, running=1), listing)  # desired 1: the busy one
    assert sorted(a.worker_id for a in result.of_kind(Drain)) == ["gpu-h100", "gpu-new", "gpu-old"]
    result = run(snap(fleet, running=1), listing, settings(machines_to_keep_idle=1))  # desired 2
    assert [a.worker_id for a in result.of_kind(Drain)] == ["gpu-h100", "gpu-new"]


def test_min_active_gpus_floor_is_kept_even_when_idle() -> None:
    idle = worker("gpu-a", completed=5000)
    assert run(snap([idle]), pods_for([idle]), settings(min_active_gpus=1)).actions == ()


def test_idle_timeout_backstop_drains_a_worker_idle_for_long_while_tasks_wait() -> None:
    # Tasks are claimable, yet this worker has taken none for 700 s (> GPU_IDLE_TIMEOUT_SEC).
    lazy = worker("gpu-a", completed=700)
    result = run(snap([lazy], claimable=1), pods_for([lazy]))
    assert summary(result)[0] == ("drain", "gpu-a", "idle_timeout")
    assert len(spawns(result)) == 1  # a replacement that will claim


def test_a_worker_idle_beside_a_task_that_waited_all_along_is_drained_with_the_queue_it_passed_over() -> None:
    # The task has waited 900 s; the worker has been idle 700 s of them, polling: it does not take the
    # task, and neither would a replacement. The drain says so, with what the operator needs.
    lazy = worker("gpu-a", completed=700)
    queue = Queue(claimable=2, queued_total=2, oldest_claimable_age_sec=900.0, claimable_by_type={"lora": 2})
    result = run(replace(snap([lazy]), queue=queue), pods_for([lazy]))
    [drain] = result.of_kind(Drain)
    assert drain.reason == Reason.UNCLAIMED_WORK and drain.reason.value == "idle_while_tasks_waited"
    # The first such worker may have been hung (its heartbeat runs on in a process of its own): it is
    # replaced. Once the daemon knows a worker was already drained beside the same tasks, none is.
    assert len(spawns(result)) == 1
    again = run(replace(snap([lazy]), queue=queue, passed_over_once=True), pods_for([lazy]))
    assert [d.reason for d in again.of_kind(Drain)] == [Reason.UNCLAIMED_WORK] and spawns(again) == []
    assert drain.metadata[Meta.UNCLAIMED] == {
        "claimable": 2,
        "by_type": {"lora": 2},
        "oldest_queued_sec": 900.0,
        "worker_idle_sec": 700.0,
    }
    # A task that came after the worker went idle says nothing against it: the plain idle timeout.
    fresh = replace(queue, oldest_claimable_age_sec=650.0)
    [drain] = run(replace(snap([lazy]), queue=fresh), pods_for([lazy])).of_kind(Drain)
    assert drain.reason == Reason.IDLE and Meta.UNCLAIMED not in drain.metadata


def test_a_drained_idle_worker_is_terminated_and_a_busy_one_finishes_first() -> None:
    idle = worker("gpu-a", "draining", completed=100, drain_reason="idle_timeout")
    busy = worker("gpu-b", "draining", running=["t1"], drain_reason="overcapacity")
    result = run(snap([idle, busy], running=1), pods_for([idle, busy]))
    [term] = result.of_kind(TerminatePod)
    assert (term.worker_id, term.runpod_id, term.transition_from, term.reason) == (
        "gpu-a",
        "pod-gpu-a",
        WorkerState.DRAINING,
        Reason.DRAINED,
    )
    assert destructive_ids(result) == {"gpu-a"}


def test_terminated_only_when_the_provider_confirms() -> None:
    asked = worker("gpu-a", "terminating", pod_terminate_requested_at=ago(10))
    assert run(snap([asked]), pods_for([asked])).actions == ()  # asked 10 s ago: wait
    stale = worker("gpu-a", "terminating", pod_terminate_requested_at=ago(100))
    assert summary(run(snap([stale]), pods_for([stale]))) == [("terminate_pod", "gpu-a", "terminate_retry")]
    gone = run(snap([stale]), pods_for([stale], "TERMINATED"))
    assert summary(gone) == [("mark_terminated", "gpu-a", "provider_confirmed_gone")]
    assert summary(run(snap([stale]), [])) == [("mark_terminated", "gpu-a", "provider_confirmed_gone")]


def test_booting_workers_are_cancelled_only_when_no_task_waits() -> None:
    w = worker("gpu-a", "spawning", created=60)
    listing = [pod("gpu-a", "STARTING", age=60)]
    assert summary(run(snap([w]), listing)) == [("terminate_pod", "gpu-a", "scale_down_before_boot")]
    [term] = run(snap([w]), listing).of_kind(TerminatePod)
    assert term.transition_from is WorkerState.SPAWNING
    assert run(snap([w], claimable=1), listing).actions == ()


def test_operator_request_drains_then_terminates() -> None:
    active = worker("gpu-a", running=["t1"], terminate_requested_at=ago(5))
    result = run(snap([active], claimable=5), pods_for([active]))
    assert summary(result)[0] == ("drain", "gpu-a", "operator_request")
    assert len(spawns(result)) == 2  # it no longer counts as capacity
    drained = worker(
        "gpu-a", "draining", completed=3, terminate_requested_at=ago(60), drain_reason="operator_request"
    )
    result = run(snap([drained], claimable=5), pods_for([drained]))
    assert summary(result)[0] == ("terminate_pod", "gpu-a", "operator_request")
    assert result.of_kind(Reactivate) == []
    booting = worker("gpu-b", "spawning", created=30, terminate_requested_at=ago(1))
    assert summary(run(snap([booting], claimable=1), [pod("gpu-b", "STARTING", age=30)]))[0] == (
        "terminate_pod",
        "gpu-b",
        "operator_request",
    )


def test_work_coming_back_reactivates_a_worker_drained_for_overcapacity_instead_of_spawning() -> None:
    drained = worker("gpu-a", "draining", completed=40, drain_reason="overcapacity")
    result = run(snap([drained], claimable=2), pods_for([drained]))
    assert summary(result) == [("reactivate", "gpu-a", "work_came_back")]


# --- errors ----------------------------------------------------------------------------------------


def test_an_error_worker_gets_its_pod_terminated_and_tasks_requeued_until_confirmed() -> None:
    failed = worker("gpu-a", "error", running=["t1"], pod_terminate_requested_at=ago(120))
    result = run(snap([failed]), pods_for([failed]))
    assert summary(result)[:2] == [
        ("terminate_pod", "gpu-a", "terminate_retry"),
        ("requeue_tasks", "gpu-a", "requeue_retry"),
    ]
    # Its task still counts as demand, and the failed worker no longer as capacity: a replacement.
    assert [a.reason for a in spawns(result)] == [Reason.DEMAND]
    [mark] = run(snap([failed]), []).of_kind(MarkTerminated)
    assert mark.requeue_tasks and mark.from_status is WorkerState.ERROR


def test_a_spawn_that_found_no_capacity_is_closed_at_once() -> None:
    failed = worker("gpu-a", "error", created=5, runpod_id=None, error_reason="spawn_no_capacity")
    assert summary(run(snap([failed]), [])) == [("mark_terminated", "gpu-a", "provider_confirmed_gone")]


# --- reconcile -------------------------------------------------------------------------------------


def test_orphan_pods_with_our_prefix_are_terminated_after_the_grace() -> None:
    result = run(snap(), [pod("gpu-lost", age=300), pod("gpu-fresh", age=30), pod("someone-else", age=99999)])
    assert summary(result) == [("terminate_pod", "pod-gpu-lost", "orphan_pod")]
    [term] = result.of_kind(TerminatePod)
    assert term.worker_id is None and term.pod_name == "gpu-lost"


def test_a_pod_claimed_by_name_is_no_orphan_and_a_duplicate_of_it_is() -> None:
    w = worker("gpu-a", "spawning", created=60, runpod_id=None)
    first = pod("gpu-a", "STARTING", pod_id="p1", age=50)
    second = pod("gpu-a", "STARTING", pod_id="p2", age=40)
    assert run(snap([w], claimable=1), [first]).actions == ()
    recorded = worker("gpu-a", "spawning", created=600, runpod_id="p1")
    result = run(snap([recorded], claimable=1), [first, replace(second, created_at=ago(300))])
    assert summary(result) == [("terminate_pod", "p2", "orphan_pod")]


def test_pods_of_terminated_rows_are_orphans() -> None:
    gone = worker("gpu-a", "terminated")
    assert summary(run(snap([gone]), pods_for([gone]))) == [("terminate_pod", "pod-gpu-a", "orphan_pod")]


def test_pods_without_the_prefix_are_never_touched_even_when_a_row_points_at_them() -> None:
    w = worker("gpu-a", running=["t1"], runpod_id="foreign")
    foreign = pod("my-notebook", "EXITED", pod_id="foreign")
    result = run(snap([w]), [foreign, pod("other", age=99999)])
    [fail] = result.of_kind(FailWorker)
    assert fail.runpod_id is None
    assert not result.of_kind(TerminatePod)
    assert any("without the prefix" in p for p in result.problems)


def test_live_rows_whose_pod_is_missing_go_to_error_and_zero_pods_is_a_valid_listing() -> None:
    fleet = [
        worker("gpu-a", running=["t1"], heartbeat=70),
        worker("gpu-b", "initializing", created=400, initialized_at=ago(5)),
    ]
    result = run(snap(fleet), [])
    assert sorted((a.worker_id, a.reason) for a in result.of_kind(FailWorker)) == [
        ("gpu-a", Reason.POD_MISSING),
        ("gpu-b", Reason.POD_MISSING),
    ]


def test_a_listing_without_the_pods_of_beating_workers_fails_none_of_them() -> None:
    # A provider incident: the listing comes back empty (or partial) while every worker beats.
    fleet = [worker(f"gpu-{i}", running=[f"t{i}"], heartbeat=5 + 10 * i) for i in range(5)]
    result = run(snap(fleet), [])
    assert (
        not result.of_kind(FailWorker)
        and not result.of_kind(TerminatePod)
        and not result.of_kind(RequeueTasks)
    )
    # Once a worker has been silent for three beats, its pod's absence counts.
    fleet[0] = worker("gpu-0", running=["t0"], heartbeat=61)
    [fail] = run(snap(fleet), []).of_kind(FailWorker)
    assert (fail.worker_id, fail.reason) == ("gpu-0", Reason.POD_MISSING)


def test_a_spawning_row_without_a_pod_waits_for_the_grace_then_is_closed() -> None:
    young = worker("gpu-a", "spawning", created=30, runpod_id=None, heartbeat=None)
    assert run(snap([young], claimable=1), []).actions == ()  # its pod may be being created
    old = worker("gpu-a", "spawning", created=300, runpod_id=None, heartbeat=None)
    result = run(snap([old], claimable=1), [])
    assert summary(result)[0] == ("mark_terminated", "gpu-a", "no_pod_created")
    recorded = worker("gpu-b", "spawning", created=300, heartbeat=None)
    assert run(snap([recorded]), []).of_kind(FailWorker)[0].reason is Reason.POD_MISSING


def test_without_a_pod_listing_nothing_is_reaped_but_demand_is_served() -> None:
    """No listing: no pod is judged (none failed, no row closed as gone), but endings already decided go
    on by the pod id our own spawn recorded, which needs no listing: a terminating row's termination is
    re-sent, a drained idle worker is terminated. Left for the listing, their GPUs billed for the whole
    outage. A row without our spawn's record (the old orchestrator's, adopted) may name a pod that is not
    ours: it waits for the listing."""
    ours = {"spawn_reason": "demand"}
    fleet = [
        worker("gpu-a", running=["t1"], **ours),
        worker("gpu-b", "terminating", **ours),
        worker("gpu-c", "draining", completed=900, changed=600, drain_reason="idle_timeout", **ours),
        worker("gpu-d", "terminating"),
        worker("gpu-e", "draining", completed=900, changed=600, drain_reason="idle_timeout"),
    ]
    result = run(snap(fleet, claimable=6), None)
    ended = [a for a in result.actions if isinstance(a, TerminatePod)]
    assert [(a.worker_id, a.runpod_id, a.reason) for a in ended] == [
        ("gpu-b", "pod-gpu-b", Reason.TERMINATE_RETRY),
        ("gpu-c", "pod-gpu-c", Reason.DRAINED),
    ]
    assert destructive_ids(result) == {"gpu-b", "gpu-c"}, "nothing judged without a listing"
    assert len(spawns(result)) == 2


# --- never run away --------------------------------------------------------------------------------


def test_a_failed_boot_backs_off_its_gpu_type_and_falls_through_to_the_next() -> None:
    cfg = settings(runpod_gpu_type=(GPU, "NVIDIA RTX A4000"))
    result = run(snap(claimable=1), (), cfg, prices=PRICES)
    assert spawns(result)[0].gpu_types == (GPU, "NVIDIA RTX A4000")
    result = run(snap(claimable=1, boots=[boot(False, 30)]), (), cfg)
    assert spawns(result)[0].gpu_types == ("NVIDIA RTX A4000",)
    [backoff] = result.backoffs
    assert (backoff.gpu_type, backoff.failures, backoff.until) == (GPU, 1, ago(-30))
    # Two in a row: 120 s from the latest; after it, the type is back.
    two = [boot(False, 100), boot(False, 90)]
    assert spawns(run(snap(claimable=1, boots=two), (), cfg))[0].gpu_types == ("NVIDIA RTX A4000",)
    assert spawns(run(snap(claimable=1, boots=[boot(False, 130), boot(False, 121)]), (), cfg))[
        0
    ].gpu_types == (
        GPU,
        "NVIDIA RTX A4000",
    )
    # A success since resets the count.
    healed = [boot(False, 50), boot(True, 40)]
    assert run(snap(claimable=1, boots=healed), (), cfg).backoffs == ()


def test_every_type_backing_off_blocks_spawning() -> None:
    result = run(snap(claimable=1, boots=[boot(False, 10, "spawn_no_capacity")]))
    assert spawns(result) == [] and result.spawn_blocked == (Blocked.BACKOFF,)


def test_capacity_misses_of_a_spawn_that_fell_through_back_off_that_type() -> None:
    cfg = settings(runpod_gpu_type=(GPU, "NVIDIA RTX A4000"))
    placed = worker(
        "gpu-a",
        "spawning",
        created=20,
        capacity_misses=[{"gpu_type": GPU, "data_center": "EU-RO-1", "at": ago(20).isoformat()}],
    )
    result = run(snap([placed], claimable=4), [pod("gpu-a", "STARTING", age=20)], cfg)
    assert spawns(result)[0].gpu_types == ("NVIDIA RTX A4000",)


def test_breaker_opens_after_consecutive_failed_workers_and_half_opens_with_one_probe() -> None:
    failures = [boot(False, 30, wid="w1"), boot(False, 20, wid="w2"), boot(False, 10, wid="w3")]
    cfg = settings(runpod_gpu_type=(GPU, "NVIDIA RTX A4000"))
    result = run(snap(claimable=9, boots=failures), (), cfg)
    assert spawns(result) == []
    assert result.breaker is BreakerState.OPEN and result.spawn_blocked == (Blocked.BREAKER_OPEN,)
    assert result.consecutive_failures == 3 and result.breaker_until == ago(10 - 120)
    # Healing goes on while it is open.
    sick = worker("gpu-x", heartbeat=500, running=["t1"])
    assert run(snap([sick], claimable=9, boots=failures), pods_for([sick]), cfg).of_kind(FailWorker)
    # After the interval: one probe, and none while it boots.
    later = [boot(False, 330, wid="w1"), boot(False, 320, wid="w2"), boot(False, 310, wid="w3")]
    result = run(snap(claimable=9, boots=later), (), cfg)
    assert result.breaker is BreakerState.HALF_OPEN and len(spawns(result)) == 1
    probe = worker("gpu-p", "spawning", created=30)
    result = run(snap([probe], claimable=9, boots=later), [pod("gpu-p", "STARTING", age=30)], cfg)
    assert spawns(result) == [] and result.spawn_blocked == (Blocked.BREAKER_HALF_OPEN,)
    # A successful boot closes it.
    healed = [*later, boot(True, 5, wid="w4")]
    assert run(snap(claimable=9, boots=healed), (), cfg).breaker is BreakerState.CLOSED


def test_capacity_errors_do_not_count_toward_the_breaker() -> None:
    cfg = settings(runpod_gpu_type=(GPU, "NVIDIA RTX A4000"))
    misses = [boot(False, 30 - i, "spawn_no_capacity", wid=f"w{i}") for i in range(5)]
    result = run(snap(claimable=1, boots=misses), (), cfg)
    assert result.breaker is BreakerState.CLOSED and result.consecutive_failures == 0
    assert spawns(result)[0].gpu_types == ("NVIDIA RTX A4000",)


def test_cancelled_boots_neither_count_nor_reset_the_breaker() -> None:
    boots = [
        boot(False, 40, wid="w1"),
        boot(False, 30, wid="w2"),
        boot(False, 20, "scale_down_before_boot", wid="w3"),
        boot(False, 10, wid="w4"),
    ]
    assert run(snap(claimable=1, boots=boots)).consecutive_failures == 3


# --- pause -----------------------------------------------------------------------------------------


def test_paused_no_spawns_but_healing_and_termination_continue() -> None:
    sick = worker("gpu-a", heartbeat=500, running=["t1"])
    idle = worker("gpu-b", "draining", completed=100)
    result = run(snap([sick, idle], claimable=10, paused=True), pods_for([sick, idle]))
    assert spawns(result) == [] and result.spawn_blocked == (Blocked.PAUSED,)
    assert {a.kind for a in result.actions} == {"fail_worker", "terminate_pod"}


# --- determinism, parsing --------------------------------------------------------------------------


def test_the_same_input_gives_the_same_plan_whatever_the_order_of_rows_and_pods() -> None:
    fleet = [
        worker("gpu-a", running=["t1"]),
        worker("gpu-b", completed=900),
        worker("gpu-c", "spawning", created=30),
    ]
    listing = [*pods_for(fleet), pod("gpu-lost", age=999)]
    first = run(snap(fleet, claimable=12), listing)
    again = run(snap(list(reversed(fleet)), claimable=12), list(reversed(listing)))
    assert first == again and first.to_dict() == again.to_dict()
    assert len(spawns(first)) >= 1


def test_snapshot_from_json_skips_a_malformed_row_and_says_why() -> None:
    good = {
        "id": "gpu-a",
        "status": "active",
        "instance_type": GPU,
        "created_at": "2026-11-29T11:00:00+00:00",
        "status_changed_at": "2026-11-29T11:01:00Z",
        "activated_at": "2026-11-29T11:01:00.123456+00:00",
        "last_heartbeat": "2026-11-29T11:59:55+00:00",
        "metadata": {"runpod_id": "abc", "ssh_details": {"ip": "1.2.3.4", "port": 2222}},
        "running_task_ids": ["t1"],
        "running_count": 1,
        "oldest_running_started_at": "2026-11-29T11:58:00+00:00",
        "oldest_stuckable_started_at": None,
        "last_completion_at": None,
        "heartbeat_age_sec": 5,
    }
    data = {
        "now": "2026-11-29T12:00:00+00:00",
        "paused": False,
        "queue": {"claimable": 4, "queued_total": 5, "oldest_claimable_age_sec": 12.5, "running": 1},
        "workers": [good, {"id": "gpu-b", "status": "sleeping"}, "junk", {**good, "created_at": "yesterday"}],
        "recent_boots": [
            {
                "worker_id": "w",
                "gpu_type": GPU,
                "data_center": "EU-RO-1",
                "ok": True,
                "reason": "activated",
                "at": "2026-11-29T11:00:00Z",
            },
            {"worker_id": "v", "ok": "maybe", "at": "2026-11-29T11:00:00Z"},
        ],
    }
    parsed = Snapshot.from_json(data)
    assert [w.id for w in parsed.workers] == ["gpu-a", "gpu-b"]  # gpu-b: unknown state, retired
    w = parsed.workers[0]
    assert parsed.workers[1].status is WorkerState.ERROR
    assert w.runpod_id == "abc" and w.ssh_details == {"ip": "1.2.3.4", "port": 2222} and w.running_count == 1
    assert w.status is WorkerState.ACTIVE and w.status.claiming and w.status.live and not w.status.terminal
    assert parsed.queue == Queue(claimable=4, queued_total=5, oldest_claimable_age_sec=12.5, running=1)
    assert len(parsed.recent_boots) == 1 and parsed.recent_boots[0].ok
    assert len(parsed.problems) == 4
    assert any("sleeping" in p for p in parsed.problems) and any("yesterday" in p for p in parsed.problems)
    assert plan(parsed, [], settings(), NOW).problems == parsed.problems
    with pytest.raises(DatabaseError):
        Snapshot.from_json(["not", "a", "snapshot"])


def test_pod_view_from_a_provider_pod_value() -> None:
    provider_pod = SimpleNamespace(
        id="p1",
        name="gpu-a",
        actual_status="RUNNING",
        ssh_ready=True,
        cost_per_hr=0.69,
        created_at="2026-11-29T11:58:00Z",
        uptime_seconds=0,
        gpu=GPU,
        data_center="EU-RO-1",
    )
    view = PodView.from_pod(provider_pod)
    assert view.status is PodStatus.RUNNING and view.ssh_ready and view.age_sec(NOW) == 120
    assert view.uptime_sec is None  # 0 is GraphQL's "unknown", not "brand new"
    assert (
        PodView.from_pod(SimpleNamespace(id="p2", actual_status="RESTARTING")).status
        is PodStatus.PROVISIONING
    )


def test_a_draining_worker_is_not_failed_for_the_heartbeats_the_database_stops_recording() -> None:
    # Drained 60 s ago while finishing a task (heard 70 s ago): the timeout counts from the drain.
    finishing = worker(
        "gpu-a", "draining", running=["t1"], heartbeat=70, changed=60, drain_reason="operator_request"
    )
    assert run(snap([finishing]), pods_for([finishing])).of_kind(FailWorker) == []
    # One recorded after the drain, then silence: dead.
    died = worker("gpu-a", "draining", running=["t1"], heartbeat=200, changed=300)
    [fail] = run(snap([died]), pods_for([died])).of_kind(FailWorker)
    assert fail.reason is Reason.HEARTBEAT_STALE


def test_lowering_max_active_gpus_cancels_boots_even_with_tasks_waiting() -> None:
    booting = [worker("gpu-a", "spawning", created=60), worker("gpu-b", "spawning", created=30)]
    listing = [pod("gpu-a", "STARTING", age=60), pod("gpu-b", "STARTING", age=30)]
    result = run(snap(booting, claimable=10), listing, settings(max_active_gpus=1, min_active_gpus=0))
    assert summary(result) == [("terminate_pod", "gpu-b", "scale_down_before_boot")]  # the newest
    result = run(snap(booting, claimable=10), listing, settings(max_active_gpus=0, min_active_gpus=0))
    assert len(result.of_kind(TerminatePod)) == 2 and spawns(result) == []


def test_a_cancelled_boot_gets_no_boot_step_in_the_same_tick() -> None:
    ready = worker("gpu-a", "spawning", created=40)
    result = run(snap([ready]), [pod("gpu-a", age=40)])  # nothing to do for it: cancel
    assert summary(result) == [("terminate_pod", "gpu-a", "scale_down_before_boot")]


def test_without_a_listing_a_failed_worker_ends_only_a_pod_its_own_spawn_recorded() -> None:
    """A worker silent past the heartbeat timeout while the listing fails is failed either way; its pod
    is ended by id only when the row carries our spawn's record (a row someone else made may name a pod
    that is not ours, whose name cannot be checked without a listing)."""
    for meta, expected in (({"spawn_reason": "demand"}, "pod-gpu-a"), ({}, None)):
        silent = worker("gpu-a", heartbeat=3600, running=["t1"], **meta)
        [failed] = run(snap([silent], running=1), None).of_kind(FailWorker)
        assert (failed.reason, failed.runpod_id) == (Reason.HEARTBEAT_STALE, expected)
