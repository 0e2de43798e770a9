"""The pure decision core: ``plan(snapshot, pods, settings, now) -> Plan``.

The "decide" step of the tick (gather -> decide -> apply -> record): values in, actions with reason codes out. No
I/O, no clock (``now`` is an argument), no randomness (new worker ids are hashes of the input), no
logging. The daemon, the ``orchestrator plan`` dry run and the trace simulator all call this function,
so what the simulator measures is what production does.

The rules, each a section below and a scenario test in ``tests/unit/test_policy.py``:

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
  started gets :class:`StartProcess`. An ``initializing`` row heard from at or after
  ``metadata.process_started_at`` gets :class:`Promote` (``first_heartbeat``): the real worker's
  heartbeat function is the app's and only records ``last_heartbeat``, so promotion is decided here,
  at the first tick after that heartbeat.
  ``SPAWNING_TIMEOUT_SEC`` from creation fails a boot (not while an initialized worker waits for an
  operator to start it by hand with ``AUTO_START_WORKER_PROCESS=false``).
* **Health.** Pod EXITED/ERROR, or missing -> error. The worker's own report (``reported_status``):
  ``crashed`` (its heartbeat guardian saw the process die; the app's heartbeat function has already
  requeued its tasks) -> error with ``worker_crashed``, ``error`` (its fatal-error handler gave up on
  the GPU) -> error with ``worker_error``, when the report is at or after ``process_started_at`` (or
  the row's creation when no process start is recorded): an older report is a previous process's
  history. Heartbeat older than ``HEARTBEAT_TIMEOUT_SEC``
  while the worker runs a task (or, for an active one, while tasks wait) -> error; a draining worker's
  silence counts from the drain when it has not heartbeated since (draining heartbeats are recorded);
  a booting worker that already claimed a task (``initializing`` claims; with
  ``AUTO_START_WORKER_PROCESS=false`` it is never promoted) gets these checks too, the heartbeat one
  once it has heartbeated at all (it may claim while loading its models). A task running past
  ``TASK_STUCK_TIMEOUT_SEC`` (SQL excludes ``_orchestrator`` types) -> error and its tasks requeued.
  In Progress tasks of a worker that is not live (terminated, or no row: ``queue.orphaned_worker_ids``)
  are requeued. In Progress tasks that name no worker at all (legacy data, a hand edit, a claim through a
  user's access token whose worker went away) are requeued, an attempt counted, once In Progress past
  ``TASK_STUCK_TIMEOUT_SEC`` (``_orchestrator`` types too: their exemption rests on a live worker
  heartbeating for them, and here nothing says anyone runs them). A row in a state this contract does
  not know is read as ``error`` and retired. A row the orchestrator cannot act on as a worker is
  retired with ``unusable_row``: a booting row whose id cannot name a pod or a worker process
  (``WORKER_ID_PATTERN``), and a row the snapshot could not parse (``Snapshot.unreadable``: its pod,
  found by the id its metadata names or by name, is terminated; with no pod left the row is closed).
  SSH probes are not a health signal here at all, so a failed probe can never kill a heartbeating
  worker; the heartbeat is the worker's own word that it lives.
* **Errors.** :class:`FailWorker` (diagnostics, requeue, terminate); ``error`` and ``terminating``
  rows get the pod termination re-sent every ``TERMINATE_RETRY_SEC`` while the pod is listed, their
  leftover tasks requeued, and :class:`MarkTerminated` once the provider confirms the pod gone.
* **Demand.** ``desired = clamp(ceil((claimable + running) / TASKS_PER_GPU_THRESHOLD) +
  MACHINES_TO_KEEP_IDLE, MIN_ACTIVE_GPUS, MAX_ACTIVE_GPUS)``; capacity = spawning + initializing +
  active rows that stay (booting pods count, so they never cause more spawns).
* **Scale down** (capacity above desired). First booting workers, but only while no claimable task
  waits (a booting pod with work waiting will soon be useful; with none it is pure cost) or while
  above ``MAX_ACTIVE_GPUS`` (an operator lowering it to stop spending means now), then active
  workers idle for ``GPU_OVERCAPACITY_IDLE_TIMEOUT_SEC``. Idle = no running task, measured from the
  last completion or the activation, whichever is later (never from the heartbeat, which idle workers
  keep sending). Then, as a backstop, workers idle for ``GPU_IDLE_TIMEOUT_SEC`` are drained while more
  than ``max(MIN_ACTIVE_GPUS, MACHINES_TO_KEEP_IDLE)`` stay (a worker idle that long while tasks wait
  is not taking them). Victims: the most expensive first, then the newest (an older worker has a warm
  cache and a proven host), then by id. Drained workers with no task are terminated on the next tick
  (two steps, so a claim racing the drain is seen in the next snapshot before the pod goes; the
  database also refuses ``draining -> terminating`` while the worker holds a task, since the real
  worker keeps polling after a drain), and the row becomes ``terminated`` only on the provider's
  confirmation. ``metadata.terminate_requested_at``
  (the operator) drains an active worker and terminates a booting or drained one once it has no task.
* **Scale up** (capacity below desired). Reactivate workers drained for overcapacity first (no new
  pod), then spawn, never past ``MAX_ACTIVE_GPUS`` non-terminal workers (unclaimed pods of ours
  included, they bill too) and never past ``MAX_HOURLY_SPEND`` at current prices.
* **Never run away.** Per (GPU type, data center): consecutive failed boots or capacity misses back
  off ``SPAWN_BACKOFF_BASE_SEC * 2**(n-1)`` up to ``SPAWN_BACKOFF_MAX_SEC`` from the latest; the spawn
  skips the (type, data center) pairs backing off (``Spawn.avoid``) and tries the type in the other
  data centers of the configured network volumes; a type backing off in every one of them (or, when
  they are unknown, in any) is left out of the priority list, so spawns fall through to the next type. The breaker: after
  ``MAX_CONSECUTIVE_FAILURES`` failed workers in a row (capacity misses and boots we cancelled do not
  count), no spawn for ``SPAWN_BACKOFF_BASE_SEC * 2**(n - MAX + 1)`` (capped) from the latest failure;
  after that, half-open: one probe worker at a time until a boot succeeds. Healing and termination
  go on meanwhile.
* **Pause.** No spawn while paused; everything else continues.

Not used here: ``ERROR_CLEANUP_GRACE_PERIOD_SEC`` (an errored row becomes ``terminated`` as soon as the
provider confirms its pod gone, so it stops holding a slot under ``MAX_ACTIVE_GPUS``; how long errored
rows stay visible is the dashboard views' business) and ``MAX_TASK_ATTEMPTS`` (the executor passes it
to the requeue function).

Prices: ``prices`` maps a GPU display name to USD/h (the controller passes the catalog's current
prices; the simulator its own). A worker's price is its pod's reported cost, else
``metadata.cost_per_hr``, else the catalog price of its GPU type. With a spend cap set, a GPU type
without a known price is never spawned (its cost cannot be bounded); without a cap, prices only order
scale-down victims.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from orchestrator.core.actions import (
    Action,
    Backoff,
    Drain,
    FailWorker,
    Initialize,
    MarkTerminated,
    Plan,
    Promote,
    Reactivate,
    RequeueTasks,
    RequeueUnownedTasks,
    Spawn,
    StartProcess,
    TerminatePod,
)
from orchestrator.core.config import Settings
from orchestrator.core.observed import BootOutcome, PodView, Snapshot, Worker, as_utc, freeze
from orchestrator.core.states import (
    Blocked,
    BreakerState,
    Meta,
    PodStatus,
    Reason,
    WorkerState,
    usable_worker_id,
)

# Re-send a termination for a pod the provider still lists after this long (each tick would hammer a
# slow provider; never would leak the pod).
TERMINATE_RETRY_SEC = 60.0
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
# Largest exponent used in a back-off (2**30 seconds is far past any cap; avoids huge integers).
_MAX_EXPONENT = 30
_EPS = 1e-9


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
    return _Planner(snapshot, pods, settings, as_utc(now), dict(prices or {}), tuple(data_centers)).run()


# --- helpers ---------------------------------------------------------------------------------------


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else (now - since).total_seconds()


def _at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit


def _later(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _ts_key(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _backoff_seconds(base: float, cap: float, exponent: int) -> float:
    return float(min(cap, base * (2 ** max(0, min(exponent, _MAX_EXPONENT)))))


def new_worker_id(prefix: str, now: datetime, index: int, taken: Iterable[str]) -> str:
    """A worker id (= pod name) that depends only on the input: the same tick gives the same ids.

    ``{prefix}{YYYYmmdd_HHMMSS}-{8 hex}``, the shape the old system's users know; the hash covers the
    time, the spawn's index in this plan and every id already taken, and a salt bumps on a collision.
    """
    taken_set = set(taken)
    digest = hashlib.sha256("\n".join(sorted(taken_set)).encode()).hexdigest()
    stamp = f"{prefix}{now:%Y%m%d_%H%M%S}-"
    salt = 0
    while True:
        token = hashlib.sha256(f"{now.isoformat()}|{index}|{salt}|{digest}".encode()).hexdigest()[:8]
        candidate = stamp + token
        if candidate not in taken_set:
            return candidate
        salt += 1


@dataclass
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    until: datetime | None = None


@dataclass
class _Planner:
    """One planning pass. Mutable scratch state, but built and dropped inside ``plan()``."""

    snapshot: Snapshot
    pods: Sequence[PodView] | None
    settings: Settings
    now: datetime
    prices: dict[str, float]
    data_centers: tuple[str, ...] = ()
    actions: list[Action] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # workers that leave capacity this tick (failed, drained, terminated), by id
    leaving: set[str] = field(default_factory=set)
    # pods an unreadable row's retirement terminates this tick (not terminated again as orphans)
    retiring_pods: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        s = self.settings
        self.prefix: str = s.worker_id_prefix
        self.grace: float = s.orphan_grace_sec
        self.pods_known = self.pods is not None
        pods = sorted(self.pods or (), key=lambda p: p.id)
        self.by_id: dict[str, PodView] = {}
        self.by_name: dict[str, list[PodView]] = {}
        for pod in pods:
            self.by_id.setdefault(pod.id, pod)
            if pod.name:
                self.by_name.setdefault(pod.name, []).append(pod)
        for same in self.by_name.values():
            # Oldest first: if two pods carry one worker's name, the row adopts the first, the
            # other is a duplicate and is reaped as an orphan.
            same.sort(key=lambda p: (p.created_at is None, _ts_key(p.created_at), p.id))
        self.workers: list[Worker] = sorted(self.snapshot.workers, key=lambda w: w.id)
        self.pod_of: dict[str, PodView | None] = {w.id: self._resolve(w) for w in self.workers}

    # -- pods ------------------------------------------------------------------------------------

    def _resolve(self, worker: Worker) -> PodView | None:
        if worker.status.terminal:
            return None
        if worker.runpod_id:
            return self.by_id.get(worker.runpod_id)
        for pod in self.by_name.get(worker.id, ()):
            if not pod.gone:
                return pod
        return None

    def _ours(self, pod: PodView) -> bool:
        return pod.name.startswith(self.prefix)

    def _alive(self, pod: PodView | None) -> bool:
        return pod is not None and not pod.gone

    def _touchable_id(self, worker: Worker, pod: PodView | None) -> str | None:
        """The pod id an action on this worker may terminate; None if it must not touch it."""
        if pod is not None:
            if self._ours(pod):
                return pod.id
            self.problems.append(
                f"worker {worker.id} points at pod {pod.id} named {pod.name!r} without the prefix "
                f"{self.prefix!r}: left alone"
            )
            return None
        # Not listed: terminating an id the provider no longer lists is a harmless confirmation.
        return worker.runpod_id

    def _cancellable_pod(self, worker: Worker) -> bool:
        pod = self.pod_of[worker.id]
        return pod is not None and not pod.gone and self._ours(pod)

    def _row_age(self, worker: Worker) -> float | None:
        return _age(self.now, worker.created_at or worker.status_changed_at)

    def _absent(self, worker: Worker, pod: PodView | None) -> bool:
        """The provider confirms this row has no pod (only with a listing)."""
        if not self.pods_known or self._alive(pod):
            return False
        if pod is not None and pod.gone:
            return True
        reason = str(worker.metadata.get(Meta.ERROR_REASON) or "")
        if worker.runpod_id is None and reason in (Reason.SPAWN_NO_CAPACITY.value, Reason.SPAWN_FAILED.value):
            # The executor knows creation failed; no pod to wait for.
            return True
        if worker.runpod_id is not None and worker.pod_terminate_requested_at is not None:
            # We asked the provider to terminate this very pod and it no longer lists it: that is the
            # confirmation. (The grace below covers a listing lagging a creation, not a termination.)
            return True
        age = self._row_age(worker)
        # Grace: the listing may lag a creation, and a spawn may still be creating the pod.
        return age is None or age >= self.grace

    # -- prices ----------------------------------------------------------------------------------

    def _type_price(self, gpu_type: str | None) -> float | None:
        if gpu_type is None:
            return None
        price = self.prices.get(gpu_type)
        return float(price) if price is not None and math.isfinite(price) and price >= 0 else None

    def _worker_price(self, worker: Worker, pod: PodView | None) -> float | None:
        if pod is not None and pod.cost_per_hr is not None and pod.cost_per_hr > 0:
            return pod.cost_per_hr
        if worker.cost_per_hr is not None:
            return worker.cost_per_hr
        price = self._type_price(worker.gpu_type)
        if price is not None:
            return price
        # A spawn not yet placed may land on any type of its list: count the dearest.
        candidates = [self._type_price(g) for g in (worker.spawn_gpu_types or self.settings.gpu_types)]
        known = [c for c in candidates if c is not None]
        return max(known) if known else None

    def _sort_victims(self, workers: Iterable[Worker], newest: Any) -> list[Worker]:
        def key(w: Worker) -> tuple[float, float, str]:
            price = self._worker_price(w, self.pod_of.get(w.id)) or 0.0
            return (-price, -_ts_key(newest(w)), w.id)

        return sorted(workers, key=key)

    # -- the pass --------------------------------------------------------------------------------

    def run(self) -> Plan:
        s = self.settings
        booting: list[Worker] = []
        active: list[Worker] = []
        draining: list[Worker] = []
        for worker in self.workers:
            pod = self.pod_of[worker.id]
            status = worker.status
            if status.terminal:
                continue
            if status in (WorkerState.ERROR, WorkerState.TERMINATING):
                self._reap(worker, pod)
                continue
            if (
                status is WorkerState.SPAWNING
                and worker.runpod_id is None
                and pod is None
                and worker.running_count == 0
                and self._absent(worker, pod)
            ):
                # Registered, never created (a crash, or a spawn that failed before recording):
                # nothing to terminate, no task to requeue.
                self.actions.append(
                    MarkTerminated(reason=Reason.NO_POD_CREATED, worker_id=worker.id, from_status=status)
                )
                self.leaving.add(worker.id)
                continue
            if status.booting and not usable_worker_id(worker.id):
                # A row another system or a hand left: no pod can be named, and no worker process
                # started, for this id (it would fail every boot step until the boot timeout, billing
                # all the while). Retire it now.
                self._fail(
                    worker,
                    pod,
                    Reason.UNUSABLE_ROW,
                    {"problem": f"worker id {worker.id[:200]!r} cannot name a pod or a worker process"},
                )
                continue
            unhealthy = self._health(worker, pod)
            if unhealthy is not None:
                reason, details = unhealthy
                self._fail(worker, pod, reason, details)
                continue
            if status.booting:
                self._boot(worker, pod)
                if worker.id not in self.leaving:
                    booting.append(worker)
            elif status is WorkerState.ACTIVE:
                if worker.terminate_requested_at is not None:
                    self._drain(worker, Reason.OPERATOR_REQUEST)
                else:
                    active.append(worker)
            elif status is WorkerState.DRAINING:
                draining.append(worker)

        self._retire_unreadable()

        for worker_id in sorted(set(self.snapshot.queue.orphaned_worker_ids) - {w.id for w in self.workers}):
            # In Progress tasks of a worker that is not live: nobody else will ever requeue them.
            self.actions.append(RequeueTasks(reason=Reason.REQUEUE_RETRY, worker_id=worker_id))
        queue = self.snapshot.queue
        stuck_limit = float(s.task_stuck_timeout_sec)
        unowned_age = queue.oldest_unowned_age_sec
        if queue.unowned_running > 0 and unowned_age is not None and unowned_age > stuck_limit:
            # In Progress with no worker named: no row to fail, no heartbeat to go stale, so nothing else
            # would ever move them. The database picks the ones past the limit by its own clock.
            self.actions.append(
                RequeueUnownedTasks(reason=Reason.TASK_WITHOUT_WORKER, older_than_sec=stuck_limit)
            )

        live, orphan_spend = self._orphans()
        spend, spend_unknown = self._spend(orphan_spend)

        demand = self.snapshot.queue.claimable + self.snapshot.queue.running
        needed = math.ceil(demand / max(1, s.tasks_per_gpu_threshold))
        max_active = s.max_active_gpus
        min_active = min(s.min_active_gpus, max_active)
        keep_idle = s.machines_to_keep_idle
        desired = max(min_active, min(max_active, needed + keep_idle))
        capacity = len(booting) + len(active)

        capacity -= self._scale_down(booting, active, desired, capacity, min_active, keep_idle, max_active)
        missing = max(0, desired - capacity)
        reactivated = self._draining(draining, missing)
        capacity += reactivated
        missing -= reactivated

        breaker = self._breaker()
        backoffs = self._backoffs()
        blocked: list[Blocked] = []
        if missing > 0:
            blocked = self._scale_up(
                missing, capacity, needed, keep_idle, live, spend, spend_unknown, breaker, backoffs, booting
            )

        return Plan(
            actions=tuple(self.actions),
            desired=desired,
            capacity=capacity,
            demand_tasks=demand,
            live=live,
            spend_per_hr=spend,
            breaker=breaker.state,
            consecutive_failures=breaker.failures,
            breaker_until=breaker.until,
            backoffs=tuple(backoffs),
            spawn_blocked=tuple(blocked),
            missing=missing,
            paused=self.snapshot.paused,
            problems=tuple(dict.fromkeys((*self.snapshot.problems, *self.problems))),
        )

    # -- errors and terminations -----------------------------------------------------------------

    def _retire_unreadable(self) -> None:
        """Rows the snapshot lists but could not parse: terminate their pod, requeue, close the row.

        Such a row may still bill: the pod named after it (or the one its metadata names) runs on.
        Without a listing nothing is decided (whether it has a pod is unknown); a pod without our prefix
        is left alone, as for any row.
        """
        known = {w.id for w in self.workers}
        for row in sorted(self.snapshot.unreadable, key=lambda r: r.id):
            if row.id in known or not self.pods_known:
                continue
            self.leaving.add(row.id)
            if row.runpod_id:
                pod = self.by_id.get(row.runpod_id)
            else:
                pod = next((p for p in self.by_name.get(row.id, ()) if not p.gone), None)
            details = {"problem": row.problem[:500]}
            if pod is not None and not pod.gone:
                if not self._ours(pod):
                    self.problems.append(
                        f"unreadable worker row {row.id[:200]!r} points at pod {pod.id} named {pod.name!r} "
                        f"without the prefix {self.prefix!r}: left alone"
                    )
                    continue
                self.retiring_pods.add(pod.id)
                self.actions.append(
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
                                Meta.FAILED_AT: self.now.isoformat(),
                            }
                        ),
                    )
                )
            else:
                self.actions.append(
                    MarkTerminated(
                        reason=Reason.UNUSABLE_ROW,
                        worker_id=row.id,
                        from_status=row.status,
                        requeue_tasks=True,
                    )
                )

    def _reap(self, worker: Worker, pod: PodView | None) -> None:
        """An ``error`` or ``terminating`` row: finish the job until the provider confirms."""
        self.leaving.add(worker.id)
        if self._alive(pod):
            assert pod is not None
            last = worker.pod_terminate_requested_at
            due = last is None or (self.now - last).total_seconds() >= TERMINATE_RETRY_SEC
            if due and self._touchable_id(worker, pod) is not None:
                self.actions.append(
                    TerminatePod(
                        reason=Reason.TERMINATE_RETRY,
                        runpod_id=pod.id,
                        pod_name=pod.name,
                        worker_id=worker.id,
                    )
                )
            if worker.status is WorkerState.ERROR and worker.running_count > 0:
                self.actions.append(
                    RequeueTasks(
                        reason=Reason.REQUEUE_RETRY,
                        worker_id=worker.id,
                        running_task_ids=worker.running_task_ids,
                    )
                )
        elif self._absent(worker, pod):
            self.actions.append(
                MarkTerminated(
                    reason=Reason.PROVIDER_CONFIRMED_GONE,
                    worker_id=worker.id,
                    from_status=worker.status,
                    requeue_tasks=worker.running_count > 0,
                )
            )
        elif worker.status is WorkerState.ERROR and worker.running_count > 0:
            self.actions.append(
                RequeueTasks(
                    reason=Reason.REQUEUE_RETRY, worker_id=worker.id, running_task_ids=worker.running_task_ids
                )
            )

    def _health(self, worker: Worker, pod: PodView | None) -> tuple[Reason, dict[str, Any]] | None:
        """Why this worker must fail now, or None. Only provider facts, clocks and heartbeats count."""
        s = self.settings
        if self.pods_known:
            if pod is not None and pod.failed:
                return Reason.POD_FAILED, {"pod_status": pod.status.value}
            if self._absent(worker, pod):
                return Reason.POD_MISSING, {"runpod_id": worker.runpod_id}
        reported = self._reported_failure(worker)
        if reported is not None:
            return reported
        if worker.status.booting:
            age = self._row_age(worker)
            waiting_for_operator = (
                not s.auto_start_worker_process
                and worker.initialized_at is not None
                and worker.process_started_at is None
            )
            if age is not None and age > s.spawning_timeout_sec and not waiting_for_operator:
                return Reason.BOOT_TIMEOUT, {"age_sec": round(age, 1)}
            if worker.running_count == 0:
                return None
            # `initializing` is a claiming state (and with AUTO_START_WORKER_PROCESS=false a worker is
            # never promoted): one that holds a task gets the stuck-task check below, and the
            # heartbeat check once it has heartbeated.
        stuck_age = _age(self.now, worker.oldest_stuckable_started_at)
        if worker.running_count > 0 and stuck_age is not None and stuck_age > s.task_stuck_timeout_sec:
            return Reason.TASK_STUCK, {"task_age_sec": round(stuck_age, 1)}
        if worker.status.booting and worker.last_heartbeat is None:
            return None  # a process may claim while still loading its models: no heartbeat yet proves nothing
        heard = worker.last_heartbeat or worker.activated_at or worker.status_changed_at or worker.created_at
        silent = _age(self.now, heard)
        if (
            worker.status is WorkerState.DRAINING
            and worker.status_changed_at is not None
            and (worker.last_heartbeat is None or worker.last_heartbeat < worker.status_changed_at)
        ):
            # Not heard from since the drain: a live worker heartbeats within its period of the drain
            # (draining heartbeats are recorded), so count the silence from the drain itself.
            silent = _age(self.now, worker.status_changed_at)
        if silent is not None and silent > s.heartbeat_timeout_sec:
            tasks_wait = worker.status is WorkerState.ACTIVE and self.snapshot.queue.claimable > 0
            if worker.running_count > 0 or tasks_wait:
                return Reason.HEARTBEAT_STALE, {"heartbeat_age_sec": round(silent, 1)}
        return None

    @staticmethod
    def _reported_failure(worker: Worker) -> tuple[Reason, dict[str, Any]] | None:
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

    def _fail(self, worker: Worker, pod: PodView | None, reason: Reason, details: dict[str, Any]) -> None:
        self.leaving.add(worker.id)
        self.actions.append(
            FailWorker(
                reason=reason,
                worker_id=worker.id,
                runpod_id=self._touchable_id(worker, pod),
                from_status=worker.status,
                running_task_ids=worker.running_task_ids,
                collect_logs=self._alive(pod),
                metadata=freeze(
                    {
                        Meta.ERROR_REASON: reason.value,
                        Meta.ERROR_DETAILS: details,
                        Meta.FAILED_AT: self.now.isoformat(),
                    }
                ),
            )
        )

    # -- boot ------------------------------------------------------------------------------------

    def _boot(self, worker: Worker, pod: PodView | None) -> None:
        status = worker.status
        if worker.terminate_requested_at is not None:
            # The operator asked: a booting worker has nothing worth finishing.
            self.leaving.add(worker.id)
            if self._alive(pod) and worker.running_count == 0:
                assert pod is not None
                runpod_id = self._touchable_id(worker, pod)
                if runpod_id is not None:
                    self._terminate(worker, pod, Reason.OPERATOR_REQUEST)
            return
        if self._heard_since_start(worker):
            # The process answers: promote. Needs no listing (a heartbeat is the process's own word),
            # and the health checks above already passed this tick.
            self.actions.append(Promote(reason=Reason.FIRST_HEARTBEAT, worker_id=worker.id))
            return
        if not self.pods_known or pod is None or not self._ours(pod):
            # Without a listing readiness is unknown; a pod without our prefix is not ours to boot.
            return
        if (
            pod.status is PodStatus.RUNNING
            and pod.ssh_ready
            and (status is WorkerState.SPAWNING or worker.initialized_at is None)
        ):
            self.actions.append(
                Initialize(
                    reason=Reason.POD_READY,
                    worker_id=worker.id,
                    runpod_id=pod.id,
                    from_status=status,
                    start_process=self.settings.auto_start_worker_process,
                )
            )
        elif (
            status is WorkerState.INITIALIZING
            and worker.initialized_at is not None
            and worker.process_started_at is None
            and self.settings.auto_start_worker_process
        ):
            heard = worker.last_heartbeat
            self.actions.append(
                StartProcess(
                    reason=Reason.START_PROCESS,
                    worker_id=worker.id,
                    runpod_id=pod.id,
                    # A heartbeat since initialization means a process runs but its start was never
                    # recorded (a crash in between): record it, do not start a second one.
                    already_running=heard is not None and heard >= worker.initialized_at,
                )
            )

    @staticmethod
    def _heard_since_start(worker: Worker) -> bool:
        started = worker.process_started_at
        heard = worker.last_heartbeat
        return (
            worker.status is WorkerState.INITIALIZING
            and started is not None
            and heard is not None
            and heard >= started
        )

    def _terminate(self, worker: Worker, pod: PodView, reason: Reason) -> None:
        self.leaving.add(worker.id)
        self.actions.append(
            TerminatePod(
                reason=reason,
                runpod_id=pod.id,
                pod_name=pod.name,
                worker_id=worker.id,
                transition_from=worker.status,
            )
        )

    def _drain(self, worker: Worker, reason: Reason) -> None:
        self.leaving.add(worker.id)
        self.actions.append(
            Drain(
                reason=reason,
                worker_id=worker.id,
                metadata=freeze({Meta.DRAIN_REASON: reason.value, Meta.DRAINED_AT: self.now.isoformat()}),
            )
        )

    # -- reconcile: pods nobody claims -------------------------------------------------------------

    def _orphans(self) -> tuple[int, float]:
        """Terminate our unclaimed pods; return (live count incl. unclaimed pods, their spend)."""
        claimed = {pod.id for pod in self.pod_of.values() if pod is not None}
        live = sum(1 for w in self.workers if not w.status.terminal)
        spend = 0.0
        for pod in sorted(self.by_id.values(), key=lambda p: p.id):
            if pod.id in claimed or pod.gone or not self._ours(pod):
                continue
            live += 1  # it bills and holds a GPU until confirmed gone
            spend += pod.cost_per_hr or self._type_price(pod.gpu_type) or 0.0
            age = pod.age_sec(self.now)
            if pod.id in self.retiring_pods:
                continue  # counted above; its unreadable row's retirement terminates it
            if age is None or age >= self.grace:
                self.actions.append(
                    TerminatePod(reason=Reason.ORPHAN_POD, runpod_id=pod.id, pod_name=pod.name)
                )
        return live, spend

    def _spend(self, orphan_spend: float) -> tuple[float, bool]:
        """USD/h of the fleet now; and whether some worker's price is unknown."""
        total = orphan_spend
        unknown = False
        for worker in self.workers:
            if worker.status.terminal:
                continue
            pod = self.pod_of[worker.id]
            if self.pods_known and not self._alive(pod) and self._absent(worker, pod):
                continue  # no pod, no bill
            price = self._worker_price(worker, pod)
            if price is None:
                unknown = True
            else:
                total += price
        return total, unknown

    # -- scale down ------------------------------------------------------------------------------

    def _idle_sec(self, worker: Worker) -> float | None:
        if worker.running_count > 0:
            return None
        since = (
            _later(worker.last_completion_at, worker.activated_at)
            or worker.status_changed_at
            or worker.created_at
        )
        return _age(self.now, since)

    def _scale_down(
        self,
        booting: list[Worker],
        active: list[Worker],
        desired: int,
        capacity: int,
        min_active: int,
        keep_idle: int,
        max_active: int,
    ) -> int:
        """Cancel boots and drain idle workers above desired; return how many left capacity."""
        s = self.settings
        removed = 0
        excess = capacity - desired
        # With tasks waiting a booting pod will soon be useful, so only a lowered ceiling (an
        # operator's MAX_ACTIVE_GPUS=0 emergency stop) cancels boots then.
        cancel = excess if self.snapshot.queue.claimable == 0 else min(excess, capacity - max_active)
        if cancel > 0 and self.pods_known:
            cancellable = [w for w in booting if w.running_count == 0 and self._cancellable_pod(w)]
            for worker in self._sort_victims(cancellable, lambda w: w.created_at)[:cancel]:
                pod = self.pod_of[worker.id]
                assert pod is not None
                # One state change per worker per tick: the boot step decided above is dropped.
                self.actions = [
                    a
                    for a in self.actions
                    if not (isinstance(a, Initialize | StartProcess | Promote) and a.worker_id == worker.id)
                ]
                self._terminate(worker, pod, Reason.CANCEL_BOOT)
                removed += 1
            excess -= removed
        overcap: float = s.gpu_overcapacity_idle_timeout_sec
        remaining = [w for w in active if w.id not in self.leaving]
        if excess > 0:
            idle = [w for w in remaining if _at_least(self._idle_sec(w), overcap)]
            for worker in self._sort_victims(idle, lambda w: w.activated_at or w.created_at)[:excess]:
                self._drain(worker, Reason.OVERCAPACITY)
                removed += 1
        floor = max(min_active, min(keep_idle, max_active))
        staying = capacity - removed
        idle_limit: float = s.gpu_idle_timeout_sec
        long_idle = [
            w for w in active if w.id not in self.leaving and _at_least(self._idle_sec(w), idle_limit)
        ]
        for worker in self._sort_victims(long_idle, lambda w: w.activated_at or w.created_at):
            if staying <= floor:
                break
            self._drain(worker, Reason.IDLE)
            staying -= 1
            removed += 1
        return removed

    def _draining(self, draining: list[Worker], missing: int) -> int:
        """Reactivate drained workers while capacity is missing; terminate the idle rest."""
        reactivated = 0
        candidates = [
            w
            for w in draining
            if w.drain_reason == Reason.OVERCAPACITY.value
            and w.terminate_requested_at is None
            and (not self.pods_known or self._alive(self.pod_of[w.id]))
        ]
        # Cheapest first: it is the one we would keep.
        for worker in reversed(self._sort_victims(candidates, lambda w: w.activated_at or w.created_at)):
            if reactivated >= missing:
                break
            self.actions.append(Reactivate(reason=Reason.WORK_CAME_BACK, worker_id=worker.id))
            reactivated += 1
            self.leaving.add(worker.id)  # not a drain victim any more: skip below
        for worker in draining:
            if worker.id in self.leaving or worker.running_count > 0 or not self.pods_known:
                continue
            pod = self.pod_of[worker.id]
            if self._alive(pod) and self._touchable_id(worker, pod) is not None:
                assert pod is not None
                reason = Reason.OPERATOR_REQUEST if worker.terminate_requested_at else Reason.DRAINED
                self._terminate(worker, pod, reason)
        return reactivated

    # -- never run away --------------------------------------------------------------------------

    def _breaker(self) -> _Breaker:
        s = self.settings
        failures = 0
        latest: datetime | None = None
        for outcome in sorted(self.snapshot.recent_boots, key=lambda o: o.at, reverse=True):
            if outcome.ok:
                break
            if outcome.counts_for_breaker:
                failures += 1
                latest = latest or outcome.at
        limit = s.max_consecutive_failures
        if failures < limit or latest is None:
            return _Breaker(BreakerState.CLOSED, failures, None)
        pause = _backoff_seconds(
            s.spawn_backoff_base_sec, s.spawn_backoff_max_sec, failures - limit + 1
        )
        until = latest + timedelta(seconds=pause)
        state = BreakerState.OPEN if self.now < until else BreakerState.HALF_OPEN
        return _Breaker(state, failures, until)

    def _backoffs(self) -> list[Backoff]:
        s = self.settings
        outcomes: list[BootOutcome] = list(self.snapshot.recent_boots)
        for worker in self.workers:
            outcomes.extend(worker.capacity_misses)
        outcomes.sort(key=lambda o: (o.at, o.ok, o.worker_id), reverse=True)
        done: set[tuple[str, str | None]] = set()
        count: dict[tuple[str, str | None], int] = {}
        latest: dict[tuple[str, str | None], datetime] = {}
        for outcome in outcomes:
            if outcome.gpu_type is None:
                continue
            key = (outcome.gpu_type, outcome.data_center)
            if key in done:
                continue
            if outcome.ok:
                done.add(key)
            elif outcome.counts_for_backoff:
                count[key] = count.get(key, 0) + 1
                latest.setdefault(key, outcome.at)
        result = []
        for key in sorted(count, key=lambda k: (k[0], k[1] or "")):
            pause = _backoff_seconds(
                s.spawn_backoff_base_sec, s.spawn_backoff_max_sec, count[key] - 1
            )
            until = latest[key] + timedelta(seconds=pause)
            if self.now < until:
                result.append(Backoff(gpu_type=key[0], data_center=key[1], failures=count[key], until=until))
        return result

    def _backed_off_everywhere(self, gpu_type: str, backoffs: list[Backoff]) -> bool:
        """Whether no data center is left for this GPU type. With the spawn's data centers known (one
        per configured network volume), a type is out only when each of them backs it off; without
        them (no volume, or the catalog unknown), any back-off of the type keeps it out (the safe side:
        the provider would choose the data center, perhaps the failing one)."""
        where = {b.data_center for b in backoffs if b.gpu_type == gpu_type}
        if not where:
            return False
        if None in where or not self.data_centers:
            return True
        return set(self.data_centers) <= where

    # -- scale up --------------------------------------------------------------------------------

    def _scale_up(
        self,
        missing: int,
        capacity: int,
        needed: int,
        keep_idle: int,
        live: int,
        spend: float,
        spend_unknown: bool,
        breaker: _Breaker,
        backoffs: list[Backoff],
        booting: list[Worker],
    ) -> list[Blocked]:
        s = self.settings
        blocked: list[Blocked] = []
        if self.snapshot.paused:
            return [Blocked.PAUSED]
        if breaker.state is BreakerState.OPEN:
            return [Blocked.BREAKER_OPEN]
        count = missing
        if breaker.state is BreakerState.HALF_OPEN:
            # One probe at a time: a still-broken image costs one pod per interval, not a fleet.
            probe_in_flight = any(w.status.booting for w in self.workers if not w.status.terminal)
            if probe_in_flight or booting:
                return [Blocked.BREAKER_HALF_OPEN]
            if count > 1:
                blocked.append(Blocked.BREAKER_HALF_OPEN)
            count = 1
        room = s.max_active_gpus - live
        if room < count:
            blocked.append(Blocked.MAX_REACHED)
            count = max(0, room)
        allowed = [g for g in s.gpu_types if not self._backed_off_everywhere(g, backoffs)]
        # Pairs backing off in one data center only: the spawn skips them and tries the type elsewhere.
        avoid = tuple(sorted({(b.gpu_type, b.data_center) for b in backoffs if b.data_center is not None}))
        if count > 0 and not allowed:
            blocked.append(Blocked.BACKOFF)
            count = 0
        cap: float = s.max_hourly_spend
        headroom = cap - spend if cap > 0 else math.inf
        if cap > 0 and spend_unknown and count > 0:
            # Some worker's price is unknown: the fleet's spend cannot be bounded, so do not add to it.
            blocked.append(Blocked.PRICE_UNKNOWN)
            count = 0
        taken = {w.id for w in self.snapshot.workers} | set(self.by_name)
        for index in range(count):
            types = allowed
            if cap > 0:
                priced = [(g, self._type_price(g)) for g in allowed]
                types = [g for g, p in priced if p is not None and p <= headroom + _EPS]
                if not types:
                    blocked.append(
                        Blocked.PRICE_UNKNOWN if all(p is None for _, p in priced) else Blocked.SPEND_CAP
                    )
                    break
                # The spawn may fall through to any type of its list: reserve the dearest.
                headroom -= max(self._type_price(g) or 0.0 for g in types)
            total = capacity + index + 1
            reason = (
                Reason.DEMAND
                if total <= needed
                else Reason.SPARE
                if total <= needed + keep_idle
                else Reason.FLOOR
            )
            worker_id = new_worker_id(self.prefix, self.now, index, taken)
            taken.add(worker_id)
            self.actions.append(
                Spawn(
                    reason=reason,
                    worker_id=worker_id,
                    gpu_types=tuple(types),
                    avoid=avoid,
                    metadata=freeze(
                        {
                            Meta.GPU_TYPES: list(types),
                            Meta.SPAWN_REASON: reason.value,
                        }
                    ),
                )
            )
        return blocked
