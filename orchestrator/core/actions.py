"""The actions a plan is made of, and the plan itself.

Where this sits in the pure core: ``orchestrator.core.policy.plan`` returns a :class:`Plan` of these
frozen values; the executor (``orchestrator.loop.executor``) carries each out, in the daemon and in the
virtual-time simulator alike. Actions carry everything the executor needs (worker id, pod id, the state
the row is expected to be in, the reason code, the metadata to record), so applying one never needs
another lookup; each is meant to be applied idempotently (twice, or after a crash half-way, leaves the
same state, and the next tick's snapshot shows what happened).

The action set is small on purpose: Spawn, Initialize, StartProcess, WatchStart, Promote, FailWorker, Drain,
Reactivate, TerminatePod, MarkTerminated, RequeueTasks, RequeueStrandedTasks, RequeueUnownedTasks,
ReleaseParents, and for the
warm pool StopPod, MarkStopped and ResumePod (each documented below with what its executor does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar

from orchestrator.core.states import Blocked, BreakerState, Reason, WorkerState


@dataclass(frozen=True, kw_only=True)
class Action:
    """Base of every action. ``kind`` names the type (stable, for logs and the dry run)."""

    kind: ClassVar[str] = "action"
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, kw_only=True)
class Spawn(Action):
    """Create a worker: register the intent row (``spawning``, with ``metadata``), then create its pod.

    Executor: ``orch_register_worker(worker_id, gpu_types[0], metadata)``; then create the pod named
    ``worker_id``, trying ``gpu_types`` in order (each in every configured network volume's data
    center, skipping the ``(gpu_type, data_center)`` pairs in ``avoid``: those backing off) and falling
    through on no capacity. On success merge ``runpod_id``, ``gpu_type``, ``data_center``,
    ``cost_per_hr`` (and any ``capacity_misses``) into the metadata. When every candidate had no
    capacity: transition to ``error`` with reason ``spawn_no_capacity`` (and the misses); any other
    creation failure: ``error`` with ``spawn_failed``. A conflict on registration (id exists) means a
    previous attempt got there: do nothing.
    """

    kind: ClassVar[str] = "spawn"
    worker_id: str
    gpu_types: tuple[str, ...]
    avoid: tuple[tuple[str, str | None], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, kw_only=True)
class Initialize(Action):
    """Run the initialization checks on a booting worker whose pod is RUNNING with SSH published.

    Executor: if ``from_status`` is ``spawning``, transition to ``initializing`` (reason
    ``pod_ready``, merging ``runpod_id`` so a pod found by name is recorded); run the original orchestrator's checks (banodoco/reigh-worker-orchestrator);
    on success merge ``ssh_details``, ``host_key_fingerprint`` and ``initialized_at``, and when
    ``start_process`` start the worker process and merge ``process_started_at``. SSH not answering
    yet: change nothing (the next tick retries; the boot timeout bounds it). A check that ran and
    failed, or a refused key: transition to ``error`` with reason ``init_failed`` and the output.
    """

    kind: ClassVar[str] = "initialize"
    worker_id: str
    runpod_id: str
    from_status: WorkerState
    start_process: bool = True


@dataclass(frozen=True, kw_only=True)
class StartProcess(Action):
    """Start the worker process on an initialized worker whose process was never started.

    Executor: the original's start command over SSH; merge ``process_started_at`` on success (its first
    heartbeat after that gets it a :class:`Promote`); ``error`` with reason ``start_failed`` otherwise. With
    ``already_running`` (the worker has heartbeated since its checks passed), only merge
    ``process_started_at``: starting a second process would run two workers under one id.
    """

    kind: ClassVar[str] = "start_process"
    worker_id: str
    runpod_id: str
    already_running: bool = False


@dataclass(frozen=True, kw_only=True)
class WatchStart(Action):
    """Ask the pod whether the worker's start still runs, for a worker not heard from since its start.

    Executor: over SSH (the start's per-worker lock and the worker's log,
    ``orchestrator.adapters.worker_recipe.build_watch_command``). Still running: merge
    ``start_watched_at``, and ``setup_seen_at`` when the start is still in its setup steps (git sync,
    apt, uv sync): health does not count that time against ``SPAWNING_TIMEOUT_SEC``, up to
    ``WORKER_SETUP_TIMEOUT_SEC``. Ended (the lock is free: no process of the start lives): ``error``
    with reason ``start_exited`` and the log's tail, terminate, requeue, at once rather than at the boot
    timeout. No answer, or no lock to read: merge ``start_watched_at`` only; an SSH failure proves
    nothing.
    """

    kind: ClassVar[str] = "watch_start"
    worker_id: str
    runpod_id: str


@dataclass(frozen=True, kw_only=True)
class Promote(Action):
    """``initializing -> active``: the worker heartbeated at or after its process was started.

    Executor: ``orch_transition_worker(worker_id, 'active', 'first_heartbeat')``; the transition writes
    ``activated_at`` and the boot outcome ``activated``. A worker moved meanwhile (failed, cancelled)
    makes the transition refuse: superseded, the next tick re-plans.
    """

    kind: ClassVar[str] = "promote"
    worker_id: str


@dataclass(frozen=True, kw_only=True)
class FailWorker(Action):
    """Move an unhealthy worker to ``error``: diagnostics, terminate its pod, requeue its tasks.

    Executor, in this order, each step idempotent: capture diagnostics (pod status and cost; when
    ``collect_logs`` and a pod exists, the tail of the worker's log over SSH with a short timeout; a
    failure here is recorded, never fatal); ``orch_transition_worker(worker_id, 'error', reason,
    metadata + diagnostics)``; terminate ``runpod_id`` when set and merge ``pod_terminate_requested_at``
    (first, so that the process being replaced has less time to write to the tasks once requeued);
    ``orch_requeue_worker_tasks`` (MAX_TASK_ATTEMPTS). Each step runs whatever happened to
    the one before it (details the database refuses are dropped and the transition retried without
    them; a failed transition or requeue does not stop the termination); only a lost lease stops the
    rest. The row becomes ``terminated`` on a later tick, when the provider confirms (``MarkTerminated``).
    """

    kind: ClassVar[str] = "fail_worker"
    worker_id: str
    runpod_id: str | None = None
    from_status: WorkerState
    running_task_ids: tuple[str, ...] = ()
    collect_logs: bool = True
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, kw_only=True)
class Drain(Action):
    """``active -> draining``: no task may move to In Progress for it from now on (a guard on
    ``tasks``, since the app's claim function ignores our states); terminated once it holds none."""

    kind: ClassVar[str] = "drain"
    worker_id: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True, kw_only=True)
