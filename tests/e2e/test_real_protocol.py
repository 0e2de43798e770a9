"""End-to-end: the daemon with workers that speak only the real worker's protocol.

Each pod runs the simulated Reigh worker (``orchestrator.standins.worker``): a heartbeat guardian process
posting the app's ``func_worker_heartbeat_with_logs``, the poll cycle over the app's Edge Functions
(``task-counts``, ``claim-next-task``, ``update-task-status``, ``complete_task``) served by the Supabase
stand-in over the database, and nothing else: no function of ours is called by a worker. These runs
show what the orchestrator makes of that protocol: promotion from a heartbeat it observes, the
guardian's ``crashed`` report failing the worker (its task requeued with the attempt counted, up to
``MAX_TASK_ATTEMPTS``), a draining worker terminated only once it holds no task, and no pod left billing.
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.actions import TerminatePod
from orchestrator.core.observed import Snapshot
from orchestrator.core.states import Reason, WorkerState
from orchestrator.loop.controller import Controller
from orchestrator.standins.stack import Stack
from orchestrator.wiring import make_database, make_provider
from tests.e2e.conftest import (
    FAST,
    WORKER_ENV,
    all_done,
    drained,
    events,
    live_pods,
    pods,
    task_counts,
    tasks,
    wait_until,
    worker_log,
    workers,
)

pytestmark = pytest.mark.e2e


def _worker_functions(stack: Stack) -> list[str]:
    """Functions of the replaced worker contract still in the database (there must be none)."""
    rows = stack.sql(
        "select proname from pg_proc where pronamespace = 'public'::regnamespace and proname = any(%s)",
        (["worker_claim_task", "worker_heartbeat", "worker_complete_task", "worker_fail_task"],),
    )
    return [r[0] for r in rows]


def test_tasks_complete_with_workers_speaking_only_the_real_protocol(stack: Stack, in_process: Any) -> None:
    assert _worker_functions(stack) == []
    ids = stack.enqueue(6, duration_sec=0.5)
    in_process(MAX_ACTIVE_GPUS=2)
    wait_until(lambda: all_done(stack, 6), 90, "all six tasks complete", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)

    rows = tasks(stack)
    assert {r["id"] for r in rows} == set(ids)
    assert all(r["has_result"] and r["attempts"] == 0 for r in rows), rows
    # Every worker was promoted by the daemon from a heartbeat it saw, never by a heartbeat itself.
    seen = workers(stack)
    assert seen and all(w["status"] == "terminated" for w in seen)
    promotions = [e for e in events(stack) if e["reason"] == "first_heartbeat"]
    assert {e["worker_id"] for e in promotions} == {w["id"] for w in seen}
    # The heartbeat function wrote what it writes: VRAM from the pod's nvidia-smi, the time.
    assert all("vram_total_mb" in w["metadata"] for w in seen)
    # Per the workers' own logs: a guardian beside each worker, claims through the Edge Function.
    logged = worker_log(stack)
    by_event = {line.get("event") for line in logged}
    assert {"guardian_started", "worker_started", "task_claimed", "task_completed"} <= by_event
    claimed = [line["task_id"] for line in logged if line.get("event") == "task_claimed"]
    assert sorted(claimed) == sorted(ids)
    assert live_pods(stack) == []


def test_a_crashing_worker_is_reported_crashed_replaced_and_its_task_counted(
    stack: Stack, in_process: Any
) -> None:
    """``params.crash`` kills every worker that runs it: each death is reported by the guardian,
    failed as ``worker_crashed``, replaced; the attempts reach MAX_TASK_ATTEMPTS and the task is
    dead-lettered, while the other tasks complete."""
    [poison] = stack.enqueue(1, duration_sec=1.0, params={"crash": True})
    healthy = stack.enqueue(2, duration_sec=0.5)
    # A long heartbeat timeout: the crash must be seen from the worker's own report, not from silence.
    in_process(MAX_ACTIVE_GPUS=2, MAX_TASK_ATTEMPTS=2, HEARTBEAT_TIMEOUT_SEC=300)

    def settled() -> bool:
        counts = task_counts(stack)
        return counts.get("Complete", 0) == 2 and counts.get("Failed", 0) == 1

    wait_until(settled, 120, "the healthy tasks complete and the poison task dead-lettered", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)

    by_id = {r["id"]: r for r in tasks(stack)}
    assert by_id[poison]["status"] == "Failed" and by_id[poison]["attempts"] == 2, by_id[poison]
    assert all(by_id[t]["status"] == "Complete" and by_id[t]["attempts"] == 0 for t in healthy)
    crashed = [w for w in workers(stack) if w["metadata"].get("error_reason") == "worker_crashed"]
    assert len(crashed) == 2, [(w["id"], w["metadata"].get("error_reason")) for w in workers(stack)]
    reported = stack.sql(
        "select id, reported_status from workers where id = any(%s)", ([w["id"] for w in crashed],)
    )
    assert {r[1] for r in reported} == {"crashed"}
    # Each crashed worker ran the poison task, and its pod was terminated for it.
    logged = worker_log(stack)
    for w in crashed:
        runs = [
            line["event"] for line in logged if line.get("_file") == w["id"] and line.get("task_id") == poison
        ]
        assert "task_crashing_worker" in runs, (w["id"], runs)
        terminations = [e for e in events(stack, "pod_terminate_requested") if e["worker_id"] == w["id"]]
        assert terminations and terminations[0]["reason"] == "worker_crashed"
    assert not any(w["metadata"].get("error_reason") == "heartbeat_stale" for w in workers(stack))
    assert all(p["status"] == "TERMINATED" for p in pods(stack))


def test_a_draining_worker_is_terminated_only_once_it_holds_no_task(stack: Stack) -> None:
    """Ticks driven by hand, so each step is seen: the real worker keeps polling once drained, the
    database refuses it a task and refuses its termination while it holds one; the executor takes that
    refusal as superseded and leaves the pod alone; once idle, the worker is terminated."""
    settings = stack.settings(
        **{**FAST, "MAX_ACTIVE_GPUS": 1, "ORCHESTRATOR_POLL_SEC": 30, "LEASE_TTL_SEC": 120}
    )
    controller = Controller(settings, make_database(settings), make_provider(settings), worker_env=WORKER_ENV)

    def tick_until(predicate: Any, timeout: float, what: str) -> Any:
        def once() -> Any:
            controller.tick()
            controller.wait_idle(30)
            return predicate()

        return wait_until(once, timeout, what, interval=0.3)

    def row(worker_id: str) -> dict[str, Any]:
        return next(w for w in workers(stack) if w["id"] == worker_id)

    def task_row(task_id: str) -> dict[str, Any]:
        return next(r for r in tasks(stack) if r["id"] == task_id)

    try:
        [long_task] = stack.enqueue(1, duration_sec=5.0)
        tick_until(lambda: task_row(long_task)["status"] == "In Progress", 60, "the long task to start")
        busy = task_row(long_task)["worker_id"]
        tick_until(lambda: row(busy)["status"] == "active", 30, "the worker promoted from its heartbeat")
        pod_id = row(busy)["metadata"]["runpod_id"]
        controller.db.request_termination(busy, "e2e-test")
        tick_until(lambda: row(busy)["status"] == "draining", 10, "the worker drained")
        later = stack.enqueue(2, duration_sec=0.5)

        # The plan's termination, had it raced a claim: the database refuses, the executor calls it
        # superseded and does not touch the pod.
        token = controller.token
        assert token is not None
        race = TerminatePod(
            reason=Reason.DRAINED,
            runpod_id=pod_id,
            pod_name=busy,
            worker_id=busy,
            transition_from=WorkerState.DRAINING,
        )
        [outcome] = controller.apply([race], Snapshot.from_json(controller.db.snapshot("gpu-")), token)
        assert outcome["outcome"] == "superseded", outcome
        assert stack.admin.pod(pod_id)["status"] == "RUNNING" and row(busy)["status"] == "draining"

        # No tick now: the worker finishes its task, then polls on, and every claim it makes is refused.
        wait_until(lambda: task_row(long_task)["status"] == "Complete", 30, "the long task to finish")
        wait_until(
            lambda: [
                line
                for line in worker_log(stack)
                if line.get("_file") == busy
                and line.get("event") == "claim_failed"
                and line.get("status") == 500
            ],
            20,
            "a claim of the draining worker refused",
        )
        assert all(task_row(t)["status"] == "Queued" and task_row(t)["worker_id"] is None for t in later)

        # Idle now: the next tick terminates it (an operator's request), the slot frees, the work moves on.
        tick_until(
            lambda: stack.admin.pod(pod_id)["status"] == "TERMINATED", 20, "the drained pod terminated"
        )
        ends = [e for e in events(stack) if e["worker_id"] == busy and e["kind"] == "pod_terminate_requested"]
        assert ends and ends[0]["reason"] == "operator_request"
        tick_until(lambda: all_done(stack, 3), 90, "every task complete")
        assert task_row(long_task)["worker_id"] == busy and task_row(long_task)["attempts"] == 0
        assert all(task_row(t)["worker_id"] != busy for t in later)
        tick_until(lambda: drained(stack), 60, "scale to zero")
        assert live_pods(stack) == []
    finally:
        controller.shutdown()
        controller.db.close()
        close = getattr(controller.provider, "close", None)
        if close is not None:
            close()


def test_a_task_whose_claim_answer_was_lost_runs_within_seconds_on_the_same_healthy_worker(
    stack: Stack, in_process: Any
) -> None:
    """The app's claim committed but its answer never reached the worker (a gateway timeout). The pinned
    worker (reigh-worker 22cbba9) does not read its own tasks back: it claims and runs the next. The
    daemon sees the older task held beside the one running and sends it back; the worker runs it next.
    Before, only the stuck-task check ended it (here an hour: its type has no completions), by failing
    the worker and ending its pod."""
    assert stack.rest is not None
    stack.rest.lose_claim_answers(1)
    [lost] = stack.enqueue(1, duration_sec=0.3)
    [later] = stack.enqueue(1, duration_sec=3.0)
    in_process(MAX_ACTIVE_GPUS=1, HEARTBEAT_TIMEOUT_SEC=300)
    wait_until(lambda: all_done(stack, 2), 120, "both tasks complete", interval=0.25)
    by_id = {r["id"]: r for r in tasks(stack)}
    assert by_id[lost]["attempts"] == 1 and by_id[later]["attempts"] == 0, by_id
    [requeued] = [e for e in events(stack, "tasks_requeued") if e["details"].get("stranded")]
    assert requeued["reason"] == "task_not_run" and requeued["details"]["requeued"] == [lost]
    # One worker did it all, and none was failed for it.
    seen = workers(stack)
    assert len(seen) == 1 and "error_reason" not in seen[0]["metadata"], seen
    claimed = [line["task_id"] for line in worker_log(stack) if line.get("event") == "task_claimed"]
    assert claimed == [later, lost]  # the lost claim's answer never came: only the retry is logged
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)
    assert live_pods(stack) == []
