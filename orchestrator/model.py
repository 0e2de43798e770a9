"""Values the pure policy reads and writes: worker states, the snapshot, the provider's pods, actions.

Sits between gather and decide in the tick (gather -> decide -> apply -> record; ``docs/database.md``): the
controller turns the database's one snapshot call into a :class:`Snapshot` (``Snapshot.from_json``),
the provider's pod listing into :class:`PodView` values (``PodView.from_pod``), and hands both to
``orchestrator.policy.plan``, which returns a :class:`Plan` of :class:`Action` values. Everything here
is a frozen value: no I/O, no clock, no logging. Parsing is tolerant where one bad row must not stop
the fleet: a worker row that cannot be parsed but has an id becomes an :class:`UnreadableRow`, which the
policy retires (its pod terminated, its tasks requeued), and every such row is reported in
``Snapshot.problems``; a row without an id is only reported (nothing can address it).

Actions carry everything the executor needs (worker id, pod id, the state the row is expected to be
in, the reason code, the metadata to record), so applying one never needs another lookup. Each action
is meant to be applied idempotently: applying it twice, or after a crash half-way, leaves the same
state, and the next tick's snapshot shows what happened (level-triggered reconciliation).

The action set is small on purpose: Spawn, Initialize, StartProcess, Promote, FailWorker, Drain,
Reactivate, TerminatePod, MarkTerminated, RequeueTasks, RequeueUnownedTasks (each documented below with
what its executor does). Promotion ``initializing -> active`` is the orchestrator's own decision from evidence it
observes (a heartbeat at or after ``metadata.process_started_at``): the real worker's heartbeat function
belongs to the app and only writes ``last_heartbeat`` (docs/database.md), so it cannot be the one to
promote.

What a worker says about itself (the heartbeat's ``status_param`` ``crashed``, the fatal-error handler's
``error``) never changes ``status`` on a row the orchestrator manages; the database records it in
``reported_status``/``reported_at``/``reported_details`` and :class:`Worker` carries them, so the policy
decides what a report means.

The metadata keys the policy reads and the executor writes are named in :class:`Meta`, so both sides
agree on one spelling.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from orchestrator import errors

# --- worker states ---------------------------------------------------------------------------------


class WorkerState(StrEnum):
    """A worker row's ``status``; the legal moves are the SQL transition table of docs/database.md."""

    SPAWNING = "spawning"  # the intent row, written before any pod exists
    INITIALIZING = "initializing"  # the pod answered; checks and process start under way
    ACTIVE = "active"  # first heartbeat after the process started
    DRAINING = "draining"  # the claim function refuses it; terminated once idle
    TERMINATING = "terminating"  # pod termination asked, not yet confirmed
    ERROR = "error"  # failed; pod being terminated, tasks requeued
    TERMINATED = "terminated"  # the provider confirmed the pod gone (terminal)

    @property
    def live(self) -> bool:
        """Every state but ``terminated`` (docs/database.md: "Live = every state but terminated")."""
        return self is not WorkerState.TERMINATED

    @property
    def claiming(self) -> bool:
        """States in which the worker process may claim tasks."""
        return self in (WorkerState.INITIALIZING, WorkerState.ACTIVE)

    @property
    def terminal(self) -> bool:
        return self is WorkerState.TERMINATED

    @property
    def booting(self) -> bool:
        """Not yet serving: counted as capacity so that booting pods never cause more spawns."""
        return self in (WorkerState.SPAWNING, WorkerState.INITIALIZING)


class PodStatus(StrEnum):
    """REST v2's ``PodStatus`` enum; the GraphQL adapter derives the same vocabulary."""

    PROVISIONING = "PROVISIONING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    ERROR = "ERROR"
    TERMINATED = "TERMINATED"

    @classmethod
    def parse(cls, value: Any) -> PodStatus:
        text = str(value or "").strip().upper()
        try:
            return cls(text)
        except ValueError:
            # An unknown word is treated as "still coming up": it must neither kill a worker nor
            # mark it ready.
            return cls.PROVISIONING