class Reactivate(Action):
    """``draining -> active`` ("work came back"): cheaper and faster than a new pod."""

    kind: ClassVar[str] = "reactivate"
    worker_id: str


@dataclass(frozen=True, kw_only=True)
class TerminatePod(Action):
    """Ask the provider to terminate ``runpod_id``.

    With ``worker_id`` and ``transition_from`` set, first transition the row from that state to
    ``terminating`` (draining or booting workers with no task; the row is still ``live`` until the
    provider confirms). The database refuses ``draining -> terminating`` while the worker holds an In
    Progress task (a claim that raced the plan): the transition raises ``IllegalTransition``, the pod
    is left alone and the action counts as superseded. With ``worker_id`` and no ``transition_from``, the row is already
    ``terminating`` or ``error`` and this is a retry. Without ``worker_id`` the pod is an orphan (no
    live row claims it) and only an event is recorded. A pod already gone counts as success; merge
    ``pod_terminate_requested_at`` into the row's metadata either way.
    """

    kind: ClassVar[str] = "terminate_pod"
    runpod_id: str
    pod_name: str | None = None
    worker_id: str | None = None
    transition_from: WorkerState | None = None


@dataclass(frozen=True, kw_only=True)
class MarkTerminated(Action):
    """The provider confirms no pod: ``-> terminated``. Requeue first when ``requeue_tasks``."""

    kind: ClassVar[str] = "mark_terminated"
    worker_id: str
    from_status: WorkerState
    requeue_tasks: bool = False


@dataclass(frozen=True, kw_only=True)
class RequeueTasks(Action):
    """Requeue the tasks still held by a worker already in ``error`` (a retry of FailWorker's step)."""

    kind: ClassVar[str] = "requeue_tasks"
    worker_id: str
    running_task_ids: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RequeueStrandedTasks(Action):
    """Requeue tasks a live worker holds but no longer runs: In Progress under it, no parent, and older
    than another such task it holds (the worker runs one task at a time, so it moved on: a claim whose
    answer it never got). The worker itself is left alone.

    Executor: ``orch_requeue_stranded_tasks(worker_id, task_ids, reason, MAX_TASK_ATTEMPTS)``, which
    checks again, at the time of the call, that each is still held and older than one the worker holds,
    and counts an attempt (dead-lettered at the limit)."""

    kind: ClassVar[str] = "requeue_stranded_tasks"
    worker_id: str
    task_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class RequeueUnownedTasks(Action):
    """Requeue the In Progress tasks that name no worker and have been In Progress longer than
    ``older_than_sec`` (TASK_STUCK_TIMEOUT_SEC), an attempt counted, dead-lettered at the limit.

    Executor: ``orch_requeue_unowned_tasks(older_than_sec, reason, MAX_TASK_ATTEMPTS)``; the database
    measures the age with its own clock, so the action carries the threshold, not a task list. Nothing
    else ever moves such a task: no worker row is there to fail and no heartbeat to go stale.
    """

    kind: ClassVar[str] = "requeue_unowned_tasks"
    older_than_sec: float


@dataclass(frozen=True, kw_only=True)
class ReleaseParents(Action):
    """Let go the parents (``*_orchestrator``) a draining worker holds, so that it can end.

    Executor: ``orch_release_parents(worker_id, reason)``: each parent stays In Progress with no worker
    (the app completes a parent with its last child, whoever holds it); the next tick finds the worker
    holding nothing and ends it as an idle one (``draining -> terminating`` or ``-> stopping`` is
    refused while it holds a task).
    """

    kind: ClassVar[str] = "release_parents"
    worker_id: str


