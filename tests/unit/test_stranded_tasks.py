"""Tasks a worker holds but does not run: claimed for it, the answer lost (banodoco/reigh-worker 22cbba9
does not read its own In Progress tasks back), while it runs the next. The policy sends them back to the
queue at the next tick; the worker, which is healthy, is left alone."""

from __future__ import annotations

import dataclasses

from orchestrator.core.actions import FailWorker, RequeueStrandedTasks
from orchestrator.core.evidence import RunningTask
from orchestrator.core.observed import Worker
from orchestrator.core.states import Reason
from tests.unit.test_policy import ago, pods_for, run, snap, worker


def holding(*tasks: tuple[str, str, float]) -> Worker:
    """An active worker holding ``(id, task type, started seconds ago)`` tasks."""
    w = worker("gpu-a", running=[t[0] for t in tasks])
    running = tuple(RunningTask(i, kind, ago(age)) for i, kind, age in tasks)
    return dataclasses.replace(w, running_tasks=running)


def test_a_task_older_than_the_one_the_worker_runs_is_requeued_and_the_worker_kept() -> None:
    w = holding(("t-lost", "wan_2_2_t2i", 300), ("t-run", "wan_2_2_t2i", 20))
    result = run(snap([w]), pods_for([w]))
    [requeue] = result.of_kind(RequeueStrandedTasks)
    assert requeue.worker_id == "gpu-a" and requeue.task_ids == ("t-lost",)
    assert requeue.reason is Reason.STRANDED_TASK
    assert result.of_kind(FailWorker) == []


def test_one_task_or_a_parent_waiting_beside_it_is_not_stranded() -> None:
    alone = holding(("t-run", "wan_2_2_t2i", 300))
    with_parent = holding(("p-1", "travel_orchestrator", 900), ("t-run", "travel_segment", 20))
    for w in (alone, with_parent):
        assert run(snap([w]), pods_for([w])).of_kind(RequeueStrandedTasks) == []
