"""One tick: gather -> decide -> apply -> record, and the leader lease.

Gather is two calls, whatever the fleet size: ``orch_snapshot`` and one pod listing, made concurrently.
Decide is :func:`orchestrator.core.policy.plan`, pure. Apply runs the plan's actions on a bounded thread pool;
each action is idempotent and keyed by its worker (or pod), and an action whose worker still has one in
flight from an earlier tick is not started twice. The tick waits for its actions only up to a budget, so
a slow SSH command or API call never holds the next tick back; what it changes is seen by the next
snapshot. Record is the events table (the SQL functions append transitions themselves; the executor
adds spawns, terminations and failures with their cost), one ``tick_summary`` log line with the old
system's fields, and the Prometheus metrics.

Every write carries the lease's fencing token. A stale token makes the SQL function refuse (``LeaseLost``):
the controller then stops acting until it holds the lease again, so two daemons never both spawn.

An action that ends billing (fail a worker, a boot step's failure, terminate a pod, close a row) always
finishes: each step around its ending (diagnostics, the log tail, the details it records, the requeue,
the metadata merge, the event, the metrics) runs through ``_step``, which logs a failure as
``action_step_failed`` with its context and goes on, so the transition, the requeue and the termination
(by pod id, which needs nothing from the row) do not depend on one another. The outcome names what was
skipped (``skipped_steps``, outcome ``partial``) and the next tick, level-triggered, repairs the rest.
Only a lost lease stops an ending: the fence before the provider call refuses a stale leader.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shlex
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from orchestrator.adapters.db.base import Database
from orchestrator.core import errors, policy
from orchestrator.core.actions import (
    Action,
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
from orchestrator.core.observed import PodView, Snapshot, Worker, parse_ts
from orchestrator.core.states import Blocked, BreakerState, Meta, Reason, WorkerState
from orchestrator.loop.metrics import Metrics

log = structlog.get_logger(__name__)

T = TypeVar("T")

PRICE_REFRESH_SEC = 600.0
# Event retention: one delete of at most this many rows per tick while a backlog remains, then a
# check every EVENTS_PRUNE_SEC.
EVENTS_PRUNE_BATCH = 5000
EVENTS_PRUNE_SEC = 600.0
LOG_TAIL_LINES = 40
DIAGNOSTICS_SSH_TIMEOUT_SEC = 8.0


class Provider(Protocol):
    """What the controller needs of :class:`orchestrator.runpod_client.RunpodClient`."""

    def list_pods(self) -> list[Any]: ...

    def list_gpu_types(self, *, with_availability: bool = False, fresh: bool = False) -> list[Any]: ...

    def spawn_volumes(self) -> list[Any]: ...

    def spawn_worker(self, worker_id: str, worker_env: Mapping[str, str] | None = None, **kw: Any) -> dict[str, Any]: ...

    def check_and_initialize_worker(self, worker_id: str, runpod_id: str, *, expected_fingerprint: str | None = None) -> dict[str, Any]: ...

    def start_worker_process(self, runpod_id: str, worker_id: str, *, expected_fingerprint: str | None = None) -> bool: ...

    def terminate_worker(self, runpod_id: str) -> bool: ...

    def get_pod_status(self, runpod_id: str) -> dict[str, Any] | None: ...

    def execute_command_on_worker(self, runpod_id: str, command: str, timeout: float = 60.0) -> tuple[int, str, str]: ...


# Fault injection for the crash-recovery tests: the daemon SIGKILLs itself at the named point, the way
# an OOM kill or a power cut would, so the tests can prove the next run repairs whatever was half done.
# Points: after_register (intent row written, no pod), after_create (pod created, its id not recorded),
# before_terminate and after_terminate (around the provider's termination call).
CRASH_POINT_ENV = "ORCHESTRATOR_TEST_CRASH_AT"


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_POINT_ENV) == name:
        log.warning("test_crash_point", point=name)
        os.kill(os.getpid(), signal.SIGKILL)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def default_holder() -> str:
    """A lease holder name that tells an operator which process holds it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class TickResult:
    """What one tick did; its ``summary`` is the JSON line operators and the demo read."""

    role: str  # leader | follower | failed
    summary: dict[str, Any]
    plan: Plan | None = None
    snapshot: Snapshot | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)