class Meta:
    """Keys of ``workers.metadata`` the policy reads and the executor writes (one spelling, both sides)."""

    RUNPOD_ID = "runpod_id"
    SSH_DETAILS = "ssh_details"
    GPU_TYPE = "gpu_type"  # the GPU type the pod was actually created with
    GPU_TYPES = "gpu_types"  # the priority list the spawn was asked to try
    DATA_CENTER = "data_center"
    COST_PER_HR = "cost_per_hr"
    HOST_KEY_FINGERPRINT = "host_key_fingerprint"
    INITIALIZED_AT = "initialized_at"  # the initialization checks passed
    PROCESS_STARTED_AT = "process_started_at"  # a heartbeat at or after it promotes (Promote)
    TERMINATE_REQUESTED_AT = "terminate_requested_at"  # an operator asked (orch_request_termination)
    POD_TERMINATE_REQUESTED_AT = "pod_terminate_requested_at"  # when we last asked the provider
    DRAIN_REASON = "drain_reason"
    DRAINED_AT = "drained_at"
    ERROR_REASON = "error_reason"
    ERROR_DETAILS = "error_details"
    FAILED_AT = "failed_at"
    # Capacity misses of a spawn that fell through to a later GPU type:
    # [{"gpu_type", "data_center", "at"}]. They back off that GPU type without failing the worker.
    CAPACITY_MISSES = "capacity_misses"
    SPAWN_REASON = "spawn_reason"


# --- reason codes ----------------------------------------------------------------------------------


class Reason(StrEnum):
    """Why an action is taken; also the ``p_reason`` of the transition the executor writes.

    The executor's own outcomes (``SPAWN_*``, ``INIT_FAILED``, ``START_FAILED``, ``ACTIVATED``) come
    back to the policy as ``BootOutcome.reason`` in the snapshot's ``recent_boots``.
    """

    # scale up
    DEMAND = "demand"  # claimable + running tasks need another worker
    SPARE = "keep_idle"  # MACHINES_TO_KEEP_IDLE above demand
    FLOOR = "min_active_gpus"  # MIN_ACTIVE_GPUS
    WORK_CAME_BACK = "work_came_back"  # draining -> active instead of a new spawn
    # boot
    POD_READY = "pod_ready"
    START_PROCESS = "start_process"
    FIRST_HEARTBEAT = "first_heartbeat"  # initializing -> active: heard from after the process started
    # health
    BOOT_TIMEOUT = "boot_timeout"
    POD_FAILED = "pod_failed"  # EXITED or ERROR at the provider
    POD_MISSING = "pod_missing"  # no pod at the provider for a row that had or should have one
    HEARTBEAT_STALE = "heartbeat_stale"
    TASK_STUCK = "task_stuck"
    # The worker's own word (Worker.reported_status): its heartbeat guardian saw the process die
    # ('crashed'), or its fatal-error handler gave up on the GPU ('error').
    WORKER_CRASHED = "worker_crashed"
    WORKER_ERROR = "worker_error"
    # scale down
    IDLE = "idle_timeout"
    OVERCAPACITY = "overcapacity"
    CANCEL_BOOT = "scale_down_before_boot"
    OPERATOR_REQUEST = "operator_request"
    DRAINED = "drained"
    # reconcile
    ORPHAN_POD = "orphan_pod"
    TERMINATE_RETRY = "terminate_retry"
    PROVIDER_CONFIRMED_GONE = "provider_confirmed_gone"
    NO_POD_CREATED = "no_pod_created"  # a spawning row whose pod never appeared (crash mid-spawn)
    REQUEUE_RETRY = "requeue_retry"
    # A row the orchestrator cannot act on as a worker: the snapshot could not read it, or its id can
    # name neither a pod nor a worker process (WORKER_ID_PATTERN). It is retired: error, its tasks
    # requeued, its pod terminated, then terminated once the provider confirms.
    UNUSABLE_ROW = "unusable_row"
    # An In Progress task that names no worker (legacy data, a manual edit, a claim through a user's
    # access token whose worker went away), In Progress past TASK_STUCK_TIMEOUT_SEC.
    TASK_WITHOUT_WORKER = "task_without_worker"
    # reported by the executor (recent_boots)
    SPAWN_NO_CAPACITY = "spawn_no_capacity"
    SPAWN_FAILED = "spawn_failed"
    INIT_FAILED = "init_failed"
    START_FAILED = "start_failed"
    ACTIVATED = "activated"


