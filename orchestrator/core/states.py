"""Worker states, pod states, reason codes and the other names the policy and the executor share.

The bottom of the pure core (``orchestrator.core``): plain enums and constants, no I/O. The worker
states and their legal moves are the database's (the ``orchestrator_worker_transitions`` rows of
``migrations/``, enforced by ``orch_transition_worker``); what a reason code means to the breaker and
the back-off is decided here, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class WorkerState(StrEnum):
    """A worker row's ``status``; the legal moves are the SQL transition table of docs/database.md."""

    SPAWNING = "spawning"  # the intent row, written before any pod exists
    INITIALIZING = "initializing"  # the pod answered; checks and process start under way
    ACTIVE = "active"  # first heartbeat after the process started
    DRAINING = "draining"  # the claim function refuses it; terminated (or stopped) once idle
    TERMINATING = "terminating"  # pod termination asked, not yet confirmed
    ERROR = "error"  # failed; pod being terminated, tasks requeued
    TERMINATED = "terminated"  # the provider confirmed the pod gone (terminal)
    # The warm pool: an idle worker's pod stopped instead of terminated (its GPU freed, only its disk
    # billed) and resumed on the same host when work comes back. Runpod's docs, "Manage Pods": pods with
    # a network volume can be stopped as well as terminated.
    STOPPING = "stopping"  # pod stop asked, not yet confirmed (the GPU still bills)
    STOPPED = "stopped"  # the provider confirms the pod stopped: in the pool, billing its disk only
    RESUMING = "resuming"  # pod start asked; then initializing -> active as after a spawn

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
        return self in (WorkerState.SPAWNING, WorkerState.INITIALIZING, WorkerState.RESUMING)

    @property
    def pooled(self) -> bool:
        """In the warm pool or on its way in: no worker process, no task, a pod we keep."""
        return self in (WorkerState.STOPPING, WorkerState.STOPPED)

    @property
    def holds_gpu(self) -> bool:
        """Its pod holds (and bills) a GPU: every live state but ``stopped``, which bills only its
        disk and does not count toward MAX_ACTIVE_GPUS."""
        return self.live and self is not WorkerState.STOPPED


_S = WorkerState
# The legal moves of a worker row, each with its meaning: the ``orchestrator_worker_transitions`` rows
# of migrations/20261129000100_orchestrator_schema.sql, which ``orch_transition_worker`` enforces (it
# refuses any other move with OR002; a move to the current state is a no-op). The database is the
# authority; this copy is what the in-memory database of the simulator enforces, and
# tests/integration/test_sql_contract.py checks it equals the rows of a migrated database, meaning
# for meaning.
TRANSITIONS: Mapping[tuple[WorkerState, WorkerState], str] = MappingProxyType(
    {
        (_S.SPAWNING, _S.INITIALIZING): "the pod is ready: SSH answers",
        (_S.SPAWNING, _S.TERMINATING): "scale-down before the pod booted",
        (_S.SPAWNING, _S.ERROR): "the pod failed or the spawning timeout passed",
        (_S.SPAWNING, _S.TERMINATED): "the provider confirms there is no pod",
        (_S.INITIALIZING, _S.ACTIVE): "first heartbeat after the worker process started",
        (_S.INITIALIZING, _S.TERMINATING): "scale-down during initialization",
        (_S.INITIALIZING, _S.ERROR): "initialization checks or the process start failed",
        (_S.INITIALIZING, _S.TERMINATED): "the provider confirms the pod is gone",
        (_S.ACTIVE, _S.DRAINING): "idle past the idle timeout: stop claiming, then terminate",
        (_S.ACTIVE, _S.TERMINATING): "an operator asked for termination",
        (_S.ACTIVE, _S.ERROR): "unhealthy: stale heartbeat, stuck task, pod gone",
        (_S.ACTIVE, _S.TERMINATED): "the provider confirms the pod is gone",
        (_S.DRAINING, _S.ACTIVE): "work came back before the pod was terminated",
        (_S.DRAINING, _S.TERMINATING): "pod termination asked of the provider",
        (_S.DRAINING, _S.ERROR): "unhealthy while draining",
        (_S.DRAINING, _S.TERMINATED): "the provider confirms the pod is gone",
        (_S.TERMINATING, _S.ERROR): "termination failed badly: needs diagnostics and a retry",
        (_S.TERMINATING, _S.TERMINATED): "the provider confirms the pod is gone",
        (_S.ERROR, _S.TERMINATED): "the provider confirms the pod is gone",
        # The warm pool (migrations/20261207000100_warm_pool.sql).
        (_S.DRAINING, _S.STOPPING): "idle and the pool has room: pod stop asked of the provider",
        (_S.STOPPING, _S.STOPPED): "the provider confirms the pod stopped: in the warm pool",
        (_S.STOPPING, _S.TERMINATING): "the stop did not take, or the pool has no room: terminate",
        (_S.STOPPING, _S.ERROR): "the pod failed while stopping",
        (_S.STOPPING, _S.TERMINATED): "the provider confirms the pod is gone",
        (_S.STOPPED, _S.RESUMING): "work came back: pod start asked of the provider",
        (_S.STOPPED, _S.TERMINATING): "pool past its time to live, shrunk, or paused",
        (_S.STOPPED, _S.ERROR): "the stopped pod failed",
        (_S.STOPPED, _S.TERMINATED): "the provider confirms the pod is gone",
        (_S.RESUMING, _S.INITIALIZING): "the resumed pod is ready: checks and process start again",
        (_S.RESUMING, _S.TERMINATING): "the resume failed (no GPU on the host) or was cancelled",
        (_S.RESUMING, _S.ERROR): "the resume failed or timed out",
        (_S.RESUMING, _S.TERMINATED): "the provider confirms the pod is gone",
    }
)


