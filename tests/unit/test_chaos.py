"""The chaos soak (``orchestrator/studies/chaos.py``): the real policy passes, broken ones fail by name.

The full 24-virtual-hour soak (20 restarts, every fault) runs in about a second, so it runs here in
full, for a few seeds. Each broken variant is the real ``plan()`` with its inputs or outputs
transformed, the kind of mistake the old system made, and must trip the invariant that guards it:
proof that the checks can fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from orchestrator.core.actions import FailWorker, MarkTerminated, Plan, RequeueTasks, TerminatePod
from orchestrator.core.config import Settings
from orchestrator.core.observed import PodView, Snapshot
from orchestrator.core.policy import plan as real_plan
from orchestrator.core.states import Reason, WorkerState
from orchestrator.studies.chaos import ChaosConfig, chaos_faults, soak, summary
from orchestrator.studies.policies import broken_spawning_uncounted


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_the_24_hour_soak_passes_with_zero_violations(seed: int) -> None:
    cfg = ChaosConfig(hours=24.0, seed=seed, restarts=20)
    result = soak(cfg)
    assert result.violations == [], summary(result)
    # The soak really was chaotic: every fault happened, and the work still got done.
    c = result.counters
    assert c["restarts"] == 20
    assert c["worker_crashes"] > 0 and c["worker_hangs"] > 0
    assert c["ssh_failures"] > 0 and c["listing_failures"] > 0
    assert len(chaos_faults(cfg).outages) >= 5
    assert result.tasks_complete + result.tasks_dead_lettered == result.tasks_total > 1000
    assert result.pods_leaked == 0 and result.tasks_lost == 0 and result.tasks_duplicated == 0
    # The recovery paths ran: restarts in the middle of actions, strangers' pods reaped as orphans.
    info = summary(result)
    assert c["restarts_mid_action"] > 0
    assert info["orphans_reaped"] >= c["stray_pods"] > 0
    assert info["stuck_tasks"] > 0
    # A crashed worker process is reported by its heartbeat guardian ('crashed'), so crashes are failed
    # for what they are rather than after the heartbeat timeout (left to whole-machine freezes).
    assert result.actions.get("fail_worker:worker_crashed", 0) > 0


def test_not_counting_booting_workers_as_capacity_breaks_the_ceiling() -> None:
    result = soak(ChaosConfig(hours=8.0, seed=7, restarts=5), plan_fn=broken_spawning_uncounted)
    names = {v.name for v in result.violations}
    assert "max_exceeded" in names
    assert "spend_cap_exceeded" in names


def _old_termination_bugs(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    """The old system's leak: a row marked terminated when termination was only attempted (here: never
    asked of the provider), and no orphan sweep to catch the pod it left behind."""
    result = real_plan(snapshot, pods, settings, now, prices=prices)
    actions: list[Any] = []
    for a in result.actions:
        if isinstance(a, TerminatePod) and a.worker_id is None:
            continue  # no orphan sweep
        if isinstance(a, TerminatePod) and a.worker_id and a.transition_from is not None:
            actions.append(
                MarkTerminated(reason=a.reason, worker_id=a.worker_id, from_status=a.transition_from)
            )
            continue
        actions.append(a)
    return replace(result, actions=tuple(actions))


def test_marking_rows_terminated_without_the_provider_leaks_pods() -> None:
    result = soak(ChaosConfig(hours=6.0, seed=7, restarts=3), plan_fn=_old_termination_bugs)
    assert "pod_leaked" in {v.name for v in result.violations}
    assert result.pods_leaked > 0


def _forgets_tasks(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    """Fails workers by terminating their pods without requeueing what they were running."""
    result = real_plan(snapshot, pods, settings, now, prices=prices)
    actions: list[Any] = []
    for a in result.actions:
        if isinstance(a, RequeueTasks):
            continue
        if isinstance(a, MarkTerminated):
            a = replace(a, requeue_tasks=False)
        if isinstance(a, FailWorker) and a.runpod_id and a.from_status is not WorkerState.ERROR:
            a = TerminatePod(
                reason=a.reason, runpod_id=a.runpod_id, worker_id=a.worker_id, transition_from=a.from_status
            )
        actions.append(a)
    return replace(result, actions=tuple(actions))


def test_terminating_without_requeueing_loses_tasks() -> None:
    result = soak(ChaosConfig(hours=12.0, seed=7, restarts=3), plan_fn=_forgets_tasks)
    names = {v.name for v in result.violations}
    assert names & {"task_orphaned", "task_lost"}, summary(result)


def _requeues_healthy_workers(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
) -> Plan:
    """Requeues the tasks of live, healthy workers (the way a too-eager stuck check would)."""
    result = real_plan(snapshot, pods, settings, now, prices=prices)
    extra = [
        RequeueTasks(reason=Reason.TASK_STUCK, worker_id=w.id, running_task_ids=w.running_task_ids)
        for w in snapshot.workers
        if w.status is WorkerState.ACTIVE and w.running_count > 0
    ]
    return replace(result, actions=(*result.actions, *extra))


def test_requeueing_a_running_task_gets_it_run_twice() -> None:
    result = soak(ChaosConfig(hours=4.0, seed=7, restarts=0), plan_fn=_requeues_healthy_workers)
    assert "task_run_twice" in {v.name for v in result.violations}
    assert result.tasks_duplicated > 0