# Boot outcomes that are not a broken image: they back off their GPU type and data center but do not
# count toward the breaker (a full data center says nothing about our image).
CAPACITY_REASONS: frozenset[str] = frozenset({Reason.SPAWN_NO_CAPACITY.value, "no_capacity", "capacity"})
# Boot endings that are not failures at all (we chose to stop the boot, or we crashed before the pod
# existed): they neither back off nor count, nor do they reset the count. Anything else that is not
# ``ok`` counts, including reasons this code does not know (the safe side).
NOT_BOOT_FAILURES: frozenset[str] = frozenset(
    {
        Reason.CANCEL_BOOT.value,
        Reason.OPERATOR_REQUEST.value,
        Reason.NO_POD_CREATED.value,
        Reason.OVERCAPACITY.value,
        Reason.IDLE.value,
        Reason.DRAINED.value,
        Reason.ORPHAN_POD.value,
        # Rows left by another system or a hand edit: nothing about our image.
        Reason.UNUSABLE_ROW.value,
    }
)

# What a worker id must look like to become a pod name, a log file name and a command-line argument
# (the same rule as ``orchestrator.ssh.WORKER_ID_RE``, which refuses anything else; a test keeps the two
# equal). Ids the policy makes always match; a row left by another system may not.
WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def usable_worker_id(worker_id: str) -> bool:
    """Whether a pod can be named, and a worker process started, for this id."""
    return bool(WORKER_ID_PATTERN.fullmatch(worker_id))  # (match would accept a trailing newline)


