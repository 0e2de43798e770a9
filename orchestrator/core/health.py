"""Health: why a live worker must fail now, from provider facts, clocks, heartbeats and its own reports.

Where this sits in the pure core: :func:`orchestrator.core.policy.plan` asks :func:`health` about each
live worker before any boot or scaling step; a verdict becomes a :class:`~orchestrator.core.actions.FailWorker`
(diagnostics, terminate, requeue). Pure: reads the :class:`~orchestrator.core.draft.Draft`, decides
nothing else.

* Pod EXITED/ERROR, or missing (after the orphan grace, counted from the row's creation) -> error.
* The worker's own report (``reported_status``): ``crashed`` (its heartbeat guardian saw the process
  die; the app's heartbeat function has already requeued its tasks) -> error with ``worker_crashed``,
  ``error`` (its fatal-error handler gave up on the GPU) -> error with ``worker_error``, ``terminated``
  (the last beat of a process shutting down: ``worker_exited``, or ``worker_error`` when the fatal-error
  handler's words are on the row), when the report is
  at or after ``process_started_at`` (or the row's creation when no process start is recorded): an older
  report is a previous process's history.
* ``SPAWNING_TIMEOUT_SEC`` from creation fails a boot (with ``AUTO_START_WORKER_PROCESS=false``, from
  the end of the checks, for the operator or the image to start the worker). Time the start watch
  (:class:`~orchestrator.core.actions.WatchStart`) saw the start still in its setup steps (git sync,
  apt, ``uv sync``: a first sync on a fresh volume downloads and builds the whole environment) is added
  to it, up to
  ``WORKER_SETUP_TIMEOUT_SEC``: only what was seen, so a start nobody could watch gets the plain timeout.
  A start the watch saw end before the first heartbeat is failed by the executor at once
  (``start_exited``).
* Heartbeat older than ``HEARTBEAT_TIMEOUT_SEC`` while the worker runs a task (or, for an active one,
  while tasks wait) -> error; a draining worker's silence counts from the drain when it has not
  heartbeated since (draining heartbeats are recorded); a booting worker that already claimed a task
  (``initializing`` claims; with ``AUTO_START_WORKER_PROCESS=false`` it is promoted only by a heartbeat
  after its checks) gets these
  checks too, the heartbeat one once it has heartbeated at all (it may claim while loading its models).
* A task stuck (``_orchestrator`` types exempt: their liveness is the heartbeat's) -> error and its tasks
  requeued. Stuck means running past :func:`stuck_limit`: ``TASK_STUCK_TIMEOUT_SEC`` when an operator
  sets it; otherwise, from evidence, ``STUCK_P99_FACTOR`` times the p99 of the type's completions over
  the snapshot's window (``task_stats``), never below ``STUCK_FLOOR_SEC``, and for a type with fewer than
  ``STUCK_MIN_COMPLETIONS`` completions ``STUCK_P99_FACTOR`` times the larger of the floor and its longest
  run. A long video or a LoRA training (10-25 minutes) is then never stuck at 20 minutes, while a hung
  1-3 minute task is found at the floor, as with the old fixed timeout.

SSH probes are not a health signal here at all, so a failed probe can never kill a heartbeating worker;
the heartbeat is the worker's own word that it lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.core.config import Settings
from orchestrator.core.draft import Draft, age
from orchestrator.core.evidence import TaskStats
from orchestrator.core.observed import PodView, Worker
from orchestrator.core.pool import RESUME_TIMEOUT_SEC
from orchestrator.core.states import PodStatus, Reason, WorkerState

# Stuck-ness from evidence (TASK_STUCK_TIMEOUT_SEC unset). 3x the p99: for the task durations users see
# (lognormal-like, coefficient of variation up to about 0.5) a healthy run past three times the p99 is
# rarer than one in a million, and the p99 of a few dozen completions is close to their maximum. The
# floor is the old fixed timeout, so a hung short task costs no more than before (the chaos soak's hangs
# are found as fast); a type seen fewer than 10 times gets 3x the floor (an hour) or 3x its longest run.
STUCK_P99_FACTOR = 3.0
STUCK_FLOOR_SEC = 1200.0
STUCK_MIN_COMPLETIONS = 10

# Health reasons: the only reasons for which a worker running a task may be failed.
HEALTH_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.POD_FAILED,
        Reason.POD_MISSING,
        Reason.HEARTBEAT_STALE,
        Reason.TASK_STUCK,
        Reason.BOOT_TIMEOUT,
        Reason.WORKER_CRASHED,
        Reason.WORKER_ERROR,
        Reason.WORKER_EXITED,
        # Not health, but as final: a row nothing can be done for as a worker (its tasks are requeued).
        Reason.UNUSABLE_ROW,
    }
)
# What the worker reported about itself -> the failure it means. Any other report (a status the
# worker's code may grow) is left to the other health checks: its heartbeats still tell.
# 'terminated' is the last beat of a process shutting down (banodoco/reigh-worker since 22cbba9,
# 2026-04-11: `source/runtime/worker/server.py` sends it from its main loop's `finally`, after SIGTERM or
# SIGINT, or an exception the loop did not catch); it means worker_error when the fatal-error handler's
# words are on the row (see reported_failure).
REPORTED_FAILURES: Mapping[str, Reason] = {
    "crashed": Reason.WORKER_CRASHED,
    "error": Reason.WORKER_ERROR,
    "terminated": Reason.WORKER_EXITED,
}
# Keys the fatal-error handler writes into the row's metadata (Reigh-Worker `fatal_error_handler.py`),
# which the database copies into a report's details. `self_terminated` stays in the metadata every later
# heartbeat writes back; `error_reason` is one of our own keys, which the workers guard keeps, so only the
# handler's own `error` report carries it.
FATAL_HANDLER_KEYS = ("error_reason", "self_terminated")


def health(d: Draft, worker: Worker, pod: PodView | None) -> tuple[Reason, dict[str, Any]] | None:
    """Why this worker must fail now (the reason and its details), or None."""
    s = d.settings
    if d.pods_known:
        # A resuming pod is listed EXITED until the provider starts it (its retries and its timeout
        # are the pool's business, orchestrator.core.pool).
        starting = (
            worker.status is WorkerState.RESUMING and pod is not None and pod.status is PodStatus.EXITED
        )
        if pod is not None and pod.failed and not starting:
            return Reason.POD_FAILED, {"pod_status": pod.status.value}
        if d.absent(worker, pod):
            return Reason.POD_MISSING, {"runpod_id": worker.runpod_id}
    reported = reported_failure(worker)
    if reported is not None:
        return reported
    if worker.status.booting:
        # A resume's boot counts from its request, with the shorter timeout of a cached image.
        resumed = worker.resume_requested_at is not None
        row_age = age(d.now, worker.boot_started_at) if resumed else d.row_age(worker)
        limit = min(float(s.spawning_timeout_sec), RESUME_TIMEOUT_SEC) if resumed else s.spawning_timeout_sec
        setup = setup_allowance(s, worker)
        # Started by the operator or by the image (AUTO_START_WORKER_PROCESS=false), the process has
        # SPAWNING_TIMEOUT_SEC from the end of the checks to heartbeat. Unbounded, a pod whose worker
        # never came (an image that found no credentials, a start nobody ran) billed for ever, and the
        # policy spawned more of them while tasks waited.
        waiting_for_operator = (
            not s.auto_start_worker_process
            and worker.initialized_at is not None
            and worker.process_started_at is None
        )
        # One heard since its checks is promoted this tick unless a check below fails it first.
        answered = heard_since_start(worker, auto_start=False)
        if waiting_for_operator and not answered:
            row_age, limit, setup = age(d.now, worker.initialized_at), s.spawning_timeout_sec, 0.0
        if row_age is not None and row_age > limit + setup and not (waiting_for_operator and answered):
            details: dict[str, Any] = {"age_sec": round(row_age, 1), "limit_sec": round(limit + setup, 1)}
            if setup:
                details["setup_sec"] = round(setup, 1)
            return Reason.BOOT_TIMEOUT, details
        if worker.running_count == 0:
            return None
        # `initializing` is a claiming state (with AUTO_START_WORKER_PROCESS=false a worker is promoted
        # only by a heartbeat after its checks): one that holds a task gets the stuck-task check below,
        # and the heartbeat check once it has heartbeated.
    stuck = stuck_task(d, worker)
    if stuck is not None:
        return Reason.TASK_STUCK, stuck
    boot = worker.boot_started_at
    if worker.status.booting and (
        worker.last_heartbeat is None or (boot is not None and worker.last_heartbeat < boot)
    ):
        # A process may claim while still loading its models: no heartbeat yet (from this boot: a
        # resumed pod's last beat is from before its stop) proves nothing.
        return None
    heard = worker.last_heartbeat or worker.activated_at or worker.status_changed_at or worker.created_at
    silent = age(d.now, heard)
    if (
        worker.status is WorkerState.DRAINING
        and worker.status_changed_at is not None
        and (worker.last_heartbeat is None or worker.last_heartbeat < worker.status_changed_at)
    ):
        # Not heard from since the drain: a live worker heartbeats within its period of the drain
        # (draining heartbeats are recorded), so count the silence from the drain itself.
        silent = age(d.now, worker.status_changed_at)
    if silent is not None and silent > s.heartbeat_timeout_sec:
        tasks_wait = worker.status is WorkerState.ACTIVE and d.snapshot.queue.claimable > 0
        if worker.running_count > 0 or tasks_wait:
            return Reason.HEARTBEAT_STALE, {"heartbeat_age_sec": round(silent, 1)}
    return None


# A worker whose start was not yet heard from is watched once a tick (not on the extra ticks a wake-up
# brings): a start that ended is then failed within a tick or two instead of billing until
# SPAWNING_TIMEOUT_SEC, and a setup that runs keeps being seen. The share leaves room for a tick that
# starts a little early.
START_WATCH_TICK_SHARE = 0.8


def heard_since_start(worker: Worker, auto_start: bool) -> bool:
    """An ``initializing`` worker heard from since its process started: the policy promotes it.

    Started by the operator or by the image itself (``AUTO_START_WORKER_PROCESS=false``), a process
    leaves no start of ours to count from: its heartbeat after the checks is its word, as the original
    promoted on a worker's first heartbeat. Left ``initializing``, it was never drained or let go idle,
    and billed for ever."""
    started = (
        worker.process_started_at if auto_start else (worker.process_started_at or worker.initialized_at)
    )
    heard = worker.last_heartbeat
    return (
        worker.status is WorkerState.INITIALIZING
        and started is not None
        and heard is not None
        and heard >= started
    )


def setup_allowance(settings: Settings, worker: Worker) -> float:
    """Seconds added to the boot timeout: from the process start to the last time the start watch saw
    the start in its setup steps (git sync, apt, ``uv sync``), at most ``WORKER_SETUP_TIMEOUT_SEC``. A
    sighting from before this process start (a resumed pod's previous start) counts nothing."""
    seen = worker.setup_seen_sec
    if seen is None or settings.worker_setup_timeout_sec <= 0:
        return 0.0
    return min(seen, float(settings.worker_setup_timeout_sec))


def watch_due(settings: Settings, now: datetime, worker: Worker) -> bool:
    """Whether a started, not yet heard-from worker's start is due another look (once a tick)."""
    started = worker.process_started_at
    if started is None:
        return False
    last = max(t for t in (started, worker.start_watched_at) if t is not None)
    elapsed = age(now, last)
    return elapsed is not None and elapsed >= START_WATCH_TICK_SHARE * settings.orchestrator_poll_sec


def reported_failure(worker: Worker) -> tuple[Reason, dict[str, Any]] | None:
    """The worker's own report of a crash or a fatal error, when it concerns the current process."""
    reason = REPORTED_FAILURES.get((worker.reported_status or "").strip().lower())
    if reason is None or worker.reported_at is None:
        return None
    # Rows are never reused, so without a recorded process start the row's creation bounds it, or the
    # resume request for a resumed pod (its process is new; the one before the stop is history).
    since = max(
        (t for t in (worker.process_started_at, worker.resume_requested_at, worker.created_at) if t),
        default=None,
    )
    if since is not None and worker.reported_at < since:
        return None  # a previous process's report: history
    details: dict[str, Any] = {
        "reported_status": worker.reported_status,
        "reported_at": worker.reported_at.isoformat(),
    }
    if worker.reported_details:
        details["reported_details"] = dict(worker.reported_details)
        if reason is Reason.WORKER_EXITED and any(
            worker.reported_details.get(k) not in (None, False, "") for k in FATAL_HANDLER_KEYS
        ):
            # The fatal handler marked the row before the process went (its `self_terminated` stays in
            # the metadata the heartbeat writes back): the failure is that error.
            reason = Reason.WORKER_ERROR
    return reason, details


def stuck_limit(settings: Settings, stats: TaskStats | None) -> float:
    """Seconds a task of a type with these statistics may run before it is stuck (see the module's doc)."""
    if settings.task_stuck_timeout_sec is not None:
        return float(settings.task_stuck_timeout_sec)
    if stats is not None and stats.completions >= STUCK_MIN_COMPLETIONS and stats.p99_sec is not None:
        return max(STUCK_FLOOR_SEC, STUCK_P99_FACTOR * stats.p99_sec)
    longest = stats.max_sec if stats is not None and stats.max_sec is not None else 0.0
    return STUCK_P99_FACTOR * max(STUCK_FLOOR_SEC, longest)


def unowned_stuck_limit(settings: Settings) -> float | None:
    """In Progress tasks that name no worker: requeued past ``UNOWNED_TASK_TIMEOUT_SEC``, or never (None,
    the default): on Reigh's database they run on users' own machines, and the app ends stale ones."""
    if settings.unowned_task_timeout_sec > 0:
        return float(settings.unowned_task_timeout_sec)
    return None


def stuck_task(d: Draft, worker: Worker) -> dict[str, Any] | None:
    """The details of this worker's stuck task, or None. Each running task against its own type's limit;
    a snapshot without per-task rows: the oldest non-parent task against an unknown type's limit."""
    if worker.running_count == 0:
        return None
    stats = d.snapshot.task_stats
    if worker.running_tasks:
        for task in worker.running_tasks:
            if task.is_parent:
                continue
            task_age = age(d.now, task.started_at)
            limit = stuck_limit(d.settings, stats.get(task.task_type))
            if task_age is not None and task_age > limit:
                return {
                    "task_id": task.id,
                    "task_type": task.task_type,
                    "task_age_sec": round(task_age, 1),
                    "limit_sec": round(limit, 1),
                }
        return None
    task_age = age(d.now, worker.oldest_stuckable_started_at)
    limit = stuck_limit(d.settings, None)
    if task_age is not None and task_age > limit:
        return {"task_age_sec": round(task_age, 1), "limit_sec": round(limit, 1)}
    return None
