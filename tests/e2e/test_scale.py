"""End-to-end: a burst of work scales the fleet up to MAX_ACTIVE_GPUS and back down to zero.

40 tasks with MAX_ACTIVE_GPUS=5 scale to 5 pods, never 6 at
any instant (per the emulator's record of every pod's creation and termination), every task completes
once, then the fleet drains to MIN_ACTIVE_GPUS=0 and no pod is left billing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import (
    all_done,
    drained,
    events,
    live_pods,
    max_overlap,
    pod_intervals,
    pods,
    task_counts,
    tasks,
    wait_until,
    worker_log,
    workers,
)

pytestmark = pytest.mark.e2e


def test_burst_scales_to_max_never_past_it_and_drains_to_zero(stack: Stack, in_process: Any) -> None:
    ids = stack.enqueue(40, duration_sec=1.0)
    # Sample the live pod count the whole time as well: a second witness beside the timestamps.
    peak_sampled = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_sampled
        while not stop.is_set():
            peak_sampled = max(peak_sampled, len(live_pods(stack)))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, name="pod-sampler", daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        in_process(MAX_ACTIVE_GPUS=5)
        wait_until(lambda: all_done(stack, 40), 90, "all 40 tasks complete", interval=0.25)
        done_after = time.monotonic() - started
        wait_until(
            lambda: drained(stack), 60, "the fleet to drain to zero with no pod billing", interval=0.25
        )
    finally:
        stop.set()
        sampler.join(timeout=5)

    # Scaled to exactly 5, never 6 at any instant (exact emulator times; the sampler agrees).
    peak = max_overlap(pod_intervals(stack))
    assert peak == 5, f"peak concurrent pods {peak}, expected 5"
    assert peak_sampled <= 5

    # Every task completed exactly once: Complete, never retried, with a result, by a worker we ran.
    rows = tasks(stack)
    assert {r["id"] for r in rows} == set(ids)
    assert task_counts(stack) == {"Complete": 40}
    assert all(r["attempts"] == 0 and r["has_result"] for r in rows), [
        r for r in rows if r["attempts"] or not r["has_result"]
    ]
    worker_ids = {w["id"] for w in workers(stack)}
    assert {r["worker_id"] for r in rows} <= worker_ids
    # One run and one completion (complete_task answered 200) per task, per the workers' own logs on the volume.
    logged = worker_log(stack)
    runs = Counter(line["task_id"] for line in logged if line.get("event") == "task_started")
    completed = Counter(line["task_id"] for line in logged if line.get("event") == "task_completed")
    assert runs == completed == Counter(ids), (runs, completed)

    # Drained to MIN_ACTIVE_GPUS=0: every row terminated, every pod terminated with its billing stopped.
    all_pods = pods(stack)
    assert all(p["status"] == "TERMINATED" and p["terminatedAt"] for p in all_pods)
    assert all(w["status"] == "terminated" for w in workers(stack))
    # One pod per worker row, named after it (no duplicates, no strays).
    assert sorted(p["name"] for p in all_pods) == sorted(worker_ids)
    created = events(stack, "pod_created")
    assert len(created) == len(all_pods)
    billed = [p["billedSeconds"] for p in all_pods]
    time.sleep(0.3)  # billing is time-based: a stopped meter does not move
    assert [p["billedSeconds"] for p in pods(stack)] == billed
    print(f"burst: 40 tasks done in {done_after:.1f}s on {len(all_pods)} pods (peak {peak})")
