"""The executor: one table from action type to the handler that carries it out.

Where this sits: the "apply" step of the tick (gather -> decide -> apply -> record). Each action of
:mod:`orchestrator.core.actions` has one handler here, written once, and :data:`HANDLERS` maps the
action's class to it. The daemon's controller runs a handler with :class:`~orchestrator.loop.effects.
LiveEffects` (each database or provider call made at once, on a worker thread); the virtual-time
simulator (``orchestrator.studies.driver``) runs the same handler with effects that advance its clock
by each call's modelled latency. So what the simulator measures is what the daemon does.

A handler is a generator over :class:`~orchestrator.loop.effects.Effects`: every call outside itself is
``yield from effects.<call>(...)``. It returns the action's outcome fields (``outcome`` when not
``ok``; ``skipped_steps``; ``tasks_reset``; ...), which the controller counts and logs.

An action that ends billing (fail a worker, a boot step's failure, terminate a pod, close a row) always
finishes: each step around its ending (diagnostics, the log tail, the details it records, the requeue,
the metadata merge, the event, the metrics) runs through :func:`~orchestrator.loop.steps.run_step`,
which logs a failure as ``action_step_failed`` with its context and goes on, so the transition, the
requeue and the termination (by pod id, which needs nothing from the row) do not depend on one another. The outcome names what was
skipped (``skipped_steps``; outcome ``partial``) and the next tick, level-triggered, repairs the rest.
Only the fence stops an ending: a lost lease, or one it cannot check, until the next tick
(:mod:`orchestrator.loop.steps`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from orchestrator.core import errors
from orchestrator.core.actions import (
    Action,
    Drain,
    FailWorker,
    Initialize,
    MarkStopped,
    MarkTerminated,
    Promote,
    Reactivate,
    ReleaseParents,
    RequeueStrandedTasks,
    RequeueTasks,
    RequeueUnownedTasks,
    ResumePod,
    Spawn,
    StartProcess,
    StopPod,
    TerminatePod,
    WatchStart,
)
from orchestrator.core.observed import Worker, parse_ts
from orchestrator.core.states import Meta, Reason, WorkerState
from orchestrator.loop.effects import Effects, Steps, iso
from orchestrator.loop.steps import (
    count_spawn_failure,
    estimated_cost,
    event,
    fail_after_boot_step,
    local_step,
    requeue,
    run_step,
    skipped_steps,
    storable,
    terminate,
    to_error,
)

T = TypeVar("T")
Outcome = dict[str, Any]
Handler = Callable[[Any, Worker | None, Effects], Steps[Outcome]]


def action_key(action: Action) -> str:
    """What one action is about: its worker, else its pod. One action per key is in flight at a time."""
    worker = getattr(action, "worker_id", None)
    if worker:
        # A requeue too: it waits for the worker's ending in flight (FailWorker ends the pod before it
        # requeues, since the process may still write its tasks' status; a requeue beside it would not).
        return f"w:{worker}"
    pod = getattr(action, "runpod_id", None)
    if pod:
        return f"p:{pod}"
    return f"k:{action.kind}"  # an action on no worker and no pod (RequeueUnownedTasks): one at a time


def run(action: Action, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    """The steps of ``action`` (``worker`` is its row in the tick's snapshot, when it has one)."""
    return HANDLERS[type(action)](action, worker, fx)


def _start(fx: Effects, worker_id: str, runpod_id: str, fingerprint: str | None) -> Steps[Outcome]:
    # A stale leader's start would run a second worker process beside the new leader's.
    yield from fx.fence("start_process")
    if (yield from fx.start_process(worker_id, runpod_id, fingerprint)):
        yield from fx.merge_metadata(worker_id, {Meta.PROCESS_STARTED_AT: iso(fx.now())})
        return {"outcome": "started"}
    skipped = yield from fail_after_boot_step(
        fx,
        worker_id,
        runpod_id,
        Reason.START_FAILED,
        "the start command failed (see worker_start_failed)",
        action="start_process",
    )
    return {"outcome": "start_failed", **skipped_steps(skipped)}


def _diagnostics(fx: Effects, action: FailWorker, worker: Worker | None) -> Steps[dict[str, Any]]:
    """What the pod and the worker's log say, for the row's error details. Never raises: a failure
    is recorded in place of what it would have found, and the worker is failed all the same. The log is
    read over SSH pinned to the host key the row recorded (this process's own pins do not survive a
    restart, and a listing that misses the pod drops them)."""
    found: dict[str, Any] = {"failed_at": iso(fx.now())}
    if not action.runpod_id:
        return found
    try:
        found["pod"] = yield from fx.pod_status(action.runpod_id)
    except Exception as exc:
        found["pod_error"] = f"{type(exc).__name__}: {exc}"[:300]
    if action.collect_logs and found.get("pod"):
        try:
            fingerprint = worker.host_key_fingerprint if worker is not None else None
            found["log_tail"] = (yield from fx.log_tail(action.runpod_id, action.worker_id, fingerprint))[
                -4000:
            ]
        except Exception as exc:
            found["log_tail_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return storable(found)


# --- the handlers: each follows the executor contract written on its action class --------------------


def spawn(a: Spawn, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    metadata = {**dict(a.metadata), Meta.GPU_TYPES: list(a.gpu_types), Meta.SPAWN_REASON: a.reason.value}
    try:
        yield from fx.register_worker(a.worker_id, a.gpu_types[0], metadata)
    except errors.Conflict:
        return {"outcome": "already_registered"}
    fx.crash_point("after_register")
    skipped: list[str] = []
    try:
        pod = yield from fx.spawn(a.worker_id, a.gpu_types, a.avoid)
    except errors.RunpodCapacityError as exc:
        # Only a provider that does not say which candidates it tried gets misses invented for it; an
        # empty list means every candidate was skipped as backing off, and those need no new miss.
        misses = getattr(exc, "capacity_misses", None)
        if misses is None:
            misses = [{"gpu_type": gpu, "data_center": None, "at": iso(fx.now())} for gpu in a.gpu_types]
        # No pod was made. Should this transition be lost, the row is closed as never created
        # once the grace passes (Reason.NO_POD_CREATED).
        details = {
            Meta.ERROR_REASON: Reason.SPAWN_NO_CAPACITY.value,
            Meta.ERROR_DETAILS: str(exc)[:1000],
            Meta.CAPACITY_MISSES: misses,
        }
        yield from to_error(fx, a.kind, a.worker_id, Reason.SPAWN_NO_CAPACITY.value, details, skipped)
        count_spawn_failure(fx, a.kind, "no_capacity", skipped)
        return {"outcome": "no_capacity", "error": str(exc)[:300], **skipped_steps(skipped)}
    except (errors.RunpodError, errors.ConfigError) as exc:
        # A 429 (or a request held back for endings) made nothing, and says nothing about the GPU type
        # or the image: not a failed boot, so the policy spawns again once the window resets.
        limited = isinstance(exc, errors.RunpodRateLimited)
        reason = Reason.SPAWN_RATE_LIMITED if limited else Reason.SPAWN_FAILED
        failure: dict[str, Any] = {
            Meta.ERROR_REASON: reason.value,
            Meta.ERROR_DETAILS: f"{type(exc).__name__}: {exc}"[:1000],
        }
        # Candidates refused before the failure (no capacity, or a 400 whose wording is unknown)
        # back off their (GPU type, data center) like any capacity miss.
        refused = getattr(exc, "capacity_misses", None)
        if refused:
            failure[Meta.CAPACITY_MISSES] = refused
        yield from to_error(fx, a.kind, a.worker_id, reason.value, failure, skipped)
        count_spawn_failure(fx, a.kind, reason.value if limited else type(exc).__name__, skipped)
        fields = {"worker_id": a.worker_id, "error_type": type(exc).__name__, "error": str(exc)[:500]}
        if getattr(exc, "status", None) == 402:
            # Runpod's createPod: "402 | Insufficient balance. | Stop; no candidate will succeed."
            # Its docs: an on-demand pod needs about an hour of credit to start.
            fields["hint"] = (
                "Runpod refused for the account's balance (it wants about an hour of credit to start a "
                "pod): add credit; spawning backs off meanwhile"
            )
        if limited:
            fx.log.warning("spawn_rate_limited", **fields)
        else:
            fx.log.warning("spawn_failed", **fields)
        return {"outcome": reason.value, "error": str(exc)[:300], **skipped_steps(skipped)}
    # The pod exists, its id is not recorded yet: the next run must adopt it by name.
    fx.crash_point("after_create")
    recorded: dict[str, Any] = {
        Meta.RUNPOD_ID: pod.runpod_id,
        Meta.GPU_TYPE: pod.gpu_type,
        Meta.DATA_CENTER: pod.data_center,
        Meta.COST_PER_HR: pod.cost_per_hr,
    }
    if pod.capacity_misses:
        recorded[Meta.CAPACITY_MISSES] = [dict(m) for m in pod.capacity_misses]
    # Lost, the pod is adopted by name on the next tick (the row has no id for it yet).
    yield from run_step(fx, a.kind, "record_pod", skipped, fx.merge_metadata(a.worker_id, recorded))
    # Which daemon created it, under which fencing token: proof that only the leader spawns.
    created = {
        "gpu_type": pod.gpu_type,
        "data_center": pod.data_center,
        "cost_per_hr": pod.cost_per_hr,
        "holder": fx.holder,
        "token": fx.token,
    }
    yield from event(
        fx,
        "pod_created",
        skipped,
        worker_id=a.worker_id,
        runpod_id=pod.runpod_id,
        reason=a.reason.value,
        details=created,
    )
    fx.log.info(
        "worker_spawned",
        worker_id=a.worker_id,
        runpod_id=pod.runpod_id,
        gpu_type=pod.gpu_type,
        reason=a.reason.value,
    )
    return {"runpod_id": pod.runpod_id, **skipped_steps(skipped)}


def initialize(a: Initialize, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    if a.from_status in (WorkerState.SPAWNING, WorkerState.RESUMING):
        yield from fx.transition(
            a.worker_id, WorkerState.INITIALIZING, Reason.POD_READY.value, {Meta.RUNPOD_ID: a.runpod_id}
        )
    # A resume the orchestrator asked for (requested after the last initialization) may present a new
    # host key: the image writes its keys to the container disk, which the stop wiped. Accept the key
    # once, here, and record both; anywhere else a changed key is refused as ever.
    resumed = worker is not None and worker.resumed_boot
    expected = None if resumed or worker is None else worker.host_key_fingerprint
    check = yield from fx.check_boot(a.worker_id, a.runpod_id, expected)
    if check.status == "not_ready":
        return {"outcome": "not_ready", "detail": str(check.ssh_error or check.detail or "")[:200]}
    if check.status != "ready":
        details = {k: v for k in ("step", "error", "ssh_error") if (v := getattr(check, k))}
        fx.log.warning("worker_init_failed", worker_id=a.worker_id, **details)
        skipped = yield from fail_after_boot_step(fx, a.worker_id, a.runpod_id, Reason.INIT_FAILED, details)
        return {"outcome": "init_failed", **details, **skipped_steps(skipped)}
    ready = {
        Meta.SSH_DETAILS: dict(check.ssh_details) if check.ssh_details is not None else None,
        Meta.HOST_KEY_FINGERPRINT: check.host_key_fingerprint,
        Meta.INITIALIZED_AT: iso(fx.now()),
    }
    yield from fx.merge_metadata(a.worker_id, ready)
    previous = worker.metadata.get(Meta.PREVIOUS_HOST_KEY_FINGERPRINT) if worker else None
    if resumed and check.host_key_fingerprint != previous:
        keys = {"old": previous, "new": check.host_key_fingerprint}
        yield from event(
            fx, "host_key_repinned", None, worker_id=a.worker_id, runpod_id=a.runpod_id, details=keys
        )
        fx.log.info("host_key_repinned", worker_id=a.worker_id, runpod_id=a.runpod_id, **keys)
    if not a.start_process:
        return {"outcome": "initialized"}
    return (yield from _start(fx, a.worker_id, a.runpod_id, check.host_key_fingerprint))


def start_process(a: StartProcess, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    if a.already_running:
        yield from fx.merge_metadata(a.worker_id, {Meta.PROCESS_STARTED_AT: iso(fx.now())})
        return {"outcome": "already_running"}
    return (yield from _start(fx, a.worker_id, a.runpod_id, worker.host_key_fingerprint if worker else None))


def watch_start(a: WatchStart, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    seen = yield from fx.watch_start(
        a.worker_id, a.runpod_id, worker.host_key_fingerprint if worker else None
    )
    if seen.status == "exited":
        # Nothing of the start lives and the worker never heartbeated: the pod bills for nothing until
        # the boot timeout. Its log says why (a missing submodule, uv sync, the worker's imports).
        last = [line for line in seen.tail.splitlines() if line.strip()][-5:]
        fx.log.warning(
            "worker_start_exited",
            worker_id=a.worker_id,
            runpod_id=a.runpod_id,
            phase=seen.phase,
            last_lines=last,
        )
        skipped = yield from fail_after_boot_step(
            fx,
            a.worker_id,
            a.runpod_id,
            Reason.START_EXITED,
            {"phase": seen.phase, "log_tail": seen.tail},
            action=a.kind,
        )
        return {"outcome": "start_exited", "phase": seen.phase, **skipped_steps(skipped)}
    now = fx.now()
    recorded: dict[str, Any] = {Meta.START_WATCHED_AT: iso(now)}
    if seen.status == "running" and seen.phase == "setup":
        recorded[Meta.SETUP_SEEN_AT] = iso(now)
        # Said once per start: at its first sighting in setup since this process start.
        if worker is not None and worker.process_started_at is not None and worker.setup_seen_sec is None:
            fx.log.info(
                "worker_setup_running",
                worker_id=a.worker_id,
                runpod_id=a.runpod_id,
                hint="its setup time (git sync, apt, uv sync) is not counted against SPAWNING_TIMEOUT_SEC, "
                "up to WORKER_SETUP_TIMEOUT_SEC",
            )
    elif seen.status == "unknown":
        fx.log.debug(
            "worker_start_unwatched", worker_id=a.worker_id, runpod_id=a.runpod_id, detail=seen.detail
        )
    yield from fx.merge_metadata(a.worker_id, recorded)
    return {"outcome": seen.status, "phase": seen.phase}


def promote(a: Promote, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    # The transition writes activated_at and the boot outcome `activated`; a worker moved since the
    # snapshot (failed, cancelled) makes it refuse, which the caller counts as superseded.
    row = yield from fx.transition(a.worker_id, WorkerState.ACTIVE, a.reason.value)
    try:
        # The cold-start figure: from the intent row (written just before the pod was created) to
        # the first heartbeat after the process start.
        activated = parse_ts(row.get("activated_at"))
        created = parse_ts(row.get("created_at"))
        if worker is not None and worker.resume_requested_at is not None:
            # A resumed pod's boot: from the resume request to this activation.
            activated, created = (
                parse_ts(row.get("status_changed_at")) or fx.now(),
                worker.resume_requested_at,
            )
        if activated is not None and created is not None:
            gpu = (row.get("metadata") or {}).get(Meta.GPU_TYPE) or row.get("instance_type")
            fx.observe_boot(gpu, (activated - created).total_seconds())
    except (TypeError, ValueError, AttributeError) as exc:
        fx.log.debug("boot_time_unreadable", error=str(exc)[:200])
    return {}


def fail_worker(a: FailWorker, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    """Diagnostics, ``error``, terminate, requeue: each step runs whatever happened to the one
    before it (:func:`~orchestrator.loop.steps.run_step`); only a lost lease stops the rest.

    The pod goes before its tasks are requeued: the worker process on it may still be alive (a stuck
    task, a missed heartbeat), and the app's ``update-task-status`` takes a status from anyone, whatever
    ``worker_id`` the task has. Requeued first, a task could be set back to In Progress with no worker
    (which nothing requeues while ``UNOWNED_TASK_TIMEOUT_SEC`` is 0) or to Failed by the process that was
    being replaced. Runpod ends a pod asynchronously, so this narrows the window rather than closing it.
    A termination that fails still ends in the requeue."""
    kind = a.kind
    skipped: list[str] = []
    diagnostics = yield from _diagnostics(fx, a, worker)
    if a.from_status is not WorkerState.ERROR:
        metadata = {**dict(a.metadata), Meta.ERROR_REASON: a.reason.value, Meta.ERROR_DETAILS: diagnostics}
        yield from to_error(fx, kind, a.worker_id, a.reason.value, metadata, skipped)
    if a.from_status.booting:
        # A boot that never got to serve (timeout, pod failed while booting) is a failed spawn for
        # the metric as for the breaker, not only the boot steps that report their own failure.
        count_spawn_failure(fx, kind, a.reason.value, skipped)
    confirmed = None
    if a.runpod_id:
        confirmed = yield from terminate(
            fx, a.worker_id, a.runpod_id, a.reason.value, action=kind, skipped=skipped, worker=worker
        )
    requeued = yield from requeue(fx, kind, a.worker_id, a.reason.value, skipped)
    fx.log.warning(
        "worker_failed",
        worker_id=a.worker_id,
        reason=a.reason.value,
        requeued=len(requeued.requeued),
        dead_lettered=len(requeued.failed),
    )
    return {"tasks_reset": requeued.count, "terminate_confirmed": confirmed, **skipped_steps(skipped)}


def drain(a: Drain, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    metadata = {**dict(a.metadata), Meta.DRAIN_REASON: a.reason.value, Meta.DRAINED_AT: iso(fx.now())}
    if a.reason is Reason.UNCLAIMED_WORK:
        # Every new worker would sit beside the same tasks: only the operator can end that cycle.
        fx.log.warning(
            "tasks_not_claimed",
            worker_id=a.worker_id,
            **dict(a.metadata.get(Meta.UNCLAIMED) or {}),
            hint="the claimable view counts tasks this worker does not claim; compare the view with the "
            "worker's claim rules, or pause",
        )
    yield from fx.transition(a.worker_id, WorkerState.DRAINING, a.reason.value, metadata)
    return {}


def reactivate(a: Reactivate, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    yield from fx.transition(a.worker_id, WorkerState.ACTIVE, a.reason.value)
    return {}


def _move_or_skip(
    fx: Effects,
    kind: str,
    worker_id: str,
    to: WorkerState,
    reason: str,
    metadata: dict[str, Any] | None,
    skipped: list[str],
) -> Steps[bool]:
    """The row's move before an ending; False (the step logged and skipped) when it failed for any reason
    but a lost lease or the database's refusal, which stop the action.

    A stale leader must not touch the pod; a refusal is the database's guard (the worker claimed a task
    after the plan was made, or moved on): the pod is left alone and the next tick re-plans. Any other
    failure (the row gone, an id the database refuses, a fault) must not keep the pod billing: the caller
    ends it by pod id. A claim racing this costs one attempt, which the next tick requeues."""
    try:
        yield from fx.transition(worker_id, to, reason, metadata)
    except (errors.LeaseLost, errors.IllegalTransition):
        raise
    except Exception as exc:
        fx.log.warning(
            "action_step_failed",
            action=kind,
            step="transition",
            error_type=type(exc).__name__,
            error=str(exc)[:300],
        )
        skipped.append("transition")
        return False
    return True


def terminate_pod(a: TerminatePod, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    skipped: list[str] = []
    if a.worker_id and a.transition_from is not None:
        # Out of the pool, the drain reason on record is of the worker's life before it (WHY in
        # `status`): the pool's own reason replaces it.
        why = {Meta.DRAIN_REASON: a.reason.value} if a.transition_from.pooled else None
        yield from _move_or_skip(
            fx, a.kind, a.worker_id, WorkerState.TERMINATING, a.reason.value, why, skipped
        )
    confirmed = yield from terminate(
        fx, a.worker_id, a.runpod_id, a.reason.value, action=a.kind, skipped=skipped, worker=worker
    )
    if a.worker_id is None:
        fx.log.warning(
            "orphan_pod_terminated", runpod_id=a.runpod_id, pod_name=a.pod_name, confirmed=confirmed
        )
    return {"terminate_confirmed": confirmed, **skipped_steps(skipped)}


def mark_terminated(a: MarkTerminated, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    """The provider confirms no pod: close the row. Tasks a failed requeue leaves behind are those of
    a worker that is no longer live, which the next snapshot lists and the next tick requeues."""
    kind = a.kind
    skipped: list[str] = []
    reset = 0
    if a.requeue_tasks:
        reset = (yield from requeue(fx, kind, a.worker_id, a.reason.value, skipped)).count
    cost = local_step(fx, kind, "cost", skipped, lambda: estimated_cost(worker, fx.now()) if worker else None)
    yield from fx.transition(a.worker_id, WorkerState.TERMINATED, a.reason.value)
    runpod_id = worker.runpod_id if worker else None
    yield from event(
        fx,
        "worker_terminated",
        skipped,
        worker_id=a.worker_id,
        runpod_id=runpod_id,
        reason=a.reason.value,
        cost_usd=cost,
    )
    return {"tasks_reset": reset, **skipped_steps(skipped)}


def requeue_tasks(a: RequeueTasks, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    requeued = yield from fx.requeue(a.worker_id, a.reason.value)
    return {"tasks_reset": requeued.count}


def requeue_stranded_tasks(a: RequeueStrandedTasks, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    requeued = yield from fx.requeue_stranded(a.worker_id, a.task_ids, a.reason.value)
    if requeued.count:
        fx.log.warning(
            "stranded_tasks_requeued",
            worker_id=a.worker_id,
            requeued=len(requeued.requeued),
            dead_lettered=len(requeued.failed),
            task_ids=list(requeued.requeued + requeued.failed)[:20],
            hint="the worker holds a newer task: these were claimed for it but never run (a claim "
            "answer it did not get); the worker itself is healthy",
        )
    return {"tasks_reset": requeued.count}


def requeue_unowned_tasks(a: RequeueUnownedTasks, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    requeued = yield from fx.requeue_unowned(a.older_than_sec, a.reason.value)
    if requeued.count:
        fx.log.warning(
            "unowned_tasks_requeued",
            requeued=len(requeued.requeued),
            dead_lettered=len(requeued.failed),
            older_than_sec=a.older_than_sec,
        )
    return {"tasks_reset": requeued.count}


def release_parents(a: ReleaseParents, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    released = yield from fx.release_parents(a.worker_id, a.reason.value)
    if released:
        fx.log.info(
            "parents_released",
            worker_id=a.worker_id,
            task_ids=list(released),
            reason=a.reason.value,
            hint="each stays In Progress with no worker; the app completes it with its last child",
        )
    return {"parents_released": len(released)}


def stop_pod(a: StopPod, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    """``draining -> stopping`` (refused while the worker holds a task: superseded), then the provider's
    stop, then ``pod_stop_requested_at``. The row is written first, so a crash before the stop leaves a
    ``stopping`` row whose pod still runs; with no request recorded, the next tick stops it at once:
    nothing bills untracked, nor for long. A row that cannot be moved for any other reason than the
    database's refusal or a lost lease ends its pod by termination instead, as ``terminate_pod`` does:
    left, the next tick planned the same stop again and the idle GPU billed for as long as the fault."""
    skipped: list[str] = []
    if a.transition_from is not None:
        pinned: dict[str, Any] = {
            Meta.PREVIOUS_HOST_KEY_FINGERPRINT: worker.host_key_fingerprint if worker else None
        }
        if a.disk_gb is not None:
            pinned[Meta.DISK_GB] = a.disk_gb
        moved = yield from _move_or_skip(
            fx, a.kind, a.worker_id, WorkerState.STOPPING, a.reason.value, pinned, skipped
        )
        if not moved:
            # A pod stopped under a row that still says draining would be nobody's to resume (the pool
            # holds what its rows record): it is terminated, by id.
            confirmed = yield from terminate(
                fx, a.worker_id, a.runpod_id, a.reason.value, action=a.kind, skipped=skipped, worker=worker
            )
            return {"stop_accepted": False, "terminate_confirmed": confirmed, **skipped_steps(skipped)}
    yield from fx.fence("stop_pod")
    fx.crash_point("before_stop")
    done, answer = yield from run_step(fx, a.kind, "stop", skipped, fx.stop(a.runpod_id))
    accepted = bool(answer) if done else False
    fx.crash_point("after_stop")
    # When we last asked (accepted or not): the retries are spaced from it. Lost, the next tick asks again.
    stamp = {Meta.POD_STOP_REQUESTED_AT: iso(fx.now())}
    yield from run_step(fx, a.kind, "record_stop", skipped, fx.merge_metadata(a.worker_id, stamp))
    kind = "pod_stop_requested" if accepted else "pod_stop_unconfirmed"
    yield from event(fx, kind, skipped, worker_id=a.worker_id, runpod_id=a.runpod_id, reason=a.reason.value)
    return {"stop_accepted": accepted, **skipped_steps(skipped)}


def mark_stopped(a: MarkStopped, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    yield from fx.transition(
        a.worker_id, WorkerState.STOPPED, a.reason.value, {Meta.STOPPED_AT: iso(fx.now())}
    )
    return {}


def resume_pod(a: ResumePod, worker: Worker | None, fx: Effects) -> Steps[Outcome]:
    """``stopped -> resuming`` (the row first: a crash before the start leaves a ``resuming`` row whose
    pod is still EXITED, which the next tick starts again), then the provider's start. No GPU on the
    host: the pod is terminated (``resume_no_gpu``, not a boot failure) and the next tick spawns."""
    skipped: list[str] = []
    if worker is None or worker.status is WorkerState.STOPPED:
        previous = worker.metadata.get(Meta.PREVIOUS_HOST_KEY_FINGERPRINT) if worker else None
        fresh = {
            Meta.RESUME_REQUESTED_AT: iso(fx.now()),
            Meta.RESUMES: (worker.resumes if worker else 0) + 1,
            # The stop wiped the container disk: the checks and the process start are redone.
            Meta.INITIALIZED_AT: None,
            Meta.PROCESS_STARTED_AT: None,
            Meta.SSH_DETAILS: None,
            Meta.HOST_KEY_FINGERPRINT: None,
            Meta.PREVIOUS_HOST_KEY_FINGERPRINT: previous or (worker.host_key_fingerprint if worker else None),
        }
        yield from fx.transition(a.worker_id, WorkerState.RESUMING, a.reason.value, fresh)
    yield from fx.fence("resume_pod")
    fx.crash_point("before_resume")
    done, answer = yield from run_step(fx, a.kind, "resume", skipped, fx.resume(a.runpod_id))
    fx.crash_point("after_resume")
    status = str(getattr(answer, "status", "failed")) if done else "failed"
    detail = str(getattr(answer, "detail", "") or "")[:500]
    if status == "resumed":
        yield from event(fx, "pod_resume_requested", skipped, worker_id=a.worker_id, runpod_id=a.runpod_id)
        return {"outcome": "resumed", **skipped_steps(skipped)}
    if status == "no_gpu":
        # The host's GPUs were taken: a normal event. End the pod; the next tick spawns a replacement.
        fx.log.info("pod_resume_no_gpu", worker_id=a.worker_id, runpod_id=a.runpod_id, detail=detail)
        why = {Meta.ERROR_DETAILS: detail, Meta.DRAIN_REASON: Reason.RESUME_NO_GPU.value}
        moved = fx.transition(a.worker_id, WorkerState.TERMINATING, Reason.RESUME_NO_GPU.value, why)
        yield from run_step(fx, a.kind, "transition", skipped, moved)
        confirmed = yield from terminate(
            fx,
            a.worker_id,
            a.runpod_id,
            Reason.RESUME_NO_GPU.value,
            action=a.kind,
            skipped=skipped,
            worker=worker,
        )
        return {"outcome": "no_gpu", "terminate_confirmed": confirmed, **skipped_steps(skipped)}
    # Gone (the next tick's listing closes the row) or failed otherwise (the policy re-sends the start;
    # the resume's boot timeout bounds it).
    fx.log.warning(
        "pod_resume_failed", worker_id=a.worker_id, runpod_id=a.runpod_id, status=status, detail=detail
    )
    return {"outcome": f"resume_{status}", **skipped_steps(skipped)}


HANDLERS: Mapping[type[Action], Handler] = {
    Spawn: spawn,
    Initialize: initialize,
    StartProcess: start_process,
    WatchStart: watch_start,
    Promote: promote,
    FailWorker: fail_worker,
    Drain: drain,
    Reactivate: reactivate,
    TerminatePod: terminate_pod,
    MarkTerminated: mark_terminated,
    RequeueTasks: requeue_tasks,
    RequeueStrandedTasks: requeue_stranded_tasks,
    RequeueUnownedTasks: requeue_unowned_tasks,
    ReleaseParents: release_parents,
    StopPod: stop_pod,
    MarkStopped: mark_stopped,
    ResumePod: resume_pod,
}