@dataclass(frozen=True, kw_only=True)
class StopPod(Action):
    """Stop an idle worker's pod into the warm pool instead of terminating it.

    Executor: transition ``transition_from`` (``draining``) -> ``stopping`` (the database refuses it,
    like ``draining -> terminating``, while the worker holds an In Progress task) recording the pinned
    host key as ``previous_host_key_fingerprint``, ask the provider to stop the pod, then record
    ``pod_stop_requested_at`` (after the call, as ``pod_terminate_requested_at``: a crash before it
    leaves none, and the next tick asks at once). With ``transition_from`` None the row is already
    ``stopping`` and this is a retry. ``stopping -> stopped`` follows when the provider shows the pod
    stopped (``stopped_at``). ``disk_gb``, when set, is recorded with the transition: a row spawned
    before the spawn recorded its volume disk gets the one the policy bills it for, so the database's
    spend views and the spend cap count the same figure.
    """

    kind: ClassVar[str] = "stop_pod"
    worker_id: str
    runpod_id: str
    transition_from: WorkerState | None = WorkerState.DRAINING
    disk_gb: int | None = None


@dataclass(frozen=True, kw_only=True)
class MarkStopped(Action):
    """``stopping -> stopped``: the provider lists the pod EXITED (reason ``provider_confirmed_stopped``);
    merge ``stopped_at``, from which the pool's time to live counts. A row moved meanwhile makes the
    transition refuse: superseded."""

    kind: ClassVar[str] = "mark_stopped"
    worker_id: str


@dataclass(frozen=True, kw_only=True)
class ResumePod(Action):
    """Start a pooled pod again: ``stopped -> resuming``, ``resume_requested_at``, then the provider's
    start. Refused for lack of GPUs on its host (or started without one): terminate it (reason
    ``resume_no_gpu``, not a boot failure) and let the next tick spawn anew. Once the pod runs, the
    usual Initialize (``resuming -> initializing``: checks over SSH, a host key re-pinned once, the
    worker process started) and Promote follow.

    Executor: from ``stopped``, ``orch_transition_worker(worker_id, 'resuming', reason, metadata)`` with
    ``resume_requested_at``, ``resumes`` + 1, and ``initialized_at``, ``process_started_at``,
    ``ssh_details`` and ``host_key_fingerprint`` cleared (the stop wiped the container disk: the checks
    and the process start are redone, and the key pinned before the stop is kept in
    ``previous_host_key_fingerprint``); from ``resuming`` (a retry: the pod is still listed EXITED) no
    transition. Then the provider's start. Any other failure leaves the row ``resuming``: the policy
    retries, and the boot timeout of a resume bounds it."""

    kind: ClassVar[str] = "resume_pod"
    worker_id: str
    runpod_id: str


# Actions that end a worker's life or its pod (for the "never terminates a busy worker" property).
DESTRUCTIVE: tuple[type[Action], ...] = (FailWorker, TerminatePod, MarkTerminated, StopPod)


# --- the plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """An active back-off of one GPU type in one data center (None: the provider chose)."""

    gpu_type: str
    data_center: str | None
    failures: int
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_type": self.gpu_type,
            "data_center": self.data_center,
            "failures": self.failures,
            "until": self.until.isoformat(),
        }


@dataclass(frozen=True)
class Plan:
    """The actions of one tick and why: what the dry run prints and the tick summary records."""

    actions: tuple[Action, ...]
    desired: int
    capacity: int  # spawning + initializing + active workers that are staying
    demand_tasks: int  # claimable + running
    live: int  # non-terminal rows plus unclaimed pods with our prefix, before this plan
    spend_per_hr: float
    breaker: BreakerState
    consecutive_failures: int
    breaker_until: datetime | None = None
    backoffs: tuple[Backoff, ...] = ()
    spawn_blocked: tuple[Blocked, ...] = ()
    missing: int = 0  # desired - capacity, when positive
    paused: bool = False
    problems: tuple[str, ...] = ()
    pool: int = 0  # stopping + stopped workers (the warm pool) before this plan
    # What the wait target's queueing model saw and decided (empty when WAIT_TARGET_SEC is 0).
    sizing: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def of_kind(self, cls: type[Action]) -> list[Any]:
        return [a for a in self.actions if isinstance(a, cls)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "desired": self.desired,
            "capacity": self.capacity,
            "demand_tasks": self.demand_tasks,
            "live": self.live,
            "missing": self.missing,
            "spend_per_hr": round(self.spend_per_hr, 4),
            "paused": self.paused,
            "breaker": self.breaker.value,
            "consecutive_failures": self.consecutive_failures,
            "breaker_until": self.breaker_until.isoformat() if self.breaker_until else None,
            "backoffs": [b.to_dict() for b in self.backoffs],
            "spawn_blocked": [b.value for b in self.spawn_blocked],
            "pool": self.pool,
            "sizing": dict(self.sizing),
            "problems": list(self.problems),
            "actions": [a.to_dict() for a in self.actions],
        }
