"""End-to-end: a worker whose start ends before it ever heartbeats is failed at once, not at the boot
timeout, with the reason from its log; the fix lets the work through.

The volume's checkout declares a submodule that is not there (a volume prepared before the worker moved
Wan2GP to a submodule, whose update failed): the start command's quick part succeeds over SSH, then its
detached part refuses to run the worker ("submodule ... is missing or empty", exit 8). Until the start
watch, the pod then billed until SPAWNING_TIMEOUT_SEC (20 minutes by default) with nothing on it. The
boot timeout here is 10 minutes, so only the watch can end these boots within the test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import all_done, drained, pods, wait_until, workers

pytestmark = pytest.mark.e2e

GITMODULES = '[submodule "Wan2GP"]\n\tpath = Wan2GP\n\turl = https://example.invalid/Wan2GP.git\n'


def checkouts(stack: Stack) -> list[Path]:
    assert stack.emulator is not None
    found = [Path(v.path) / "reigh" / "Headless-Wan2GP" for v in stack.emulator.state.volumes.values()]
    assert found and all(p.is_dir() for p in found), found
    return found


def test_a_start_that_ends_before_its_first_heartbeat_is_failed_at_once(
    stack: Stack, in_process: Any
) -> None:
    for checkout in checkouts(stack):
        (checkout / ".gitmodules").write_text(GITMODULES)
    stack.enqueue(2, duration_sec=0.5)
    with capture_logs() as logs:
        in_process(
            MAX_ACTIVE_GPUS=1, SPAWNING_TIMEOUT_SEC=600, MAX_CONSECUTIVE_FAILURES=5, SPAWN_BACKOFF_MAX_SEC=4
        )
        watched(stack, logs)


def watched(stack: Stack, logs: list[dict[str, Any]]) -> None:

    def start_exited() -> list[dict[str, Any]]:
        return [w for w in workers(stack) if w["metadata"].get("error_reason") == "start_exited"]

    [failed, *_] = wait_until(start_exited, 60, "a worker failed with start_exited")
    details = failed["metadata"]["error_details"]
    assert details["phase"] == "setup"
    assert "submodule Wan2GP is missing or empty; not starting the worker" in details["log_tail"]
    # Its pod is ended too (a failed boot bills until then), and the log line says why.
    wait_until(
        lambda: all(p["status"] == "TERMINATED" for p in pods(stack) if p["name"] == failed["id"]),
        30,
        "the failed worker's pod terminated",
    )
    [line, *_] = [e for e in logs if e["event"] == "worker_start_exited" and e["worker_id"] == failed["id"]]
    assert line["phase"] == "setup" and any("not starting the worker" in t for t in line["last_lines"])

    # The fix: the submodule's content arrives. The next worker starts and the work gets done.
    for checkout in checkouts(stack):
        (checkout / ".gitmodules").unlink()
    wait_until(lambda: all_done(stack, 2), 90, "every task done after the fix", interval=0.25)
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)
    reasons = [w["metadata"].get("error_reason") for w in workers(stack)]
    # Nothing waited for the boot timeout (a spawn the emulator's stock refused may sit beside them).
    assert set(reasons) <= {None, "start_exited", "spawn_no_capacity"}, reasons
