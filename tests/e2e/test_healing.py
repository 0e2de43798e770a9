"""End-to-end: a worker dies mid-task; its task is requeued (attempt counted) and finished elsewhere.

Two ways to die inside a RUNNING pod that keeps billing and answering:
- the worker process is killed (``EmulatorAdmin.crash_worker``: an OOM kill, a segfault). Its heartbeat
  guardian, a separate process in the real worker too, reports ``crashed`` once; the daemon fails the
  worker on that word (``worker_crashed``) without waiting for a heartbeat timeout;
- the whole worker freezes, guardian included (``EmulatorAdmin.hang_worker``: nobody left to say so).
  The daemon must notice the silence (HEARTBEAT_TIMEOUT_SEC).
Either way the daemon fails the worker, requeues its task with ``attempts = 1``, terminates the dead
pod, and a new worker completes the task.
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import events, pods, tasks, wait_until, worker_log, workers

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("fault", "reason"), [("crash", "worker_crashed"), ("hang", "heartbeat_stale")], ids=["killed", "frozen"]
)
def test_worker_dying_mid_task_is_replaced_and_its_task_requeued(
    stack: Stack, in_process: Any, fault: str, reason: str
) -> None:
    [task_id] = stack.enqueue(1, duration_sec=4.0)
    # The heartbeat timeout is long for the killed worker: its own report must end it, not silence.
    in_process(MAX_ACTIVE_GPUS=2, HEARTBEAT_TIMEOUT_SEC=60 if fault == "crash" else 4)

    def running() -> dict[str, Any] | None:
        row = tasks(stack)[0]
        return row if row["status"] == "In Progress" else None

    first = wait_until(running, 60, "the task to start on a worker")
    dead_worker = first["worker_id"]
    [dead] = [w for w in workers(stack) if w["id"] == dead_worker]
    dead_pod = dead["metadata"]["runpod_id"]
    hurt = stack.admin.crash_worker if fault == "crash" else stack.admin.hang_worker
    assert hurt(dead_pod), f"the emulator did not {fault} the worker"

    def requeued_then_done() -> dict[str, Any] | None:
        row = tasks(stack)[0]
        return row if row["status"] == "Complete" else None

    done = wait_until(requeued_then_done, 60, "the task to be completed by another worker", interval=0.25)
    assert done["id"] == task_id
    assert done["attempts"] == 1, done
    assert done["worker_id"] != dead_worker
    assert done["has_result"]
    # Per the workers' own logs: the dead one started it and never finished, the new one did. The worker
    # logs the completion after the database has it, so its line may come a moment after the row.
    def runs() -> list[tuple[str, str]]:
        return [(line["_file"], line["event"]) for line in worker_log(stack) if line.get("task_id") == task_id]

    seen = wait_until(
        lambda: (lambda r: r if (done["worker_id"], "task_completed") in r else None)(runs()),
        10,
        "the new worker's log to record the completion",
    )
    assert (dead_worker, "task_claimed") in seen and (dead_worker, "task_completed") not in seen
    assert (done["worker_id"], "task_completed") in seen

    # The dead worker failed for the right reason, its pod terminated.
    wait_until(
        lambda: {p["id"]: p["status"] for p in pods(stack)}.get(dead_pod) == "TERMINATED",
        30,
        "the dead pod to be terminated",
    )
    [failed] = [w for w in workers(stack) if w["id"] == dead_worker]
    assert failed["metadata"].get("error_reason") == reason, failed
    assert failed["status"] in ("error", "terminated")
    terminations = [
        e for e in events(stack) if e["runpod_id"] == dead_pod and e["kind"] == "pod_terminate_requested"
    ]
    assert terminations and terminations[0]["reason"] == reason
    wait_until(
        lambda: next(w for w in workers(stack) if w["id"] == dead_worker)["status"] == "terminated",
        30,
        "the dead row to close",
    )


def test_preempted_pod_fails_its_worker_and_the_task_moves_on(stack: Stack, in_process: Any) -> None:
    """The host takes the pod away (EXITED at the provider): no heartbeat timeout needed to notice."""
    [task_id] = stack.enqueue(1, duration_sec=4.0)
    in_process(MAX_ACTIVE_GPUS=2, HEARTBEAT_TIMEOUT_SEC=60)

    def running() -> dict[str, Any] | None:
        row = tasks(stack)[0]
        return row if row["status"] == "In Progress" else None

    lost_worker = wait_until(running, 60, "the task to start on a worker")["worker_id"]
    lost_pod = next(w for w in workers(stack) if w["id"] == lost_worker)["metadata"]["runpod_id"]
    stack.admin.preempt(lost_pod, "EXITED")

    done = wait_until(
        lambda: (r := tasks(stack)[0])["status"] == "Complete" and r,
        60,
        "the task done elsewhere",
        interval=0.25,
    )
    assert done["attempts"] == 1 and done["worker_id"] != lost_worker
    failed = next(w for w in workers(stack) if w["id"] == lost_worker)
    assert failed["metadata"].get("error_reason") == "pod_failed", failed
    # An EXITED pod bills no GPU but keeps its disk: it is terminated all the same.
    wait_until(
        lambda: stack.admin.pod(lost_pod)["status"] == "TERMINATED", 30, "the preempted pod terminated"
    )
    assert task_id == done["id"]
