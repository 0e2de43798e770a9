"""What the executor records when a row is closed: the worker's bill, as ``orchestrator status`` says it.

An executor handler is run to its end with a small recording ``Effects``; the worker is built with the
policy tests' builders.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from orchestrator.core.actions import MarkTerminated
from orchestrator.core.billing import worker_billing
from orchestrator.core.states import Reason, WorkerState
from orchestrator.loop import executor
from orchestrator.loop.effects import NullLog, Steps, at_once, run_now
from orchestrator.ports import Requeued
from tests.unit.test_policy import NOW, ago, worker


class Recording:
    """Just enough of :class:`~orchestrator.loop.effects.Effects` for the ending handlers: every call
    succeeds and is recorded."""

    holder = "review"
    token = 1

    def __init__(self, now: datetime) -> None:
        self.log = NullLog()
        self._now = now
        self.calls: list[tuple[Any, ...]] = []

    def now(self) -> datetime:
        return self._now

    def _do(self, *call: Any, answer: Any = None) -> Steps[Any]:
        self.calls.append(call)
        return at_once(lambda: answer)

    def transition(
        self, worker_id: str, to: WorkerState, reason: str, metadata: Mapping[str, Any] | None = None
    ) -> Steps[Mapping[str, Any]]:
        return self._do("transition", worker_id, to, reason, dict(metadata or {}), answer={})

    def merge_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> Steps[None]:
        return self._do("merge_metadata", worker_id, dict(metadata))

    def requeue(self, worker_id: str, reason: str) -> Steps[Requeued]:
        return self._do("requeue", worker_id, answer=Requeued())

    def event(self, kind: str, **fields: Any) -> Steps[None]:
        return self._do("event", kind, fields)

    def fence(self, before: str) -> Steps[None]:
        return self._do("fence", before)

    def terminate(self, runpod_id: str) -> Steps[bool]:
        return self._do("terminate", runpod_id, answer=True)

    def count_spawn_failure(self, reason: str) -> None:
        self.calls.append(("count_spawn_failure", reason))

    def crash_point(self, name: str) -> None:
        return None


def test_the_cost_recorded_when_a_pooled_worker_is_closed_is_what_it_billed() -> None:
    """A worker served 1 hour, then sat 6 hours in the warm pool (WARM_POOL_TTL_SEC, the default), its
    pod stopped (billing its 20 GB volume disk only), then was terminated (``pool_ttl``) and confirmed
    gone. The ``worker_terminated`` event's ``cost_usd`` is its bill as ``worker_billing`` computes it
    (about 0.72 USD). Before: GPU price x lifetime, the 6 stopped hours priced as GPU hours: 4.83 USD
    in ``orchestrator events`` against ``orchestrator status``'s 0.72."""
    stopped_for = 6 * 3600.0
    w = worker(
        "gpu-a",
        "terminating",
        created=7 * 3600 + 60,
        changed=60,
        cost_per_hr=0.69,
        disk_gb=20,
        stopped_at=ago(stopped_for + 60),
        stopped_sec=stopped_for,
        pod_terminate_requested_at=ago(55),
        pod_terminate_taken_at=ago(55),
        pod_terminate_confirmed=True,
    )
    fx = Recording(NOW)
    action = MarkTerminated(
        reason=Reason.PROVIDER_CONFIRMED_GONE, worker_id="gpu-a", from_status=WorkerState.TERMINATING
    )
    run_now(executor.run(action, w, fx))  # type: ignore[arg-type]
    [recorded] = [c[2] for c in fx.calls if c[:2] == ("event", "worker_terminated")]
    billed = worker_billing(w, NOW).spend_usd
    assert billed is not None and billed < 1.0
    assert recorded["cost_usd"] == pytest.approx(billed, abs=0.05), (
        f"event says {recorded['cost_usd']} USD, the worker billed {billed} USD"
    )


@pytest.mark.parametrize("manual_start", [False, True])
def test_the_operators_termination_of_a_busy_initializing_worker_promotes_it_to_be_drained(
    manual_start: bool,
) -> None:
    """``orchestrator workers terminate`` on a worker still ``initializing`` that already claimed a task
    (the real worker claims as soon as it runs; with AUTO_START_WORKER_PROCESS=false workers stay
    ``initializing``). Before: the policy neither promoted it (so it was never drained) nor ended it, and
    it went on claiming task after task. Now it is promoted, so that the next tick drains it and ends it
    once idle, with no boot failure counted."""
    from orchestrator.core.actions import FailWorker
    from orchestrator.core.config import defaults
    from tests.unit.test_policy import pods_for, run, snap

    busy = worker(
        "gpu-a",
        "initializing",
        created=300,
        heartbeat=5,
        running=["t1"],
        initialized_at=ago(240),
        process_started_at=None if manual_start else ago(210),
        terminate_requested_at=ago(20),
    )
    cfg = defaults().replace(AUTO_START_WORKER_PROCESS=not manual_start)
    result = run(snap([busy], running=1), pods_for([busy]), cfg)
    assert [(a.kind, a.reason) for a in result.actions if getattr(a, "worker_id", None) == "gpu-a"] == [
        ("promote", Reason.OPERATOR_REQUEST)
    ]
    assert not result.of_kind(FailWorker)


