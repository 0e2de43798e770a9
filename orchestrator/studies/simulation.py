"""Discrete-event simulator in virtual time: the real ``plan()`` against a simulated fleet (issue 7).

Where this sits: beside the emulator (``orchestrator.standins.emulator``, real HTTP and sshd, wall-clock
time), this module trades fidelity of the wire for speed: a day of virtual time runs in seconds, so
``bench/policy.py`` can compare policies on whole-day traces and ``orchestrator.studies.chaos`` can soak
the control loop for 24 virtual hours. What it keeps exact is what the policy sees and what its
actions do:

* :class:`SimDB` reproduces, in memory, the semantics of the SQL the executor and the workers reach
  (``migrations/``, ``docs/database.md``): the transition table, the idempotent same-state move,
  ``boot_outcome`` written on the first move out of a booting state, ``draining -> terminating``
  refused while the worker holds a task; the app's claim behind the guard on ``tasks`` (a task moves
  to In Progress only for a worker in a claiming state; oldest claimable first); the app's heartbeat
  function behind the guard on ``workers`` (``last_heartbeat`` on every row but a terminated one, the
  status never changed: a non-``active`` status is kept as ``reported_status``, and ``crashed``
  requeues the worker's tasks with the attempt counted, as the app's function does); the requeue
  (attempt counted, dead-lettered at ``MAX_TASK_ATTEMPTS``), and the snapshot (built straight into
  :class:`~orchestrator.core.observed.Snapshot`, the same fields ``orch_snapshot`` returns, ``recent_boots``
  and ``reported_*`` included). Promotion is the policy's :class:`~orchestrator.core.observed.Promote`,
  applied at the first tick after a heartbeat that follows ``process_started_at``.
* :class:`SimProvider` is Runpod as the policy sees it: pods that boot in a time drawn from a
  distribution (cached image about 30 s, cold about 165 s for a 16 GB image, as users measure Runpod), per-second
  billing, a capacity limit, and injected failures (pods that never boot, 5xx/429 bursts that fail
  listing and creation, SSH failures during initialization).
* :class:`SimWorker` is the worker process and its heartbeat guardian (Reigh-Worker's
  ``heartbeat_guardian.py``: a separate process beating every 20 s): it polls for a task every 10 s
  when idle and 1 s after a task (``worker.py``'s ``--poll-interval`` default and its pause after a
  task), runs one task at a time for the trace's duration; it can crash (the process dies, the task
  is left In Progress, and the guardian's next beat says ``crashed``) or hang (the task never ends,
  heartbeats go on).
* :class:`SimExecutor` applies the real :mod:`orchestrator.core.observed` actions step by step, the way
  ``orchestrator/loop/controller.py`` does (same calls, same order, same error handling), each step after
  a latency; an action whose worker (or pod) has one in flight is skipped, as the controller does.
* :class:`Simulation` ticks every ``ORCHESTRATOR_POLL_SEC`` (and at once on a new task when the
  policy's transport listens, like the Postgres adapter's LISTEN/NOTIFY), can restart the
  orchestrator (in-flight steps are lost, nothing in memory survives, the new process waits for the
  old lease to expire), and checks the invariants every tick (:class:`Invariants`).

Everything random comes from one seeded ``random.Random`` per concern, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import math
import random
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core import errors
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
    Spawn,
    StartProcess,
    TerminatePod,
)
from orchestrator.core.config import Settings
from orchestrator.core.observed import BootOutcome, PodView, Queue, Snapshot, Worker
from orchestrator.core.states import Meta, PodStatus, Reason, WorkerState
from orchestrator.studies.traces import Trace

EPOCH = datetime(2026, 11, 2, tzinfo=UTC)  # virtual t=0 (a Monday, midnight UTC)
GPU = "NVIDIA GeForce RTX 4090"
GPU_PRICE = 0.59  # USD/h, secure cloud, the emulator's catalog (third-party listings: ~0.60)
PRICES: Mapping[str, float] = {GPU: GPU_PRICE}

PlanFn = Callable[..., Plan]
"""``plan(snapshot, pods, settings, now, *, prices) -> Plan``: the real one or a competitor."""

# The SQL transition table (migrations/*_schema.sql, orchestrator_worker_transitions).
TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("spawning", "initializing"), ("spawning", "terminating"), ("spawning", "error"), ("spawning", "terminated"),
        ("initializing", "active"), ("initializing", "terminating"), ("initializing", "error"),
        ("initializing", "terminated"),
        ("active", "draining"), ("active", "terminating"), ("active", "error"), ("active", "terminated"),
        ("draining", "active"), ("draining", "terminating"), ("draining", "error"), ("draining", "terminated"),
        ("terminating", "error"), ("terminating", "terminated"),
        ("error", "terminated"),
    }
)
BOOTING = ("spawning", "initializing")


def at(t: float) -> datetime:
    """Virtual seconds -> the datetime the policy sees."""
    return EPOCH + timedelta(seconds=t)


def iso(t: float) -> str:
    return at(t).isoformat()


# --- the event loop --------------------------------------------------------------------------------


class Clock:
    """A virtual clock and its event heap. ``schedule`` returns nothing: cancellation is by epoch."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = 0

    def schedule(self, delay: float, fn: Callable[[], object]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + max(0.0, delay), self._seq, fn))

    def run_until(self, end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end:
            t, _seq, fn = heapq.heappop(heap)
            self.now = t
            fn()
        self.now = end


# --- the database ----------------------------------------------------------------------------------


@dataclass
class TaskRow:
    id: str
    task_type: str
    created_at: float
    duration: float
    status: str = "Queued"
    attempts: int = 0
    worker_id: str | None = None
    started_at: float | None = None
    processed_at: float | None = None
    first_started_at: float | None = None
    error_message: str | None = None


@dataclass
class WorkerRow:
    id: str
    instance_type: str | None
    status: str
    created_at: float
    status_changed_at: float
    metadata: dict[str, Any]
    activated_at: float | None = None
    last_heartbeat: float | None = None
    status_reason: str | None = None
    boot_outcome: str | None = None
    boot_outcome_at: float | None = None
    reported_status: str | None = None
    reported_at: float | None = None


class SimDB:
    """The SQL functions of ``docs/database.md``, in memory, with the same semantics.

    Times are virtual seconds; metadata timestamps are ISO strings as the executor writes them.
    """

    def __init__(self, clock: Clock, max_attempts: int = 3) -> None:
        self.clock = clock
        self.max_attempts = max_attempts
        self.tasks: dict[str, TaskRow] = {}
        self.workers: dict[str, WorkerRow] = {}
        # Indexes kept beside ``workers`` so a snapshot costs the live fleet, not every row ever made
        # (a week of traffic creates thousands of terminated rows).
        self._live: dict[str, WorkerRow] = {}
        self._boots: list[WorkerRow] = []  # in boot_outcome_at order (the clock only moves forward)
        self._order: dict[str, int] = {}  # creation order, the tie-break of equal outcome times
        self._boot_views: dict[str, BootOutcome] = {}
        self._queued: list[tuple[float, str]] = []  # heap of (created_at, id); lazy deletion
        self.claimable = 0
        self.running: dict[str, set[str]] = {}  # worker id -> In Progress task ids
        self.running_total = 0  # sum of the sets' sizes, kept so a snapshot need not add them up
        self.last_completion: dict[str, float] = {}
        self.on_queued: Callable[[], None] | None = None  # the NOTIFY trigger

    # -- tasks ------------------------------------------------------------------------------------

    def insert_task(self, task_id: str, task_type: str, duration: float) -> TaskRow:
        row = TaskRow(task_id, task_type, self.clock.now, duration)
        self.tasks[task_id] = row
        self._enqueue(row)
        return row

    def _enqueue(self, row: TaskRow) -> None:
        heapq.heappush(self._queued, (row.created_at, row.id))
        self.claimable += 1
        if self.on_queued is not None:
            self.on_queued()

    def _oldest_queued(self) -> TaskRow | None:
        while self._queued:
            _created, task_id = self._queued[0]
            row = self.tasks[task_id]
            if row.status == "Queued":
                return row
            heapq.heappop(self._queued)
        return None

    def claim(self, worker_id: str) -> TaskRow | None:
        """The app's claim (``claim-next-task``): the oldest claimable task, for a worker in a claiming
        state only (the guard on ``tasks`` makes the claim fail for any other managed row; the worker
        sees no task and polls again)."""
        w = self.workers.get(worker_id)
        if w is None:
            # tasks.worker_id references workers(id): the claim fails (HTTP 500); nothing claimed.
            raise errors.NotFound("claim_next_task_service_role", f'unknown worker "{worker_id}"', code="23503")
        if w.status not in ("initializing", "active"):
            return None
        row = self._oldest_queued()
        if row is None:
            return None
        heapq.heappop(self._queued)
        self.claimable -= 1
        now = self.clock.now
        row.status, row.worker_id, row.started_at = "In Progress", worker_id, now
        if row.first_started_at is None:
            row.first_started_at = now
        self.running.setdefault(worker_id, set()).add(row.id)
        self.running_total += 1
        return row

    def complete(self, worker_id: str, task_id: str) -> bool:
        """``complete_task``: only while In Progress; the Edge Function does not check the worker, so a
        late report completes the task for whichever worker holds it now."""
        row = self.tasks[task_id]
        if row.status != "In Progress" or row.worker_id is None:
            return False
        holder = row.worker_id
        row.status, row.processed_at = "Complete", self.clock.now
        ids = self.running[holder]  # In Progress under its holder: it is in the set
        ids.discard(task_id)
        if not ids:
            del self.running[holder]  # only workers with work stay: the invariants walk this each tick
        self.running_total -= 1
        self.last_completion[holder] = self.clock.now
        return True

    def requeue_worker_tasks(self, worker_id: str, reason: str, max_attempts: int | None = None) -> dict[str, list[str]]:
        """``orch_requeue_worker_tasks``: every In Progress task, attempt counted, dead-lettered at the limit."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        ids = sorted(self.running.pop(worker_id, set()))
        if worker_id not in self.workers and not ids:
            raise errors.NotFound("orch_requeue_worker_tasks", f'unknown worker "{worker_id}"', code="OR003")
        requeued: list[str] = []
        failed: list[str] = []
        for task_id in ids:
            row = self.tasks[task_id]
            row.attempts += 1
            self.running_total -= 1
            if row.attempts >= limit:
                row.status, row.processed_at = "Failed", self.clock.now
                row.error_message = f"dead-lettered: attempt {row.attempts} of {limit} ended when worker {worker_id} was requeued: {reason}"
                failed.append(task_id)
            else:
                row.status, row.worker_id, row.started_at = "Queued", None, None
                row.error_message = f"requeued from worker {worker_id} (attempt {row.attempts} of {limit}): {reason}"
                requeued.append(task_id)
                self._enqueue(row)
        return {"requeued": requeued, "failed": failed}

    # -- workers ----------------------------------------------------------------------------------

    def register_worker(self, worker_id: str, instance_type: str | None, metadata: Mapping[str, Any]) -> WorkerRow:
        if worker_id in self.workers:
            raise errors.Conflict("orch_register_worker", f'worker "{worker_id}" already exists', code="23505")
        now = self.clock.now
        row = WorkerRow(worker_id, instance_type, "spawning", now, now, dict(metadata))
        self.workers[worker_id] = row
        self._live[worker_id] = row
        self._order[worker_id] = len(self._order)
        return row

    def _lock(self, worker_id: str, function: str) -> WorkerRow:
        row = self.workers.get(worker_id)
        if row is None:
            raise errors.NotFound(function, f'unknown worker "{worker_id}"', code="OR003")
        return row

    def transition_worker(
        self, worker_id: str, to: str, reason: str | None, metadata: Mapping[str, Any] | None = None
    ) -> WorkerRow:
        """``orch_transition_worker``: guarded by the table; a move to the current state is a no-op."""
        w = self._lock(worker_id, "orch_transition_worker")
        frm = w.status
        if frm == to:
            return w
        if (frm, to) not in TRANSITIONS:
            raise errors.IllegalTransition(
                "orch_transition_worker", f'illegal transition for worker "{worker_id}": {frm} -> {to}', code="OR002"
            )
        if frm == "draining" and to == "terminating" and self.running.get(worker_id):
            # The real worker keeps claiming after a drain until the guard refuses it: a claim that
            # won the race holds a task, so the pod must not go.
            raise errors.IllegalTransition(
                "orch_transition_worker", f'worker "{worker_id}" holds an In Progress task', code="OR002"
            )
        now = self.clock.now
        w.status, w.status_changed_at, w.status_reason = to, now, reason
        if to == "active" and w.activated_at is None:
            w.activated_at = now
        if to == "terminated":
            self._live.pop(worker_id, None)
        if w.boot_outcome_at is None:
            if to == "active":
                w.boot_outcome, w.boot_outcome_at = "activated", now
            elif frm in BOOTING and to not in BOOTING:
                w.boot_outcome, w.boot_outcome_at = reason or to, now
            if w.boot_outcome_at is not None:
                self._boots.append(w)
        w.metadata.update(metadata or {})
        return w

    def merge_worker_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> WorkerRow:
        w = self._lock(worker_id, "orch_merge_worker_metadata")
        w.metadata.update(metadata)
        return w

    def heartbeat(self, worker_id: str, status: str = "active") -> dict[str, Any]:
        """``func_worker_heartbeat_with_logs`` (the app's) behind the guard trigger on ``workers``.

        ``last_heartbeat`` on every row but a terminated one; the status itself is the orchestrator's,
        so a non-``active`` status is only recorded as ``reported_status``. ``crashed`` also requeues
        the worker's In Progress tasks with the attempt counted (dead-lettered at the limit), as the
        app's function does.
        """
        w = self._lock(worker_id, "func_worker_heartbeat_with_logs")
        now = self.clock.now
        if w.status != "terminated":
            w.last_heartbeat = now
            # The guard cannot tell a status written unchanged from one not written: a word equal to
            # our state is not recorded.
            if status not in ("active", w.status):
                w.reported_status, w.reported_at = status, now
        crash: dict[str, list[str]] = {"requeued": [], "failed": []}
        if status == "crashed":
            crash = self.requeue_worker_tasks(worker_id, "worker crashed (heartbeat guardian)")
        return {
            "success": True,
            "heartbeat_updated": w.status != "terminated",
            "crash_requeued_tasks": len(crash["requeued"]),
            "crash_failed_tasks": len(crash["failed"]),
        }

    # -- the one read -----------------------------------------------------------------------------

    def snapshot(self, prefix: str | None = None) -> Snapshot:
        """``orch_snapshot``, built straight into the model (same fields, same derivations)."""
        now = self.clock.now
        workers: list[Worker] = []
        running_total = self.running_total
        for w in self._live.values():
            ids = self.running.get(w.id, set())
            if prefix and not w.id.startswith(prefix):
                continue
            tasks = sorted((self.tasks[i] for i in ids), key=lambda r: (r.started_at or 0.0, r.id))
            stuckable = [r.started_at for r in tasks if "_orchestrator" not in r.task_type and r.started_at is not None]
            last = self.last_completion.get(w.id)
            workers.append(
                Worker(
                    id=w.id,
                    status=WorkerState(w.status),
                    instance_type=w.instance_type,
                    created_at=at(w.created_at),
                    status_changed_at=at(w.status_changed_at),
                    activated_at=at(w.activated_at) if w.activated_at is not None else None,
                    last_heartbeat=at(w.last_heartbeat) if w.last_heartbeat is not None else None,
                    metadata=dict(w.metadata),
                    running_task_ids=tuple(r.id for r in tasks),
                    running_count=len(tasks),
                    oldest_running_started_at=at(tasks[0].started_at) if tasks and tasks[0].started_at is not None else None,
                    oldest_stuckable_started_at=at(min(stuckable)) if stuckable else None,
                    last_completion_at=at(last) if last is not None else None,
                    reported_status=w.reported_status,
                    reported_at=at(w.reported_at) if w.reported_at is not None else None,
                )
            )
        workers.sort(key=lambda x: (x.created_at, x.id))
        # The 50 newest outcomes, newest first (ties in creation order, as a stable sort of the table
        # would give): walk back from the newest, keeping everything tied with the 50th.
        tail: list[WorkerRow] = []
        for w in reversed(self._boots):
            if prefix and not w.id.startswith(prefix):
                continue
            if len(tail) >= 50 and w.boot_outcome_at != tail[-1].boot_outcome_at:
                break
            tail.append(w)
        tail.sort(key=lambda w: self._order[w.id])
        boots = sorted(tail, key=lambda w: w.boot_outcome_at or 0.0, reverse=True)[:50]
        oldest = self._oldest_queued()
        return Snapshot(
            now=at(now),
            paused=False,
            queue=Queue(
                claimable=self.claimable,
                queued_total=self.claimable,
                oldest_claimable_age_sec=round(now - oldest.created_at, 3) if oldest else None,
                running=running_total,
            ),
            workers=tuple(workers),
            recent_boots=tuple(self._boot_view(w) for w in boots),
        )

    def _boot_view(self, w: WorkerRow) -> BootOutcome:
        # Built once per worker (an outcome never changes; the metadata it names rarely does): the
        # same 50 outcomes are in every snapshot, tens of thousands of times a simulated day.
        gpu, dc = w.metadata.get(Meta.GPU_TYPE) or w.instance_type, w.metadata.get(Meta.DATA_CENTER)
        cached = self._boot_views.get(w.id)
        if cached is not None and cached.gpu_type == gpu and cached.data_center == dc:
            return cached
        view = BootOutcome(
            worker_id=w.id, gpu_type=gpu, data_center=dc, ok=w.boot_outcome == "activated",
            reason=w.boot_outcome, at=at(w.boot_outcome_at or 0.0),
        )
        self._boot_views[w.id] = view
        return view

    def live_workers(self) -> list[WorkerRow]:
        return list(self._live.values())


# --- the provider ----------------------------------------------------------------------------------


@dataclass
class BootModel:
    """How long pods take, in virtual seconds (measured by users: cached ~30 s, cold ~165-170 s for a 16 GB image)."""

    cached_share: float = 0.6
    cached_median: float = 30.0
    cold_median: float = 165.0
    sigma: float = 0.2  # lognormal spread
    create_latency: float = 2.0  # the create call's round trip
    api_latency: float = 0.5  # terminate, status
    ssh_checks: float = 12.0  # the seed's initialization checks over SSH
    start_latency: float = 3.0  # the start command over SSH
    process_warmup: float = 15.0  # start -> first heartbeat (imports, model load)

    def draw(self, rng: random.Random) -> float:
        median = self.cached_median if rng.random() < self.cached_share else self.cold_median
        return median * rng.lognormvariate(0.0, self.sigma)


@dataclass
class Faults:
    """Injected failures; all zero for the policy benchmark, set for the chaos soak."""

    never_boot: float = 0.0  # share of pods that stay PROVISIONING for ever
    ssh_flaky: float = 0.0  # share of initialization attempts where SSH does not answer yet
    init_fail: float = 0.0  # share of initializations whose checks fail (init_failed)
    crash_per_hour: float = 0.0  # worker process crashes, per process-hour
    hang: float = 0.0  # share of claimed tasks that hang (the task never ends, heartbeats go on)
    # (start, end, HTTP status): 5xx and 429 fail every call; 409 makes creations find no capacity.
    outages: tuple[tuple[float, float, int], ...] = ()
    ghost_create: float = 0.0  # share of creations failing with a 5xx whose pod was created all the same
    stray_pods_per_hour: float = 0.0  # pods with our prefix and no row (another deployment's leftovers)


@dataclass
class SimPod:
    id: str
    name: str
    gpu: str
    cost_per_hr: float
    created_at: float
    ready_at: float | None  # RUNNING with SSH published from then; None = never boots
    terminated_at: float | None = None
    process: SimWorker | None = None

    @property
    def alive(self) -> bool:
        return self.terminated_at is None

    def status(self, now: float) -> PodStatus:
        if not self.alive:
            return PodStatus.TERMINATED
        if self.ready_at is not None and now >= self.ready_at:
            return PodStatus.RUNNING
        return PodStatus.PROVISIONING

    def view(self, now: float) -> PodView:
        status = self.status(now)
        return PodView(
            id=self.id,
            name=self.name,
            status=status,
            ssh_ready=status is PodStatus.RUNNING,
            cost_per_hr=self.cost_per_hr,
            created_at=at(self.created_at),
            gpu_type=self.gpu,
            data_center="EU-RO-1",
        )


class SimProvider:
    """Runpod as the policy sees it: listing, creation, termination, boot, billing, failures."""

    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        boot: BootModel,
        faults: Faults,
        capacity: int = 24,
        prices: Mapping[str, float] = PRICES,
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.boot = boot
        self.faults = faults
        self.capacity = capacity
        self.prices = dict(prices)
        self.pods: dict[str, SimPod] = {}
        self._alive: dict[str, SimPod] = {}
        self._n = 0
        self.on_create: Callable[[SimPod], None] | None = None
        self.on_terminate: Callable[[SimPod], None] | None = None

    def outage(self) -> int | None:
        now = self.clock.now
        for start, end, status in self.faults.outages:
            if start <= now < end:
                return status
        return None

    def api_down(self) -> bool:
        """The API fails every call now (a 409 window only refuses creations for lack of capacity)."""
        status = self.outage()
        return status is not None and status != 409

    def _check_api(self, call: str) -> None:
        status = self.outage()
        if status is None or (status == 409 and call != "create_pod"):
            return
        if status == 409:
            raise errors.RunpodCapacityError(f"{call}: no instances available", status=409)
        if status == 429:
            raise errors.RunpodRateLimited(f"{call}: 429 Too Many Requests", retry_after=30.0, status=429)
        if status is not None:
            raise errors.RunpodTransientError(f"{call}: HTTP {status}", status=status)

    def list_pods(self) -> list[PodView]:
        self._check_api("list_pods")
        now = self.clock.now
        # Terminated pods drop out of the listing, as on the real service.
        return [p.view(now) for p in self._alive.values()]

    def alive_pods(self) -> list[SimPod]:
        return list(self._alive.values())

    def create(self, name: str, gpu_types: Sequence[str]) -> SimPod:
        try:
            self._check_api("create_pod")
        except errors.RunpodTransientError:
            if self.rng.random() < self.faults.ghost_create and len(self._alive) < self.capacity:
                self._make(name, gpu_types[0])  # the provider did it; the answer was lost
            raise
        if len(self._alive) >= self.capacity:
            raise errors.RunpodCapacityError(f"no {gpu_types[0]} available", status=409)
        return self._make(name, gpu_types[0])

    def _make(self, name: str, gpu: str, *, ours: bool = True) -> SimPod:
        self._n += 1
        now = self.clock.now
        never = self.rng.random() < self.faults.never_boot
        boot = self.boot.draw(self.rng)
        pod = SimPod(
            id=f"pod{self._n:05d}",
            name=name,
            gpu=gpu,
            cost_per_hr=self.prices.get(gpu, GPU_PRICE),
            created_at=now,
            ready_at=None if never else now + boot,
        )
        self.pods[pod.id] = pod
        self._alive[pod.id] = pod
        if ours and self.on_create is not None:
            self.on_create(pod)  # the ceilings bind this orchestrator's creations, not a stranger's
        return pod

    def terminate(self, pod_id: str) -> bool:
        """True when the provider confirms the pod gone (an unknown pod is gone); False on an API error."""
        try:
            self._check_api("terminate_pod")
        except errors.RunpodError:
            return False  # RunpodClient.terminate_worker logs and returns False
        pod = self._alive.pop(pod_id, None)
        if pod is not None:
            pod.terminated_at = self.clock.now
            if pod.process is not None:
                pod.process.kill()
            if self.on_terminate is not None:
                self.on_terminate(pod)
        return True

    def billed_seconds(self, until: float) -> float:
        return sum(max(0.0, min(p.terminated_at if p.terminated_at is not None else until, until) - p.created_at) for p in self.pods.values())

    def cost(self, until: float) -> float:
        return sum(
            max(0.0, min(p.terminated_at if p.terminated_at is not None else until, until) - p.created_at) * p.cost_per_hr / 3600.0
            for p in self.pods.values()
        )


# --- the worker process ----------------------------------------------------------------------------


class SimWorker:
    """A Reigh worker process on one pod, with its heartbeat guardian.

    Modelled on banodoco/Reigh-Worker ``worker.py`` and ``heartbeat_guardian.py``: the guardian is a
    separate process that beats every 20 s whatever the worker does; the worker polls every
    ``--poll-interval`` (10 s) while idle and 1 s after finishing a task. A crash kills the worker
    process only: the guardian's next check finds it gone and sends one ``crashed`` beat. A pod
    termination kills both, silently.
    """

    HEARTBEAT_SEC = 20.0
    CLAIM_POLL_SEC = 10.0
    AFTER_TASK_SEC = 1.0

    def __init__(self, sim: Simulation, pod: SimPod, worker_id: str) -> None:
        self.sim = sim
        self.pod = pod
        self.worker_id = worker_id
        self.alive = True
        self.guardian_alive = True
        self.hung = False
        self.task: TaskRow | None = None
        self.started = sim.clock.now
        warmup = sim.boot.process_warmup * sim.rng_workers.uniform(0.7, 1.3)
        sim.clock.schedule(warmup, self._heartbeat)
        sim.clock.schedule(warmup + 0.5, self._claim)
        if sim.faults.crash_per_hour > 0:
            sim.clock.schedule(sim.rng_workers.expovariate(sim.faults.crash_per_hour / 3600.0), self.crash)

    @property
    def executing(self) -> bool:
        """Able to finish (and so to write the result of) the task it holds."""
        return self.alive and not self.hung and self.pod.alive and self.task is not None

    def kill(self) -> None:
        """The pod is gone: the worker and its guardian with it."""
        self.guardian_alive = False
        if self.alive:
            self.alive = False
            self.sim.on_worker_gone(self)

    def crash(self) -> None:
        """The worker process dies (a segfault, an OOM kill); its guardian lives on."""
        if self.alive:
            self.sim.counters["worker_crashes"] += 1
            self.alive = False
            self.sim.on_worker_gone(self)

    def _heartbeat(self) -> None:
        if not self.guardian_alive:
            return
        status = "active" if self.alive else "crashed"
        with contextlib.suppress(errors.NotFound):  # a row deleted under it: keep beating, as the real one
            self.sim.db.heartbeat(self.worker_id, status)
        if status == "crashed":
            self.guardian_alive = False  # one last beat, then the guardian exits
            return
        self.sim.clock.schedule(self.HEARTBEAT_SEC, self._heartbeat)

    def _claim(self) -> None:
        if not self.alive or self.task is not None:
            return
        try:
            row = self.sim.db.claim(self.worker_id)
        except errors.NotFound:
            row = None
        if row is None:
            self.sim.clock.schedule(self.CLAIM_POLL_SEC, self._claim)
            return
        self.task = row
        self.sim.on_claim(self, row)
        if self.sim.faults.hang > 0 and self.sim.rng_workers.random() < self.sim.faults.hang:
            self.hung = True
            self.sim.counters["worker_hangs"] += 1
            if "_orchestrator" in row.task_type:
                # A long-running parent is exempt from the stuck timeout: its hang is modelled as the
                # whole machine freezing (guardian included, so no heartbeat), which the heartbeat
                # timeout catches. (A worker frozen alone keeps its guardian beating: nothing would.)
                self.alive = False
                self.guardian_alive = False
            self.sim.on_worker_gone(self)
            return
        self.sim.clock.schedule(row.duration, functools.partial(self._finish, row))

    def _finish(self, task: TaskRow) -> None:
        if not self.alive or self.hung or self.task is not task:
            return
        self.sim.db.complete(self.worker_id, task.id)
        self.sim.on_finish(self, task)
        self.task = None
        self.sim.clock.schedule(self.AFTER_TASK_SEC, self._claim)


# --- the executor ----------------------------------------------------------------------------------

Step = Generator[float, None, dict[str, Any] | None]


class SimExecutor:
    """Applies :mod:`orchestrator.core.observed` actions as ``Controller._do_<kind>`` does, in virtual time."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.epoch = 0
        self.in_flight: dict[str, int] = {}  # key -> epoch that started it
        self.outcomes: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}  # "kind:reason" -> actions started

    @staticmethod
    def key(action: Action) -> str:
        worker = getattr(action, "worker_id", None)
        return f"w:{worker}" if worker else f"p:{getattr(action, 'runpod_id', '')}"

    def restart(self) -> None:
        """The process died: every step not yet run is lost with it."""
        self.epoch += 1
        self.in_flight.clear()

    def apply(self, actions: Iterable[Action]) -> None:
        for action in actions:
            key = self.key(action)
            if key in self.in_flight:
                self._count("in_flight")
                continue
            handler = getattr(self, f"_do_{action.kind}")
            reason = f"{action.kind}:{action.reason.value}"
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
            self.in_flight[key] = self.epoch
            self._step(key, self.epoch, handler(action))

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def _step(self, key: str, epoch: int, gen: Step) -> None:
        if epoch != self.epoch:
            return  # the process that ran this died
        try:
            delay = next(gen)
        except StopIteration:
            self.in_flight.pop(key, None)
            self._count("ok")
            return
        except errors.IllegalTransition:
            self.in_flight.pop(key, None)
            self._count("superseded")
            return
        except errors.OrchestratorError:
            self.in_flight.pop(key, None)
            self._count("failed")
            return
        self.sim.crash_window(delay)
        self.sim.clock.schedule(delay, lambda: self._step(key, epoch, gen))

    # Each _do_<kind> mirrors the controller's, step for step; ``yield d`` = the next call returns d s later.

    def _now(self) -> str:
        return iso(self.sim.clock.now)

    def _do_spawn(self, a: Spawn) -> Step:
        db, provider = self.sim.db, self.sim.provider
        metadata = {**dict(a.metadata), Meta.GPU_TYPES: list(a.gpu_types), Meta.SPAWN_REASON: a.reason.value}
        try:
            db.register_worker(a.worker_id, a.gpu_types[0], metadata)
        except errors.Conflict:
            return None
        latency = self.sim.boot.create_latency
        yield latency / 2  # the request travels; the pod exists before the answer comes back
        try:
            pod = provider.create(a.worker_id, a.gpu_types)
        except errors.RunpodCapacityError as exc:
            self.sim.counters["capacity_misses"] += 1
            misses = [{"gpu_type": g, "data_center": None, "at": self._now()} for g in a.gpu_types]
            db.transition_worker(
                a.worker_id, "error", Reason.SPAWN_NO_CAPACITY.value,
                {Meta.ERROR_REASON: Reason.SPAWN_NO_CAPACITY.value, Meta.ERROR_DETAILS: str(exc), Meta.CAPACITY_MISSES: misses},
            )
            return None
        except errors.RunpodError as exc:
            self.sim.counters["spawn_failures"] += 1
            yield latency / 2
            db.transition_worker(
                a.worker_id, "error", Reason.SPAWN_FAILED.value,
                {Meta.ERROR_REASON: Reason.SPAWN_FAILED.value, Meta.ERROR_DETAILS: f"{type(exc).__name__}: {exc}"},
            )
            return None
        self.sim.counters["spawns"] += 1
        yield latency / 2
        db.merge_worker_metadata(
            a.worker_id,
            {Meta.RUNPOD_ID: pod.id, Meta.GPU_TYPE: pod.gpu, Meta.DATA_CENTER: "EU-RO-1", Meta.COST_PER_HR: pod.cost_per_hr},
        )
        return None

    def _fail_after_boot_step(self, worker_id: str, runpod_id: str, reason: Reason, details: Any) -> Step:
        db = self.sim.db
        db.transition_worker(
            worker_id, "error", reason.value,
            {Meta.ERROR_REASON: reason.value, Meta.ERROR_DETAILS: details, Meta.FAILED_AT: self._now()},
        )
        db.requeue_worker_tasks(worker_id, reason.value)
        yield from self._terminate(worker_id, runpod_id)
        return None

    def _terminate(self, worker_id: str | None, runpod_id: str) -> Step:
        yield self.sim.boot.api_latency
        self.sim.provider.terminate(runpod_id)
        if worker_id:
            self.sim.db.merge_worker_metadata(worker_id, {Meta.POD_TERMINATE_REQUESTED_AT: self._now()})
        return None

    def _do_initialize(self, a: Initialize) -> Step:
        db, provider, rng = self.sim.db, self.sim.provider, self.sim.rng_ssh
        if a.from_status is WorkerState.SPAWNING:
            db.transition_worker(a.worker_id, "initializing", Reason.POD_READY.value, {Meta.RUNPOD_ID: a.runpod_id})
        pod = provider.pods.get(a.runpod_id)
        if pod is None or not pod.alive:
            yield self.sim.boot.api_latency
            return None  # "spawning": not ready; the next tick retries, the boot timeout bounds it
        if rng.random() < self.sim.faults.ssh_flaky:
            yield 10.0  # SSH connect timeout: not ready yet
            self.sim.counters["ssh_failures"] += 1
            return None
        yield self.sim.boot.ssh_checks * rng.uniform(0.7, 1.3)
        if not pod.alive:
            return None
        if rng.random() < self.sim.faults.init_fail:
            self.sim.counters["init_failures"] += 1
            yield from self._fail_after_boot_step(a.worker_id, a.runpod_id, Reason.INIT_FAILED, {"step": "checks"})
            return None
        db.merge_worker_metadata(
            a.worker_id,
            {Meta.SSH_DETAILS: {"ip": "10.0.0.1", "port": 22}, Meta.HOST_KEY_FINGERPRINT: f"SHA256:{pod.id}", Meta.INITIALIZED_AT: self._now()},
        )
        if not a.start_process:
            return None
        yield from self._start(a.worker_id, pod)
        return None

    def _start(self, worker_id: str, pod: SimPod) -> Step:
        yield self.sim.boot.start_latency / 2
        if not pod.alive:
            yield from self._fail_after_boot_step(worker_id, pod.id, Reason.START_FAILED, "pod gone")
            return None
        if pod.process is not None and pod.process.alive:
            # The seed's start command would launch a second worker under the same id.
            self.sim.counters["second_process_refused"] += 1
            self.sim.invariants.add("two_processes", f"a second worker process started on {pod.id} ({worker_id})")
        else:
            pod.process = SimWorker(self.sim, pod, worker_id)
        # The process runs from here; a crash before the next line leaves it unrecorded (StartProcess's
        # ``already_running`` case).
        yield self.sim.boot.start_latency / 2
        self.sim.db.merge_worker_metadata(worker_id, {Meta.PROCESS_STARTED_AT: self._now()})
        return None

    def _do_start_process(self, a: StartProcess) -> Step:
        if a.already_running:
            self.sim.db.merge_worker_metadata(a.worker_id, {Meta.PROCESS_STARTED_AT: self._now()})
            return None
        pod = self.sim.provider.pods.get(a.runpod_id)
        if pod is None:
            return None
        yield from self._start(a.worker_id, pod)
        return None

    def _do_fail_worker(self, a: FailWorker) -> Step:
        db = self.sim.db
        if a.runpod_id:
            yield self.sim.boot.api_latency  # pod status for the diagnostics
            if a.collect_logs:
                yield 2.0  # the log tail over SSH (bounded by its own timeout)
        if a.from_status is not WorkerState.ERROR:
            db.transition_worker(
                a.worker_id, "error", a.reason.value,
                {**dict(a.metadata), Meta.ERROR_REASON: a.reason.value},
            )
        db.requeue_worker_tasks(a.worker_id, a.reason.value)
        if a.runpod_id:
            yield from self._terminate(a.worker_id, a.runpod_id)
        return None

    def _do_promote(self, a: Promote) -> Step:
        self.sim.db.transition_worker(a.worker_id, "active", a.reason.value)
        return None
        yield 0.0

    def _do_drain(self, a: Drain) -> Step:
        self.sim.db.transition_worker(
            a.worker_id, "draining", a.reason.value,
            {**dict(a.metadata), Meta.DRAIN_REASON: a.reason.value, Meta.DRAINED_AT: self._now()},
        )
        return None
        yield 0.0  # a generator like the others

    def _do_reactivate(self, a: Reactivate) -> Step:
        self.sim.db.transition_worker(a.worker_id, "active", a.reason.value)
        return None
        yield 0.0

    def _do_terminate_pod(self, a: TerminatePod) -> Step:
        if a.worker_id and a.transition_from is not None:
            self.sim.db.transition_worker(a.worker_id, "terminating", a.reason.value)
        if a.reason in (Reason.IDLE, Reason.OVERCAPACITY, Reason.DRAINED, Reason.CANCEL_BOOT):
            self.sim.note_scale_down()
        yield from self._terminate(a.worker_id, a.runpod_id)
        return None

    def _do_mark_terminated(self, a: MarkTerminated) -> Step:
        if a.requeue_tasks:
            self.sim.db.requeue_worker_tasks(a.worker_id, a.reason.value)
        self.sim.db.transition_worker(a.worker_id, "terminated", a.reason.value)
        return None
        yield 0.0

    def _do_requeue_tasks(self, a: RequeueTasks) -> Step:
        self.sim.db.requeue_worker_tasks(a.worker_id, a.reason.value)
        return None
        yield 0.0


# --- invariants ------------------------------------------------------------------------------------


@dataclass
class Violation:
    # max_exceeded | spend_cap_exceeded | pod_leaked | task_run_twice | task_lost | task_orphaned | two_processes
    name: str
    at: float
    detail: str


class Invariants:
    """The soak's checks, run every tick (and at each pod creation for the ceilings)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.violations: list[Violation] = []
        self._unclaimed_since: dict[str, tuple[float, int]] = {}  # pod id -> (since, healthy ticks)
        self._leaked: set[str] = set()

    def add(self, name: str, detail: str) -> None:
        self.violations.append(Violation(name, self.sim.clock.now, detail))

    def names(self) -> set[str]:
        return {v.name for v in self.violations}

    def on_create(self, pod: SimPod) -> None:
        s = self.sim.settings
        alive = self.sim.provider.alive_pods()
        if len(alive) > int(s.max_active_gpus):
            self.add("max_exceeded", f"{len(alive)} pods alive > MAX_ACTIVE_GPUS={s.max_active_gpus}")
        cap = float(s.max_hourly_spend)
        spend = sum(p.cost_per_hr for p in alive)
        if cap > 0 and spend > cap + 1e-9:
            self.add("spend_cap_exceeded", f"{spend:.2f} USD/h > MAX_HOURLY_SPEND={cap:g}")

    def on_restart(self) -> None:
        """A restart unsettles the fleet: ticks counted toward a leak start again (the dead process's
        termination may have been cut short; the leak check is about a daemon that gets to act)."""
        self._unclaimed_since = {pid: (since, 0) for pid, (since, _ticks) in self._unclaimed_since.items()}

    def _claimed(self) -> set[str]:
        claimed: set[str] = set()
        for w in self.sim.db.live_workers():
            rid = w.metadata.get(Meta.RUNPOD_ID)
            if rid:
                claimed.add(str(rid))
            else:
                claimed.update(p.id for p in self.sim.provider.alive_pods() if p.name == w.id)
        return claimed

    def on_tick(self, listing_ok: bool) -> None:
        sim, s = self.sim, self.sim.settings
        now = sim.clock.now
        live_rows = sum(1 for w in sim.db.live_workers())
        if live_rows > int(s.max_active_gpus):
            self.add("max_exceeded", f"{live_rows} live worker rows > MAX_ACTIVE_GPUS={s.max_active_gpus}")
        # Leaks: a pod of ours no live row claims, past the orphan grace, still alive after two
        # healthy ticks (a listing that worked and an API that answers) and two poll intervals.
        healthy = listing_ok and not sim.provider.api_down()
        claimed = self._claimed()
        grace = float(s.orphan_grace_sec)
        for pod in sim.provider.alive_pods():
            if pod.id in claimed or now - pod.created_at < grace:
                self._unclaimed_since.pop(pod.id, None)
                continue
            since, ticks = self._unclaimed_since.get(pod.id, (now, 0))
            ticks += 1 if healthy else 0
            self._unclaimed_since[pod.id] = (since, ticks)
            if ticks > 2 and now - since >= 2 * sim.poll_sec + 10 and pod.id not in self._leaked:
                self._leaked.add(pod.id)
                self.add("pod_leaked", f"pod {pod.id} ({pod.name}) unclaimed since t={since:.0f}")
        # A task In Progress under a terminated row would wait for ever (orch_snapshot's orphaned_running).
        for worker_id, ids in sim.db.running.items():
            if ids and sim.db.workers[worker_id].status == "terminated":
                self.add("task_orphaned", f"{sorted(ids)[:3]} In Progress on terminated {worker_id}")

    def at_end(self) -> None:
        db = self.sim.db
        for row in db.tasks.values():
            if row.status not in ("Complete", "Failed"):
                self.add("task_lost", f"task {row.id} ended {row.status} (attempts {row.attempts})")
            elif row.status == "Failed" and row.attempts < db.max_attempts:
                self.add("task_lost", f"task {row.id} failed after {row.attempts} attempts only")
        for pod in self.sim.provider.alive_pods():
            if pod.id not in self._claimed() and pod.id not in self._leaked:
                self.add("pod_leaked", f"pod {pod.id} ({pod.name}) alive and unclaimed at the end")


# --- the simulation --------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    queued: int
    running: int
    serving: int  # initializing + active + draining rows with a live process
    booting: int
    pods: int


@dataclass
class Result:
    """What one run measured (``bench/policy.py`` turns it into the table)."""

    policy: str
    trace: str
    horizon: float
    cost_usd: float
    gpu_hours: float
    busy_share: float
    waits: list[float]
    tasks_total: int
    tasks_complete: int
    tasks_lost: int
    tasks_dead_lettered: int
    tasks_duplicated: int
    pods_leaked: int
    spawns: int
    flaps: int
    backlog_above_capacity_s: float
    ticks: int
    violations: list[Violation]
    samples: list[Sample]
    counters: dict[str, int]
    actions: dict[str, int]  # "kind:reason" -> actions started by the executor

    def percentile(self, q: float) -> float:
        if not self.waits:
            return 0.0
        ordered = sorted(self.waits)
        k = (len(ordered) - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    def metrics(self) -> dict[str, float | int]:
        return {
            "cost_usd": round(self.cost_usd, 4),
            "gpu_hours": round(self.gpu_hours, 4),
            "busy_share": round(self.busy_share, 4),
            "wait_p50_s": round(self.percentile(0.50), 2),
            "wait_p95_s": round(self.percentile(0.95), 2),
            "wait_p99_s": round(self.percentile(0.99), 2),
            "tasks_lost": self.tasks_lost,
            "tasks_duplicated": self.tasks_duplicated,
            "pods_leaked": self.pods_leaked,
            "spawns": self.spawns,
            "flaps": self.flaps,
            "backlog_above_capacity_s": round(self.backlog_above_capacity_s, 1),
            "tasks_dead_lettered": self.tasks_dead_lettered,
        }


FLAP_WINDOW_SEC = 300.0  # a spawn this soon after a scale-down termination is a flap
SAMPLE_SEC = 10.0
WAKE_DELAY_SEC = 0.1  # NOTIFY -> tick


class Simulation:
    """One policy on one trace: the clock, the database, the provider, the workers and the daemon."""

    def __init__(
        self,
        trace: Trace,
        plan_fn: PlanFn,
        settings: Settings,
        *,
        name: str = "ours",
        wake_on_tasks: bool = True,
        seed: int = 0,
        boot: BootModel | None = None,
        faults: Faults | None = None,
        restarts: Sequence[float] = (),
        restart_mid_action: bool = False,
        settle_sec: float = 1800.0,
        capacity: int = 24,
        prices: Mapping[str, float] = PRICES,
    ) -> None:
        self.trace = trace
        self.plan_fn = plan_fn
        self.settings = settings
        self.name = name
        self.wake_on_tasks = wake_on_tasks
        self.poll_sec = float(settings.orchestrator_poll_sec)
        self.boot = boot or BootModel()
        self.faults = faults or Faults()
        self.prices = dict(prices)
        self.horizon = trace.duration + settle_sec
        self.clock = Clock()
        self.rng_workers = random.Random(seed * 7919 + 1)
        self.rng_ssh = random.Random(seed * 7919 + 2)
        self.db = SimDB(self.clock, int(settings.max_task_attempts))
        self.provider = SimProvider(self.clock, random.Random(seed * 7919 + 3), self.boot, self.faults, capacity, prices)
        self.executor = SimExecutor(self)
        self.invariants = Invariants(self)
        self.provider.on_create = self._on_create
        self.db.on_queued = self._on_queued if wake_on_tasks else None
        self.counters: dict[str, int] = {
            k: 0
            for k in ("spawns", "worker_crashes", "worker_hangs", "ssh_failures", "init_failures", "restarts",
                      "second_process_refused", "listing_failures", "scale_downs", "restarts_mid_action",
                      "capacity_misses", "spawn_failures", "stray_pods")
        }
        self.duplicates: set[str] = set()
        self.executing: dict[str, set[SimWorker]] = {}
        self.busy_seconds = 0.0
        self.samples: list[Sample] = []
        self.ticks = 0
        self._tick_gen = 0
        self._next_tick_at = math.inf
        self._down_until = 0.0
        self._last_tick = 0.0
        self._last_scale_down = -math.inf
        self.flaps = 0
        self.backlog_s = 0.0
        self.lease_ttl = float(settings.lease_ttl_sec)
        self.restarts = sorted(restarts)
        # Every other restart waits for an action to begin a step and kills the process inside it (the
        # crash windows the recovery logic exists for: between register and create, between create and
        # recording the pod id, between starting the worker and recording it, around a termination).
        self.restart_mid_action = restart_mid_action
        self._armed: list[int] = []
        self._arm_seq = 0
        self._rng_restart = random.Random(seed * 7919 + 4)

    # -- hooks from the parts -----------------------------------------------------------------------

    def _on_create(self, pod: SimPod) -> None:
        if self.clock.now - self._last_scale_down <= FLAP_WINDOW_SEC:
            self.flaps += 1
        self.invariants.on_create(pod)

    def note_scale_down(self) -> None:
        self.counters["scale_downs"] += 1
        self._last_scale_down = self.clock.now

    def on_claim(self, worker: SimWorker, task: TaskRow) -> None:
        others = {w for w in self.executing.get(task.id, set()) if w.executing and w.task is task}
        if others:
            self.duplicates.add(task.id)
            self.invariants.add("task_run_twice", f"task {task.id} claimed by {worker.worker_id} while {sorted(o.worker_id for o in others)} run it")
        self.executing.setdefault(task.id, set()).add(worker)

    def on_finish(self, worker: SimWorker, task: TaskRow) -> None:
        self.busy_seconds += task.duration
        self.executing.get(task.id, set()).discard(worker)

    def on_worker_gone(self, worker: SimWorker) -> None:
        if worker.task is not None:
            self.executing.get(worker.task.id, set()).discard(worker)
            # Time spent on a task that will never finish still occupied the GPU.
            if worker.task.started_at is not None:
                self.busy_seconds += max(0.0, self.clock.now - worker.task.started_at) if not worker.hung else 0.0

    def _on_queued(self) -> None:
        self.wake()

    # -- the daemon -----------------------------------------------------------------------------------

    def wake(self) -> None:
        """NOTIFY: tick now unless one is already due as soon."""
        now = self.clock.now
        if now < self._down_until:
            return
        if self._next_tick_at > now + WAKE_DELAY_SEC:
            self._schedule_tick(WAKE_DELAY_SEC)

    def _schedule_tick(self, delay: float) -> None:
        self._tick_gen += 1
        gen = self._tick_gen
        self._next_tick_at = self.clock.now + delay
        self.clock.schedule(delay, lambda: self._tick(gen))

    def _tick(self, gen: int) -> None:
        if gen != self._tick_gen:
            return
        self.tick()
        self._schedule_tick(self.poll_sec)

    def tick(self) -> Plan:
        """Gather (one snapshot, one listing), decide with the policy, apply, check the invariants."""
        self.ticks += 1
        self._last_tick = self.clock.now
        snapshot = self.db.snapshot(str(self.settings.worker_id_prefix))
        try:
            pods: list[PodView] | None = self.provider.list_pods()
        except errors.RunpodError:
            pods = None
            self.counters["listing_failures"] += 1
        plan = self.plan_fn(snapshot, pods, self.settings, at(self.clock.now), prices=self.prices)
        self.executor.apply(plan.actions)
        self.invariants.on_tick(pods is not None)
        return plan

    def crash_window(self, step_sec: float) -> None:
        """An action just began a step of ``step_sec``: an armed restart strikes inside it."""
        if self._armed and step_sec > 0:
            self._armed.pop(0)
            self.clock.schedule(self._rng_restart.uniform(0.0, step_sec) * 0.999, self.restart)

    def restart(self) -> None:
        """SIGKILL and start again: in-flight steps die; the new process waits for the old lease."""
        self.counters["restarts"] += 1
        self.invariants.on_restart()
        if self.executor.in_flight:
            self.counters["restarts_mid_action"] += 1
        self.executor.restart()
        self._tick_gen += 1  # the scheduled tick belonged to the dead process
        startup = 5.0
        self._down_until = max(self.clock.now + startup, self._last_tick + self.lease_ttl)
        self._next_tick_at = self._down_until
        delay = self._down_until - self.clock.now
        self._tick_gen += 1
        gen = self._tick_gen
        self.clock.schedule(delay, lambda: self._tick(gen))

    def _stray_pod(self) -> None:
        self.counters["stray_pods"] += 1
        self.provider._make(f"{self.settings.worker_id_prefix}stray-{self.counters['stray_pods']}", GPU, ours=False)
        self.clock.schedule(self.rng_workers.expovariate(self.faults.stray_pods_per_hour / 3600.0), self._stray_pod)

    def _arm(self) -> None:
        self._arm_seq += 1
        self._armed.append(self._arm_seq)
        # No action within 10 minutes: restart anyway, at this random point.
        self.clock.schedule(600.0, functools.partial(self._unarm, self._arm_seq))

    def _unarm(self, arm: int) -> None:
        if arm in self._armed:
            self._armed.remove(arm)
            self.restart()

    def _sample(self) -> None:
        db = self.db
        serving = booting = idle = 0
        for w in db.live_workers():
            if w.status in BOOTING:
                booting += 1
        for pod in self.provider.alive_pods():
            proc = pod.process
            if proc is not None and proc.alive:
                serving += 1
                row = db.workers.get(proc.worker_id)
                if proc.task is None and row is not None and row.status in ("initializing", "active"):
                    idle += 1
        running = db.running_total
        if db.claimable > 0 and idle == 0:
            self.backlog_s += SAMPLE_SEC
        self.samples.append(Sample(self.clock.now, db.claimable, running, serving, booting, len(self.provider.alive_pods())))
        self.clock.schedule(SAMPLE_SEC, self._sample)

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> Result:
        for task in self.trace.tasks:
            self.clock.schedule(task.at, functools.partial(self.db.insert_task, task.id, task.task_type, task.duration))
        for i, t in enumerate(self.restarts):
            self.clock.schedule(t, self._arm if self.restart_mid_action and i % 2 else self.restart)
        if self.faults.stray_pods_per_hour > 0:
            self.clock.schedule(self.rng_workers.expovariate(self.faults.stray_pods_per_hour / 3600.0), self._stray_pod)
        self._schedule_tick(0.0)
        self.clock.schedule(0.0, self._sample)
        self.clock.run_until(self.horizon)
        self.invariants.at_end()
        return self.result()

    def result(self) -> Result:
        horizon = self.horizon
        waits: list[float] = []
        for row in self.db.tasks.values():
            start = row.first_started_at if row.first_started_at is not None else horizon
            waits.append(start - row.created_at)
        billed = self.provider.billed_seconds(horizon)
        # Busy time: completed runs plus the partial runs of tasks still going at the horizon.
        busy = self.busy_seconds + sum(
            max(0.0, horizon - (p.process.task.started_at or horizon))
            for p in self.provider.alive_pods()
            if p.process is not None and p.process.alive and p.process.task is not None and not p.process.hung
        )
        tasks = self.db.tasks.values()
        lost = sum(1 for v in self.invariants.violations if v.name == "task_lost")
        leaked = sum(1 for v in self.invariants.violations if v.name == "pod_leaked")
        return Result(
            policy=self.name,
            trace=self.trace.name,
            horizon=horizon,
            cost_usd=self.provider.cost(horizon),
            gpu_hours=billed / 3600.0,
            busy_share=min(1.0, busy / billed) if billed > 0 else 0.0,
            waits=waits,
            tasks_total=len(self.db.tasks),
            tasks_complete=sum(1 for r in tasks if r.status == "Complete"),
            tasks_lost=lost,
            tasks_dead_lettered=sum(1 for r in tasks if r.status == "Failed"),
            tasks_duplicated=len(self.duplicates),
            pods_leaked=leaked,
            spawns=self.counters["spawns"],
            flaps=self.flaps,
            backlog_above_capacity_s=self.backlog_s,
            ticks=self.ticks,
            violations=list(self.invariants.violations),
            samples=self.samples,
            counters=dict(self.counters),
            actions=dict(self.executor.by_reason),
        )


def oracle(trace: Trace, price: float = GPU_PRICE, boot: BootModel | None = None) -> dict[str, float | int]:
    """Lower bounds: cost = the tasks' GPU-seconds at the price; wait = 0 warm (the cold bound is a boot)."""
    boot = boot or BootModel()
    gpu_s = trace.gpu_seconds
    cold = boot.cached_median + boot.ssh_checks + boot.start_latency + boot.process_warmup
    return {
        "cost_usd": round(gpu_s / 3600.0 * price, 4),
        "gpu_hours": round(gpu_s / 3600.0, 4),
        "busy_share": 1.0,
        "wait_p50_s": 0.0,
        "wait_p95_s": 0.0,
        "wait_p99_s": 0.0,
        "wait_cold_s": round(cold, 1),
        "tasks_lost": 0,
        "tasks_duplicated": 0,
        "pods_leaked": 0,
        "spawns": 0,
        "flaps": 0,
        "backlog_above_capacity_s": 0.0,
        "tasks_dead_lettered": 0,
    }