def legal_move(from_status: str, to_status: str) -> bool:
    """Whether the transition table has the edge ``from_status -> to_status`` (state names as text)."""
    return (from_status, to_status) in TRANSITIONS


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
    # The start watch (WatchStart): when the pod was last asked whether the start it was given still
    # runs, and the last time the answer was "still in its setup steps" (git, apt, uv sync), which
    # health does not count against SPAWNING_TIMEOUT_SEC, up to WORKER_SETUP_TIMEOUT_SEC.
    START_WATCHED_AT = "start_watched_at"
    SETUP_SEEN_AT = "setup_seen_at"
    TERMINATE_REQUESTED_AT = "terminate_requested_at"  # an operator asked (orch_request_termination)
    POD_TERMINATE_REQUESTED_AT = "pod_terminate_requested_at"  # when we last asked the provider
    # Whether the provider confirmed that last request (false: the call failed or its answer did not
    # confirm it; the next tick asks again).
    POD_TERMINATE_CONFIRMED = "pod_terminate_confirmed"
    # The first request the provider confirmed: the end of billing in the spend figures (a row that has
    # the key above and not this one still bills).
    POD_TERMINATE_TAKEN_AT = "pod_terminate_taken_at"
    DRAIN_REASON = "drain_reason"
    DRAINED_AT = "drained_at"
    # With UNCLAIMED_WORK: the queue the worker sat idle beside ({claimable, by_type, oldest_queued_sec,
    # worker_idle_sec}), for the operator to compare with the worker's own claim rules.
    UNCLAIMED = "unclaimed_work"
    ERROR_REASON = "error_reason"
    ERROR_DETAILS = "error_details"
    FAILED_AT = "failed_at"
    # Capacity misses of a spawn that fell through to a later GPU type:
    # [{"gpu_type", "data_center", "at"}]. They back off that GPU type without failing the worker.
    CAPACITY_MISSES = "capacity_misses"
    SPAWN_REASON = "spawn_reason"
    # The warm pool.
    POD_STOP_REQUESTED_AT = "pod_stop_requested_at"  # when we last asked the provider to stop the pod
    STOPPED_AT = "stopped_at"  # the provider confirmed the stop (the pool's time to live counts from here)
    RESUME_REQUESTED_AT = "resume_requested_at"  # the boot clock of a resume (its timeout, its duration)
    RESUMES = "resumes"  # how many times this pod was resumed
    # The host key pinned before the stop. The image writes its host keys to the container disk, which a
    # stop wipes, so a resume the orchestrator asked for may present a new key: the executor re-pins it
    # once and records both in an event; a changed key at any other time is refused.
    PREVIOUS_HOST_KEY_FINGERPRINT = "previous_host_key_fingerprint"
    # The pod's volume disk in GB as the spawn's create call asks for it (RUNPOD_DISK_SIZE_GB; 0 over REST
    # v2 with a network volume in its place): what it bills while stopped (the policy's spend, the spend
    # views and the spend cap read it).
    DISK_GB = "disk_gb"


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
    WAIT_TARGET = "wait_target"  # the queueing model's headroom for WAIT_TARGET_SEC
    RESUME = "resume"  # stopped -> resuming: a pooled pod before a new spawn
    # boot
    POD_READY = "pod_ready"
    START_PROCESS = "start_process"
    WATCH_START = "watch_start"  # is the start still running, and in which phase (WatchStart)
    FIRST_HEARTBEAT = "first_heartbeat"  # initializing -> active: heard from after the process started
    # health
    BOOT_TIMEOUT = "boot_timeout"
    POD_FAILED = "pod_failed"  # EXITED or ERROR at the provider
    POD_MISSING = "pod_missing"  # no pod at the provider for a row that had or should have one
    HEARTBEAT_STALE = "heartbeat_stale"
    TASK_STUCK = "task_stuck"
    # A task held, not run: In Progress under a live worker that holds a newer one (RequeueStrandedTasks).
    STRANDED_TASK = "task_not_run"
    # The worker's own word (Worker.reported_status): its heartbeat guardian saw the process die
    # ('crashed'), or its fatal-error handler gave up on the GPU ('error').
    WORKER_CRASHED = "worker_crashed"
    WORKER_ERROR = "worker_error"
    # The process said it shut down ('terminated', its last heartbeat on the way out) with no fatal
    # error recorded: a signal, or an exception its main loop did not catch; the pod is left without
    # a worker.
    WORKER_EXITED = "worker_exited"
    # scale down
    IDLE = "idle_timeout"
    # Idle for GPU_IDLE_TIMEOUT_SEC while a claimable task waited all along: the worker does not take
    # what the claimable view counts (a view that disagrees with the worker's claim), so a new worker
    # would not either. Drained like IDLE, and said loudly: the operator has to fix the view.
    UNCLAIMED_WORK = "idle_while_tasks_waited"
    OVERCAPACITY = "overcapacity"
    CANCEL_BOOT = "scale_down_before_boot"
    OPERATOR_REQUEST = "operator_request"
    DRAINED = "drained"
    # the warm pool
    POOLED = "pooled"  # an idle worker's pod stopped into the pool instead of terminated
    POD_STOPPED = "provider_confirmed_stopped"
    STOP_RETRY = "stop_retry"
    POOL_TTL = "pool_ttl"  # stopped longer than WARM_POOL_TTL_SEC
    POOL_SHRINK = "pool_shrink"  # more stopped pods than WARM_POOL_MAX
    POOL_PAUSED = "pool_paused"  # paused with WARM_POOL_TERMINATE_ON_PAUSE
    RESUME_NO_GPU = "resume_no_gpu"  # the host's GPUs were taken: refused, or started without one
    RESUME_FAILED = "resume_failed"  # the start call failed otherwise
    STOP_FAILED = "stop_failed"  # a stop the provider did not confirm in time: terminated instead
    # reconcile
    ORPHAN_POD = "orphan_pod"
    TERMINATE_RETRY = "terminate_retry"
    PROVIDER_CONFIRMED_GONE = "provider_confirmed_gone"
    NO_POD_CREATED = "no_pod_created"  # a spawning row whose pod never appeared (crash mid-spawn)
    REQUEUE_RETRY = "requeue_retry"
    # A worker leaving holds nothing but parents (``*_orchestrator``): they are let go In Progress, for
    # the app to complete with their last child, and the worker ends as an idle one.
    PARENTS_ONLY = "holds_only_parents"
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
    # Runpod's rate limit refused the creation, or the client kept a window's last requests for
    # endings: nothing was made, and nothing is wrong with the GPU type or the image.
    SPAWN_RATE_LIMITED = "spawn_rate_limited"
    INIT_FAILED = "init_failed"
    START_FAILED = "start_failed"
    # The start script, or the worker it became, ended before the worker's first heartbeat (a submodule
    # missing, uv sync failing, the worker failing its imports): seen by WatchStart, not left to bill
    # until SPAWNING_TIMEOUT_SEC.
    START_EXITED = "start_exited"
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
        # The pool's own endings, and a resume that found its host full: the provider's stock, not our
        # image (a normal event, never a breaker failure).
        Reason.POOLED.value,
        Reason.POOL_TTL.value,
        Reason.POOL_SHRINK.value,
        Reason.POOL_PAUSED.value,
        Reason.RESUME_NO_GPU.value,
        # The account's request quota, not the GPU type nor the image: a burst of these must neither
        # back the type off nor open the breaker, or the fleet stops growing well after the window resets.
        Reason.SPAWN_RATE_LIMITED.value,
    }
)

