"""End-to-end: a parent task (``travel_orchestrator``) run by the real daemon and workers that hold it as
the real worker does.

The worker stand-in (``orchestrator.standins.worker``) runs a parent as Reigh-Worker's travel orchestrator
handler runs one (banodoco/Reigh-Worker ``source/task_handlers/travel/orchestrator.py``): it creates a chain
of ``travel_segment`` children through the app's ``create-task``, each ``dependant_on`` the one before,
reports "still orchestrating" (answered 409) and goes back to polling with the parent In Progress under
its own id; the Supabase stand-in's ``complete_task`` completes the parent with its last child
(banodoco/reigh-app ``complete_task/orchestratorCore.ts``), whoever holds it. What an operator checks
here: the children ran in order, the parent ended Complete with the last of them, a worker never ended
while it held the parent (one that had nothing else to do let it go first, ``parents_released``), a
chain whose children cannot run keeps no GPU, and once the queue is empty no pod is left billing.
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import drained, events, live_pods, live_workers, wait_until, worker_log

pytestmark = pytest.mark.e2e

PROJECT = "5b3c2f4e-1111-4a2b-9c3d-000000000001"
SEGMENT_SEC = 4.0  # longer than GPU_IDLE_TIMEOUT_SEC (3 s in FAST): a holder waiting on a child looks idle
# States in which a worker has ended or is ending (or failed): none may come while it holds the parent.
# (`draining` may: a drained holder lets its parents go, then ends.)
ENDING = {"terminating", "error", "stopping", "stopped", "terminated"}


def _rows(stack: Stack, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    rows = stack.sql(
        "select id::text, task_type, status::text, worker_id, params, dependant_on::text[], output_location,"
        " generation_started_at, generation_processed_at from tasks where " + where + " order by created_at",
        params,
    )
    keys = ("id", "task_type", "status", "worker_id", "params", "dependant_on", "output_location",
            "started_at", "processed_at")  # fmt: skip
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _children(stack: Stack, parent: str) -> list[dict[str, Any]]:
    return _rows(stack, "params ->> 'orchestrator_task_id_ref' = %s", (parent,))


def _parent(stack: Stack, parent: str) -> dict[str, Any]:
    return _rows(stack, "id = %s", (parent,))[0]


@pytest.mark.parametrize("wait_target", [0, 20], ids=["threshold_rule", "wait_target"])
def test_a_parent_holds_its_worker_while_its_chain_runs_and_completes_with_its_last_child(
    stack: Stack, in_process: Any, wait_target: int
) -> None:
    [parent] = stack.enqueue(
        1,
        duration_sec=SEGMENT_SEC,
        task_type="travel_orchestrator",
        params={"orchestrator_details": {"num_new_segments_to_generate": 2}},
    )
    stack.sql("update tasks set project_id = %s where id = %s", (PROJECT, parent))
    # One task per GPU: the queued child asks for a second worker while the holder waits on the chain.
    # Under both scaling rules: the threshold rule (FAST's default here) and the wait target's model,
    # which counts a worker holding only a parent as free and sizes the parent as its own run.
    in_process(MAX_ACTIVE_GPUS=2, TASKS_PER_GPU_THRESHOLD=1, WAIT_TARGET_SEC=wait_target)

    held = wait_until(
        lambda: (row := _parent(stack, parent))["worker_id"] and len(_children(stack, parent)) == 2 and row,
        60,
        "the parent claimed and its two children created",
        interval=0.25,
    )
    holder = held["worker_id"]
    done = wait_until(
        lambda: (row := _parent(stack, parent))["status"] == "Complete" and row,
        120,
        "the parent complete",
        interval=0.25,
    )
    if wait_target:
        # The model keeps a worker warm while tasks arrived in the last minutes (tests/e2e/conftest.py):
        # at most that one is left, the parent's chain needing none.
        wait_until(lambda: len(live_workers(stack)) <= 1, 60, "the fleet down to the one kept", interval=0.25)
    else:
        wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)

    first, second = _children(stack, parent)
    # The chain: two travel segments naming their parent, the second waiting on the first.
    assert [c["task_type"] for c in (first, second)] == ["travel_segment"] * 2
    assert [c["params"]["segment_index"] for c in (first, second)] == [0, 1]
    assert first["dependant_on"] is None and second["dependant_on"] == [first["id"]]
    assert all(c["status"] == "Complete" and c["output_location"] for c in (first, second))
    assert second["started_at"] >= first["processed_at"]
    assert all(
        (c["processed_at"] - c["started_at"]).total_seconds() >= SEGMENT_SEC * 0.9 for c in (first, second)
    )
    # The parent: completed with its last child, under the worker that ran it unless that worker, idle
    # while a child ran elsewhere, was let go first (it released the parent: no worker named).
    released = [e for e in events(stack, "parents_released") if parent in e["details"]["released"]]
    assert [e["worker_id"] for e in released] == ([holder] if done["worker_id"] is None else [])
    assert done["worker_id"] in (holder, None) and done["processed_at"] >= second["processed_at"]
    if done["output_location"] is None:
        # The app's completion: the output left as it was (the waiting report was refused), the start
        # moved to its chain's.
        assert done["started_at"] == first["started_at"]
    else:
        # The holder ran it again in the moment between its last child's completion and the app's own
        # UPDATE, found the chain finished and reported that child's output first.
        assert second["id"] in done["output_location"]
    # The holder never ended while it held the parent, however long it waited on a child.
    held_until = released[0]["at"] if released else done["processed_at"]
    moves = [e for e in events(stack, "transition") if e["worker_id"] == holder]
    early = [(e["at"], e["details"]) for e in moves if e["details"].get("to") in ENDING and e["at"] < held_until]  # fmt: skip
    assert early == [], early
    assert wait_target or any(e["details"].get("to") == "terminated" for e in moves)
    # The worker's own account: the waiting report answered 409, the children made through create-task.
    logged = [line for line in worker_log(stack) if line.get("_file") == holder]
    waiting = [line for line in logged if line.get("event") == "orchestrator_waiting"]
    assert waiting and waiting[0]["report_status"] == 409 and waiting[0]["task_id"] == parent
    created = [line for line in logged if line.get("event") == "orchestrator_children_created"]
    assert [(line["created"], line["expected"]) for line in created] == [(2, 2)]
    # Nothing left billing (under the wait target, but the one worker it keeps, holding nothing).
    kept = live_workers(stack)
    assert len(live_pods(stack)) == len(kept) <= (1 if wait_target else 0)
    assert all(w["status"] == "active" for w in kept)
    assert not stack.sql("select id from tasks where status in ('Queued', 'In Progress')")


def test_a_chain_that_cannot_run_keeps_no_gpu_and_its_parent_still_completes(
    stack: Stack, in_process: Any
) -> None:
    """The second segment comes to wait on a task that will never complete (one cancelled from the
    dashboard: a direct write, nothing cascades), so nobody completes the parent. The worker that ran
    the parent, with nothing else to do once the first segment is done, lets the parent go and ends: no
    pod bills while the chain is stuck. When the operator clears the dependency, the chain runs on a new
    worker and the app completes the parent that no worker holds any more."""
    [parent] = stack.enqueue(
        1,
        duration_sec=SEGMENT_SEC,
        task_type="travel_orchestrator",
        params={"orchestrator_details": {"num_new_segments_to_generate": 2}},
    )
    stack.sql("update tasks set project_id = %s where id = %s", (PROJECT, parent))
    [cancelled] = stack.enqueue(1, task_type="upscale_video")
    stack.sql("update tasks set status = 'Cancelled' where id = %s", (cancelled,))
    handle = in_process(MAX_ACTIVE_GPUS=1, TASKS_PER_GPU_THRESHOLD=1)
    wait_until(
        lambda: len(_children(stack, parent)) == 2, 60, "the parent's two children created", interval=0.05
    )
    first, second = _children(stack, parent)
    # While the first segment runs (SEGMENT_SEC), the second waits on it: it cannot have been claimed.
    stack.sql(
        "update tasks set dependant_on = array[%s::uuid, %s::uuid] where id = %s and status = 'Queued'",
        (first["id"], cancelled, second["id"]),
    )
    assert _rows(stack, "id = %s", (second["id"],))[0]["dependant_on"] == [first["id"], cancelled]
    holder = _parent(stack, parent)["worker_id"]
    assert holder

    wait_until(lambda: drained(stack), 60, "the holder let go and ended", interval=0.25)
    [release] = [e for e in events(stack, "parents_released") if e["worker_id"] == holder]
    assert release["details"]["released"] == [parent] and release["reason"] == "holds_only_parents"
    stuck = _parent(stack, parent)
    assert (stuck["status"], stuck["worker_id"]) == ("In Progress", None)
    assert [c["status"] for c in _children(stack, parent)] == ["Complete", "Queued"]
    moves = [e for e in events(stack, "transition") if e["worker_id"] == holder]
    ended = [e["at"] for e in moves if e["details"].get("to") in ENDING]
    assert ended and min(ended) > release["at"]
    # A few more ticks with the chain stuck: nothing is spawned for it.
    ticks = handle.controller.tick_no
    wait_until(lambda: handle.controller.tick_no >= ticks + 3, 30, "three more ticks", interval=0.1)
    assert not live_pods(stack) and not live_workers(stack)

    stack.sql("update tasks set dependant_on = array[%s::uuid] where id = %s", (first["id"], second["id"]))
    done = wait_until(
        lambda: (row := _parent(stack, parent))["status"] == "Complete" and row,
        120,
        "the parent complete once its chain ran",
        interval=0.25,
    )
    assert done["worker_id"] is None
    assert all(c["status"] == "Complete" for c in _children(stack, parent))
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)