class Blocked(StrEnum):
    """Why the plan spawns fewer workers than it is missing (Plan.spawn_blocked)."""

    PAUSED = "paused"
    BREAKER_OPEN = "breaker_open"
    BREAKER_HALF_OPEN = "breaker_half_open"  # one probe worker at a time while the breaker heals
    BACKOFF = "backoff"  # every configured GPU type is backing off
    SPEND_CAP = "spend_cap"
    PRICE_UNKNOWN = "price_unknown"  # a spend cap is set and no price is known for any allowed type
    MAX_REACHED = "max_reached"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# --- parsing helpers -------------------------------------------------------------------------------


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive value is taken as UTC (Postgres returns timestamptz, tests may not)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_ts(value: Any) -> datetime | None:
    """A timestamp from the snapshot's JSON (ISO 8601 text), a datetime, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            return as_utc(datetime.fromisoformat(text))
        except ValueError as exc:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from exc
    raise ValueError(f"not a timestamp: {value!r}")


def _ts_or_none(value: Any) -> datetime | None:
    """Like parse_ts, but a malformed value in free-form metadata reads as absent."""
    try:
        return parse_ts(value)
    except ValueError:
        return None


def _int(value: Any, default: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return int(number)


def _float_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def row_id(row: Mapping[str, Any]) -> str | None:
    """A row's id exactly as the database holds it (the functions look rows up by it), or None when it
    has none a function could take (absent, not text, or blank)."""
    value = row.get("id")
    if isinstance(value, str) and value.strip():
        return value
    return None


def _state_or_error(value: Any) -> WorkerState:
    try:
        return WorkerState(str(value).strip().lower())
    except ValueError:
        # A state this contract does not know (left by the replaced system, e.g. `inactive` or NULL)
        # may only be retired (docs/database.md): read it as `error`, so its pod is terminated, its
        # tasks requeued and the row closed once the provider confirms.
        return WorkerState.ERROR


def freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


def _normalise_datetimes(obj: Any) -> None:
    # Frozen dataclasses built directly (tests, the simulator) may pass naive datetimes; comparing
    # naive with aware raises, so normalise once here rather than guard every comparison.
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, datetime) and value.tzinfo is not UTC:
            object.__setattr__(obj, f.name, as_utc(value))


# --- snapshot values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Worker:
    """One element of the snapshot's ``workers`` list (every live worker row, derived fields included)."""

    id: str
    status: WorkerState
    instance_type: str | None = None
    created_at: datetime | None = None
    status_changed_at: datetime | None = None
    activated_at: datetime | None = None
    last_heartbeat: datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    running_task_ids: tuple[str, ...] = ()
    running_count: int = 0
    oldest_running_started_at: datetime | None = None
    # Oldest running task whose type does not contain ``_orchestrator`` (those are exempt from the
    # stuck-task timeout); computed in SQL.
    oldest_stuckable_started_at: datetime | None = None
    last_completion_at: datetime | None = None
    # The last status the worker itself tried to write that was not 'active' (its heartbeat's
    # 'crashed', its fatal handler's 'error', anything else), kept by the database instead of
    # applied; absent fields (a database without the guard) read as None.
    reported_status: str | None = None
    reported_at: datetime | None = None
    reported_details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        _normalise_datetimes(self)
        if not isinstance(self.reported_details, MappingProxyType):
            object.__setattr__(self, "reported_details", freeze(self.reported_details))
        if not isinstance(self.metadata, MappingProxyType):
            object.__setattr__(self, "metadata", freeze(self.metadata))
        object.__setattr__(self, "running_task_ids", tuple(self.running_task_ids))
        # The count is authoritative when the ids were truncated; never below the ids we can see.
        object.__setattr__(self, "running_count", max(int(self.running_count), len(self.running_task_ids)))

    @classmethod
    def from_json(cls, row: Mapping[str, Any], problems: list[str] | None = None) -> Worker:
        """Parse one snapshot row; raise ValueError saying what is wrong with it.

        Free-form fields written by other hands (``metadata``, ``reported_details``) that are not JSON
        objects read as empty, with a line in ``problems`` when given: a hand-edited metadata must not
        hide the row (and with it the pod it bills for) from the policy.
        """
        if not isinstance(row, Mapping):
            raise ValueError(f"worker row is not an object: {type(row).__name__}")
        worker_id = row_id(row)
        if worker_id is None:
            raise ValueError("worker row without an id")
        status = _state_or_error(row.get("status"))
        metadata = row.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            if problems is not None:
                problems.append(
                    f"worker {worker_id}: metadata is a JSON {type(metadata).__name__}, not an object: read as empty"
                )
            metadata = {}
        ids = row.get("running_task_ids") or []
        if not isinstance(ids, list | tuple):
            raise ValueError(f"worker {worker_id}: running_task_ids is not a list")
        details = row.get("reported_details")
        if not isinstance(details, Mapping):
            # Free-form, written by the worker's side: anything but an object reads as none.
            details = {}
        try:
            return cls(
                id=worker_id,
                status=status,
                instance_type=_str_or_none(row.get("instance_type")),
                created_at=parse_ts(row.get("created_at")),
                status_changed_at=parse_ts(row.get("status_changed_at")),
                activated_at=parse_ts(row.get("activated_at")),
                last_heartbeat=parse_ts(row.get("last_heartbeat")),
                metadata=freeze(metadata),
                running_task_ids=tuple(str(i) for i in ids),
                running_count=_int(row.get("running_count"), len(ids)),
                oldest_running_started_at=parse_ts(row.get("oldest_running_started_at")),
                oldest_stuckable_started_at=parse_ts(row.get("oldest_stuckable_started_at")),
                last_completion_at=parse_ts(row.get("last_completion_at")),
                reported_status=_str_or_none(row.get("reported_status")),
                # A malformed report time must not hide the worker: read it as unknown.
                reported_at=_ts_or_none(row.get("reported_at")),
                reported_details=freeze(details),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"worker {worker_id}: {exc}") from exc

    # -- metadata conveniences (absent or malformed values read as None) -----------------------------

    def _meta_str(self, key: str) -> str | None:
        return _str_or_none(self.metadata.get(key))

    @property
    def runpod_id(self) -> str | None:
        return self._meta_str(Meta.RUNPOD_ID)

    @property
    def gpu_type(self) -> str | None:
        return self._meta_str(Meta.GPU_TYPE) or self.instance_type

    @property
    def data_center(self) -> str | None:
        return self._meta_str(Meta.DATA_CENTER)

    @property
    def host_key_fingerprint(self) -> str | None:
        return self._meta_str(Meta.HOST_KEY_FINGERPRINT)

    @property
    def ssh_details(self) -> Mapping[str, Any] | None:
        value = self.metadata.get(Meta.SSH_DETAILS)
        return value if isinstance(value, Mapping) else None

    @property
    def cost_per_hr(self) -> float | None:
        value = _float_or_none(self.metadata.get(Meta.COST_PER_HR))
        return value if value is not None and value > 0 else None

    @property
    def initialized_at(self) -> datetime | None:
        return _ts_or_none(self.metadata.get(Meta.INITIALIZED_AT))

    @property
    def process_started_at(self) -> datetime | None:
        return _ts_or_none(self.metadata.get(Meta.PROCESS_STARTED_AT))

    @property
    def terminate_requested_at(self) -> datetime | None:
        return _ts_or_none(self.metadata.get(Meta.TERMINATE_REQUESTED_AT))

    @property
    def pod_terminate_requested_at(self) -> datetime | None:
        return _ts_or_none(self.metadata.get(Meta.POD_TERMINATE_REQUESTED_AT))

    @property
    def drain_reason(self) -> str | None:
        return self._meta_str(Meta.DRAIN_REASON)

    @property
    def spawn_gpu_types(self) -> tuple[str, ...]:
        value = self.metadata.get(Meta.GPU_TYPES)
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value if v)
        return ()

    @property
    def capacity_misses(self) -> tuple[BootOutcome, ...]:
        """Capacity misses of this worker's spawn, as failed boot outcomes for the back-off."""
        value = self.metadata.get(Meta.CAPACITY_MISSES)
        if not isinstance(value, list | tuple):
            return ()
        found: list[BootOutcome] = []
        for item in value:
            if not isinstance(item, Mapping):
                continue
            at = _ts_or_none(item.get("at"))
            gpu = _str_or_none(item.get("gpu_type"))
            if at is None or gpu is None:
                continue
            found.append(
                BootOutcome(
                    worker_id=self.id,
                    gpu_type=gpu,
                    data_center=_str_or_none(item.get("data_center")),
                    ok=False,
                    reason=Reason.SPAWN_NO_CAPACITY.value,
                    at=at,
                )
            )
        return tuple(found)