def test_status_says_why_each_worker_is_in_its_state() -> None:
    """`orchestrator status` names the reason beside the state: the failure for a failed worker, the
    drain for a draining one, what it was spawned for otherwise. Before, the table had none: a worker in
    `error` said nothing of why without `--json` or SQL."""
    from orchestrator.render import render_status
    from tests.unit.test_policy import snap

    fleet = [
        worker("gpu-a", spawn_reason="wait_target"),
        worker("gpu-b", "draining", drain_reason="idle_timeout"),
        worker("gpu-c", "error", error_reason="heartbeat_stale", spawn_reason="demand"),
        # Back from the warm pool: its spawn's reason is of its first life.
        worker("gpu-d", spawn_reason="demand", resumes=1, drain_reason="idle_timeout"),
    ]
    lines = render_status(snap(fleet)).splitlines()
    header = next(line for line in lines if line.startswith("WORKER"))
    assert "WHY" in header.split()
    rows = {line.split()[0]: line for line in lines if line.startswith("gpu-")}
    assert "wait_target" in rows["gpu-a"] and "idle_timeout" in rows["gpu-b"]
    assert "heartbeat_stale" in rows["gpu-c"] and "demand" not in rows["gpu-c"]
    assert "resumed" in rows["gpu-d"] and "demand" not in rows["gpu-d"]


@pytest.mark.parametrize(
    ("origin", "reason"), [("stopped", Reason.POOL_TTL), ("stopping", Reason.POOL_SHRINK)]
)
def test_a_pod_ended_out_of_the_pool_says_why_in_status(origin: str, reason: Reason) -> None:
    """A pooled worker terminated (its time to live out, the pool shrunk) showed in WHY the drain reason
    of its life before the pool (``idle_timeout``); the row now records the pool's reason."""
    from orchestrator.core.actions import TerminatePod
    from orchestrator.render import render_status
    from tests.unit.test_policy import snap

    fx = Recording(NOW)
    action = TerminatePod(
        reason=reason, runpod_id="pod-gpu-a", worker_id="gpu-a", transition_from=WorkerState(origin)
    )
    run_now(executor.HANDLERS[TerminatePod](action, None, fx))  # type: ignore[arg-type]
    [(_, _, to, _, written)] = [c for c in fx.calls if c[0] == "transition"]
    assert to is WorkerState.TERMINATING and written == {"drain_reason": reason.value}
    ended = worker("gpu-a", "terminating", drain_reason=written["drain_reason"], spawn_reason="demand")
    row = next(line for line in render_status(snap([ended])).splitlines() if line.startswith("gpu-a"))
    assert reason.value in row


class WithDiagnostics(Recording):
    """The recording effects plus the diagnostics a failed worker's ending reads."""

    def pod_status(self, runpod_id: str) -> Steps[Mapping[str, Any] | None]:
        return self._do("pod_status", runpod_id, answer={"runpod_id": runpod_id, "actual_status": "RUNNING"})

    def log_tail(self, runpod_id: str, worker_id: str, fingerprint: str | None = None) -> Steps[str]:
        return self._do("log_tail", runpod_id, worker_id, fingerprint, answer="CUDA error: out of memory\n")


def test_a_failed_workers_log_is_read_pinned_to_the_host_key_its_row_recorded() -> None:
    """A restarted daemon has no pin of its own, so the log read of a failed worker's diagnostics takes
    the row's: a pod answering with another key gets no connection (and no password)."""
    from orchestrator.core.actions import FailWorker

    w = worker("gpu-a", host_key_fingerprint="SHA256:row-recorded", running=["t1"])
    fx = WithDiagnostics(NOW)
    action = FailWorker(
        reason=Reason.HEARTBEAT_STALE,
        worker_id="gpu-a",
        runpod_id="pod-gpu-a",
        from_status=WorkerState.ACTIVE,
        collect_logs=True,
    )
    run_now(executor.run(action, w, fx))  # type: ignore[arg-type]
    [read] = [c for c in fx.calls if c[0] == "log_tail"]
    assert read == ("log_tail", "pod-gpu-a", "gpu-a", "SHA256:row-recorded")
