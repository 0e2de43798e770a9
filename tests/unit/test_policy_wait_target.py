"""The wait target: the fleet sized each tick for WAIT_TARGET_SEC from what the snapshot says.

The queueing model (``orchestrator/core/sizing.py``) reads the arrival counts, each task type's
durations, the running and queued tasks and the recent boot and resume times; WAIT_TARGET_SEC=0 is the
threshold rule alone. These scenarios check the direction of each input, not the model's constants.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from orchestrator.core import sizing
from orchestrator.core.actions import Spawn
from orchestrator.core.evidence import RunningTask, TaskStats
from orchestrator.core.observed import Queue, Snapshot
from orchestrator.core.states import Reason
from orchestrator.render import render_plan
from tests.unit.test_policy import ago, pods_for, run, settings, snap, worker

SHORT = TaskStats("generate_video", completions=200, mean_sec=110, stddev_sec=30, p99_sec=180, max_sec=185)
LONG = TaskStats("lora_training", completions=20, mean_sec=1200, stddev_sec=200, p99_sec=1490, max_sec=1500)


def target(**changes: Any) -> Any:
    return settings(wait_target_sec=20, **changes)


def evidence(s: Snapshot, per_10min: int, per_hour: int, *stats: TaskStats) -> Snapshot:
    return replace(
        s, arrivals=((600.0, per_10min), (3600.0, per_hour)), task_stats={t.task_type: t for t in stats}
    )


def busy(worker_id: str, task_type: str = "generate_video", since: float = 30) -> Any:
    w = worker(worker_id, running=[f"t-{worker_id}"], stuck_since=since)
    return replace(w, running_tasks=(RunningTask(f"t-{worker_id}", task_type, ago(since)),))


def test_off_it_is_the_threshold_rule() -> None:
    s = evidence(snap([busy("gpu-a")], claimable=2), 15, 90, SHORT)
    assert run(s, pods_for(s.workers), settings()).desired == 1  # ceil((2 + 1) / 3)
    assert run(s, pods_for(s.workers), settings()).sizing == {}


def test_a_steady_rate_gets_headroom_for_the_target() -> None:
    workers = [busy("gpu-a"), busy("gpu-b")]
    s = evidence(snap(workers), 15, 90, SHORT)  # 1.5 tasks a minute of ~110 s: ~2.75 busy on average
    result = run(s, pods_for(workers), target())
    assert result.desired >= 5, result.sizing
    spawns = result.of_kind(Spawn)
    assert spawns and all(a.reason is Reason.WAIT_TARGET for a in spawns)
    assert result.sizing["rate_per_min"] == 1.5
    # The same fleet with no arrivals: nothing to stage for.
    assert run(evidence(snap(workers), 0, 0, SHORT), pods_for(workers), target()).desired == 2


def test_queued_work_not_counts_sizes_the_fleet() -> None:
    idle = worker("gpu-a", completed=30)
    three_long = replace(
        snap([idle], claimable=3), queue=Queue(claimable=3, claimable_by_type={"lora_training": 3})
    )
    s = evidence(three_long, 3, 3, SHORT, LONG)
    # Three 20-minute tasks: one worker each (the threshold rule would give one for all three).
    assert run(s, pods_for([idle]), target()).desired >= 3
    # Three 20-second tasks: the idle worker has them all started before a new one could boot.
    quick = TaskStats("caption", completions=50, mean_sec=20, stddev_sec=5, p99_sec=35, max_sec=40)
    three_short = evidence(
        replace(s, queue=Queue(claimable=3, claimable_by_type={"caption": 3})), 3, 3, SHORT, LONG, quick
    )
    assert run(three_short, pods_for([idle]), target()).desired == 1


def test_a_rare_task_is_not_worth_an_idle_worker() -> None:
    # One task an hour: a worker kept for it would idle ~59 minutes of each hour.
    s = evidence(snap([]), 0, 1, SHORT)
    assert run(s, [], target()).desired == 0


def test_the_rate_follows_a_level_shift_and_forgets_an_ended_burst() -> None:
    steady = sizing.arrival_rate(((600.0, 15), (3600.0, 90)))
    assert abs(steady * 60 - 1.5) < 1e-9
    # Traffic that started 10 minutes ago: the hour's count dilutes it, the last 10 minutes do not.
    started = sizing.arrival_rate(((600.0, 30), (3600.0, 30)))
    assert started * 60 > 2.0
    # A burst that ended: 60 tasks in the hour, none in the last 10 minutes: no headroom for more.
    assert sizing.arrival_rate(((600.0, 0), (3600.0, 60))) == 0.0
    assert sizing.arrival_rate(()) == 0.0


def test_the_plan_is_pure_and_says_what_the_model_saw() -> None:
    workers = [busy("gpu-a")]
    s = evidence(snap(workers, claimable=1), 12, 70, SHORT)
    first, again = run(s, pods_for(workers), target()), run(s, pods_for(workers), target())
    assert first == again
    assert {"workers", "keep", "lead_sec", "rate_per_min", "p_late"} <= set(first.sizing)
    assert first.to_dict()["sizing"] == dict(first.sizing)


def test_a_large_fleet_far_below_its_load_is_sized_for_the_whole_band() -> None:
    # 400 busy of 1,000 workers while 330 tasks a minute of ~110 s arrive (~600 busy on average): one
    # more worker alone saves almost nothing, a band of them is worth it. A step-by-step search stopped
    # at the busy count; the least-cost search finds the band, and quickly (the tail is normal there).
    workers = [busy(f"gpu-{i:04d}") for i in range(400)] + [
        worker(f"gpu-i{i:04d}", completed=5) for i in range(600)
    ]
    s = evidence(snap(workers), 3300, 19800, SHORT)
    started = time.perf_counter()
    result = run(s, pods_for(workers), target(max_active_gpus=1050))
    assert time.perf_counter() - started < 5.0
    assert result.sizing["for_lead"] > 450, result.sizing
    assert result.sizing["p_late"] <= sizing.EPSILON


def test_orchestrator_plan_says_why_the_fleet_is_its_size() -> None:
    s = evidence(snap([busy("gpu-a")], claimable=2), 30, 120, SHORT)
    text = render_plan(s, pods_for(s.workers), run(s, pods_for(s.workers), target()))
    [line] = [x for x in text.splitlines() if x.startswith("wait target:")]
    assert "workers wanted" in line and "arrivals/min" in line and "lead" in line, line
    sized = run(s, pods_for(s.workers), target()).sizing
    assert f"{sized['rate_per_min']:g} arrivals/min" in line and f"{sized['keep']} kept" in line, line
    # Off, the threshold rule alone: no such line.
    off = render_plan(s, pods_for(s.workers), run(s, pods_for(s.workers), settings(wait_target_sec=0)))
    assert "wait target:" not in off


PARENT = TaskStats(
    "travel_orchestrator", completions=20, mean_sec=1800, stddev_sec=300, p99_sec=2500, max_sec=2600
)


def test_a_worker_holding_only_a_parent_serves_the_queue_like_an_idle_one() -> None:
    # The real worker keeps a parent it ran In Progress until its last child completes, and claims the
    # children (and any other task) meanwhile: a parent is no reason to add a worker.
    holders = [busy(f"gpu-{i}", "travel_orchestrator", since=600) for i in range(3)]
    idle = [worker(f"gpu-{i}", completed=30) for i in range(3)]

    def plan_for(workers: list[Any], claimable: int = 3) -> Any:
        queue = Queue(
            claimable=claimable, claimable_by_type={"generate_video": claimable} if claimable else {}
        )
        s = evidence(replace(snap(workers, claimable=claimable), queue=queue), 6, 36, SHORT, PARENT)
        return run(s, pods_for(workers), target())

    assert plan_for(holders).desired == plan_for(idle).desired
    assert len(plan_for(holders).of_kind(Spawn)) == len(plan_for(idle).of_kind(Spawn))
    # One running a child besides its parent is busy with the child.
    child = replace(
        holders[0],
        running_task_ids=("t-gpu-0", "c-0"),
        running_count=2,
        running_tasks=(*holders[0].running_tasks, RunningTask("c-0", "generate_video", ago(20))),
    )
    assert plan_for([child, *holders[1:]]).desired >= plan_for(holders).desired
    # Kept while it holds a parent not known to wait on children (its own run, or its re-run to come);
    # one that waits is let go once idle (tests/unit/test_parent_release.py).
    quiet = plan_for(holders, claimable=0)
    assert not [a for a in quiet.actions if getattr(a, "worker_id", None) in {h.id for h in holders}]


def test_a_parent_is_sized_as_the_children_it_creates_not_as_its_whole_chain() -> None:
    # A parent's recorded duration is its chain's (In Progress until its last child completes), but its
    # worker is busy only while it creates the children, which then arrive and are counted as tasks of
    # their own. Fitted from its record, each parent counted its chain twice.
    workers = [worker(f"gpu-{i}", completed=30) for i in range(2)]
    queue = Queue(claimable=4, claimable_by_type={"travel_orchestrator": 4})
    parents = run(
        evidence(replace(snap(workers, claimable=4), queue=queue), 4, 24, SHORT, PARENT), pods_for(workers), target()
    )
    # Four queued parents take seconds of two idle workers: no new pod for them.
    assert parents.of_kind(Spawn) == [], parents.sizing
    model = sizing.TypeModel.from_stats({PARENT.task_type: PARENT, SHORT.task_type: SHORT})
    assert model.of("travel_orchestrator").mean == sizing.PARENT_RUN_SEC
    assert model.of("join_clips_orchestrator").mean == sizing.PARENT_RUN_SEC  # one never seen yet
    assert model.of("generate_video").mean == SHORT.mean_sec
    # A new ordinary type is sized as the ordinary types run, not pulled down by the parents' 10 s.
    assert model.of("upscale_video").mean == pytest.approx(SHORT.mean_sec)
    alone = sizing.TypeModel.from_stats({PARENT.task_type: PARENT})
    assert alone.of("upscale_video").mean == pytest.approx(sizing.PRIOR_TASK_MEAN_SEC)


def test_the_threshold_rule_does_not_count_a_held_parent_as_demand() -> None:
    # One worker holds a parent it ran a minute ago while its first segment waits: that worker takes the
    # segment. Counted as demand, the parent asked for a second pod that billed for the whole chain.
    holder = busy("gpu-0", "travel_orchestrator", since=60)
    s = replace(snap([holder], claimable=1), queue=Queue(claimable=1, running=1))
    result = run(s, pods_for([holder]), settings(tasks_per_gpu_threshold=1))
    assert result.desired == 1 and result.of_kind(Spawn) == []
    # A worker running an ordinary task still counts.
    worker_busy = busy("gpu-0", "generate_video", since=30)
    s = replace(snap([worker_busy], claimable=1), queue=Queue(claimable=1, running=1))
    assert run(s, pods_for([worker_busy]), settings(tasks_per_gpu_threshold=1)).desired == 2
