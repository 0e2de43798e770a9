"""The simulated Reigh worker against the Supabase stand-in and a real database: its own words end up
where the orchestrator reads them, and never change the orchestrator's state.

The worker runs as a process with the real worker's arguments, pointed at the stack's Supabase URL;
the orchestrator's side is played by its SQL functions (register, initializing, process start). What
the worker does goes through the app's heartbeat RPC, the Edge Functions and PostgREST only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core.health import reported_failure
from orchestrator.core.observed import Snapshot
from orchestrator.core.policy import stranded_tasks
from orchestrator.core.states import Reason
from orchestrator.standins.stack import Stack
from orchestrator.wiring import make_database


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def start_worker(stack: Stack, worker_id: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """What the orchestrator does before and at the start: the row, initializing, then the process."""
    settings = stack.settings()
    db = make_database(settings)
    try:
        token = int(db.lease_acquire("test-orchestrator", 300)["token"])
        db.register_worker(token, worker_id, "NVIDIA GeForce RTX 4090", {"runpod_id": f"rp-{worker_id}"})
        db.transition_worker(token, worker_id, "initializing", "pod_ready", {})
        db.merge_worker_metadata(token, worker_id, {"process_started_at": datetime.now(UTC).isoformat()})
    finally:
        db.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPABASE_", "SIM_WORKER_", "RUNPOD_"))}
    env |= {
        "SUPABASE_URL": stack.supabase_url,
        "SUPABASE_SERVICE_ROLE_KEY": stack.service_role_key,
        "SUPABASE_ANON_KEY": stack.anon_key,
        "SIM_WORKER_HEARTBEAT_SEC": "0.5",
        "SIM_WORKER_POLL_SEC": "0.2",
    }
    out = tmp_path / f"{worker_id}.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.standins.worker",
                "--supabase-url",
                stack.supabase_url,
                "--supabase-access-token",
                stack.service_role_key,
                "--worker",
                worker_id,
                "--wgp-profile",
                "1",
            ],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            start_new_session=True,
        )
    return proc, out


def row(stack: Stack, worker_id: str) -> dict[str, Any]:
    rows = stack.sql(
        "select status, last_heartbeat, metadata, reported_status, reported_at, reported_details "
        "from workers where id = %s",
        (worker_id,),
    )
    keys = ("status", "last_heartbeat", "metadata", "reported_status", "reported_at", "reported_details")
    return dict(zip(keys, rows[0], strict=True))


def task(stack: Stack, task_id: str) -> dict[str, Any]:
    rows = stack.sql(
        "select status::text, attempts, worker_id, output_location, error_message from tasks where id = %s",
        (task_id,),
    )
    return dict(
        zip(("status", "attempts", "worker_id", "output_location", "error_message"), rows[0], strict=True)
    )


@pytest.fixture
def killer() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def test_a_worker_heartbeats_claims_and_completes_without_changing_our_state(
    stack: Stack, tmp_path: Path, killer: list[subprocess.Popen[bytes]]
) -> None:
    [task_id] = stack.enqueue(1, duration_sec=0.3)
    proc, log = start_worker(stack, "gpu-w-ok", tmp_path)
    killer.append(proc)
    done = wait_for(
        lambda: (t := task(stack, task_id))["status"] == "Complete" and t, what="the task complete"
    )
    assert done["worker_id"] == "gpu-w-ok" and done["attempts"] == 0 and done["output_location"]
    w = wait_for(lambda: (r := row(stack, "gpu-w-ok"))["last_heartbeat"] and r, what="a heartbeat")
    # The heartbeat RPC said 'active' every beat; our state stays ours until the policy promotes.
    assert w["status"] == "initializing" and w["reported_status"] is None
    assert "vram_total_mb" in w["metadata"] and w["metadata"]["runpod_id"] == "rp-gpu-w-ok"
    assert proc.poll() is None, log.read_text()[-2000:]


def test_a_crash_is_recorded_as_reported_and_its_task_requeued_with_the_attempt(
    stack: Stack, tmp_path: Path, killer: list[subprocess.Popen[bytes]]
) -> None:
    [task_id] = stack.enqueue(1, duration_sec=0.6, params={"crash": True})
    proc, log = start_worker(stack, "gpu-w-crash", tmp_path)
    killer.append(proc)
    assert proc.wait(timeout=60) == 70, log.read_text()[-2000:]
    w = wait_for(lambda: (r := row(stack, "gpu-w-crash"))["reported_status"] and r, what="the crash beat")
    assert w["reported_status"] == "crashed" and w["status"] == "initializing"
    t = task(stack, task_id)
    assert t["status"] == "Queued" and t["attempts"] == 1 and t["worker_id"] is None, t


def test_a_fatal_error_is_recorded_as_reported_and_the_task_failed_while_the_process_polls_on(
    stack: Stack, tmp_path: Path, killer: list[subprocess.Popen[bytes]]
) -> None:
    """banodoco/reigh-worker 22cbba9: the fatal-error handler runs in the generation thread, whose loop
    catches the FatalWorkerError; the process goes on, the task fails through the main loop, and the
    row's `error` is what tells the orchestrator. Until the orchestrator ends it, it takes no more. The
    handler marks the row at the second `cuda_driver` error in a row (its threshold): the first task
    fails unseen."""
    [first] = stack.enqueue(1, duration_sec=0.4, params={"fatal": "cuda_driver"})
    [task_id] = stack.enqueue(1, duration_sec=0.4, params={"fatal": "cuda_driver"})
    # Queued after them: work the broken GPU must not take.
    later = stack.enqueue(2, duration_sec=0.1)
    proc, log = start_worker(stack, "gpu-w-fatal", tmp_path)
    killer.append(proc)
    t = wait_for(lambda: (x := task(stack, task_id))["status"] == "Failed" and x, what="the second failed")
    assert t["output_location"].startswith("CUDA driver initialization failed"), t
    assert task(stack, first)["status"] == "Failed"  # claimed first (created first), failed unseen
    w = row(stack, "gpu-w-fatal")
    assert w["status"] == "initializing"  # the PATCH's 'error' is the worker's word, not our state
    assert w["reported_status"] == "error" and w["reported_at"] is not None
    details = w["reported_details"]
    assert details["error_reason"].startswith("FATAL cuda_driver:") and details["self_terminated"] is True
    assert details["in_task"] is True  # it held the task as it reported
    assert w["metadata"]["self_terminated"] is True and w["metadata"]["runpod_id"] == "rp-gpu-w-fatal"
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    failures = [x for x in lines if x.get("event") == "fatal_mark_failed"]
    # The handler's task PATCH named a column tasks does not have, as in production.
    assert [x["step"] for x in failures] == ["patch_task"] and "PGRST204" in failures[0]["error"]
    # Alive and beating: its later 'active' beats leave the report as it was.
    reported_at = w["reported_at"]
    wait_for(lambda: row(stack, "gpu-w-fatal")["last_heartbeat"] > reported_at, what="a later beat")
    assert proc.poll() is None and row(stack, "gpu-w-fatal")["reported_status"] == "error"
    # It polled on, and every claim was refused (migration 20261216000200): the tasks queued after the
    # fatal one wait for another worker, none failed on the broken GPU.
    wait_for(
        lambda: sum(1 for x in log.read_text().splitlines() if '"claim_failed"' in x) >= 2,
        what="two refused claims",
    )
    assert [task(stack, t)["status"] for t in later] == ["Queued", "Queued"]
    assert [task(stack, t)["attempts"] for t in later] == [0, 0]
    # What the daemon makes of it: the worker failed for its fatal error.
    snapshot = stack.sql("select orch_snapshot()")[0][0]
    [seen] = [x for x in Snapshot.from_json(snapshot).workers if x.id == "gpu-w-fatal"]
    failure = reported_failure(seen)
    assert failure is not None and failure[0] is Reason.WORKER_ERROR


def test_a_task_whose_claim_answer_was_lost_is_found_beside_the_next_and_run_after_it(
    stack: Stack, tmp_path: Path, killer: list[subprocess.Popen[bytes]]
) -> None:
    """The app's claim committed, the answer never reached the worker (a gateway timeout), and reigh-worker
    22cbba9 does not read its own tasks back: it claims and runs the next one. The policy sees a task older
    than the one the worker runs and sends it back; the same worker takes it once free, within seconds
    instead of at the stuck-task limit (1200 s at the least), and stays healthy."""
    assert stack.rest is not None
    stack.rest.lose_claim_answers(1)
    [lost] = stack.enqueue(1, duration_sec=0.2)
    [running] = stack.enqueue(1, duration_sec=15.0)  # long enough to be read beside it on a loaded machine
    proc, _log = start_worker(stack, "gpu-w-lost", tmp_path)
    killer.append(proc)
    wait_for(lambda: task(stack, running)["status"] == "In Progress", what="the next task running")
    assert task(stack, lost)["status"] == "In Progress" and task(stack, lost)["worker_id"] == "gpu-w-lost"
    db = make_database(stack.settings())
    try:
        token = int(db.lease_acquire("test-orchestrator", 300)["token"])
        [seen] = [w for w in Snapshot.from_json(db.snapshot()).workers if w.id == "gpu-w-lost"]
        ids = stranded_tasks(seen)
        assert ids == (lost,)
        assert db.requeue_stranded_tasks(token, "gpu-w-lost", ids, Reason.STRANDED_TASK.value) == {
            "requeued": [lost],
            "failed": [],
        }
    finally:
        db.close()
    done = wait_for(lambda: (t := task(stack, lost))["status"] == "Complete" and t, what="the lost task done")
    assert done["worker_id"] == "gpu-w-lost" and done["attempts"] == 1
    assert task(stack, running)["status"] == "Complete" and proc.poll() is None
