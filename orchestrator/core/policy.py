"""The pure decision core: ``plan(snapshot, pods, settings, now) -> Plan``.

The "decide" step of the tick (gather -> decide -> apply -> record): values in, actions with reason codes
out. No I/O, no clock (``now`` is an argument), no randomness (new worker ids are hashes of the input), no
logging. The daemon, the ``orchestrator plan`` dry run and the trace simulator all call this function, so
what the simulator measures is what production does.

One pass over the fleet, in this order, on one :class:`~orchestrator.core.draft.Draft` (each row matched
with its pod, prices, the actions so far); each rule is a scenario test in ``tests/unit/test_policy.py``:

1. Per row: endings (this module), health (:mod:`orchestrator.core.health`), boot (this module).
2. Reconcile: unreadable rows, tasks of workers that are gone, unclaimed pods (this module).
3. Staffing, within the limits: demand, scale down, reactivation, scale up
   (:mod:`orchestrator.core.staffing`, :mod:`orchestrator.core.limits`).

The rules kept here:

* **Reconcile, both ways.** A live row claims its pod by ``metadata.runpod_id``, or by name (pod name
  = worker id) while it has no recorded id yet. A pod whose name carries ``WORKER_ID_PREFIX`` that no
  live row claims is terminated once older than ``ORPHAN_GRACE_SEC`` (a pod whose age the provider
  does not tell is treated as old: a fresh pod of ours is always claimed by its intent row's name). A
  live row whose pod is missing goes to ``error``, after the same grace counted from the row's
  creation (a listing may lag a creation); a ``spawning`` row that never got a pod is marked
  ``terminated`` after the grace (a crash between registering and creating). Pods without the prefix
  are never touched, not even when a row points at them. ``pods=None`` means the listing failed: then
  nothing that depends on it is decided (no orphan, missing-pod, readiness or confirmation decision),
  while demand and heartbeats are still acted on.
* **Boot.** A booting row whose pod is RUNNING with SSH published gets :class:`Initialize` (checks,
  then the process start when ``AUTO_START_WORKER_PROCESS``); an initialized row whose process never
  started gets :class:`StartProcess`; one started and not yet heard from gets :class:`WatchStart` once a
  tick. An ``initializing`` row heard from at or after
  ``metadata.process_started_at`` (with ``AUTO_START_WORKER_PROCESS=false``, at or after
  ``metadata.initialized_at``, the end of the checks) gets :class:`Promote` (``first_heartbeat``): the real worker's
  heartbeat function is the app's and only records ``last_heartbeat``, so promotion is decided here,
  at the first tick after that heartbeat.
* **Rows and tasks nobody else moves.** In Progress tasks of a worker that is not live (terminated, or
  no row: ``queue.orphaned_worker_ids``) are requeued. In Progress tasks that name no worker at all
  (legacy data, a hand edit, a claim through a user's access token whose worker went away) are
  requeued, an attempt counted, once In Progress past ``TASK_STUCK_TIMEOUT_SEC`` (unset: the 1200 s
  floor of :func:`~orchestrator.core.health.stuck_limit`; ``_orchestrator`` types too: their exemption
  rests on a live worker heartbeating for them, and here nothing says anyone runs them). A row in a state this contract does not know is read as ``error`` and retired. A row the
  orchestrator cannot act on as a worker is retired with ``unusable_row``: a booting row whose id
  cannot name a pod or a worker process (``WORKER_ID_PATTERN``), and a row the snapshot could not parse
  (``Snapshot.unreadable``: its pod, found by the id its metadata names or by name, is terminated; with
  no pod left the row is closed). A live worker's task older than another non-parent task it holds is
  not being run (the worker runs one at a time: a claim whose answer it never got) and is requeued with
  :class:`RequeueStrandedTasks` (:func:`stranded_tasks`), the worker left alone.
* **Errors.** :class:`FailWorker` (diagnostics, terminate, requeue); ``error`` and ``terminating``
  rows get the pod termination re-sent every ``TERMINATE_RETRY_SEC`` while the pod is listed (or, when
  the listing failed, by the recorded pod id), their leftover tasks requeued, and
  :class:`MarkTerminated` once the provider confirms the pod gone.
* **The operator.** ``metadata.terminate_requested_at`` drains an active worker and terminates a booting
  or drained one once it has no task (an ``initializing`` one that already took a task is promoted, to
  be drained), and a pooled one without resuming it (:mod:`.pool`).

Not used here: ``ERROR_CLEANUP_GRACE_PERIOD_SEC`` (an errored row becomes ``terminated`` as soon as the
provider confirms its pod gone, so it stops holding a slot under ``MAX_ACTIVE_GPUS``; how long errored
rows stay visible is the dashboard views' business) and ``MAX_TASK_ATTEMPTS`` (the executor passes it
to the requeue function).

``HEALTH_REASONS``, ``REPORTED_FAILURES`` (:mod:`~orchestrator.core.health`) and ``new_worker_id``
(:mod:`~orchestrator.core.staffing`) stay importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from orchestrator.core import pool
from orchestrator.core.actions import (
    Drain,
    FailWorker,
    Initialize,
    MarkTerminated,
    Plan,
    Promote,
    RequeueStrandedTasks,
    RequeueTasks,
    RequeueUnownedTasks,
    StartProcess,
    TerminatePod,
    WatchStart,
)
from orchestrator.core.config import Settings
from orchestrator.core.draft import Draft
from orchestrator.core.health import (
    HEALTH_REASONS,
    REPORTED_FAILURES,
    health,
    heard_since_start,
    unowned_stuck_limit,
    watch_due,
)
from orchestrator.core.limits import backoffs, breaker, rate_limit_hold, unproven_workers, untried_workers
from orchestrator.core.observed import BootOutcome, PodView, Snapshot, Worker, as_utc, freeze
from orchestrator.core.staffing import (
    draining,
    held_parents,
    new_worker_id,
    scale_down,
    scale_up,
    target,
    wait_model,
)
from orchestrator.core.states import Blocked, Meta, PodStatus, Reason, WorkerState, usable_worker_id

__all__ = ["HEALTH_REASONS", "REPORTED_FAILURES", "TERMINATE_RETRY_SEC", "new_worker_id", "plan"]

# Re-send a termination for a pod the provider still lists after this long (each tick would hammer a
# slow provider; never would leak the pod).
TERMINATE_RETRY_SEC = 60.0


def plan(
    snapshot: Snapshot,
    pods: Sequence[PodView] | None,
    settings: Settings,
    now: datetime,
    *,
    prices: Mapping[str, float] | None = None,
    data_centers: Sequence[str] = (),
) -> Plan:
    """Decide one tick. Pure: the same arguments always give the same plan.

    ``pods`` is the provider's listing (all pods of the account; those without our prefix are only
    looked at, never acted on), or None when the listing failed this tick. ``now`` should be the
    database's clock (``snapshot.now``) when it has one: every timestamp compared with it was written
    by the database, so host clock skew cannot age a heartbeat. ``prices``: GPU display name -> USD/h.
    ``data_centers``: the data centers a spawn may land in (those of the configured network volumes, in
    order); empty when unknown or when no volume pins the pod.
    """
    d = Draft(snapshot, pods, settings, as_utc(now), dict(prices or {}), tuple(data_centers))
    booting: list[Worker] = []
    active: list[Worker] = []
    drained: list[Worker] = []
    stopped: list[Worker] = []
    for worker in d.workers:
        pod = d.pod_of[worker.id]
        status = worker.status
        if status.terminal:
            continue
        if status in (WorkerState.ERROR, WorkerState.TERMINATING):
            _reap(d, worker, pod)
            continue
        if status.pooled and worker.running_count == 0:
            # (A pooled row holding a task, which the database's guards prevent, takes the health
            # checks below: its EXITED pod fails it and its tasks are requeued.)
            if pool.pooled(d, worker, pod):
                stopped.append(worker)
            continue
        if (
            status is WorkerState.SPAWNING
            and worker.runpod_id is None
            and pod is None
            and worker.running_count == 0
            and d.absent(worker, pod)
        ):
            # Registered, never created (a crash, or a spawn that failed before recording):
            # nothing to terminate, no task to requeue.
            d.actions.append(
                MarkTerminated(reason=Reason.NO_POD_CREATED, worker_id=worker.id, from_status=status)
            )
            d.leaving.add(worker.id)
            continue
        if status.booting and not usable_worker_id(worker.id):
            # A row another system or a hand left: no pod can be named, and no worker process
            # started, for this id (it would fail every boot step until the boot timeout, billing
            # all the while). Retire it now.
            _fail(
                d,
                worker,
                pod,
                Reason.UNUSABLE_ROW,
                {"problem": f"worker id {worker.id[:200]!r} cannot name a pod or a worker process"},
            )
            continue
        unhealthy = health(d, worker, pod)
        if unhealthy is not None:
            reason, details = unhealthy
            _fail(d, worker, pod, reason, details)
            continue
        if status.booting:
            _boot(d, worker, pod)
            if worker.id not in d.leaving:
                booting.append(worker)
        elif status is WorkerState.ACTIVE:
            if worker.terminate_requested_at is not None:
                d.drain(worker, Reason.OPERATOR_REQUEST)
            else:
                active.append(worker)
        elif status is WorkerState.DRAINING:
            drained.append(worker)

    _retire_unreadable(d)

    for worker_id in sorted(set(snapshot.queue.orphaned_worker_ids) - {w.id for w in d.workers}):
        # In Progress tasks of a worker that is not live: nobody else will ever requeue them.
        d.actions.append(RequeueTasks(reason=Reason.REQUEUE_RETRY, worker_id=worker_id))
    queue = snapshot.queue
    stuck_limit = unowned_stuck_limit(settings)
    unowned_age = queue.oldest_unowned_age_sec
    if (
        stuck_limit is not None
        and queue.unowned_running > 0
        and unowned_age is not None
        and unowned_age > stuck_limit
    ):
        # In Progress with no worker named, and the operator asked for them to be requeued (they may be
        # runs on users' own machines: off by default). The database picks them by its own clock.
        d.actions.append(RequeueUnownedTasks(reason=Reason.TASK_WITHOUT_WORKER, older_than_sec=stuck_limit))

    live, orphan_spend = _orphans(d)
    spend, spend_unknown = d.spend(orphan_spend)

    stopped = pool.trim(d, stopped)
    resumable = [] if snapshot.paused else stopped
    pooled = pool.size(d)
    room = pooled < settings.warm_pool_max
    aim = target(
        queue,
        settings,
        wait_model(d, booting, active, pool=len(resumable), pool_room=room),
        held_parents(d.workers),
    )
    capacity = len(booting) + len(active)
    capacity -= scale_down(d, booting, active, aim, capacity)
    missing = max(0, aim.desired - capacity)
    if snapshot.passed_over_once and any(
        isinstance(a, Drain) and a.reason is Reason.UNCLAIMED_WORK for a in d.actions
    ):
        # The second worker drained beside the same tasks: they are not taken, whoever polls. Nothing is
        # added this tick; from the next, the daemon leaves them out of the queue it reads
        # (orchestrator.loop.passed_over), and later tasks get workers again. After the first such drain
        # a replacement is still bought: that worker may have been hung with its heartbeat still going.
        missing = 0
    reactivated = draining(d, drained, missing, pooled)
    capacity += reactivated
    missing -= reactivated

    unproven = unproven_workers(d.workers, d.now)
    untried = untried_workers(d.workers, d.now, snapshot.recent_boots)
    brk = breaker(snapshot.recent_boots, settings, d.now, unproven, untried)
    outcomes: list[BootOutcome] = list(snapshot.recent_boots)
    for worker in d.workers:
        outcomes.extend(worker.capacity_misses)
    pauses = backoffs(outcomes, settings, d.now, unproven | untried)
    blocked: list[Blocked] = []
    if missing > 0:
        blocked = scale_up(
            d,
            missing,
            capacity,
            aim,
            live,
            spend,
            spend_unknown,
            brk,
            pauses,
            booting,
            resumable,
            rate_limit_hold(snapshot.recent_boots, d.now),
        )

    # Last, and only for a worker no other action of this tick is about: the executor runs one action per
    # worker at a time, so a requeue planned first would hold back its promotion or drain for a tick.
    acted = {getattr(a, "worker_id", None) for a in d.actions}
    for worker in d.workers:
        serving = worker.status in (WorkerState.INITIALIZING, WorkerState.ACTIVE, WorkerState.DRAINING)
        stranded = stranded_tasks(worker) if serving and worker.id not in acted else ()
        if stranded:
            d.actions.append(
                RequeueStrandedTasks(reason=Reason.STRANDED_TASK, worker_id=worker.id, task_ids=stranded)
            )

    return Plan(
        actions=tuple(d.actions),
        desired=aim.desired,
        capacity=capacity,
        demand_tasks=aim.demand,
        live=live,
        spend_per_hr=spend,
        breaker=brk.state,
        consecutive_failures=brk.failures,
        breaker_until=brk.until,
        backoffs=tuple(pauses),
        spawn_blocked=tuple(blocked),
        missing=missing,
        paused=snapshot.paused,
        problems=tuple(dict.fromkeys((*snapshot.problems, *d.problems))),
        pool=pooled,
        sizing=aim.model.summary() if aim.model is not None else {},
    )


# --- endings --------------------------------------------------------------------------------------


def _fail(d: Draft, worker: Worker, pod: PodView | None, reason: Reason, details: dict[str, Any]) -> None:
    d.leaving.add(worker.id)
    d.actions.append(
        FailWorker(
            reason=reason,
            worker_id=worker.id,
            runpod_id=d.touchable_id(worker, pod),
            from_status=worker.status,
            running_task_ids=worker.running_task_ids,
            collect_logs=d.alive(pod),
            metadata=freeze(
                {
                    Meta.ERROR_REASON: reason.value,
                    Meta.ERROR_DETAILS: details,
                    Meta.FAILED_AT: d.now.isoformat(),
                }
            ),
        )
    )


def _reap(d: Draft, worker: Worker, pod: PodView | None) -> None:
    """An ``error`` or ``terminating`` row: finish the job until the provider confirms."""
    d.leaving.add(worker.id)
    # Without a listing the pod may still bill: the termination is re-sent by the id our spawn recorded
    # (touchable_id; one of a gone pod is answered as done), as when the pod is listed alive.
    if d.alive(pod) or not d.pods_known:
        last = worker.pod_terminate_requested_at
        due = last is None or (d.now - last).total_seconds() >= TERMINATE_RETRY_SEC
        target = d.touchable_id(worker, pod)
        if due and target is not None:
            d.actions.append(
                TerminatePod(
                    reason=Reason.TERMINATE_RETRY,
                    runpod_id=target,
                    pod_name=pod.name if pod is not None else worker.id,
                    worker_id=worker.id,
                )
            )
    elif d.absent(worker, pod):
        d.mark_gone(worker)  # requeues what it held as it closes the row
        return
    if worker.status is WorkerState.ERROR and worker.running_count > 0:
        d.actions.append(
            RequeueTasks(
                reason=Reason.REQUEUE_RETRY, worker_id=worker.id, running_task_ids=worker.running_task_ids
            )
        )


def stranded_tasks(worker: Worker) -> tuple[str, ...]:
    """Tasks the worker holds but does not run: no parent, and started before another such task it holds.

    The worker runs one task at a time (banodoco/reigh-worker 22cbba9 ``server.py``: its main loop claims
    the next only when the task it processes has ended), so a task of its older than the one it runs was
    left behind: claimed for it by the app, its answer never received (22cbba9 no longer reads its own
    In Progress task back, ``task_claim.py`` ``check_my_assigned_tasks``). Parents are not counted: one
    the worker reported "still orchestrating" waits under it for its children. ``started_at`` is when the
    app's claim transaction began, so this trusts that claims reach the database in the order the worker
    made them (migration 20261216000300 says what breaks it)."""
    held = [t for t in worker.running_tasks if not t.is_parent and t.started_at is not None]
    if len(held) < 2:
        return ()
    newest = max(t.started_at for t in held if t.started_at is not None)
    return tuple(sorted(t.id for t in held if t.started_at is not None and t.started_at < newest))


# --- boot -----------------------------------------------------------------------------------------


def _boot(d: Draft, worker: Worker, pod: PodView | None) -> None:
    status = worker.status
    if worker.terminate_requested_at is not None:
        # The operator asked: a booting worker has nothing worth finishing.
        d.leaving.add(worker.id)
        if status is WorkerState.INITIALIZING and worker.running_count > 0:
            # Unless it already took work: the real worker claims as soon as it runs, and `initializing`
            # is a claiming state. Left booting it went on claiming task after task, never drained, and
            # with a start watched by us ended as a boot timeout in mid-task. Promoted, it is drained as
            # an active worker and ended once its task is done.
            d.actions.append(Promote(reason=Reason.OPERATOR_REQUEST, worker_id=worker.id))
            return
        if d.alive(pod) and worker.running_count == 0:
            assert pod is not None
            runpod_id = d.touchable_id(worker, pod)
            if runpod_id is not None:
                d.terminate(worker, pod, Reason.OPERATOR_REQUEST)
        return
    if heard_since_start(worker, d.settings.auto_start_worker_process):
        # The process answers: promote. Needs no listing (a heartbeat is the process's own word),
        # and the health checks above already passed this tick.
        d.actions.append(Promote(reason=Reason.FIRST_HEARTBEAT, worker_id=worker.id))
        return
    if not d.pods_known or pod is None or not d.ours(pod):
        # Without a listing readiness is unknown; a pod without our prefix is not ours to boot.
        return
    if pool.resuming(d, worker, pod):
        return
    if (
        pod.status is PodStatus.RUNNING
        and pod.ssh_ready
        and (status in (WorkerState.SPAWNING, WorkerState.RESUMING) or worker.initialized_at is None)
    ):
        d.actions.append(
            Initialize(
                reason=Reason.POD_READY,
                worker_id=worker.id,
                runpod_id=pod.id,
                from_status=status,
                start_process=d.settings.auto_start_worker_process,
            )
        )
    elif (
        status is WorkerState.INITIALIZING
        and worker.initialized_at is not None
        and worker.process_started_at is None
        and d.settings.auto_start_worker_process
    ):
        heard = worker.last_heartbeat
        d.actions.append(
            StartProcess(
                reason=Reason.START_PROCESS,
                worker_id=worker.id,
                runpod_id=pod.id,
                # A heartbeat since initialization means a process runs but its start was never
                # recorded (a crash in between): record it, do not start a second one.
                already_running=heard is not None and heard >= worker.initialized_at,
            )
        )
    elif (
        status is WorkerState.INITIALIZING
        and worker.process_started_at is not None
        and pod.status is PodStatus.RUNNING
        and pod.ssh_ready
        and watch_due(d.settings, d.now, worker)
    ):
        # Started, not heard from: a start that ended is failed now rather than at the boot timeout,
        # and one still in its setup steps has that time kept off the boot timeout (health).
        d.actions.append(WatchStart(reason=Reason.WATCH_START, worker_id=worker.id, runpod_id=pod.id))


# --- reconcile: rows and pods nobody claims ----------------------------------------------------------


def _retire_unreadable(d: Draft) -> None:
    """Rows the snapshot lists but could not parse: terminate their pod, requeue, close the row.

    Such a row may still bill: the pod named after it (or the one its metadata names) runs on.
    Without a listing nothing is decided (whether it has a pod is unknown); a pod without our prefix
    is left alone, as for any row.
    """
    known = {w.id for w in d.workers}
    for row in sorted(d.snapshot.unreadable, key=lambda r: r.id):
        if row.id in known or not d.pods_known:
            continue
        d.leaving.add(row.id)
        if row.runpod_id:
            pod = d.by_id.get(row.runpod_id)
        else:
            pod = next((p for p in d.by_name.get(row.id, ()) if not p.gone), None)
        details = {"problem": row.problem[:500]}
        if pod is not None and not pod.gone:
            if not d.ours(pod):
                d.problems.append(
                    f"unreadable worker row {row.id[:200]!r} points at pod {pod.id} named {pod.name!r} "
                    f"without the prefix {d.prefix!r}: left alone"
                )
                continue
            d.retiring_pods.add(pod.id)
            d.actions.append(
                FailWorker(
                    reason=Reason.UNUSABLE_ROW,
                    worker_id=row.id,
                    runpod_id=pod.id,
                    from_status=row.status,
                    collect_logs=False,
                    metadata=freeze(
                        {
                            Meta.ERROR_REASON: Reason.UNUSABLE_ROW.value,
                            Meta.ERROR_DETAILS: details,
                            Meta.FAILED_AT: d.now.isoformat(),
                        }
                    ),
                )
            )
        else:
            d.actions.append(
                MarkTerminated(
                    reason=Reason.UNUSABLE_ROW,
                    worker_id=row.id,
                    from_status=row.status,
                    requeue_tasks=True,
                )
            )


def _orphans(d: Draft) -> tuple[int, float]:
    """Terminate our unclaimed pods; return (live count incl. unclaimed pods, their spend)."""
    claimed = {pod.id for pod in d.pod_of.values() if pod is not None}
    # Toward MAX_ACTIVE_GPUS: rows whose pod holds a GPU (a stopped pod holds none).
    live = sum(1 for w in d.workers if w.status.holds_gpu)
    spend = 0.0
    for pod in sorted(d.by_id.values(), key=lambda p: p.id):
        if pod.id in claimed or pod.gone or not d.ours(pod):
            continue
        live += 1  # it bills and holds a GPU until confirmed gone
        spend += pod.cost_per_hr or d.type_price(pod.gpu_type) or 0.0
        pod_age = pod.age_sec(d.now)
        if pod.id in d.retiring_pods:
            continue  # counted above; its unreadable row's retirement terminates it
        if pod_age is None or pod_age >= d.grace:
            d.actions.append(TerminatePod(reason=Reason.ORPHAN_POD, runpod_id=pod.id, pod_name=pod.name))
    return live, spend
