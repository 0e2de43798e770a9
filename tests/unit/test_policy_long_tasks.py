"""Long tasks are not stuck tasks: stuck-ness judged from each type's observed durations.

With ``TASK_STUCK_TIMEOUT_SEC`` unset (the default) a running task is stuck past 3x the p99 of its type's
recent completions, never before 1200 s, and a type seen fewer than 10 times gets an hour (or 3x its
longest run). The fixed limit stays as an explicit override.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.core.actions import FailWorker
from orchestrator.core.evidence import RunningTask, TaskStats
from orchestrator.core.health import stuck_limit
from orchestrator.core.observed import Snapshot
from orchestrator.core.states import Reason
from tests.unit.test_policy import ago, pods_for, run, settings, snap, worker

LORA = TaskStats("lora_training", completions=12, mean_sec=1150, stddev_sec=200, p99_sec=1490, max_sec=1500)
SHORT = TaskStats("generate_video", completions=50, mean_sec=110, stddev_sec=30, p99_sec=180, max_sec=185)


def running(task_type: str, seconds: float, stats: tuple[TaskStats, ...] = (LORA, SHORT)) -> Snapshot:
    w = worker("gpu-a", running=["t1"], stuck_since=seconds)
    w = replace(w, running_tasks=(RunningTask("t1", task_type, ago(seconds)),))
    return replace(snap([w]), task_stats={s.task_type: s for s in stats})


def failed(snapshot: Snapshot, **cfg: object) -> list[FailWorker]:
    return run(snapshot, pods_for(snapshot.workers), settings(**cfg) if cfg else None).of_kind(FailWorker)


def test_the_default_is_unset_and_judged_from_evidence() -> None:
    assert settings().task_stuck_timeout_sec is None
    assert stuck_limit(settings(), LORA) == 3 * 1490
    assert stuck_limit(settings(), SHORT) == 1200  # the floor
    assert stuck_limit(settings(), None) == 3600  # nothing seen yet
    few = replace(LORA, completions=3, max_sec=1600)
    assert stuck_limit(settings(), few) == 3 * 1600


def test_a_long_task_past_twenty_minutes_is_not_stuck() -> None:
    assert failed(running("lora_training", 1500)) == []
    assert failed(running("lora_training", 4400)) == []
    [fail] = failed(running("lora_training", 4500))
    assert fail.reason is Reason.TASK_STUCK and fail.running_task_ids == ("t1",)
    assert fail.metadata["error_details"]["limit_sec"] == 4470.0


def test_a_hung_short_task_is_found_at_the_floor() -> None:
    assert failed(running("generate_video", 1100)) == []
    [fail] = failed(running("generate_video", 1250))
    assert fail.reason is Reason.TASK_STUCK


def test_a_type_never_seen_complete_gets_an_hour() -> None:
    assert failed(running("lora_training", 1500, stats=())) == []
    [fail] = failed(running("lora_training", 3700, stats=()))
    assert fail.reason is Reason.TASK_STUCK


def test_orchestrator_parents_are_exempt_whatever_their_age() -> None:
    assert failed(running("travel_orchestrator", 20000)) == []


def test_the_fixed_limit_is_an_explicit_override() -> None:
    [fail] = failed(running("lora_training", 1300), task_stuck_timeout_sec=1200)
    assert fail.reason is Reason.TASK_STUCK
    assert failed(running("generate_video", 1250), task_stuck_timeout_sec=5000) == []