@dataclass(frozen=True)
class Queue:
    """The snapshot's queue figures; ``claimable`` reads the operator-definable view."""

    claimable: int = 0
    queued_total: int = 0
    oldest_claimable_age_sec: float | None = None
    running: int = 0
    # Workers that are not live (terminated, or no row) yet still hold In Progress tasks.
    orphaned_worker_ids: tuple[str, ...] = ()
    # In Progress tasks that name no worker at all, and how long the oldest has been In Progress. Not
    # part of ``running`` (no worker of ours runs them, so they are no reason to spawn); requeued once
    # past TASK_STUCK_TIMEOUT_SEC (RequeueUnownedTasks).
    unowned_running: int = 0
    oldest_unowned_age_sec: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> Queue:
        if not isinstance(data, Mapping):
            raise ValueError("queue is not an object")
        return cls(
            claimable=max(0, _int(data.get("claimable"))),
            queued_total=max(0, _int(data.get("queued_total"))),
            oldest_claimable_age_sec=_float_or_none(data.get("oldest_claimable_age_sec")),
            running=max(0, _int(data.get("running"))),
            orphaned_worker_ids=tuple(
                str(i) for i in (data.get("orphaned_worker_ids") or ()) if isinstance(i, str) and i.strip()
            ),
            unowned_running=max(0, _int(data.get("unowned_running"))),
            oldest_unowned_age_sec=_float_or_none(data.get("oldest_unowned_age_sec")),
        )


