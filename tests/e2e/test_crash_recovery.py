"""End-to-end: the daemon SIGKILLed half-way through a spawn or a termination; the next run repairs it.

A crash must leave no orphaned pod, no duplicate and no lost task. ``orchestrator run`` runs as a subprocess with
``ORCHESTRATOR_TEST_CRASH_AT`` set, so it kills itself (SIGKILL, no cleanup) at that point of the
executor (orchestrator/loop/controller.py):

- ``after_register``: the intent row is written, no pod was asked for;
- ``after_create``: the pod exists, its id is not recorded on the row (the window between recording a
  worker and recording its pod id, where the original orchestrator leaked pods);
- ``before_terminate`` / ``after_terminate``: mid-termination, the provider not yet asked / asked but
  nothing recorded.

A second run without the crash point (after the dead leader's lease expires) must leave no orphaned
pod, no second pod for any worker, and every task done, and then scale to zero.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import all_done, drained, pods, tasks, wait_until, workers

pytestmark = pytest.mark.e2e

SETTINGS = {"MAX_ACTIVE_GPUS": 2, "LEASE_TTL_SEC": 4, "ORPHAN_GRACE_SEC": 3}


@pytest.mark.parametrize("point", ["after_register", "after_create", "before_terminate", "after_terminate"])
def test_sigkill_mid_action_then_restart_repairs(stack: Stack, cli_process: Any, point: str) -> None:
    stack.enqueue(3, duration_sec=1.0)
    crashing = cli_process("run", env={**SETTINGS, "ORCHESTRATOR_TEST_CRASH_AT": point})
    code = crashing.wait(timeout=60)
    assert code == -9, (
        f"expected a SIGKILL at {point}, exit {code}:\n{crashing.text()[-2000:]}\n{crashing.stderr()[-2000:]}"
    )
    assert [line["point"] for line in crashing.logged("test_crash_point")] == [point]

    rows_at_crash = {w["id"]: w for w in workers(stack)}
    pods_at_crash = {p["id"]: p for p in pods(stack)}
    if point == "after_register":
        assert not pods_at_crash, "no pod may exist: the crash came before the creation call"
        # Spawns run concurrently: the other one may have registered too before the kill.
        assert rows_at_crash and all(w["status"] == "spawning" for w in rows_at_crash.values())
    elif point == "after_create":
        # The half-recorded worker: a pod named after a row that does not know the pod's id.
        unrecorded = [w for w in rows_at_crash.values() if not w["metadata"].get("runpod_id")]
        assert unrecorded
        adopted = [p for p in pods_at_crash.values() if p["name"] in {w["id"] for w in unrecorded}]
        assert adopted, "the crash came after a creation: its pod must exist"
    else:
        # Idle workers are drained together, so several terminations may be under way at the kill.
        cut = [w for w in rows_at_crash.values() if w["status"] == "terminating"]
        assert cut, rows_at_crash
        assert all("pod_terminate_requested_at" not in w["metadata"] for w in cut), (
            "nothing recorded after the call"
        )
        cut_pods = [pods_at_crash[w["metadata"]["runpod_id"]]["status"] for w in cut]
        if point == "before_terminate":
            # Every termination stops at the crash point before the call: the provider was never asked.
            assert set(cut_pods) == {"RUNNING"}, cut_pods
        else:
            # The first call to return killed the process: the provider terminated that pod.
            assert "TERMINATED" in cut_pods, cut_pods

    restarted = cli_process("run", env=SETTINGS)
    wait_until(lambda: all_done(stack, 3), 60, "every task done after the restart", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero with no pod billing", interval=0.25)
    assert restarted.proc.poll() is None, "the restarted daemon must still be running"

    final_rows = {w["id"]: w for w in workers(stack)}
    final_pods = pods(stack)
    # No orphan: every pod ever created carries the name of a worker row. No duplicate: one pod per row.
    names = Counter(p["name"] for p in final_pods)
    assert set(names) <= set(final_rows), f"pods without a worker row: {set(names) - set(final_rows)}"
    assert max(names.values()) == 1, f"a worker got two pods: {names}"
    assert all(p["status"] == "TERMINATED" for p in final_pods)
    assert all(w["status"] == "terminated" for w in final_rows.values())
    rows = tasks(stack)
    assert all(r["status"] == "Complete" and r["attempts"] == 0 for r in rows), rows

    if point == "after_register":
        for ghost in rows_at_crash:
            assert final_rows[ghost]["status_reason"] == "no_pod_created", final_rows[ghost]
    elif point == "after_create":
        # Adopted by name: the restarted daemon recorded the pod's id on its row and used it.
        for pod in adopted:
            assert final_rows[pod["name"]]["metadata"].get("runpod_id") == pod["id"]
    else:
        # The pods whose termination was cut short are gone, and their rows closed.
        assert all(final_rows[w["id"]]["status"] == "terminated" for w in cut)
    assert restarted.logged("lease_acquired"), "the restart must have led"
