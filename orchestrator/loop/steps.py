"""The steps the executor's handlers share: each runs whatever failed before it, and records what it skipped.

Where this sits: :mod:`orchestrator.loop.executor` writes each action's steps once; the steps an ending
action shares (the transition to ``error`` with its details, the requeue, the termination by pod id, the
event, the metric) live here, each through :func:`step`, which logs a failure as ``action_step_failed``
with its context and goes on, so the transition, the requeue and the termination do not depend on one
another. Only the fence stops an ending: before the provider call it refuses a stale leader, and a
lease it cannot check (the database unreachable at that moment) counts as lost until the next tick,
which asks again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from orchestrator.core import errors
from orchestrator.core.billing import worker_billing
from orchestrator.core.observed import Worker
from orchestrator.core.states import Meta, Reason, WorkerState
from orchestrator.loop.effects import Effects, Steps, iso
from orchestrator.ports import Requeued

T = TypeVar("T")
Outcome = dict[str, Any]


def skipped_steps(skipped: list[str]) -> Outcome:
    return {"skipped_steps": skipped} if skipped else {}


def run_step(
    fx: Effects, action: str, step: str, skipped: list[str], steps: Steps[T]
) -> Steps[tuple[bool, T | None]]:
    """Run one step of an action that ends billing; ``(done, its value)``.

    Whatever fails here (a database fault, a refused argument, a malformed answer, a bug) is logged
    with its context and the step skipped, so the steps after it (the transition, the requeue, the
    termination) still run. ``LeaseLost`` is the exception: a stale leader must stop everything,
    and the fence before the provider call would refuse it anyway.
    """
    try:
        return True, (yield from steps)
    except errors.LeaseLost:
        raise
    except Exception as exc:
        _skip(fx, action, step, skipped, exc)
        return False, None


def local_step(fx: Effects, action: str, step: str, skipped: list[str], call: Callable[[], T]) -> T | None:
    """:func:`run_step` for a call that is not I/O (a metric, an estimate)."""
    try:
        return call()
    except Exception as exc:
        _skip(fx, action, step, skipped, exc)
        return None


def _skip(fx: Effects, action: str, step: str, skipped: list[str], exc: Exception) -> None:
    fx.log.warning(
        "action_step_failed", action=action, step=step, error_type=type(exc).__name__, error=str(exc)[:300]
    )
    skipped.append(step)


def event(fx: Effects, kind: str, skipped: list[str] | None, **fields: Any) -> Steps[None]:
    try:
        yield from fx.event(kind, **fields)
    except errors.LeaseLost:
        raise
    except Exception as exc:  # the event log is a record: losing one line must not stop an action
        fx.log.warning("event_not_recorded", kind=kind, error=f"{type(exc).__name__}: {exc}"[:300])
        if skipped is not None:
            skipped.append("event")


def to_error(
    fx: Effects, action: str, worker_id: str, reason: str, metadata: Mapping[str, Any], skipped: list[str]
) -> Steps[None]:
    """Transition to ``error`` with the full details; failing that, with the reason alone.

    The details (diagnostics, a log tail) are the likeliest thing to be refused (a NUL byte the
    jsonb type rejects, a value too large), and a row that cannot say why it failed is still better
    ended than left running. A row already moved on (terminated by a racing confirmation, deleted)
    needs no transition: the rest of the ending goes ahead.
    """
    try:
        yield from fx.transition(worker_id, WorkerState.ERROR, reason, metadata)
        return
    except errors.LeaseLost:
        raise
    except (errors.IllegalTransition, errors.NotFound) as exc:
        fx.log.info("action_superseded", action=action, step="transition", error=str(exc)[:300])
        return
    except Exception as exc:
        fx.log.warning(
            "action_step_failed",
            action=action,
            step="transition_with_details",
            error_type=type(exc).__name__,
            error=str(exc)[:300],
        )
    bare = {
        Meta.ERROR_REASON: reason,
        Meta.FAILED_AT: iso(fx.now()),
        Meta.ERROR_DETAILS: "details not recorded (see action_step_failed in the daemon's log)",
    }
    yield from run_step(
        fx, action, "transition", skipped, fx.transition(worker_id, WorkerState.ERROR, reason, bare)
    )


def requeue(fx: Effects, action: str, worker_id: str, reason: str, skipped: list[str]) -> Steps[Requeued]:
    _done, requeued = yield from run_step(fx, action, "requeue", skipped, fx.requeue(worker_id, reason))
    return requeued if isinstance(requeued, Requeued) else Requeued()


def count_spawn_failure(fx: Effects, action: str, reason: str, skipped: list[str]) -> None:
    local_step(fx, action, "metrics", skipped, lambda: fx.count_spawn_failure(reason))


def terminate(
    fx: Effects,
    worker_id: str | None,
    runpod_id: str,
    reason: str,
    *,
    action: str = "terminate_pod",
    skipped: list[str] | None = None,
    worker: Worker | None = None,
) -> Steps[bool]:
    """Fence, then terminate ``runpod_id``; record it. Only the fence can stop the termination.

    The provider call is by pod id alone (nothing about the row is needed). What follows it (the
    metadata merge, the event) is recorded when it can be: if the merge is lost, the next tick
    simply asks again. Every call stamps when it was made and whether the provider confirmed it; the
    first confirmed one also stamps ``pod_terminate_taken_at`` (``worker``, the row as the snapshot
    read it, says whether an earlier call already did), where the spend figures end its billing.
    """
    steps = skipped if skipped is not None else []
    yield from fx.fence("terminate_pod")
    fx.crash_point("before_terminate")
    done, answer = yield from run_step(fx, action, "terminate", steps, fx.terminate(runpod_id))
    confirmed = bool(answer) if done else False
    fx.crash_point("after_terminate")
    if worker_id:
        at = iso(fx.now())
        stamp: dict[str, Any] = {Meta.POD_TERMINATE_REQUESTED_AT: at, Meta.POD_TERMINATE_CONFIRMED: confirmed}
        if confirmed and (worker is None or worker.metadata.get(Meta.POD_TERMINATE_TAKEN_AT) is None):
            stamp[Meta.POD_TERMINATE_TAKEN_AT] = at
        yield from run_step(fx, action, "record_terminate", steps, fx.merge_metadata(worker_id, stamp))
    kind = "pod_terminate_requested" if confirmed else "pod_terminate_unconfirmed"
    yield from event(fx, kind, steps, worker_id=worker_id, runpod_id=runpod_id, reason=reason)
    return confirmed


def fail_after_boot_step(
    fx: Effects, worker_id: str, runpod_id: str, reason: Reason, details: Any, *, action: str = "initialize"
) -> Steps[list[str]]:
    """A boot step failed: error with the output, terminate at once (it bills until then), then
    requeue. Each step runs whatever happened to the one before it; returns the steps skipped."""
    skipped: list[str] = []
    metadata = {
        Meta.ERROR_REASON: reason.value,
        Meta.ERROR_DETAILS: storable(details),
        Meta.FAILED_AT: iso(fx.now()),
    }
    yield from to_error(fx, action, worker_id, reason.value, metadata, skipped)
    count_spawn_failure(fx, action, reason.value, skipped)
    # Terminate before requeue (see executor.fail_worker): a process started on the pod may still write.
    yield from terminate(fx, worker_id, runpod_id, reason.value, action=action, skipped=skipped)
    yield from requeue(fx, action, worker_id, reason.value, skipped)
    return skipped


# --- values ---------------------------------------------------------------------------------------------


def estimated_cost(worker: Worker, now: datetime) -> float | None:
    """USD billed for a worker's pod, as ``orchestrator status`` says it (the provider's bill is
    authoritative): its GPU while it held one, its disk while it was stopped, nothing after the
    termination Runpod took. Priced as GPU time for its whole life, a worker that spent six hours in the
    warm pool was recorded at seven times what it billed."""
    if not worker.cost_per_hr or worker.created_at is None:
        return None
    return worker_billing(worker, now).spend_usd


def storable(value: Any) -> Any:
    """``value`` with every NUL character removed from its text: PostgreSQL's jsonb refuses ``\\u0000``,
    and a log tail or a provider's answer may carry one (a binary log line), which would make the
    transition that records it fail."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