@dataclass(frozen=True)
class UnreadableRow:
    """A live worker row the snapshot lists but that could not be parsed as a :class:`Worker`.

    Only what is needed to retire it is kept: its id (exactly as stored), its status when readable,
    the pod id its metadata names when readable, and what was wrong. The policy retires it
    (``Reason.UNUSABLE_ROW``): its pod, found by that id or by name, is terminated and its tasks
    requeued, and the row is closed once the provider confirms no pod.
    """

    id: str
    status: WorkerState
    runpod_id: str | None
    problem: str

    @classmethod
    def from_json(cls, row: Mapping[str, Any], problem: str) -> UnreadableRow | None:
        worker_id = row_id(row)
        if worker_id is None:
            return None  # nothing can address it: no function takes a row without an id
        metadata = row.get("metadata")
        runpod_id = _str_or_none(metadata.get(Meta.RUNPOD_ID)) if isinstance(metadata, Mapping) else None
        return cls(id=worker_id, status=_state_or_error(row.get("status")), runpod_id=runpod_id, problem=problem)


@dataclass(frozen=True)
class BootOutcome:
    """How one worker's boot ended: reached ``active`` (ok) or failed before it.

    ``reason`` is the reason code of the transition that ended the boot (a :class:`Reason` value for
    the ones this code writes). Capacity misses back off their GPU type and data center without
    counting toward the breaker; see :data:`CAPACITY_REASONS` and :data:`NOT_BOOT_FAILURES`.
    """

    worker_id: str
    gpu_type: str | None
    data_center: str | None
    ok: bool
    reason: str | None
    at: datetime

    def __post_init__(self) -> None:
        _normalise_datetimes(self)

    @classmethod
    def from_json(cls, row: Any) -> BootOutcome:
        if not isinstance(row, Mapping):
            raise ValueError("boot outcome is not an object")
        at = parse_ts(row.get("at"))
        if at is None:
            raise ValueError("boot outcome without a time")
        ok = row.get("ok")
        if not isinstance(ok, bool):
            raise ValueError(f"boot outcome ok is not a boolean: {ok!r}")
        return cls(
            worker_id=str(row.get("worker_id") or ""),
            gpu_type=_str_or_none(row.get("gpu_type")),
            data_center=_str_or_none(row.get("data_center")),
            ok=ok,
            reason=_str_or_none(row.get("reason")),
            at=at,
        )

    @property
    def is_capacity(self) -> bool:
        return not self.ok and (self.reason or "") in CAPACITY_REASONS

    @property
    def counts_for_backoff(self) -> bool:
        """A failure of this GPU type and data center (capacity misses included)."""
        return not self.ok and (self.reason or "") not in NOT_BOOT_FAILURES

    @property
    def counts_for_breaker(self) -> bool:
        """A failed worker in the breaker's sense: the boot broke, not the provider's stock."""
        return self.counts_for_backoff and not self.is_capacity