class Controller:
    """Owns the lease and the executor pool; ``tick()`` is what the scheduler calls."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        provider: Provider,
        *,
        holder: str | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        apply_budget_sec: float | None = None,
        worker_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.provider = provider
        self.holder = holder or default_holder()
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.worker_env = dict(worker_env or {})
        # Wait for the tick's own actions at most this long; the rest finish in the background.
        self.apply_budget_sec = (
            apply_budget_sec if apply_budget_sec is not None else max(0.5, min(20.0, settings.orchestrator_poll_sec * 0.6))
        )
        self.token: int | None = None
        self.tick_no = 0
        self._pool = cf.ThreadPoolExecutor(max_workers=settings.apply_concurrency, thread_name_prefix="apply")
        # The pod listing gets a thread of its own: on the apply pool it would queue behind slow actions
        # from earlier ticks, and the tick (with its lease renewal) would wait for them.
        self._gather_pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gather")
        self._in_flight: dict[str, cf.Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._prices: dict[str, float] = {}
        self._prices_at = 0.0
        self._data_centers: tuple[str, ...] = ()
        self._next_prune_at = 0.0
        # The breaker's state at the previous tick (None before the first): its changes become events.
        self._last_breaker: BreakerState | None = None
        self._closed = False

    # -- the lease ----------------------------------------------------------------------------------

    def _ensure_lease(self) -> int | None:
        """Acquire or renew the lease; the token while we lead, None while another process does."""
        answer = self.db.lease_acquire(self.holder, self.settings.lease_ttl_sec)
        if answer.get("acquired"):
            token = int(answer["token"])
            if token != self.token:
                log.info("lease_acquired", holder=self.holder, token=token, expires_at=answer.get("expires_at"))
                self._publish_attempt_limit(token)
            self.token = token
            return token
        if self.token is not None:
            log.warning("lease_lost", holder=self.holder, now_held_by=answer.get("holder"))
        else:
            log.info("lease_held_elsewhere", holder=self.holder, leader=answer.get("holder"), expires_at=answer.get("expires_at"))
        self.token = None
        return None

    def _publish_attempt_limit(self, token: int) -> None:
        """Store MAX_TASK_ATTEMPTS where the database's tasks guard reads it, once per leadership.

        The guard dead-letters a task that comes back to Queued at the limit whoever moved it (the
        app's Edge Functions, the heartbeat's crash handling), so it must know our limit before the
        first requeue of ours would tell it. Not fatal: the guard keeps its last (or default) limit.
        """
        try:
            self.db.set_task_attempt_limit(token, self.settings.max_task_attempts)
        except errors.LeaseLost:
            raise
        except errors.OrchestratorError as exc:
            log.warning("attempt_limit_not_published", error_type=type(exc).__name__, error=str(exc)[:300])

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    # -- gather -------------------------------------------------------------------------------------

    def _refresh_prices(self) -> None:
        if self._prices and self.clock() - self._prices_at < PRICE_REFRESH_SEC:
            return
        try:
            gpus = self.provider.list_gpu_types()
        except errors.OrchestratorError as exc:
            log.warning("prices_unavailable", error=str(exc)[:300])
            return
        prices: dict[str, float] = {}
        for gpu in gpus:
            price = getattr(gpu, "secure_price", None) or getattr(gpu, "price", None) or getattr(gpu, "lowest_price", None)
            name = getattr(gpu, "display_name", None)
            if name and isinstance(price, int | float) and price > 0:
                prices[str(name)] = float(price)
        if prices:
            self._prices = prices
            self._prices_at = self.clock()
        # The data centers the configured network volumes pin spawns to: the policy skips a GPU type
        # only once it backs off in each of them. Refreshed with the prices (both change rarely).
        try:
            volumes = self.provider.spawn_volumes()
        except errors.OrchestratorError as exc:
            log.warning("volumes_unavailable", error=str(exc)[:300])
            return
        centers = [str(v.data_center) for v in volumes if getattr(v, "data_center", None)]
        self._data_centers = tuple(dict.fromkeys(centers))

    def _list_pods(self) -> list[PodView] | None:
        try:
            pods = self.provider.list_pods()
        except errors.OrchestratorError as exc:
            log.warning("pods_listing_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            return None
        views: list[PodView] = []
        for pod in pods:
            try:
                views.append(PodView.from_pod(pod))
            except Exception as exc:  # one malformed pod must not blind the tick to the others
                log.warning("pod_unreadable", error=str(exc)[:200], pod=repr(pod)[:200])
        return views

    def gather(self) -> tuple[Snapshot, list[PodView] | None]:
        """One snapshot call and one pod listing, concurrently."""
        pods_future = self._gather_pool.submit(self._list_pods)
        try:
            raw = self.db.snapshot(self.settings.worker_id_prefix)
        finally:
            pods = pods_future.result()
        snapshot = Snapshot.from_json(raw)
        for problem in snapshot.problems:
            log.warning("snapshot_row_skipped", problem=problem)
        self._refresh_prices()
        return snapshot, pods

    def decide(self, snapshot: Snapshot, pods: list[PodView] | None) -> Plan:
        now = snapshot.now or datetime.now(UTC)
        return policy.plan(snapshot, pods, self.settings, now, prices=self._prices, data_centers=self._data_centers)

    def dry_run(self) -> tuple[Snapshot, list[PodView] | None, Plan]:
        """What a tick would decide now, changing nothing (``orchestrator plan``)."""
        snapshot, pods = self.gather()
        return snapshot, pods, self.decide(snapshot, pods)

    # -- the tick -----------------------------------------------------------------------------------

    def tick(self) -> TickResult:
        started = time.monotonic()
        self.tick_no += 1
        structlog.contextvars.bind_contextvars(tick=self.tick_no)
        try:
            return self._tick(started)
        finally:
            structlog.contextvars.unbind_contextvars("tick")

    def _tick(self, started: float) -> TickResult:
        try:
            token = self._ensure_lease()
        except errors.OrchestratorError as exc:
            log.error("tick_failed", step="lease", error_type=type(exc).__name__, error=str(exc)[:500])
            self.metrics.observe_tick_failure("lease")
            return TickResult("failed", {"error": str(exc)[:500]})
        if token is None:
            self.metrics.observe_follower()
            return TickResult("follower", {"role": "follower", "holder": self.holder})
        try:
            snapshot, pods = self.gather()
        except errors.OrchestratorError as exc:
            log.error("tick_failed", step="gather", error_type=type(exc).__name__, error=str(exc)[:500])
            self.metrics.observe_tick_failure("gather")
            return TickResult("failed", {"error": str(exc)[:500]})
        plan = self.decide(snapshot, pods)
        outcomes = self.apply(plan.actions, snapshot, token)
        summary = self.record(snapshot, pods, plan, outcomes, time.monotonic() - started)
        self._prune_events(token)
        return TickResult("leader", summary, plan, snapshot, outcomes)

    def _prune_events(self, token: int) -> None:
        """At most one bounded batch of expired events per tick, and only every EVENTS_PRUNE_SEC while
        nothing is left to prune: the log stops growing for ever without a long delete holding a tick."""
        days = self.settings.events_retention_days
        if days <= 0 or self.clock() < self._next_prune_at:
            return
        try:
            answer = self.db.prune_events(token, days, EVENTS_PRUNE_BATCH)
        except errors.LeaseLost as exc:
            log.warning("lease_lost", during="prune_events", error=str(exc)[:300])
            self.token = None
            return
        except errors.OrchestratorError as exc:
            log.warning("events_prune_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            self._next_prune_at = self.clock() + EVENTS_PRUNE_SEC
            return
        if answer.get("deleted"):
            log.info(
                "events_pruned",
                deleted=answer.get("deleted"),
                retention_days=days,
                oldest_kept_at=answer.get("oldest_kept_at"),
            )
        self._next_prune_at = self.clock() + (0.0 if answer.get("more") else EVENTS_PRUNE_SEC)

    # -- apply --------------------------------------------------------------------------------------

    @staticmethod
    def _key(action: Action) -> str:
        worker = getattr(action, "worker_id", None)
        if worker:
            return f"w:{worker}"
        pod = getattr(action, "runpod_id", None)
        if pod:
            return f"p:{pod}"
        return f"k:{action.kind}"  # an action on no worker and no pod (RequeueUnownedTasks): one at a time

    def apply(self, actions: Sequence[Action], snapshot: Snapshot, token: int) -> list[dict[str, Any]]:
        workers = {w.id: w for w in snapshot.workers}
        submitted: list[cf.Future[dict[str, Any]]] = []
        skipped: list[dict[str, Any]] = []
        with self._lock:
            for key in [k for k, f in self._in_flight.items() if f.done()]:
                del self._in_flight[key]
            for action in actions:
                key = self._key(action)
                if key in self._in_flight:
                    skipped.append({"kind": action.kind, "key": key, "outcome": "in_flight"})
                    continue
                future = self._pool.submit(self._run_action, action, workers, token)
                self._in_flight[key] = future
                submitted.append(future)
        done, _pending = cf.wait(submitted, timeout=self.apply_budget_sec)
        outcomes = [self._outcome_of(f) for f in done]
        outcomes += [{"kind": "pending", "outcome": "in_flight"} for _ in _pending]
        return outcomes + skipped

    @staticmethod
    def _outcome_of(future: cf.Future[dict[str, Any]]) -> dict[str, Any]:
        try:
            return future.result()
        except Exception as exc:  # _run_action catches everything; this is the belt to its braces
            log.exception("action_crashed", action="unknown")
            return {"kind": "unknown", "outcome": "crashed", "error": repr(exc)[:500]}

    def _run_action(self, action: Action, workers: Mapping[str, Worker], token: int) -> dict[str, Any]:
        worker_id = getattr(action, "worker_id", None)
        runpod_id = getattr(action, "runpod_id", None)
        bound = structlog.contextvars.bound_contextvars(worker_id=worker_id, runpod_id=runpod_id)
        with bound:
            try:
                handler = getattr(self, f"_do_{action.kind}")
                result: dict[str, Any] = handler(action, workers.get(worker_id or ""), token) or {}
                outcome = result.pop("outcome", "ok")
            except errors.LeaseLost as exc:
                log.warning("lease_lost", during=action.kind, error=str(exc)[:300])
                self.token = None
                outcome, result = "lease_lost", {}
            except errors.IllegalTransition as exc:
                # Another actor (the operator, a racing action) moved the worker first, or the database
                # refused a draining worker's termination because it claimed a task after the plan was
                # made (the pod is left alone); the next tick re-plans.
                log.info("action_superseded", action=action.kind, error=str(exc)[:300])
                outcome, result = "superseded", {}
            except errors.OrchestratorError as exc:
                log.warning("action_failed", action=action.kind, error_type=type(exc).__name__, error=str(exc)[:500])
                outcome, result = "failed", {"error": str(exc)[:500]}
            except Exception as exc:  # a bug in one action must not take the loop down
                log.exception("action_crashed", action=action.kind)
                outcome, result = "crashed", {"error": repr(exc)[:500]}
            if outcome == "ok" and result.get("skipped_steps"):
                outcome = "partial"  # its ending happened; something around it did not (action_step_failed)
            try:
                self.metrics.actions.labels(kind=action.kind, outcome=outcome).inc()
            except Exception:  # a metrics fault must not lose the outcome
                log.exception("metrics_failed", action=action.kind)
            return {"kind": action.kind, "reason": action.reason.value, "worker_id": worker_id, "outcome": outcome, **result}

    def _now(self) -> str:
        return _iso(datetime.fromtimestamp(self.clock(), UTC))

    def _event(self, token: int, kind: str, *, skipped: list[str] | None = None, **kw: Any) -> None:
        try:
            self.db.append_event(token, kind, **kw)
        except errors.LeaseLost:
            raise
        except Exception as exc:  # the event log is a record: losing one line must not stop an action
            log.warning("event_not_recorded", kind=kind, error=f"{type(exc).__name__}: {exc}"[:300])
            if skipped is not None:
                skipped.append("event")

    @staticmethod
    def _step(action: str, step: str, skipped: list[str], fn: Callable[[], T]) -> tuple[bool, T | None]:
        """Run one step of an action that ends billing; ``(done, its value)``.

        Whatever fails here (a database fault, a refused argument, a malformed answer, a bug) is logged
        with its context and the step skipped, so the steps after it (the transition, the requeue, the
        termination) still run. ``LeaseLost`` is the exception: a stale leader must stop everything,
        and the fence before the provider call would refuse it anyway.
        """
        try:
            return True, fn()
        except errors.LeaseLost:
            raise
        except Exception as exc:
            log.warning(
                "action_step_failed",
                action=action,
                step=step,
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
            skipped.append(step)
            return False, None

    def _to_error(
        self, action: str, token: int, worker_id: str, reason: str, metadata: Mapping[str, Any], skipped: list[str]
    ) -> None:
        """Transition to ``error`` with the full details; failing that, with the reason alone.

        The details (diagnostics, a log tail) are the likeliest thing to be refused (a NUL byte the
        jsonb type rejects, a value too large), and a row that cannot say why it failed is still better
        ended than left running. A row already moved on (terminated by a racing confirmation, deleted)
        needs no transition: the rest of the ending goes ahead.
        """
        try:
            self.db.transition_worker(token, worker_id, WorkerState.ERROR.value, reason, metadata)
            return
        except errors.LeaseLost:
            raise
        except (errors.IllegalTransition, errors.NotFound) as exc:
            log.info("action_superseded", action=action, step="transition", error=str(exc)[:300])
            return
        except Exception as exc:
            log.warning(
                "action_step_failed",
                action=action,
                step="transition_with_details",
                error_type=type(exc).__name__,
                error=str(exc)[:300],
            )
        bare = {
            Meta.ERROR_REASON: reason,
            Meta.FAILED_AT: self._now(),
            Meta.ERROR_DETAILS: "details not recorded (see action_step_failed in the daemon's log)",
        }
        self._step(
            action,
            "transition",
            skipped,
            lambda: self.db.transition_worker(token, worker_id, WorkerState.ERROR.value, reason, bare),
        )

    def _requeue(self, action: str, token: int, worker_id: str, reason: str, skipped: list[str]) -> dict[str, Any]:
        _done, requeued = self._step(
            action,
            "requeue",
            skipped,
            lambda: self.db.requeue_worker_tasks(token, worker_id, reason, self.settings.max_task_attempts),
        )
        return requeued if isinstance(requeued, Mapping) else {}

    def _count_spawn_failure(self, action: str, reason: str, skipped: list[str]) -> None:
        self._step(action, "metrics", skipped, lambda: self.metrics.spawn_failures.labels(reason=reason).inc())

    def _fence(self, token: int, before: str) -> None:
        """Prove we still lead right before a provider side effect no SQL function can refuse.

        An action may wait in the pool, or in a slow SSH call, past a handover; the database writes
        that follow it are fenced, but the pod is already touched by then. Renewing the lease with our
        token is the check (and it keeps the lease alive through a long apply step).
        """
        answer = self.db.lease_renew(self.holder, token, self.settings.lease_ttl_sec)
        if not answer.get("renewed"):
            raise errors.LeaseLost("orch_lease_renew", f"lease no longer held by {self.holder} (before {before})")

    def _terminate(
        self,
        token: int,
        worker_id: str | None,
        runpod_id: str,
        reason: str,
        *,
        action: str = "terminate_pod",
        skipped: list[str] | None = None,
    ) -> bool:
        """Fence, then terminate ``runpod_id``; record it. Only the fence can stop the termination.

        The provider call is by pod id alone (nothing about the row is needed). What follows it (the
        metadata merge, the event) is recorded when it can be: if the merge is lost, the next tick
        simply asks again.
        """
        steps = skipped if skipped is not None else []
        self._fence(token, "terminate_pod")
        _crash_point("before_terminate")
        done, answer = self._step(action, "terminate", steps, lambda: self.provider.terminate_worker(runpod_id))
        confirmed = bool(answer) if done else False
        _crash_point("after_terminate")
        if worker_id:
            stamp = {Meta.POD_TERMINATE_REQUESTED_AT: self._now()}
            self._step(action, "record_terminate", steps, lambda: self.db.merge_worker_metadata(token, worker_id, stamp))
        self._event(
            token,
            "pod_terminate_requested" if confirmed else "pod_terminate_unconfirmed",
            skipped=steps,
            worker_id=worker_id,
            runpod_id=runpod_id,
            reason=reason,
        )
        return confirmed

    # Each _do_<kind> follows the executor contract written on its action class in model.py.

    def _do_spawn(self, action: Spawn, worker: Worker | None, token: int) -> dict[str, Any]:
        metadata = {
            **dict(action.metadata),
            Meta.GPU_TYPES: list(action.gpu_types),
            Meta.SPAWN_REASON: action.reason.value,
        }
        try:
            self.db.register_worker(token, action.worker_id, action.gpu_types[0], metadata)
        except errors.Conflict:
            return {"outcome": "already_registered"}
        _crash_point("after_register")
        skipped: list[str] = []
        try:
            pod = self.provider.spawn_worker(
                action.worker_id, self.worker_env, gpu_types=list(action.gpu_types), avoid=action.avoid
            )
        except errors.RunpodCapacityError as exc:
            # Only a provider that does not say which candidates it tried gets misses invented for it; an
            # empty list means every candidate was skipped as backing off, and those need no new miss.
            misses = getattr(exc, "capacity_misses", None)
            if misses is None:
                misses = [{"gpu_type": gpu, "data_center": None, "at": self._now()} for gpu in action.gpu_types]
            # No pod was made. Should this transition be lost, the row is closed as never created
            # once the grace passes (Reason.NO_POD_CREATED).
            self._to_error(
                action.kind,
                token,
                action.worker_id,
                Reason.SPAWN_NO_CAPACITY.value,
                {Meta.ERROR_REASON: Reason.SPAWN_NO_CAPACITY.value, Meta.ERROR_DETAILS: str(exc)[:1000], Meta.CAPACITY_MISSES: misses},
                skipped,
            )
            self._count_spawn_failure(action.kind, "no_capacity", skipped)
            return {"outcome": "no_capacity", "error": str(exc)[:300], **({"skipped_steps": skipped} if skipped else {})}
        except (errors.RunpodError, errors.ConfigError) as exc:
            details: dict[str, Any] = {
                Meta.ERROR_REASON: Reason.SPAWN_FAILED.value,
                Meta.ERROR_DETAILS: f"{type(exc).__name__}: {exc}"[:1000],
            }
            # Candidates refused before the failure (no capacity, or a 400 whose wording is unknown)
            # back off their (GPU type, data center) like any capacity miss.
            refused = getattr(exc, "capacity_misses", None)
            if refused:
                details[Meta.CAPACITY_MISSES] = refused
            self._to_error(action.kind, token, action.worker_id, Reason.SPAWN_FAILED.value, details, skipped)
            self._count_spawn_failure(action.kind, type(exc).__name__, skipped)
            log.warning("spawn_failed", worker_id=action.worker_id, error_type=type(exc).__name__, error=str(exc)[:500])
            return {"outcome": "spawn_failed", "error": str(exc)[:300], **({"skipped_steps": skipped} if skipped else {})}
        # The pod exists, its id is not recorded yet: the next run must adopt it by name.
        _crash_point("after_create")
        recorded = {
            Meta.RUNPOD_ID: pod["runpod_id"],
            Meta.GPU_TYPE: pod.get("gpu_type"),
            Meta.DATA_CENTER: pod.get("data_center"),
            Meta.COST_PER_HR: pod.get("cost_per_hr"),
        }
        if pod.get("capacity_misses"):
            recorded[Meta.CAPACITY_MISSES] = pod["capacity_misses"]
        # Lost, the pod is adopted by name on the next tick (the row has no id for it yet).
        self._step(action.kind, "record_pod", skipped, lambda: self.db.merge_worker_metadata(token, action.worker_id, recorded))
        self._event(
            token,
            "pod_created",
            skipped=skipped,
            worker_id=action.worker_id,
            runpod_id=pod["runpod_id"],
            reason=action.reason.value,
            details={
                "gpu_type": pod.get("gpu_type"),
                "data_center": pod.get("data_center"),
                "cost_per_hr": pod.get("cost_per_hr"),
                # Which daemon created it, under which fencing token: proof that only the leader spawns.
                "holder": self.holder,
                "token": token,
            },
        )
        log.info("worker_spawned", worker_id=action.worker_id, runpod_id=pod["runpod_id"], gpu_type=pod.get("gpu_type"), reason=action.reason.value)
        return {"runpod_id": pod["runpod_id"], **({"skipped_steps": skipped} if skipped else {})}

    def _fail_after_boot_step(
        self, token: int, worker_id: str, runpod_id: str, reason: Reason, details: Any, *, action: str = "initialize"
    ) -> list[str]:
        """A boot step failed: error with the output, requeue, then terminate at once (it bills until
        then). Each step runs whatever happened to the one before it; returns the steps skipped."""
        skipped: list[str] = []
        self._to_error(
            action,
            token,
            worker_id,
            reason.value,
            {Meta.ERROR_REASON: reason.value, Meta.ERROR_DETAILS: _storable(details), Meta.FAILED_AT: self._now()},
            skipped,
        )
        self._count_spawn_failure(action, reason.value, skipped)
        self._requeue(action, token, worker_id, reason.value, skipped)
        self._terminate(token, worker_id, runpod_id, reason.value, action=action, skipped=skipped)
        return skipped

    def _do_initialize(self, action: Initialize, worker: Worker | None, token: int) -> dict[str, Any]:
        if action.from_status is WorkerState.SPAWNING:
            self.db.transition_worker(
                token, action.worker_id, WorkerState.INITIALIZING.value, Reason.POD_READY.value, {Meta.RUNPOD_ID: action.runpod_id}
            )
        expected = worker.host_key_fingerprint if worker else None
        result = self.provider.check_and_initialize_worker(action.worker_id, action.runpod_id, expected_fingerprint=expected)
        status = result.get("status")
        if status == "spawning":
            return {"outcome": "not_ready", "detail": str(result.get("ssh_error") or result.get("detail") or "")[:200]}
        if status != "active":
            details = {k: result.get(k) for k in ("step", "error", "ssh_error") if result.get(k)}
            log.warning("worker_init_failed", worker_id=action.worker_id, **details)
            skipped = self._fail_after_boot_step(token, action.worker_id, action.runpod_id, Reason.INIT_FAILED, details)
            return {"outcome": "init_failed", **details, **({"skipped_steps": skipped} if skipped else {})}
        self.db.merge_worker_metadata(
            token,
            action.worker_id,
            {
                Meta.SSH_DETAILS: result.get("ssh_details"),
                Meta.HOST_KEY_FINGERPRINT: result.get("host_key_fingerprint"),
                Meta.INITIALIZED_AT: self._now(),
            },
        )
        if not action.start_process:
            return {"outcome": "initialized"}
        return self._start(token, action.worker_id, action.runpod_id, result.get("host_key_fingerprint"))

    def _start(self, token: int, worker_id: str, runpod_id: str, fingerprint: str | None) -> dict[str, Any]:
        # A stale leader's start would run a second worker process beside the new leader's.
        self._fence(token, "start_process")
        if self.provider.start_worker_process(runpod_id, worker_id, expected_fingerprint=fingerprint):
            self.db.merge_worker_metadata(token, worker_id, {Meta.PROCESS_STARTED_AT: self._now()})
            return {"outcome": "started"}
        skipped = self._fail_after_boot_step(
            token,
            worker_id,
            runpod_id,
            Reason.START_FAILED,
            "the start command failed (see worker_start_failed)",
            action="start_process",
        )
        return {"outcome": "start_failed", **({"skipped_steps": skipped} if skipped else {})}

    def _do_start_process(self, action: StartProcess, worker: Worker | None, token: int) -> dict[str, Any]:
        if action.already_running:
            self.db.merge_worker_metadata(token, action.worker_id, {Meta.PROCESS_STARTED_AT: self._now()})
            return {"outcome": "already_running"}
        return self._start(token, action.worker_id, action.runpod_id, worker.host_key_fingerprint if worker else None)

    def _do_promote(self, action: Promote, worker: Worker | None, token: int) -> dict[str, Any]:
        # The transition writes activated_at and the boot outcome `activated`; a worker moved since the
        # snapshot (failed, cancelled) makes it refuse, which _run_action counts as superseded.
        row = self.db.transition_worker(token, action.worker_id, WorkerState.ACTIVE.value, action.reason.value)
        try:
            # The cold-start figure: from the intent row (written just before the pod was created) to
            # the first heartbeat after the process start.
            activated = parse_ts(row.get("activated_at"))
            created = parse_ts(row.get("created_at"))
            if activated is not None and created is not None:
                gpu = (row.get("metadata") or {}).get(Meta.GPU_TYPE) or row.get("instance_type")
                self.metrics.observe_boot(gpu, (activated - created).total_seconds())
        except (TypeError, ValueError, AttributeError) as exc:
            log.debug("boot_time_unreadable", error=str(exc)[:200])
        return {}

    def _diagnostics(self, action: FailWorker) -> dict[str, Any]:
        """What the pod and the worker's log say, for the row's error details. Never raises: a failure
        is recorded in place of what it would have found, and the worker is failed all the same."""
        found: dict[str, Any] = {"failed_at": self._now()}
        if not action.runpod_id:
            return found
        try:
            found["pod"] = self.provider.get_pod_status(action.runpod_id)
        except Exception as exc:
            found["pod_error"] = f"{type(exc).__name__}: {exc}"[:300]
        if action.collect_logs and found.get("pod"):
            try:
                from orchestrator.adapters.ssh import worker_log_path

                # Refuses an id that cannot name a file (another system's row): then there is no log.
                path = worker_log_path(self.settings.runpod_volume_mount_path, action.worker_id)
                _code, out, err = self.provider.execute_command_on_worker(
                    action.runpod_id, f"tail -n {LOG_TAIL_LINES} {shlex.quote(path)} 2>&1", timeout=DIAGNOSTICS_SSH_TIMEOUT_SEC
                )
                found["log_tail"] = (str(out) + str(err))[-4000:]
            except Exception as exc:
                found["log_tail_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return _storable(found)

    def _do_fail_worker(self, action: FailWorker, worker: Worker | None, token: int) -> dict[str, Any]:
        """Diagnostics, ``error``, requeue, terminate: each step runs whatever happened to the one
        before it (``_step``); only a lost lease stops the rest."""
        kind = action.kind
        skipped: list[str] = []
        diagnostics = self._diagnostics(action)
        if action.from_status is not WorkerState.ERROR:
            self._to_error(
                kind,
                token,
                action.worker_id,
                action.reason.value,
                {**dict(action.metadata), Meta.ERROR_REASON: action.reason.value, Meta.ERROR_DETAILS: diagnostics},
                skipped,
            )
        if action.from_status.booting:
            # A boot that never got to serve (timeout, pod failed while booting) is a failed spawn for
            # the metric as for the breaker, not only the boot steps that report their own failure.
            self._count_spawn_failure(kind, action.reason.value, skipped)
        requeued = self._requeue(kind, token, action.worker_id, action.reason.value, skipped)
        log.warning(
            "worker_failed",
            worker_id=action.worker_id,
            reason=action.reason.value,
            requeued=len(requeued.get("requeued") or []),
            dead_lettered=len(requeued.get("failed") or []),
        )
        confirmed = None
        if action.runpod_id:
            confirmed = self._terminate(token, action.worker_id, action.runpod_id, action.reason.value, action=kind, skipped=skipped)
        return {
            "tasks_reset": len(requeued.get("requeued") or []) + len(requeued.get("failed") or []),
            "terminate_confirmed": confirmed,
            **({"skipped_steps": skipped} if skipped else {}),
        }

    def _do_drain(self, action: Drain, worker: Worker | None, token: int) -> dict[str, Any]:
        self.db.transition_worker(
            token,
            action.worker_id,
            WorkerState.DRAINING.value,
            action.reason.value,
            {**dict(action.metadata), Meta.DRAIN_REASON: action.reason.value, Meta.DRAINED_AT: self._now()},
        )
        return {}

    def _do_reactivate(self, action: Reactivate, worker: Worker | None, token: int) -> dict[str, Any]:
        self.db.transition_worker(token, action.worker_id, WorkerState.ACTIVE.value, action.reason.value)
        return {}

    def _do_terminate_pod(self, action: TerminatePod, worker: Worker | None, token: int) -> dict[str, Any]:
        skipped: list[str] = []
        if action.worker_id and action.transition_from is not None:
            try:
                self.db.transition_worker(token, action.worker_id, WorkerState.TERMINATING.value, action.reason.value)
            except (errors.LeaseLost, errors.IllegalTransition):
                # A stale leader stops; a refusal is the database's guard (the worker claimed a task
                # after the plan was made, or moved on): the pod is left alone, the next tick re-plans.
                raise
            except Exception as exc:
                # The plan found the worker holding no task and the pod ours. A row that cannot be moved
                # (gone, an id the database refuses, a fault) must not keep its pod billing: terminate by
                # pod id. A claim racing this costs one attempt, which the next tick requeues.
                log.warning(
                    "action_step_failed",
                    action=action.kind,
                    step="transition",
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                )
                skipped.append("transition")
        confirmed = self._terminate(
            token, action.worker_id, action.runpod_id, action.reason.value, action=action.kind, skipped=skipped
        )
        if action.worker_id is None:
            log.warning("orphan_pod_terminated", runpod_id=action.runpod_id, pod_name=action.pod_name, confirmed=confirmed)
        return {"terminate_confirmed": confirmed, **({"skipped_steps": skipped} if skipped else {})}

    def _do_mark_terminated(self, action: MarkTerminated, worker: Worker | None, token: int) -> dict[str, Any]:
        """The provider confirms no pod: close the row. Tasks a failed requeue leaves behind are those of
        a worker that is no longer live, which the next snapshot lists and the next tick requeues."""
        kind = action.kind
        skipped: list[str] = []
        reset = 0
        if action.requeue_tasks:
            requeued = self._requeue(kind, token, action.worker_id, action.reason.value, skipped)
            reset = len(requeued.get("requeued") or []) + len(requeued.get("failed") or [])
        _ok, cost = self._step(kind, "cost", skipped, lambda: _estimated_cost(worker, self.clock()) if worker else None)
        self.db.transition_worker(token, action.worker_id, WorkerState.TERMINATED.value, action.reason.value)
        self._event(
            token,
            "worker_terminated",
            skipped=skipped,
            worker_id=action.worker_id,
            runpod_id=worker.runpod_id if worker else None,
            reason=action.reason.value,
            cost_usd=cost,
        )
        return {"tasks_reset": reset, **({"skipped_steps": skipped} if skipped else {})}

    def _do_requeue_tasks(self, action: RequeueTasks, worker: Worker | None, token: int) -> dict[str, Any]:
        requeued = self.db.requeue_worker_tasks(token, action.worker_id, action.reason.value, self.settings.max_task_attempts)
        return {"tasks_reset": len(requeued.get("requeued") or []) + len(requeued.get("failed") or [])}

    def _do_requeue_unowned_tasks(self, action: RequeueUnownedTasks, worker: Worker | None, token: int) -> dict[str, Any]:
        requeued = self.db.requeue_unowned_tasks(
            token, action.older_than_sec, action.reason.value, self.settings.max_task_attempts
        )
        back, failed = len(requeued.get("requeued") or []), len(requeued.get("failed") or [])
        if back or failed:
            log.warning("unowned_tasks_requeued", requeued=back, dead_lettered=failed, older_than_sec=action.older_than_sec)
        return {"tasks_reset": back + failed}

    # -- record -------------------------------------------------------------------------------------

    def record(
        self,
        snapshot: Snapshot,
        pods: list[PodView] | None,
        plan: Plan,
        outcomes: list[dict[str, Any]],
        duration: float,
    ) -> dict[str, Any]:
        states = Counter(w.status.value for w in snapshot.workers)
        by_kind = Counter(o["kind"] for o in outcomes if o.get("outcome") not in ("in_flight", "lease_lost"))
        actions = {
            "promoted": sum(1 for o in outcomes if o["kind"] == "promote" and o.get("outcome") == "ok"),
            "failed": by_kind.get("fail_worker", 0),
            "spawned": sum(1 for o in outcomes if o["kind"] == "spawn" and o.get("runpod_id")),
            "terminated": by_kind.get("mark_terminated", 0),
            "terminate_requested": by_kind.get("terminate_pod", 0),
            "drained": by_kind.get("drain", 0),
            "initialized": sum(1 for o in outcomes if o["kind"] in ("initialize", "start_process") and o.get("outcome") in ("started", "initialized", "already_running")),
            "tasks_reset": sum(int(o.get("tasks_reset") or 0) for o in outcomes),
            "in_flight": sum(1 for o in outcomes if o.get("outcome") == "in_flight"),
            "errors": sum(1 for o in outcomes if o.get("outcome") in ("failed", "crashed") or o.get("skipped_steps")),
        }
        status = {
            "queued": snapshot.queue.claimable,
            "queued_total": snapshot.queue.queued_total,
            "running": snapshot.queue.running,
            "running_without_worker": snapshot.queue.unowned_running,
            "oldest_queued_age_sec": snapshot.queue.oldest_claimable_age_sec,
            **{s.value: states.get(s.value, 0) for s in WorkerState if s is not WorkerState.TERMINATED},
            "pods": None if pods is None else len(pods),
        }
        summary = {
            "timestamp": (snapshot.now or datetime.now(UTC)).isoformat(),
            "tick": self.tick_no,
            "actions": actions,
            "status": status,
            "desired": plan.desired,
            "capacity": plan.capacity,
            "spend_per_hr": round(plan.spend_per_hr, 4),
            "paused": plan.paused,
            "breaker": plan.breaker.value,
            "spawn_blocked": [b.value for b in plan.spawn_blocked],
            "duration_ms": round(duration * 1000, 1),
        }
        log.info("tick_summary", **summary)
        self._record_breaker(plan)
        self.metrics.observe_tick(
            duration=duration,
            workers_by_state=states,
            claimable=snapshot.queue.claimable,
            running=snapshot.queue.running,
            oldest_queued_age=snapshot.queue.oldest_claimable_age_sec,
            spend_rate=plan.spend_per_hr,
            blocked={b.value: b in plan.spawn_blocked for b in Blocked},
            leader=self.token is not None,
        )
        return summary

    def _record_breaker(self, plan: Plan) -> None:
        """An event and a log line when spawning stops for consecutive failures, and when it resumes.

        The breaker itself lives in the policy, derived from the database (``recent_boots``), so it
        survives restarts; only its changes are remembered here. After a restart an open breaker is
        announced again (the previous process may have died before saying so).
        """
        previous, current = self._last_breaker, plan.breaker
        self._last_breaker = current
        if current is previous or (previous is None and current is BreakerState.CLOSED):
            return
        failures = plan.consecutive_failures
        limit = self.settings.max_consecutive_failures
        until = plan.breaker_until.isoformat() if plan.breaker_until else None
        was = previous.value if previous is not None else None
        details = {"consecutive_failures": failures, "max_consecutive_failures": limit, "until": until, "previous": was}
        # Literal event names, so that the operations guide's generated table lists them for alerts.
        if current is BreakerState.OPEN:
            kind, reason = "spawning_stopped", "max_consecutive_failures"
            log.warning("spawning_stopped", reason=reason, consecutive_failures=failures, max_consecutive_failures=limit, until=until, previous=was)
        elif current is BreakerState.CLOSED and previous is not None:
            kind, reason = "spawning_resumed", "boot_succeeded"
            log.info("spawning_resumed", reason=reason, consecutive_failures=failures, previous=was)
        else:
            # -> half-open: one probe worker may spawn now; no event, the probe's own spawn is one.
            log.info("spawning_probe_allowed", consecutive_failures=failures, max_consecutive_failures=limit, previous=was)
            return
        if self.token is None:
            return
        try:
            self._event(self.token, kind, reason=reason, details=details)
        except errors.LeaseLost:
            log.warning("event_not_recorded", kind=kind, error="lease lost")

    # -- shutdown -------------------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait for in-flight actions (tests and shutdown)."""
        with self._lock:
            futures = list(self._in_flight.values())
        _done, pending = cf.wait(futures, timeout=timeout)
        return not pending

    def shutdown(self, timeout: float = 60.0) -> None:
        if self._closed:
            return
        self._closed = True
        self.wait_idle(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._gather_pool.shutdown(wait=False, cancel_futures=True)
        if self.token is not None:
            try:
                self.db.lease_release(self.holder, self.token)
                log.info("lease_released", holder=self.holder)
            except errors.OrchestratorError as exc:
                log.warning("lease_release_failed", error=str(exc)[:300])
            self.token = None


def _estimated_cost(worker: Worker, now_epoch: float) -> float | None:
    """USD billed for a worker's pod, estimated from its price and lifetime (the provider's bill is authoritative)."""
    price = worker.cost_per_hr
    if not price or worker.created_at is None:
        return None
    hours = max(0.0, now_epoch - worker.created_at.timestamp()) / 3600.0
    return round(price * hours, 6)


def _storable(value: Any) -> Any:
    """``value`` with every NUL character removed from its text: PostgreSQL's jsonb refuses ``\\u0000``,
    and a log tail or a provider's answer may carry one (a binary log line), which would make the
    transition that records it fail."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value
