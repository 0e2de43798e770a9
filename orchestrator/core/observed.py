"""What the policy observes: the snapshot of the database and the provider's view of each pod.

Sits between gather and decide in the tick (gather -> decide -> apply -> record; ``docs/database.md``): the
controller turns the database's one snapshot call into a :class:`Snapshot` (``Snapshot.from_json``),
the provider's pod listing into :class:`PodView` values (``PodView.from_pod``), and hands both to
``orchestrator.core.policy.plan``, which returns a :class:`~orchestrator.core.actions.Plan`. Everything
here is a frozen value: no I/O, no clock, no logging. Parsing is tolerant where one bad row must not
stop the fleet: a worker row that cannot be parsed but has an id becomes an :class:`UnreadableRow`,
which the policy retires (its pod terminated, its tasks requeued), and every such row is reported in
``Snapshot.problems``; a row without an id is only reported (nothing can address it).

Promotion ``initializing -> active`` is the orchestrator's own decision from evidence it observes (a
heartbeat at or after ``metadata.process_started_at``): the real worker's heartbeat function belongs to
the app and only writes ``last_heartbeat`` (docs/database.md), so it cannot be the one to promote. What
a worker says about itself (the heartbeat's ``status_param`` ``crashed``, the fatal-error handler's
``error``) never changes ``status`` on a row the orchestrator manages; the database records it in
``reported_status``/``reported_at``/``reported_details`` and :class:`Worker` carries them, so the policy
decides what a report means. The metadata keys read here are named in
:class:`~orchestrator.core.states.Meta`, so the policy and the executor agree on one spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from orchestrator.core import errors
from orchestrator.core.evidence import (
    RunningTask,
    TaskStats,
    parse_arrivals,
    parse_claimable_by_type,
    parse_running_tasks,
    parse_task_stats,
)
from orchestrator.core.parsing import as_int, float_or_none, str_or_none, ts_or_none
from orchestrator.core.parsing import as_utc as as_utc
from orchestrator.core.parsing import parse_ts as parse_ts
from orchestrator.core.states import CAPACITY_REASONS, NOT_BOOT_FAILURES, Meta, PodStatus, Reason, WorkerState


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
    # Each In Progress task with its type and start (absent from an older snapshot: empty).
    running_tasks: tuple[RunningTask, ...] = ()

    def __post_init__(self) -> None:
        _normalise_datetimes(self)
        object.__setattr__(self, "running_tasks", tuple(self.running_tasks))
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
                instance_type=str_or_none(row.get("instance_type")),
                created_at=parse_ts(row.get("created_at")),
                status_changed_at=parse_ts(row.get("status_changed_at")),
                activated_at=parse_ts(row.get("activated_at")),
                last_heartbeat=parse_ts(row.get("last_heartbeat")),
                metadata=freeze(metadata),
                running_task_ids=tuple(str(i) for i in ids),
                running_count=as_int(row.get("running_count"), len(ids)),
                oldest_running_started_at=parse_ts(row.get("oldest_running_started_at")),
                oldest_stuckable_started_at=parse_ts(row.get("oldest_stuckable_started_at")),
                last_completion_at=parse_ts(row.get("last_completion_at")),
                reported_status=str_or_none(row.get("reported_status")),
                # A malformed report time must not hide the worker: read it as unknown.
                reported_at=ts_or_none(row.get("reported_at")),
                reported_details=freeze(details),
                running_tasks=parse_running_tasks(row.get("running_tasks"), worker_id, problems),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"worker {worker_id}: {exc}") from exc

    # -- metadata conveniences (absent or malformed values read as None) -----------------------------

    def _meta_str(self, key: str) -> str | None:
        return str_or_none(self.metadata.get(key))

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
        value = float_or_none(self.metadata.get(Meta.COST_PER_HR))
        return value if value is not None and value > 0 else None

    @property
    def initialized_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.INITIALIZED_AT))

    @property
    def process_started_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.PROCESS_STARTED_AT))

    @property
    def start_watched_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.START_WATCHED_AT))

    @property
    def setup_seen_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.SETUP_SEEN_AT))

    @property
    def setup_seen_sec(self) -> float | None:
        """From this process start to the last time the start watch saw the start in its setup steps;
        None without such a sighting (one from before this start is a resumed pod's previous start)."""
        started, seen = self.process_started_at, self.setup_seen_at
        if started is None or seen is None or seen <= started:
            return None
        return (seen - started).total_seconds()

    @property
    def terminate_requested_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.TERMINATE_REQUESTED_AT))

    @property
    def pod_terminate_requested_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.POD_TERMINATE_REQUESTED_AT))

    @property
    def drain_reason(self) -> str | None:
        return self._meta_str(Meta.DRAIN_REASON)

    # -- the warm pool ----------------------------------------------------------------------------

    @property
    def pod_stop_requested_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.POD_STOP_REQUESTED_AT))

    @property
    def stopped_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.STOPPED_AT))

    @property
    def resume_requested_at(self) -> datetime | None:
        return ts_or_none(self.metadata.get(Meta.RESUME_REQUESTED_AT))

    @property
    def disk_gb(self) -> float | None:
        """The pod's volume disk as its spawn recorded it; None when absent, malformed or negative."""
        value = float_or_none(self.metadata.get(Meta.DISK_GB))
        return value if value is not None and value >= 0 else None

    @property
    def resumes(self) -> int:
        value = float_or_none(self.metadata.get(Meta.RESUMES))
        return max(0, int(value)) if value is not None else 0

    @property
    def resumed_boot(self) -> bool:
        """Booting from a resume the orchestrator asked for (not yet initialized since)."""
        asked = self.resume_requested_at
        if asked is None or not self.status.booting:
            return False
        done = self.initialized_at
        return done is None or done < asked

    @property
    def boot_started_at(self) -> datetime | None:
        """When the current boot began: the resume request for a resumed pod, else the row's creation."""
        if self.status.booting and self.resume_requested_at is not None:
            return self.resume_requested_at
        return self.created_at or self.status_changed_at

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
            at = ts_or_none(item.get("at"))
            gpu = str_or_none(item.get("gpu_type"))
            if at is None or gpu is None:
                continue
            found.append(
                BootOutcome(
                    worker_id=self.id,
                    gpu_type=gpu,
                    data_center=str_or_none(item.get("data_center")),
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
    # Claimable tasks per type (sizing by work); absent from an older snapshot: empty.
    claimable_by_type: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.claimable_by_type, MappingProxyType):
            object.__setattr__(self, "claimable_by_type", freeze(self.claimable_by_type))

    @classmethod
    def from_json(cls, data: Any, problems: list[str] | None = None) -> Queue:
        if not isinstance(data, Mapping):
            raise ValueError("queue is not an object")
        found: list[str] = []
        by_type = parse_claimable_by_type(data.get("claimable_by_type"), found)
        orphaned = data.get("orphaned_worker_ids")
        if orphaned is not None and not isinstance(orphaned, list | tuple):
            # Iterated, a text named one worker per character, each given a requeue.
            found.append(f"queue.orphaned_worker_ids is not a list ({excerpt_of(orphaned)}): read as none")
            orphaned = ()
        if problems is not None:
            problems.extend(found)
        return cls(
            claimable_by_type=freeze(by_type),
            claimable=max(0, as_int(data.get("claimable"))),
            queued_total=max(0, as_int(data.get("queued_total"))),
            oldest_claimable_age_sec=float_or_none(data.get("oldest_claimable_age_sec")),
            running=max(0, as_int(data.get("running"))),
            orphaned_worker_ids=tuple(str(i) for i in (orphaned or ()) if isinstance(i, str) and i.strip()),
            unowned_running=max(0, as_int(data.get("unowned_running"))),
            oldest_unowned_age_sec=float_or_none(data.get("oldest_unowned_age_sec")),
        )


def excerpt_of(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _paused(value: Any, problems: list[str]) -> bool:
    """The snapshot's ``paused``: a boolean. Text is read as the words say; anything else stops spawning
    (the side that spends nothing) and is reported, where ``bool()`` read "false" as paused in silence."""
    if value is None or isinstance(value, bool):
        return bool(value)
    word = str(value).strip().lower() if isinstance(value, str) else None
    if word in ("true", "t", "1", "yes", "on"):
        problems.append(f"paused is text ({excerpt_of(value)}), not a boolean: read as paused")
        return True
    if word in ("false", "f", "0", "no", "off", ""):
        problems.append(f"paused is text ({excerpt_of(value)}), not a boolean: read as not paused")
        return False
    problems.append(f"paused is {excerpt_of(value)}, not a boolean: read as paused")
    return True


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
        runpod_id = str_or_none(metadata.get(Meta.RUNPOD_ID)) if isinstance(metadata, Mapping) else None
        return cls(
            id=worker_id, status=_state_or_error(row.get("status")), runpod_id=runpod_id, problem=problem
        )


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
    # "boot" (a new pod) or "resume" (a stopped pod started again), and the seconds from the intent row
    # (or the resume request) to the activation, when ok and known: the lead times the wait target uses.
    kind: str = "boot"
    seconds: float | None = None

    def __post_init__(self) -> None:
        _normalise_datetimes(self)

    @property
    def is_resume(self) -> bool:
        return self.kind == "resume"

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
            gpu_type=str_or_none(row.get("gpu_type")),
            data_center=str_or_none(row.get("data_center")),
            ok=ok,
            reason=str_or_none(row.get("reason")),
            at=at,
            kind="resume" if str(row.get("kind") or "").strip().lower() == "resume" else "boot",
            seconds=float_or_none(row.get("seconds")),
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
    # Evidence about the work (orchestrator.core.evidence); absent from an older snapshot: empty.
    arrivals: tuple[tuple[float, int], ...] = ()  # (window_sec, tasks created in it), shortest first
    task_stats: Mapping[str, TaskStats] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    task_stats_window_sec: float | None = None
    # Not from the database: the daemon's memory that a worker was already drained beside the tasks
    # waiting now (orchestrator.loop.passed_over). A second one drained beside them buys no replacement.
    passed_over_once: bool = False

    def __post_init__(self) -> None:
        _normalise_datetimes(self)
        object.__setattr__(self, "arrivals", tuple((float(w), int(c)) for w, c in self.arrivals))
        if not isinstance(self.task_stats, MappingProxyType):
            object.__setattr__(self, "task_stats", freeze(self.task_stats))
        object.__setattr__(self, "workers", tuple(self.workers))
        object.__setattr__(self, "recent_boots", tuple(self.recent_boots))
        object.__setattr__(self, "problems", tuple(self.problems))
        object.__setattr__(self, "unreadable", tuple(self.unreadable))

    @classmethod
    def from_json(cls, data: Any) -> Snapshot:
        """Parse ``orch_snapshot``'s answer. One malformed row is skipped and reported, never fatal.

        Raises :class:`~orchestrator.core.errors.DatabaseError` only when the answer as a whole is not a
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
            queue = Queue.from_json(data.get("queue") if data.get("queue") is not None else {}, problems)
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
                    problems.append(f"worker {retired.id}: unreadable, retired: {exc}")
                elif retired is not None:
                    problems.append(f"worker {retired.id}: skipped (workers[{index}]): {exc}")
                else:
                    problems.append(f"workers[{index}] skipped: {exc}")
                continue
            if worker.id in seen:
                problems.append(f"worker {worker.id}: skipped (workers[{index}]): a duplicate row")
                continue
            raw_status = str(row.get("status")).strip().lower()
            if raw_status not in WorkerState._value2member_map_:
                problems.append(
                    f"workers[{index}] {worker.id}: unknown status {row.get('status')!r}, retired as error"
                )
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
        stats_window, stats = parse_task_stats(data.get("task_stats"), problems)
        arrivals = parse_arrivals(data.get("arrivals"), problems)
        return cls(
            arrivals=arrivals,
            task_stats=freeze(stats),
            task_stats_window_sec=stats_window,
            now=now,
            paused=_paused(data.get("paused"), problems),
            queue=queue,
            workers=tuple(workers),
            recent_boots=tuple(boots),
            pause_reason=str_or_none(data.get("pause_reason")),
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
    # False when the provider's status word was not one we know, or the pod's entry could not be read:
    # ``status`` then says "still coming up", which must not be taken for a pod that was started.
    known: bool = True

    def __post_init__(self) -> None:
        _normalise_datetimes(self)
        if not isinstance(self.status, PodStatus):
            object.__setattr__(self, "status", PodStatus.parse(self.status))

    @classmethod
    def from_pod(cls, pod: Any) -> PodView:
        """From ``orchestrator.adapters.runpod.base.Pod`` (duck-typed: the pure core imports no adapter)."""
        uptime = float_or_none(getattr(pod, "uptime_seconds", None))
        word = str(getattr(pod, "actual_status", None) or "").strip().upper()
        status = PodStatus.parse(word)
        known = word in {s.value for s in PodStatus}
        if str(getattr(pod, "desired_status", "") or "").upper() == PodStatus.TERMINATED.value:
            status = PodStatus.TERMINATED  # asked to go: billing stops, the row may be closed
        return cls(
            id=str(pod.id),
            name=str(getattr(pod, "name", "") or ""),
            status=status,
            ssh_ready=bool(getattr(pod, "ssh_ready", False)),
            cost_per_hr=float_or_none(getattr(pod, "cost_per_hr", None)),
            created_at=ts_or_none(getattr(pod, "created_at", None)),
            uptime_sec=uptime if uptime is not None and uptime > 0 else None,
            gpu_type=str_or_none(getattr(pod, "gpu", None)),
            data_center=str_or_none(getattr(pod, "data_center", None)),
            known=known or status is PodStatus.TERMINATED,
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
