"""The simulator's database: the SQL functions of ``docs/database.md``, in memory, with the same semantics.

Where this sits: the virtual-time simulator's stand-in for :class:`orchestrator.ports.Database` (the
executor reaches it through ``orchestrator.studies.driver``) and for the app's functions the worker
reaches (claim, heartbeat, complete). It reproduces the semantics of the SQL in ``migrations/``: the
transition table (:data:`orchestrator.core.states.TRANSITIONS`, checked against the migration's rows by
a test), the idempotent same-state move, ``boot_outcome`` written on the first move out of a booting
state, ``draining -> terminating`` refused while the worker holds a task; the app's claim behind the
guard on ``tasks`` (a task moves to In Progress only for a worker in a claiming state; oldest claimable
first); the app's heartbeat function behind the guard on ``workers`` (``last_heartbeat`` on every row
but a terminated one, the status never changed: a non-``active`` status is kept as
``reported_status``, and ``crashed`` requeues the worker's tasks with the attempt counted, as the app's
function does); the requeue (attempt counted, dead-lettered at ``MAX_TASK_ATTEMPTS``), and the
snapshot (built straight into :class:`~orchestrator.core.observed.Snapshot`, the same fields
``orch_snapshot`` returns, ``recent_boots`` and ``reported_*`` included, and the evidence of
:mod:`orchestrator.core.evidence`: each worker's running tasks with their types, claimable tasks per
type, per-type durations of the last day's completions, the arrival counts of the last 10 minutes and
hour, each boot's and each resume's seconds to activation). ``draining -> stopping`` is refused like
``draining -> terminating`` while the worker holds a task; each resume's outcome is recorded when the
resumed row leaves ``resuming``/``initializing`` (kind ``resume``). Parents (migration
20261213000100): each running parent's live children and newest child in the snapshot; the release of a
draining worker's waiting parents, kept In Progress with no worker, left out of the tasks without a
worker while they wait, and completed with their last child as the app's ``complete_task`` completes
them whatever worker they name (banodoco/reigh-app ``complete_task/orchestratorCore.ts``). Children
name their parent by one field here, where the SQL reads the app's five params paths.
tests/unit/test_vtime.py runs one script against this and against the real SQL and compares the answers.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core import errors
from orchestrator.core.evidence import PARENT_MARK, RunningTask, TaskStats
from orchestrator.core.limits import PROBATION_SEC, PROCESS_DEATHS
from orchestrator.core.observed import BootOutcome, Queue, Snapshot, Worker
from orchestrator.core.states import Meta, WorkerState, legal_move
from orchestrator.studies.clock import Clock, at

BOOTING = ("spawning", "initializing")
# orch_snapshot's evidence windows: arrivals counted over these, durations over the last day.
ARRIVAL_WINDOWS = (600.0, 3600.0)
TASK_STATS_WINDOW_SEC = 86400.0
# The day's statistics are recomputed on a completion and, as the window slides, at most this often.
STATS_REFRESH_SEC = 600.0


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
    after: str | None = None  # dependant_on: the task it waits for (one; a chain's segment)
    parent: str | None = None  # the parent its params name (orchestrator_task_id_ref)
    ready_at: float | None = None  # when it became claimable: created, or its dependency completed


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
    reported_in_task: bool = False  # the guard's reported_details.in_task (20261215000100)
    resume_started_at: float | None = None  # a resume under way (its outcome not yet written)
    completed: int = 0  # tasks Complete under its id (orch_transition_worker asks whether any)


class SimDB:
    """The SQL functions of ``docs/database.md``, in memory, with the same semantics.

    Times are virtual seconds; metadata timestamps are ISO strings as the executor writes them.
    """

    def __init__(self, clock: Clock, max_attempts: int = 3, failed_before_serving: bool = True) -> None:
        self.clock = clock
        self.max_attempts = max_attempts
        # orch_transition_worker's rewrite of a boot outcome (see transition_worker); off for the old
        # system's rows (studies.policies.PolicySpec.failed_before_serving).
        self.failed_before_serving = failed_before_serving
        self.tasks: dict[str, TaskRow] = {}
        self.workers: dict[str, WorkerRow] = {}
        # Indexes kept beside ``workers`` so a snapshot costs the live fleet, not every row ever made
        # (a week of traffic creates thousands of terminated rows).
        self._live: dict[str, WorkerRow] = {}
        self._boots: list[WorkerRow] = []  # in boot_outcome_at order (the clock only moves forward)
        self._order: dict[str, int] = {}  # creation order, the tie-break of equal outcome times
        self._boot_views: dict[str, BootOutcome] = {}
        self._queued: list[tuple[float, str]] = []  # heap of (created_at, id); lazy deletion
        self._claimable_since: list[tuple[float, str]] = []  # heap of (ready_at, id); lazy deletion
        self.claimable = 0
        self.running: dict[str, set[str]] = {}  # worker id -> In Progress task ids
        self.running_total = 0  # sum of the sets' sizes, kept so a snapshot need not add them up
        self.last_completion: dict[str, float] = {}
        self.on_queued: Callable[[], None] | None = None  # the NOTIFY trigger
        # When each task became claimable, in order (the clock only moves on): orch_snapshot's arrivals.
        self._arrivals: list[float] = []
        self._waiting: dict[str, list[TaskRow]] = {}  # task id -> the queued tasks dependant_on it
        self._children: dict[str, list[str]] = {}  # parent id -> the tasks that name it
        self.unowned: set[str] = set()  # In Progress tasks with no worker (parents let go)
        self.waiting_total = 0
        self.claimable_by_type: dict[str, int] = {}
        self._durations: dict[str, list[tuple[float, float]]] = {}  # type -> [(completed at, seconds)]
        self._stats: tuple[float, dict[str, TaskStats]] | None = None
        self._resumes: list[BootOutcome] = []  # each resume's outcome, in time order

    # -- tasks ------------------------------------------------------------------------------------

    def insert_task(
        self,
        task_id: str,
        task_type: str,
        duration: float,
        after: str | None = None,
        parent: str | None = None,
    ) -> TaskRow:
        """A new Queued task; with ``after`` (its ``dependant_on``), claimable only once that task is
        Complete, as the app's claim and ``orch_snapshot`` read it (one that never completes keeps it
        out for good, as there); ``parent``, the parent task its params name."""
        row = TaskRow(task_id, task_type, self.clock.now, duration, after=after, parent=parent)
        self.tasks[task_id] = row
        if parent is not None:
            self._children.setdefault(parent, []).append(task_id)
        dependency = self.tasks.get(after) if after is not None else None
        if after is not None and (dependency is None or dependency.status != "Complete"):
            self._waiting.setdefault(after, []).append(row)
            self.waiting_total += 1
            return row
        self._ready(row)
        return row

    def _ready(self, row: TaskRow) -> None:
        row.ready_at = self.clock.now
        self._arrivals.append(row.ready_at)
        self._enqueue(row)

    def _release(self, task_id: str) -> None:
        """``task_id`` is Complete: the tasks waiting on it become claimable now."""
        for row in self._waiting.pop(task_id, []):
            self.waiting_total -= 1
            self._ready(row)

    def _cascade(self, failed: list[str]) -> None:
        """The migration's ``orchestrator_private.cascade_failure``, after the app's ``cascade_task_failure``
        (banodoco/reigh-app ``supabase/migrations/20260331040000_add_cascade_failure_rpc.sql``): a task
        dead-lettered fails its parent and the parent's other live tasks (a parent, its own)."""
        for task_id in failed:
            row = self.tasks[task_id]
            is_parent = PARENT_MARK in row.task_type
            parent = task_id if is_parent else row.parent
            if parent is None:
                continue
            related = ([] if is_parent else [parent]) + self._children.get(parent, [])
            for other_id in related:
                other = self.tasks.get(other_id)
                if other is not None and other_id != task_id and other.status in ("Queued", "In Progress"):
                    self._fail_live(other, f"Cascaded failed from related task {task_id}")

    def _fail_live(self, row: TaskRow, message: str) -> None:
        if row.status == "In Progress":
            if row.worker_id is not None:
                ids = self.running.get(row.worker_id, set())
                ids.discard(row.id)
                if not ids:
                    self.running.pop(row.worker_id, None)
                self.running_total -= 1
            else:
                self.unowned.discard(row.id)
        elif row.ready_at is None:  # waiting on its dependency
            self._waiting[row.after or ""].remove(row)
            self.waiting_total -= 1
        else:  # claimable: the heaps drop it lazily, the counts now
            self._uncount(row)
        row.status, row.processed_at, row.error_message = "Failed", self.clock.now, message

    def _uncount(self, row: TaskRow) -> None:
        """A claimable task leaves the claimable counts (claimed, or failed by a cascade)."""
        self.claimable -= 1
        left = self.claimable_by_type[row.task_type] - 1
        if left:
            self.claimable_by_type[row.task_type] = left
        else:
            del self.claimable_by_type[row.task_type]

    def _enqueue(self, row: TaskRow) -> None:
        heapq.heappush(self._queued, (row.created_at, row.id))
        heapq.heappush(self._claimable_since, (row.ready_at or row.created_at, row.id))
        self.claimable += 1
        self.claimable_by_type[row.task_type] = self.claimable_by_type.get(row.task_type, 0) + 1
        if self.on_queued is not None:
            self.on_queued()

    def _longest_claimable(self) -> float | None:
        """Since when the longest-claimable queued task has been claimable (``orch_snapshot``'s
        ``oldest_claimable_age_sec``): a segment released a moment ago is new, however old its chain."""
        while self._claimable_since:
            since, task_id = self._claimable_since[0]
            if self.tasks[task_id].status == "Queued":
                return since
            heapq.heappop(self._claimable_since)
        return None

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
        state that has not reported its own failure since it entered it (the guard on ``tasks`` makes
        the claim fail for any other managed row; the worker sees no task and polls again)."""
        w = self.workers.get(worker_id)
        if w is None:
            # tasks.worker_id references workers(id): the claim fails (HTTP 500); nothing claimed.
            raise errors.NotFound(
                "claim_next_task_service_role", f'unknown worker "{worker_id}"', code="23503"
            )
        if w.status not in ("initializing", "active"):
            return None
        if (
            w.reported_status in ("error", "crashed", "terminated")
            and w.reported_at is not None
            and w.reported_at >= w.status_changed_at
        ):
            return None  # it reported its own failure in this state (migration 20261216000200)
        row = self._oldest_queued()
        if row is None:
            return None
        heapq.heappop(self._queued)
        self._uncount(row)
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
        if row.status != "In Progress":
            return False
        holder = row.worker_id
        row.status, row.processed_at = "Complete", self.clock.now
        if holder in self.workers:
            self.workers[holder].completed += 1
        if row.started_at is not None:
            self._durations.setdefault(row.task_type, []).append(
                (row.processed_at, row.processed_at - row.started_at)
            )
            self._stats = None
        if holder is None:  # a parent let go: the app completes it with its last child all the same
            self.unowned.discard(task_id)
            self._release(task_id)
            return True
        ids = self.running[holder]  # In Progress under its holder: it is in the set
        ids.discard(task_id)
        if not ids:
            del self.running[holder]  # only workers with work stay: the invariants walk this each tick
        self.running_total -= 1
        self.last_completion[holder] = self.clock.now
        self._release(task_id)
        return True

    def requeue_worker_tasks(
        self, worker_id: str, reason: str, max_attempts: int | None = None
    ) -> dict[str, list[str]]:
        """``orch_requeue_worker_tasks``: every In Progress task, attempt counted, dead-lettered at the limit."""
        ids = sorted(self.running.pop(worker_id, set()))
        if worker_id not in self.workers and not ids:
            raise errors.NotFound("orch_requeue_worker_tasks", f'unknown worker "{worker_id}"', code="OR003")
        return self._requeue_held(
            ids,
            reason,
            max_attempts,
            ended=f"when worker {worker_id} was requeued",
            held_from=f"from worker {worker_id}",
        )

    def requeue_stranded_tasks(
        self, worker_id: str, task_ids: tuple[str, ...], reason: str, max_attempts: int | None = None
    ) -> dict[str, list[str]]:
        """``orch_requeue_stranded_tasks`` (migration 20261216000300): of ``task_ids``, those the worker
        holds (no parent) while it holds a newer such task, attempt counted, dead-lettered at the limit."""
        if worker_id not in self.workers:
            raise errors.NotFound(
                "orch_requeue_stranded_tasks", f'unknown worker "{worker_id}"', code="OR003"
            )
        held = [
            self.tasks[t]
            for t in self.running.get(worker_id, ())
            if PARENT_MARK not in self.tasks[t].task_type and self.tasks[t].started_at is not None
        ]
        newest = max((r.started_at for r in held if r.started_at is not None), default=None)
        ids = sorted(
            r.id
            for r in held
            if r.id in task_ids and newest is not None and r.started_at is not None and r.started_at < newest
        )
        for task_id in ids:
            self.running[worker_id].discard(task_id)
        return self._requeue_held(
            ids,
            reason,
            max_attempts,
            ended=f"when worker {worker_id} was found not running it",
            held_from=f"from worker {worker_id}, which holds a newer task",
        )

    def _requeue_held(
        self, ids: list[str], reason: str, max_attempts: int | None, *, ended: str, held_from: str
    ) -> dict[str, list[str]]:
        """``orchestrator_private.requeue_held``: the attempt of each task ``ids`` names (already out of
        its worker's running set) ends: Queued, or Failed at the limit with the app's cascade."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        requeued: list[str] = []
        failed: list[str] = []
        for task_id in ids:
            row = self.tasks[task_id]
            row.attempts += 1
            self.running_total -= 1
            if row.attempts >= limit:
                row.status, row.processed_at = "Failed", self.clock.now
                row.error_message = (
                    f"dead-lettered: attempt {row.attempts} of {limit} ended {ended}: {reason}"
                )
                failed.append(task_id)
            else:
                row.status, row.worker_id, row.started_at = "Queued", None, None
                row.error_message = f"requeued {held_from} (attempt {row.attempts} of {limit}): {reason}"
                requeued.append(task_id)
                self._enqueue(row)
        self._cascade(failed)
        return {"requeued": requeued, "failed": failed}

    def release_parents(self, worker_id: str) -> dict[str, list[str]]:
        """``orch_release_parents``: for a draining worker, every parent it holds that waits on a child
        stays In Progress with no worker; the other parents are kept."""
        w = self.workers.get(worker_id)
        if w is None:
            raise errors.NotFound("orch_release_parents", f'unknown worker "{worker_id}"', code="OR003")
        held = self.running.get(worker_id, set())
        parents = sorted(t for t in held if PARENT_MARK in self.tasks[t].task_type)
        ids = [t for t in parents if self._parent_waits(self.tasks[t])] if w.status == "draining" else []
        for task_id in ids:
            held.discard(task_id)
            self._let_go(self.tasks[task_id])
        if worker_id in self.running and not held:
            del self.running[worker_id]
        return {"released": ids, "kept": [t for t in parents if t not in ids]}

    def _let_go(self, row: TaskRow) -> None:
        """An In Progress task's worker_id cleared, the task kept In Progress (a released parent); the
        caller has taken it out of its holder's set."""
        row.worker_id = None
        self.running_total -= 1
        self.unowned.add(row.id)

    def _parent_waits(self, row: TaskRow) -> bool:
        """``orchestrator_private.parent_waits``: a parent with a Queued or In Progress child."""
        return bool(self._live_children(row)[0])

    def _live_children(self, row: TaskRow) -> tuple[int | None, datetime | None]:
        """orch_snapshot's ``children_live`` and ``last_child_at`` of a running task (None, None for one
        that is not a parent): its Queued and In Progress children."""
        if PARENT_MARK not in row.task_type:
            return None, None
        live = [
            child.created_at
            for child in (self.tasks[c] for c in self._children.get(row.id, ()))
            if child.status in ("Queued", "In Progress")
        ]
        return len(live), at(max(live)) if live else None

    def requeue_unowned_tasks(
        self, older_than_sec: float, reason: str, max_attempts: int | None = None
    ) -> dict[str, list[str]]:
        """``orch_requeue_unowned_tasks``: In Progress tasks that name no worker, In Progress longer than
        ``older_than_sec``, attempt counted, dead-lettered at the limit, a parent whose children are still
        to run left alone. (The simulated workers always name themselves: only released parents arise.)"""
        limit = self.max_attempts if max_attempts is None else max_attempts
        requeued: list[str] = []
        failed: list[str] = []
        now = self.clock.now
        for row in self.tasks.values():
            if row.status != "In Progress" or row.worker_id is not None:
                continue
            if row.started_at is None or now - row.started_at <= older_than_sec:
                continue
            if self._parent_waits(row):  # waiting on its children, not abandoned
                continue
            self.unowned.discard(row.id)
            row.attempts += 1
            if row.attempts >= limit:
                row.status, row.processed_at = "Failed", now
                row.error_message = f"dead-lettered: attempt {row.attempts} of {limit} ended: {reason}"
                failed.append(row.id)
            else:
                row.status, row.started_at = "Queued", None
                row.error_message = f"requeued (attempt {row.attempts} of {limit}): {reason}"
                requeued.append(row.id)
                self._enqueue(row)
        self._cascade(failed)
        return {"requeued": requeued, "failed": failed}

    # -- workers ----------------------------------------------------------------------------------

    def register_worker(
        self, worker_id: str, instance_type: str | None, metadata: Mapping[str, Any]
    ) -> WorkerRow:
        if worker_id in self.workers:
            raise errors.Conflict(
                "orch_register_worker", f'worker "{worker_id}" already exists', code="23505"
            )
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
        if not legal_move(frm, to):
            raise errors.IllegalTransition(
                "orch_transition_worker",
                f'illegal transition for worker "{worker_id}": {frm} -> {to}',
                code="OR002",
            )
        if frm == "draining" and to in ("terminating", "stopping") and self.running.get(worker_id):
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
        if to == "resuming":
            w.resume_started_at = now
        elif w.resume_started_at is not None and to not in ("resuming", "initializing"):
            self._resume_outcome(w, to, reason, now)
        if w.boot_outcome_at is None:
            if to == "active":
                w.boot_outcome, w.boot_outcome_at = "activated", now
            elif frm in BOOTING and to not in BOOTING:
                w.boot_outcome, w.boot_outcome_at = reason or to, now
            if w.boot_outcome_at is not None:
                self._boots.append(w)
        elif (
            self.failed_before_serving
            and to == "error"
            and frm in ("active", "draining")
            and w.boot_outcome == "activated"
            and w.activated_at is not None
            and reason not in ("unusable_row", "task_stuck")
            and not w.completed
            and (now - w.activated_at < PROBATION_SEC or (reason in PROCESS_DEATHS and self._died_in_task(w)))
        ):
            # Activated, then failed before completing any task: a failed boot after all (the SQL's
            # failed_before_serving; past the probation only when its process died holding a task,
            # 20261215000100). Its outcome moves to now, the end of the time-ordered list.
            w.boot_outcome, w.boot_outcome_at = reason or to, now
            self._boots.remove(w)
            self._boots.append(w)
            self._boot_views.pop(w.id, None)
        w.metadata.update(metadata or {})
        return w

    def _died_in_task(self, w: WorkerRow) -> bool:
        """orch_transition_worker's ``v_in_task``: it holds a task now (the daemon fails a worker before
        it requeues), or its own report of its death found it holding one."""
        return self._holds_work(w.id) or w.reported_in_task

    def _holds_work(self, worker_id: str) -> bool:
        """An In Progress task under the worker that is no parent (a parent waits on its children)."""
        return any(PARENT_MARK not in self.tasks[t].task_type for t in self.running.get(worker_id, ()))

    def _resume_outcome(self, w: WorkerRow, to: str, reason: str | None, now: float) -> None:
        """A resume ended: activated (ok, with its seconds from the request) or not (its reason)."""
        ok = to == "active"
        started = w.resume_started_at or now
        self._resumes.append(
            BootOutcome(
                worker_id=w.id,
                gpu_type=w.metadata.get(Meta.GPU_TYPE) or w.instance_type,
                data_center=w.metadata.get(Meta.DATA_CENTER),
                ok=ok,
                reason="activated" if ok else (reason or to),
                at=at(now),
                kind="resume",
                seconds=round(now - started, 3) if ok else None,
            )
        )
        w.resume_started_at = None

    def merge_worker_metadata(self, worker_id: str, metadata: Mapping[str, Any]) -> WorkerRow:
        w = self._lock(worker_id, "orch_merge_worker_metadata")
        w.metadata.update(metadata)
        return w

    def heartbeat(self, worker_id: str, status: str = "active") -> dict[str, Any]:
        """``func_worker_heartbeat_with_logs`` (the app's) behind the guard trigger on ``workers``.

        ``last_heartbeat`` on every row but a terminated one; the status itself is the orchestrator's,
        so a non-``active`` status is only recorded as ``reported_status``. ``crashed`` also requeues
        the worker's In Progress tasks with the attempt counted (dead-lettered at the limit), as the
        app's function does. The app's function writes the workers row before it requeues
        (banodoco/reigh-app ``supabase/migrations/20260331060000_add_crash_recovery_to_heartbeat.sql``),
        so the guard records whether the worker still held work (``reported_in_task``) first.
        """
        w = self._lock(worker_id, "func_worker_heartbeat_with_logs")
        now = self.clock.now
        if w.status != "terminated":
            w.last_heartbeat = now
            # The guard cannot tell a status written unchanged from one not written: a word equal to
            # our state is not recorded.
            if status not in ("active", w.status):
                # The guard runs before the crash recovery below, so it still sees the worker's tasks.
                w.reported_in_task = self._holds_work(worker_id) or (
                    w.reported_status == status and w.reported_in_task
                )
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
            stuckable = [
                r.started_at for r in tasks if "_orchestrator" not in r.task_type and r.started_at is not None
            ]
            last = self.last_completion.get(w.id)
            running_tasks = tuple(
                RunningTask(
                    r.id,
                    r.task_type,
                    at(r.started_at) if r.started_at is not None else None,
                    *self._live_children(r),
                )
                for r in tasks
            )
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
                    oldest_running_started_at=at(tasks[0].started_at)
                    if tasks and tasks[0].started_at is not None
                    else None,
                    oldest_stuckable_started_at=at(min(stuckable)) if stuckable else None,
                    last_completion_at=at(last) if last is not None else None,
                    reported_status=w.reported_status,
                    reported_at=at(w.reported_at) if w.reported_at is not None else None,
                    running_tasks=running_tasks,
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
        since = self._longest_claimable()
        abandoned = self._abandoned()
        return Snapshot(
            now=at(now),
            paused=False,
            queue=Queue(
                claimable=self.claimable,
                queued_total=self.claimable + self.waiting_total,
                oldest_claimable_age_sec=round(now - since, 3) if since is not None else None,
                running=running_total,
                claimable_by_type=dict(self.claimable_by_type),
                unowned_running=len(abandoned),
                oldest_unowned_age_sec=self._oldest_unowned_age(abandoned, now),
            ),
            workers=tuple(workers),
            recent_boots=self._recent_boots(boots, prefix),
            arrivals=tuple((window, self._arrived_within(window)) for window in ARRIVAL_WINDOWS),
            task_stats=self.task_stats(),
            task_stats_window_sec=TASK_STATS_WINDOW_SEC,
        )

    def _abandoned(self) -> list[str]:
        """orch_snapshot's unowned tasks: In Progress with no worker, but a released parent that waits."""
        return [t for t in self.unowned if not self._parent_waits(self.tasks[t])]

    def _oldest_unowned_age(self, ids: list[str], now: float) -> float | None:
        starts = [self.tasks[t].started_at for t in ids]
        known = [s for s in starts if s is not None]
        return round(now - min(known), 3) if known else None

    def _recent_boots(self, boots: list[WorkerRow], prefix: str | None) -> tuple[BootOutcome, ...]:
        """The 50 newest boot and resume outcomes, newest first."""
        views = [self._boot_view(w) for w in boots]
        resumes = [r for r in self._resumes[-50:] if not prefix or r.worker_id.startswith(prefix)]
        if not resumes:
            return tuple(views)
        merged = sorted([*views, *resumes], key=lambda o: o.at, reverse=True)
        return tuple(merged[:50])

    def _arrived_within(self, window: float) -> int:
        """Tasks created in the last ``window`` seconds (``created_at > now() - window``)."""
        return len(self._arrivals) - bisect.bisect_right(self._arrivals, self.clock.now - window)

    def task_stats(self) -> dict[str, TaskStats]:
        """Per type, the durations of the completions of the last day (orch_snapshot's ``task_stats``):
        count, mean, sample standard deviation, percentiles interpolated as ``percentile_cont``, max."""
        now = self.clock.now
        if self._stats is not None and now - self._stats[0] < STATS_REFRESH_SEC:
            return self._stats[1]
        out: dict[str, TaskStats] = {}
        for task_type, rows in self._durations.items():
            cut = bisect.bisect_right(rows, (now - TASK_STATS_WINDOW_SEC, math.inf))
            if cut:
                del rows[:cut]
            if rows:
                out[task_type] = _stats(task_type, [d for _t, d in rows])
        self._stats = (now, out)
        return out

    def _boot_view(self, w: WorkerRow) -> BootOutcome:
        # Built once per worker (an outcome never changes; the metadata it names rarely does): the
        # same 50 outcomes are in every snapshot, tens of thousands of times a simulated day.
        gpu, dc = w.metadata.get(Meta.GPU_TYPE) or w.instance_type, w.metadata.get(Meta.DATA_CENTER)
        cached = self._boot_views.get(w.id)
        if cached is not None and cached.gpu_type == gpu and cached.data_center == dc:
            return cached
        ok = w.boot_outcome == "activated"
        view = BootOutcome(
            worker_id=w.id,
            gpu_type=gpu,
            data_center=dc,
            ok=ok,
            reason=w.boot_outcome,
            at=at(w.boot_outcome_at or 0.0),
            kind="boot",
            # The intent row's creation to the activation: the boot's lead time.
            seconds=round((w.boot_outcome_at or w.created_at) - w.created_at, 3) if ok else None,
        )
        self._boot_views[w.id] = view
        return view

    def live_workers(self) -> list[WorkerRow]:
        return list(self._live.values())


def _stats(task_type: str, durations: list[float]) -> TaskStats:
    n = len(durations)
    mean = sum(durations) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in durations) / (n - 1)) if n > 1 else 0.0
    ordered = sorted(durations)

    def pct(q: float) -> float:
        k = (n - 1) * q
        lo, hi = math.floor(k), math.ceil(k)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return TaskStats(
        task_type=task_type,
        completions=n,
        mean_sec=round(mean, 3),
        stddev_sec=round(std, 3),
        p50_sec=round(pct(0.50), 3),
        p95_sec=round(pct(0.95), 3),
        p99_sec=round(pct(0.99), 3),
        max_sec=round(ordered[-1], 3),
    )
