"""Health: why a live worker must fail now, from provider facts, clocks, heartbeats and its own reports.

Where this sits in the pure core: :func:`orchestrator.core.policy.plan` asks :func:`health` about each
live worker before any boot or scaling step; a verdict becomes a :class:`~orchestrator.core.actions.FailWorker`
(diagnostics, requeue, terminate). Pure: reads the :class:`~orchestrator.core.draft.Draft`, decides
nothing else.

* Pod EXITED/ERROR, or missing (after the orphan grace, counted from the row's creation) -> error.
* The worker's own report (``reported_status``): ``crashed`` (its heartbeat guardian saw the process
  die; the app's heartbeat function has already requeued its tasks) -> error with ``worker_crashed``,
  ``error`` (its fatal-error handler gave up on the GPU) -> error with ``worker_error``, when the report is
  at or after ``process_started_at`` (or the row's creation when no process start is recorded): an older
  report is a previous process's history.
* ``SPAWNING_TIMEOUT_SEC`` from creation fails a boot (not while an initialized worker waits for an
  operator to start it by hand with ``AUTO_START_WORKER_PROCESS=false``).
* Heartbeat older than ``HEARTBEAT_TIMEOUT_SEC`` while the worker runs a task (or, for an active one,
  while tasks wait) -> error; a draining worker's silence counts from the drain when it has not
  heartbeated since (draining heartbeats are recorded); a booting worker that already claimed a task
  (``initializing`` claims; with ``AUTO_START_WORKER_PROCESS=false`` it is never promoted) gets these
  checks too, the heartbeat one once it has heartbeated at all (it may claim while loading its models).
* A task running past ``TASK_STUCK_TIMEOUT_SEC`` (SQL excludes ``_orchestrator`` types) -> error and its
  tasks requeued.

SSH probes are not a health signal here at all, so a failed probe can never kill a heartbeating worker;
the heartbeat is the worker's own word that it lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.core.draft import Draft, age
from orchestrator.core.observed import PodView, Worker
from orchestrator.core.states import Reason, WorkerState

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
        # Not health, but as final: a row nothing can be done for as a worker (its tasks are requeued).
        Reason.UNUSABLE_ROW,
    }
)
# What the worker reported about itself -> the failure it means. Any other report (a status the
# worker's code may grow) is left to the other health checks: its heartbeats still tell.
REPORTED_FAILURES: Mapping[str, Reason] = {"crashed": Reason.WORKER_CRASHED, "error": Reason.WORKER_ERROR}


def health(d: Draft, worker: Worker, pod: PodView | None) -> tuple[Reason, dict[str, Any]] | None:
    """Why this worker must fail now (the reason and its details), or None."""
    s = d.settings
    if d.pods_known:
        if pod is not None and pod.failed:
            return Reason.POD_FAILED, {"pod_status": pod.status.value}
        if d.absent(worker, pod):
            return Reason.POD_MISSING, {"runpod_id": worker.runpod_id}
    reported = reported_failure(worker)
    if reported is not None:
        return reported
    if worker.status.booting:
        row_age = d.row_age(worker)
        waiting_for_operator = (
            not s.auto_start_worker_process
            and worker.initialized_at is not None
            and worker.process_started_at is None
        )
        if row_age is not None and row_age > s.spawning_timeout_sec and not waiting_for_operator:
            return Reason.BOOT_TIMEOUT, {"age_sec": round(row_age, 1)}
        if worker.running_count == 0:
            return None
        # `initializing` is a claiming state (and with AUTO_START_WORKER_PROCESS=false a worker is
        # never promoted): one that holds a task gets the stuck-task check below, and the
        # heartbeat check once it has heartbeated.
    stuck_age = age(d.now, worker.oldest_stuckable_started_at)
    if worker.running_count > 0 and stuck_age is not None and stuck_age > s.task_stuck_timeout_sec:
        return Reason.TASK_STUCK, {"task_age_sec": round(stuck_age, 1)}
    if worker.status.booting and worker.last_heartbeat is None:
        return None  # a process may claim while still loading its models: no heartbeat yet proves nothing
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


def reported_failure(worker: Worker) -> tuple[Reason, dict[str, Any]] | None:
    """The worker's own report of a crash or a fatal error, when it concerns the current process."""
    reason = REPORTED_FAILURES.get((worker.reported_status or "").strip().lower())
    if reason is None or worker.reported_at is None:
        return None
    # Rows are never reused, so without a recorded process start the row's creation bounds it.
    since = worker.process_started_at or worker.created_at
    if since is not None and worker.reported_at < since:
        return None  # a previous process's report: history
    details: dict[str, Any] = {
        "reported_status": worker.reported_status,
        "reported_at": worker.reported_at.isoformat(),
    }
    if worker.reported_details:
        details["reported_details"] = dict(worker.reported_details)
    return reason, details
