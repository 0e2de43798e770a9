"""Tasks a worker holds but does not run: claimed for it, the answer lost (banodoco/reigh-worker 22cbba9
does not read its own In Progress tasks back), while it runs the next. The policy sends them back to the
queue at the next tick; the worker, which is healthy, is left alone."""

from __future__ import annotations

import dataclasses

from orchestrator.core.actions import FailWorker, Promote, RequeueStrandedTasks
from orchestrator.core.evidence import RunningTask
from orchestrator.core.observed import Worker
from orchestrator.core.states import Reason, WorkerState
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


def test_it_waits_for_a_tick_in_which_nothing_else_is_done_for_that_worker() -> None:
    """The executor runs one action per worker at a time: the worker's promotion (or drain) goes first,
    the requeue at the next tick, rather than the other way round."""
    w = worker(
        "gpu-a", "initializing", created=200, heartbeat=3, initialized_at=ago(60), process_started_at=ago(50)
    )
    running = (RunningTask("t-lost", "wan_2_2_t2i", ago(40)), RunningTask("t-run", "wan_2_2_t2i", ago(20)))
    w = dataclasses.replace(w, running_tasks=running, running_task_ids=("t-lost", "t-run"), running_count=2)
    first = run(snap([w]), pods_for([w]))
    assert first.of_kind(Promote) and first.of_kind(RequeueStrandedTasks) == []
    promoted = dataclasses.replace(w, status=WorkerState.ACTIVE, activated_at=ago(1))
    [requeue] = run(snap([promoted]), pods_for([promoted])).of_kind(RequeueStrandedTasks)
    assert requeue.task_ids == ("t-lost",)