@dataclass(frozen=True)
class Snapshot:
    """Everything the policy knows about the database side, from one ``orch_snapshot`` call."""

    now: datetime | None
    paused: bool
    queue: Queue
    workers: tuple[Worker, ...]
    recent_boots: tuple[BootOutcome, ...] = ()  # newest first
    pause_reason: str | None = None
    problems: tuple[str, ...] = ()  # rows skipped while parsing, and why
    # Live rows that could not be parsed but have an id: the policy retires them (UnreadableRow).
    unreadable: tuple[UnreadableRow, ...] = ()

    def __post_init__(self) -> None:
        _normalise_datetimes(self)
        object.__setattr__(self, "workers", tuple(self.workers))
        object.__setattr__(self, "recent_boots", tuple(self.recent_boots))
        object.__setattr__(self, "problems", tuple(self.problems))
        object.__setattr__(self, "unreadable", tuple(self.unreadable))

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        """Parse ``orch_snapshot``'s answer. One malformed row is skipped and reported, never fatal.

        Raises :class:`~orchestrator.errors.DatabaseError` only when the answer as a whole is not a
        snapshot (not an object, no worker list): then the tick must not act on it.
        """
        if not isinstance(data, Mapping):
            raise errors.DatabaseError(
                "orch_snapshot", f"snapshot is not a JSON object: {type(data).__name__}"
            )
        rows = data.get("workers")
        if rows is None:
            rows = []
        if not isinstance(rows, list | tuple):
            raise errors.DatabaseError("orch_snapshot", "snapshot.workers is not a list")
        problems: list[str] = []
        try:
            now = parse_ts(data.get("now"))
        except ValueError as exc:
            problems.append(f"snapshot.now: {exc}")
            now = None
        try:
            queue = Queue.from_json(data.get("queue") if data.get("queue") is not None else {})
        except (TypeError, ValueError) as exc:
            # Without queue figures the policy still heals; demand reads as zero (never spawns for it).
            problems.append(f"snapshot.queue: {exc}")
            queue = Queue()
        workers: list[Worker] = []
        unreadable: list[UnreadableRow] = []
        seen: set[str] = set()
        for index, row in enumerate(rows):
            try:
                worker = Worker.from_json(row, problems)
            except (TypeError, ValueError) as exc:
                retired = UnreadableRow.from_json(row, str(exc)) if isinstance(row, Mapping) else None
                if retired is not None and retired.id not in seen:
                    seen.add(retired.id)
                    unreadable.append(retired)
                    problems.append(f"workers[{index}] unreadable, retired: {exc}")
                else:
                    problems.append(f"workers[{index}] skipped: {exc}")
                continue
            if worker.id in seen:
                problems.append(f"workers[{index}] skipped: duplicate id {worker.id}")
                continue
            raw_status = str(row.get("status")).strip().lower()
            if raw_status not in WorkerState._value2member_map_:
                problems.append(f"workers[{index}] {worker.id}: unknown status {row.get('status')!r}, retired as error")
            seen.add(worker.id)
            workers.append(worker)
        boots: list[BootOutcome] = []
        raw_boots = data.get("recent_boots") or []
        if not isinstance(raw_boots, list | tuple):
            problems.append("snapshot.recent_boots is not a list")
            raw_boots = []
        for index, row in enumerate(raw_boots):
            try:
                boots.append(BootOutcome.from_json(row))
            except (TypeError, ValueError) as exc:
                problems.append(f"recent_boots[{index}] skipped: {exc}")
        return cls(
            now=now,
            paused=bool(data.get("paused") or False),
            queue=queue,
            workers=tuple(workers),
            recent_boots=tuple(boots),
            pause_reason=_str_or_none(data.get("pause_reason")),
            problems=tuple(problems),
            unreadable=tuple(unreadable),
        )