# What a worker id must look like to become a pod name, a log file name and a command-line argument.
# The one definition: ``orchestrator.adapters.worker_recipe.validate_worker_id`` refuses anything else
# with it. Ids the policy makes always match; a row left by another system may not.
WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
WORKER_ID_MAX = 128
# What a new worker's id adds to WORKER_ID_PREFIX: ``{YYYYmmdd_HHMMSS}-{8 hex}`` (staffing.new_worker_id).
WORKER_ID_SUFFIX_EXAMPLE = "20261129_120000-0123abcd"


def usable_worker_id(worker_id: str) -> bool:
    """Whether a pod can be named, and a worker process started, for this id."""
    return bool(WORKER_ID_PATTERN.fullmatch(worker_id))  # (match would accept a trailing newline)


class Blocked(StrEnum):
    """Why the plan spawns fewer workers than it is missing (Plan.spawn_blocked)."""

    PAUSED = "paused"
    BREAKER_OPEN = "breaker_open"
    BREAKER_HALF_OPEN = "breaker_half_open"  # a probe at a time, doubling as probes outlive probation
    BACKOFF = "backoff"  # every configured GPU type is backing off
    SPEND_CAP = "spend_cap"
    PRICE_UNKNOWN = "price_unknown"  # a spend cap is set and no price is known for any allowed type
    MAX_REACHED = "max_reached"
    # Runpod's rate limit refused the latest creations: the next waits (limits.rate_limit_hold).
    RATE_LIMITED = "rate_limited"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
