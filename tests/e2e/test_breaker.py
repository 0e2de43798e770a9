"""End-to-end: an image whose worker never starts stops spawning; the fix lets spawning resume.

Spawning stops after MAX_CONSECUTIVE_FAILURES, the pods created stay bounded, an event says why, and
spawning resumes once the fault is fixed. The emulator makes every new pod's sshd refuse connections
(``ssh_refuse_share = 1.0``, a container whose sshd never starts): the pod runs and bills, SSH never
answers, so each boot ends at SPAWNING_TIMEOUT_SEC (``boot_timeout``; a refused connection alone is
"not ready yet", never a failure). With
MAX_CONSECUTIVE_FAILURES=2 and MAX_ACTIVE_GPUS=3 the bound on pods created while the fault lasts is
exact:

- the first tick spawns 3 (desired = ceil(6 tasks / 2) = 3; nothing has failed yet);
- the three time out together (same creation time, same tick), so the breaker opens at once (3 >= 2):
  no spawn for min(base * 2**2, SPAWN_BACKOFF_MAX_SEC) (and the only GPU type backs off as long);
- then half-open: exactly one probe pod; it fails too, and the breaker opens again.

So 3 + 1 = 4 pods over the fault, every one terminated. Then the fault is turned off: the next probe
boots, the breaker closes (``spawning_resumed``), the fleet scales and every task completes.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator.standins.stack import Stack
from tests.e2e.conftest import all_done, drained, events, pods, wait_until, workers

pytestmark = pytest.mark.e2e


def test_broken_image_trips_the_breaker_then_spawning_resumes(stack: Stack, in_process: Any) -> None:
    stack.admin.set_faults(ssh_refuse_share=1.0)
    stack.enqueue(6, duration_sec=0.5)
    daemon = in_process(
        MAX_ACTIVE_GPUS=3,
        MAX_CONSECUTIVE_FAILURES=2,
        SPAWN_BACKOFF_BASE_SEC=2,
        SPAWN_BACKOFF_MAX_SEC=5,
        SPAWNING_TIMEOUT_SEC=4,
    )

    stopped = wait_until(lambda: events(stack, "spawning_stopped"), 40, "a spawning_stopped event")
    first = stopped[0]
    assert first["reason"] == "max_consecutive_failures"
    assert first["details"]["consecutive_failures"] >= 2
    assert first["details"]["max_consecutive_failures"] == 2
    assert first["details"]["until"]
    # The first batch, and nothing more while the breaker is open.
    assert len(pods(stack)) == 3

    def failed_workers() -> list[dict[str, Any]]:
        return [w for w in workers(stack) if w["metadata"].get("error_reason") == "boot_timeout"]

    # Half-open: one probe, which fails as well and opens the breaker again.
    wait_until(lambda: len(failed_workers()) == 4, 40, "the half-open probe to fail too", interval=0.05)
    stack.admin.set_faults(ssh_refuse_share=0.0)  # the fix
    faulty_pods = pods(stack)
    assert len(faulty_pods) == 4, (
        f"expected 3 + 1 probe pods while the image was broken, got {len(faulty_pods)}"
    )
    assert all(p["sshRefuse"] for p in faulty_pods)
    again = wait_until(lambda: events(stack, "spawning_stopped")[1:], 10, "the breaker to open again")
    assert again[0]["details"]["consecutive_failures"] == 4

    # Healing resumes spawning: the next probe boots, the breaker closes, the work gets done.
    wait_until(lambda: all_done(stack, 6), 60, "every task done after the fix", interval=0.25)
    resumed = wait_until(lambda: events(stack, "spawning_resumed"), 10, "a spawning_resumed event")
    assert resumed[0]["reason"] == "boot_succeeded"
    # A good boot that a loaded machine made slower than the 4 s SPAWNING_TIMEOUT_SEC is replaced like
    # any timed-out boot (seen with a benchmark running beside the suite): count the pods that served.
    timed_out = {w["id"] for w in failed_workers()}
    good = [p for p in pods(stack) if not p["sshRefuse"] and p["name"] not in timed_out]
    assert 1 <= len(good) <= 3
    wait_until(lambda: drained(stack), 60, "scale to zero", interval=0.25)
    assert all(p["status"] == "TERMINATED" for p in pods(stack))

    # The metric counts what the rows say: the four boots of the broken image, and any good boot that a
    # loaded machine made slower than the 4 s SPAWNING_TIMEOUT_SEC of this test.
    metrics = daemon.controller.metrics.render().decode()
    found = re.search(r'^orchestrator_spawn_failures_total\{reason="boot_timeout"\} (\S+)$', metrics, re.M)
    assert found is not None, metrics
    assert float(found.group(1)) == len(failed_workers()) >= 4, (found.group(0), len(failed_workers()))