# --- the provider's view ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """The provider's view of one pod, as the policy needs it, whichever Runpod API described it.

    ``ssh_ready`` means the provider publishes an address for the pod's ``22/tcp`` while RUNNING; it
    is a precondition for initialization, not proof of readiness (the checks over SSH are). Age comes
    from ``created_at`` when known, else from ``uptime_sec`` (GraphQL's ``uptimeSeconds`` is stuck at 0
    on the real service, so adapters should pass ``None`` rather than 0 when they cannot tell).
    """

    id: str
    name: str
    status: PodStatus
    ssh_ready: bool = False
    cost_per_hr: float | None = None
    created_at: datetime | None = None
    uptime_sec: float | None = None
    gpu_type: str | None = None
    data_center: str | None = None

    def __post_init__(self) -> None:
        _normalise_datetimes(self)
        if not isinstance(self.status, PodStatus):
            object.__setattr__(self, "status", PodStatus.parse(self.status))

    @classmethod
    def from_pod(cls, pod: Any) -> PodView:
        """From ``orchestrator.runpod.base.Pod`` (duck-typed: the pure core imports no adapter)."""
        uptime = getattr(pod, "uptime_seconds", None)
        status = PodStatus.parse(getattr(pod, "actual_status", None))
        if str(getattr(pod, "desired_status", "") or "").upper() == PodStatus.TERMINATED.value:
            status = PodStatus.TERMINATED  # asked to go: billing stops, the row may be closed
        return cls(
            id=str(pod.id),
            name=str(getattr(pod, "name", "") or ""),
            status=status,
            ssh_ready=bool(getattr(pod, "ssh_ready", False)),
            cost_per_hr=_float_or_none(getattr(pod, "cost_per_hr", None)),
            created_at=_ts_or_none(getattr(pod, "created_at", None)),
            uptime_sec=float(uptime) if isinstance(uptime, int | float) and uptime > 0 else None,
            gpu_type=_str_or_none(getattr(pod, "gpu", None)),
            data_center=_str_or_none(getattr(pod, "data_center", None)),
        )

    @property
    def gone(self) -> bool:
        return self.status is PodStatus.TERMINATED

    @property
    def failed(self) -> bool:
        return self.status in (PodStatus.EXITED, PodStatus.ERROR)

    def age_sec(self, now: datetime) -> float | None:
        if self.created_at is not None:
            return (as_utc(now) - self.created_at).total_seconds()
        return self.uptime_sec


# --- actions ---------------------------------------------------------------------------------------


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
    ``pod_ready``, merging ``runpod_id`` so a pod found by name is recorded); run the seed's checks;
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

    Executor: the seed's start command over SSH; merge ``process_started_at`` on success (its first
    heartbeat after that gets it a :class:`Promote`); ``error`` with reason ``start_failed`` otherwise. With
    ``already_running`` (the worker has heartbeated since its checks passed), only merge
    ``process_started_at``: starting a second process would run two workers under one id.
    """

    kind: ClassVar[str] = "start_process"
    worker_id: str
    runpod_id: str
    already_running: bool = False


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
    """Move an unhealthy worker to ``error``: diagnostics, requeue its tasks, terminate its pod.

    Executor, in this order, each step idempotent: capture diagnostics (pod status and cost; when
    ``collect_logs`` and a pod exists, the tail of the worker's log over SSH with a short timeout; a
    failure here is recorded, never fatal); ``orch_transition_worker(worker_id, 'error', reason,
    metadata + diagnostics)``; ``orch_requeue_worker_tasks`` (MAX_TASK_ATTEMPTS); terminate
    ``runpod_id`` when set and merge ``pod_terminate_requested_at``. Each step runs whatever happened to
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
class RequeueUnownedTasks(Action):
    """Requeue the In Progress tasks that name no worker and have been In Progress longer than
    ``older_than_sec`` (TASK_STUCK_TIMEOUT_SEC), an attempt counted, dead-lettered at the limit.

    Executor: ``orch_requeue_unowned_tasks(older_than_sec, reason, MAX_TASK_ATTEMPTS)``; the database
    measures the age with its own clock, so the action carries the threshold, not a task list. Nothing
    else ever moves such a task: no worker row is there to fail and no heartbeat to go stale.
    """

    kind: ClassVar[str] = "requeue_unowned_tasks"
    older_than_sec: float


# Actions that end a worker's life or its pod (for the "never terminates a busy worker" property).
DESTRUCTIVE: tuple[type[Action], ...] = (FailWorker, TerminatePod, MarkTerminated)


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
            "problems": list(self.problems),
            "actions": [a.to_dict() for a in self.actions],
        }


Prices = Mapping[str, float]
"""GPU display name -> USD per hour at current prices (from the catalog; the controller refreshes it)."""

Pods = Sequence[PodView]
