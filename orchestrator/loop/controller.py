"""One tick: gather -> decide -> apply -> record, under the leader lease.

Gather is two calls, whatever the fleet size: ``orch_snapshot`` and one pod listing, made concurrently
(plus the catalog's prices and the volumes' data centers, refreshed every ``PRICE_REFRESH_SEC``).
Decide is :func:`orchestrator.core.policy.plan`, pure. Apply runs the plan's actions through the
executor's table (:mod:`orchestrator.loop.executor`) on a bounded thread pool; each action is
idempotent and keyed by its worker (or pod), and an action whose worker still has one in flight from
an earlier tick is not started twice. The tick waits for its actions only up to a budget, so a slow SSH
command or API call never holds the next tick back; what it changes is seen by the next snapshot.
Record is :mod:`orchestrator.loop.recorder`.

Every write carries the lease's fencing token (:mod:`orchestrator.loop.lease`). A stale token makes the
SQL function refuse (``LeaseLost``): the controller then stops acting until it holds the lease again, so
two daemons never both spawn.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator.core import errors, policy
from orchestrator.core.actions import Action, Plan, Spawn
from orchestrator.core.config import Settings
from orchestrator.core.observed import PodView, Snapshot, Worker
from orchestrator.core.states import Meta, PodStatus, Reason
from orchestrator.loop import executor, passed_over
from orchestrator.loop.effects import LiveEffects, run_now
from orchestrator.loop.foreign import ForeignWatch
from orchestrator.loop.lease import Lease, default_holder
from orchestrator.loop.metrics import Metrics
from orchestrator.loop.recorder import Recorder
from orchestrator.ports import Database, Provider

log = structlog.get_logger(__name__)

PRICE_REFRESH_SEC = 600.0
# A snapshot problem already logged is logged again at most this often (with its count meanwhile).
PROBLEM_REPEAT_SEC = 3600.0
_PROBLEM_WORKER = re.compile(r"^worker (\S+): ")

__all__ = ["Catalog", "Controller", "Gathered", "TickResult", "default_holder"]


@dataclass
class TickResult:
    """What one tick did; its ``summary`` is the JSON line operators and the demo read."""

    role: str  # leader | follower | failed
    summary: dict[str, Any]
    plan: Plan | None = None
    snapshot: Snapshot | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Catalog:
    """What gather knows of the provider's catalog: GPU display name -> USD/h, and the data centers the
    configured network volumes pin spawns to (the policy skips a GPU type only once it backs off in
    each of them)."""

    prices: Mapping[str, float] = field(default_factory=dict)
    data_centers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Gathered:
    """Everything the policy decides on: the database's snapshot, the provider's pods (None when the
    listing failed: the policy then ends nothing it cannot see), and the catalog."""

    snapshot: Snapshot
    pods: list[PodView] | None
    catalog: Catalog
    # time.monotonic() just before the snapshot was asked for: an action that finished after it may
    # have changed what the snapshot says about its worker (see Controller.apply).
    read_at: float | None = None


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
        # The database's clock minus ours, as the last snapshot showed (see _db_clock).
        self._clock_offset = 0.0
        # The provider's pods as the last listing returned them, by id (see _list_pods).
        self._listed: Mapping[str, Any] = {}
        self.worker_env = dict(worker_env or {})
        # Wait for the tick's own actions at most this long; the rest finish in the background.
        self.apply_budget_sec = (
            apply_budget_sec
            if apply_budget_sec is not None
            else max(0.5, min(20.0, settings.orchestrator_poll_sec * 0.6))
        )
        self.lease = Lease(db, self.holder, settings.lease_ttl_sec)
        self.recorder = Recorder(db, settings, self.metrics, clock)
        self.tick_no = 0
        self._pool = cf.ThreadPoolExecutor(max_workers=settings.apply_concurrency, thread_name_prefix="apply")
        # The pod listing gets a thread of its own: on the apply pool it would queue behind slow actions
        # from earlier ticks, and the tick (with its lease renewal) would wait for them.
        self._gather_pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gather")
        self._in_flight: dict[str, cf.Future[dict[str, Any]]] = {}
        self._finished_at: dict[str, float] = {}  # action key -> when its last action finished
        # Reentrant: a future already done when its callback is added runs it here, under the lock.
        self._lock = threading.RLock()
        self._catalog = Catalog()
        self._catalog_at = 0.0
        self._problems_logged: dict[str, tuple[float | None, int]] = {}  # problem -> (logged at, repeats)
        # Tasks a worker sat idle beside, kept out of the demand (passed_over): set by an action thread.
        self._passed_over: passed_over.PassedOver | None = None
        self._foreign = ForeignWatch()
        self._closed = False

    # -- the lease ----------------------------------------------------------------------------------

    @property
    def token(self) -> int | None:
        return self.lease.token

    @token.setter
    def token(self, value: int | None) -> None:
        self.lease.token = value

    def _ensure_lease(self) -> int | None:
        """Acquire or renew the lease; the token while we lead, None while another process does."""
        token, fresh = self.lease.ensure()
        if token is not None and fresh:
            self._publish_attempt_limit(token)
        return token

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

    # -- gather -------------------------------------------------------------------------------------

    def _refresh_catalog(self) -> None:
        if self._catalog.prices and self.clock() - self._catalog_at < PRICE_REFRESH_SEC:
            return
        try:
            gpus = self.provider.list_gpu_types()
        except Exception as exc:  # as _list_pods: an unforeseen reply must not crash the tick
            log.warning("prices_unavailable", error_type=type(exc).__name__, error=str(exc)[:300])
            return
        prices: dict[str, float] = {}
        for gpu in gpus:
            price = (
                getattr(gpu, "secure_price", None)
                or getattr(gpu, "price", None)
                or getattr(gpu, "lowest_price", None)
            )
            name = getattr(gpu, "display_name", None)
            if name and isinstance(price, int | float) and price > 0:
                prices[str(name)] = float(price)
        if prices:
            self._catalog = Catalog(prices, self._catalog.data_centers)
            self._catalog_at = self.clock()
        # Refreshed with the prices (both change rarely).
        try:
            volumes = self.provider.spawn_volumes()
        except Exception as exc:
            log.warning("volumes_unavailable", error_type=type(exc).__name__, error=str(exc)[:300])
            return
        centers = [str(v.data_center) for v in volumes if getattr(v, "data_center", None)]
        self._catalog = Catalog(self._catalog.prices, tuple(dict.fromkeys(centers)))

    def _list_pods(self) -> list[PodView] | None:
        try:
            pods = self.provider.list_pods()
        except Exception as exc:
            # Not only the client's typed errors: a reply shaped in a way its parser did not foresee
            # raises whatever Python raises (a TypeError iterating a number), and a tick that crashed
            # on it would end nothing, on every tick while the reply lasts. Unknown is what it is.
            log.warning("pods_listing_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            self._listed = {}
            return None
        # This tick's boot checks read their pod from here instead of asking for it again: one GET per
        # booting worker per tick spent Runpod's rate limit (its example: 60 a minute) on what the
        # listing had just said.
        self._listed = {p.id: p for p in pods if isinstance(getattr(p, "id", None), str)}
        views: list[PodView] = []
        for pod in pods:
            try:
                views.append(PodView.from_pod(pod))
            except Exception as exc:  # one malformed pod must not blind the tick to the others
                log.warning("pod_unreadable", error=str(exc)[:200], pod=repr(pod)[:200])
                pid = getattr(pod, "id", None)
                if isinstance(pid, str) and pid:
                    # Kept as "still coming up", as the client keeps an entry it cannot parse: dropped, it
                    # read as gone, and its row was closed while the pod billed on, then seen by no sweep.
                    name = getattr(pod, "name", "")
                    views.append(
                        PodView(
                            pid, name if isinstance(name, str) else "", PodStatus.PROVISIONING, known=False
                        )
                    )
        return views

    def gather(self) -> Gathered:
        """One snapshot call and one pod listing, concurrently, with the catalog they are judged by."""
        read_at = time.monotonic()
        pods_future = self._gather_pool.submit(self._list_pods)
        try:
            raw = self.db.snapshot(self.settings.worker_id_prefix)
        finally:
            pods = pods_future.result()
        snapshot = Snapshot.from_json(raw)
        self._log_problems(snapshot.problems)
        try:
            self._refresh_catalog()
        except Exception as exc:  # the last catalog serves: prices change rarely
            log.warning("catalog_refresh_failed", error_type=type(exc).__name__, error=str(exc)[:300])
        return Gathered(snapshot, pods, self._catalog, read_at)

    def _log_problems(self, problems: Sequence[str]) -> None:
        """Each problem of the snapshot once, then again hourly with how often it recurred: a bad row
        is read every tick, and a line per tick per row buried every other line of the log."""
        now = self.clock()
        for problem in problems:
            last, repeats = self._problems_logged.get(problem, (None, 0))
            if last is not None and now - last < PROBLEM_REPEAT_SEC:
                self._problems_logged[problem] = (last, repeats + 1)
                continue
            self._problems_logged[problem] = (now, 0)
            about = _PROBLEM_WORKER.match(problem)
            log.warning(
                "snapshot_row_skipped",
                problem=problem,
                worker_id=about.group(1) if about else None,
                repeats_since_last=repeats,
            )
        if len(self._problems_logged) > 10_000:  # rows come and go: forget the oldest
            for key in sorted(self._problems_logged, key=lambda k: self._problems_logged[k][0] or 0)[:5_000]:
                del self._problems_logged[key]

    def decide(self, gathered: Gathered) -> Plan:
        """The pure policy on what gather returned, its queue narrowed by the tasks set aside."""
        snapshot, catalog = self._narrowed(gathered.snapshot), gathered.catalog
        now = snapshot.now or datetime.now(UTC)
        return policy.plan(
            snapshot,
            gathered.pods,
            self.settings,
            now,
            prices=catalog.prices,
            data_centers=catalog.data_centers,
        )

    def _narrowed(self, snapshot: Snapshot) -> Snapshot:
        with self._lock:
            passed = self._passed_over
        if passed is None:
            return snapshot
        narrowed, ended = passed_over.narrow(snapshot, passed)
        if ended is not None:
            with self._lock:
                if self._passed_over is passed:
                    self._passed_over = None
            log.info("tasks_set_aside_ended", why=ended, **passed.to_log())
        return narrowed

    def _note_passed_over(self, action: Action) -> None:
        """After a drain for ``idle_while_tasks_waited``: noted, and set aside from the demand when a
        second worker passed over the same tasks."""
        metadata = getattr(action, "metadata", {})
        # The ages in it are the snapshot's, taken at its `now` (drained_at), not when the action ended.
        try:
            at = datetime.fromisoformat(str(metadata.get(Meta.DRAINED_AT)))
        except ValueError:
            at = datetime.fromtimestamp(self._db_clock(), UTC)
        with self._lock:
            previous = self._passed_over
            passed = passed_over.note(metadata.get(Meta.UNCLAIMED), at, previous)
            if passed is None:
                return
            self._passed_over = passed
        if passed.confirmed and not (previous is not None and previous.confirmed):
            log.warning("tasks_set_aside", worker_id=getattr(action, "worker_id", None), **passed.to_log())

    def dry_run(self) -> tuple[Snapshot, list[PodView] | None, Plan]:
        """What a tick would decide now, changing nothing (``orchestrator plan``)."""
        gathered = self.gather()
        return gathered.snapshot, gathered.pods, self.decide(gathered)

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
            gathered = self.gather()
        except errors.OrchestratorError as exc:
            log.error("tick_failed", step="gather", error_type=type(exc).__name__, error=str(exc)[:500])
            self.metrics.observe_tick_failure("gather")
            return TickResult("failed", {"error": str(exc)[:500]})
        snapshot, pods = gathered.snapshot, gathered.pods
        if snapshot.now is not None:
            self._clock_offset = snapshot.now.timestamp() - self.clock()
        self._foreign.lead(token, snapshot.now)
        foreign = self._foreign.check(snapshot)
        if foreign:
            log.warning(
                "foreign_workers",
                worker_ids=foreign[:20],
                count=len(foreign),
                prefix=self.settings.worker_id_prefix,
                hint="rows with this prefix created while this process leads, not by it: another "
                "orchestrator (the old one?) is running on the same prefix and the two will fight over "
                "the fleet; stop it, or give this one another WORKER_ID_PREFIX",
            )
        plan = self.decide(gathered)
        outcomes = self.apply(plan.actions, snapshot, token, read_at=gathered.read_at)
        summary = self.recorder.record(
            self.tick_no, snapshot, pods, plan, outcomes, time.monotonic() - started, self.token
        )
        if not self.recorder.prune_events(token):
            self.token = None
        return TickResult("leader", summary, plan, snapshot, outcomes)

    # -- apply --------------------------------------------------------------------------------------

    def apply(
        self, actions: Sequence[Action], snapshot: Snapshot, token: int, *, read_at: float | None = None
    ) -> list[dict[str, Any]]:
        """Run the plan's actions, one in flight per worker (or pod).

        An action of an earlier tick that finished after this tick's snapshot was read (``read_at``)
        may have moved its worker on: this tick's decision about that worker was made on what the row
        said before, so it is dropped (``stale``) and the next tick decides again (None: not checked). Without this, an
        initialization still starting the worker process while the snapshot was read left a row with
        ``initialized_at`` and no ``process_started_at``, and the tick, applying after the start had
        finished, started a second worker process on the pod.
        """
        workers = {w.id: w for w in snapshot.workers}
        submitted: list[cf.Future[dict[str, Any]]] = []
        skipped: list[dict[str, Any]] = []
        with self._lock:
            for key in [k for k, f in self._in_flight.items() if f.done()]:
                del self._in_flight[key]
            if read_at is not None:
                for key in [k for k, at in self._finished_at.items() if at < read_at]:
                    del self._finished_at[key]  # older than this snapshot: it shows their effects
            for action in actions:
                key = executor.action_key(action)
                if key in self._in_flight:
                    skipped.append({"kind": action.kind, "key": key, "outcome": "in_flight"})
                    continue
                if read_at is not None and self._finished_at.get(key, float("-inf")) >= read_at:
                    skipped.append({"kind": action.kind, "key": key, "outcome": "stale"})
                    continue
                if isinstance(action, Spawn):
                    self._foreign.spawned(action.worker_id)
                future = self._pool.submit(self._run_action, action, workers, token)
                future.add_done_callback(functools.partial(self._mark_finished, key))
                self._in_flight[key] = future
                submitted.append(future)
        done, _pending = cf.wait(submitted, timeout=self.apply_budget_sec)
        outcomes = [self._outcome_of(f) for f in done]
        outcomes += [{"kind": "pending", "outcome": "in_flight"} for _ in _pending]
        return outcomes + skipped

    def _mark_finished(self, key: str, _future: object = None) -> None:
        with self._lock:
            self._finished_at[key] = time.monotonic()

    @staticmethod
    def _outcome_of(future: cf.Future[dict[str, Any]]) -> dict[str, Any]:
        try:
            return future.result()
        except Exception as exc:  # _run_action catches everything; this is the belt to its braces
            log.exception("action_crashed", action="unknown")
            return {"kind": "unknown", "outcome": "crashed", "error": repr(exc)[:500]}

    def effects(self, token: int) -> LiveEffects:
        """The executor's effects for one action: the real database and provider, fenced by ``token``."""
        return LiveEffects(
            db=self.db,
            provider=self.provider,
            token=token,
            holder=self.holder,
            fence_call=self.lease.fence,
            metrics=self.metrics,
            max_task_attempts=self.settings.max_task_attempts,
            worker_env=self.worker_env,
            clock=self._db_clock,
            listed_pods=self._listed,
        )

    def _db_clock(self) -> float:
        """Now by the database's clock: ours plus the offset the last snapshot showed. The times actions
        stamp (``pod_terminate_requested_at``, ``pod_stop_requested_at``, ...) are compared with the
        snapshot's ``now`` by later ticks; stamped by a host clock an hour fast, a termination Runpod did
        not take was not asked again for an hour."""
        return self.clock() + self._clock_offset

    def _run_action(self, action: Action, workers: Mapping[str, Worker], token: int) -> dict[str, Any]:
        worker_id = getattr(action, "worker_id", None)
        runpod_id = getattr(action, "runpod_id", None)
        bound = structlog.contextvars.bound_contextvars(worker_id=worker_id, runpod_id=runpod_id)
        with bound:
            try:
                result = run_now(executor.run(action, workers.get(worker_id or ""), self.effects(token)))
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
                log.warning(
                    "action_failed", action=action.kind, error_type=type(exc).__name__, error=str(exc)[:500]
                )
                outcome, result = "failed", {"error": str(exc)[:500]}
            except Exception as exc:  # a bug in one action must not take the loop down
                log.exception("action_crashed", action=action.kind)
                outcome, result = "crashed", {"error": repr(exc)[:500]}
            if outcome == "ok" and result.get("skipped_steps"):
                outcome = "partial"  # its ending happened; something around it did not (action_step_failed)
            if outcome == "ok" and action.reason is Reason.UNCLAIMED_WORK:
                try:
                    self._note_passed_over(action)
                except Exception:  # a bookkeeping fault must not lose the outcome
                    log.exception("passed_over_not_noted", action=action.kind)
            try:
                self.metrics.actions.labels(kind=action.kind, outcome=outcome).inc()
            except Exception:  # a metrics fault must not lose the outcome
                log.exception("metrics_failed", action=action.kind)
            return {
                "kind": action.kind,
                "reason": action.reason.value,
                "worker_id": worker_id,
                "outcome": outcome,
                **result,
            }

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
        self.lease.release()
